"""Chapter 6's experiments: the comparison of the two meta-gradients behaves as the one-step
identity g = (I − αH) g_FO predicts, the same-batch control really uses the support set as its
query set, and the cost curves have one point per inner step count."""

import pytest
import torch

from mlcourse.experiments import fomaml
from mlcourse.experiments.maml import SinusoidSettings
from mlcourse.meta.maml import MAML
from mlcourse.nets import MLP


def test_the_relative_difference_is_first_order_in_alpha_and_vanishes_with_it():
    settings = fomaml.DirectionSettings.at("quick", tasks=4, alphas=(1e-3, 1e-2), steps=(1,), batches=1)
    torch.manual_seed(0)
    theta = MAML(MLP(), "mse").init_params("cpu")
    rows = fomaml.direction_sweep(settings, {"θ": theta}, "cpu")
    assert [(r["theta"], r["steps"], r["alpha"]) for r in rows] == [("θ", 1, 1e-3), ("θ", 1, 1e-2)]
    small, large = rows
    assert small["cosine"] > 0.99
    assert 7 < large["relative"] / small["relative"] < 13       # ‖αHg‖/‖g‖ ∝ α for small α


def test_meta_gradients_obey_the_one_step_identity():
    from torch.func import grad, jvp

    from mlcourse.nets import forward
    from mlcourse.tasks import SinusoidFamily

    torch.manual_seed(1)
    net = MLP()
    theta = MAML(net, "mse").init_params("cpu")
    batch = SinusoidFamily().sample(3, 10, device="cpu", generator=torch.Generator().manual_seed(0))
    alpha = 0.05
    full, first = fomaml.meta_gradients(theta, batch, alpha, 1)

    def loss(p, x, y):
        return (forward(net, p, x) - y).pow(2).mean()

    # g = mean_i (I − αH_i) g_FO,i with H_i the Hessian of task i's training loss at θ
    plain = {k: v.detach() for k, v in theta.items()}
    expected = []
    for i in range(3):
        g = grad(loss)(plain, batch.x_tr[i], batch.y_tr[i])
        phi = {k: plain[k] - alpha * g[k] for k in plain}
        g_fo = grad(loss)(phi, batch.x_ts[i], batch.y_ts[i])
        _, hv = jvp(lambda p: grad(loss)(p, batch.x_tr[i], batch.y_tr[i]), (plain,), (g_fo,))
        expected.append(torch.cat([(g_fo[k] - alpha * hv[k]).flatten() for k in plain]))
    torch.testing.assert_close(full, torch.stack(expected).mean(0), rtol=1e-3, atol=1e-5)
    assert not torch.allclose(full, first)


def test_same_batch_control_trains_first_order_on_its_support_set(monkeypatch):
    seen = []
    original = MAML.step

    def spy(self, theta, optimizer, batch):
        seen.append(batch)
        return original(self, theta, optimizer, batch)

    monkeypatch.setattr(MAML, "step", spy)
    settings = SinusoidSettings.at("quick", iterations=3)
    learner, theta, history = fomaml.train_sinusoid_same_batch(settings, "cpu", progress=False)
    assert learner.first_order and len(seen) == 3
    for batch in seen:
        assert batch.x_tr.shape == (settings.tasks, 2 * settings.shots, 1)
        assert torch.equal(batch.x_tr, batch.x_ts) and torch.equal(batch.y_tr, batch.y_ts)
    with pytest.raises(TypeError, match="SinusoidSettings"):
        fomaml.train_sinusoid_same_batch(fomaml.DirectionSettings.at("quick"), "cpu")


def test_cost_curves_give_one_point_per_step_count():
    settings = fomaml.CostSettings.at("quick", steps=(1, 2), methods=("fomaml",), omniglot_tasks=1,
                                      sinusoid_tasks=2)
    curves = fomaml.cost_curves(settings, "cpu")
    assert set(curves) == {("sinusoid", "fomaml"), ("omniglot", "fomaml")}
    for points in curves.values():
        assert [k for k, _, _ in points] == [1, 2]
        assert all(seconds > 0 for _, seconds, _ in points)


def test_settings_scales():
    assert fomaml.DirectionSettings.at("paper").alphas[2] == 0.01       # the paper's α in the grid
    assert fomaml.CostSettings.at("quick").steps == (1, 3)
    assert fomaml.CostSettings.at("book").steps[-1] == 10
