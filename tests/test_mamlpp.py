"""MAML++ against independent references: with every option off it is MAML, bit for bit; with
them on its meta-gradient matches float64 finite differences of its meta-objective; and each
option does what it says (the multi-step loss weights and their annealing, one batch-norm set and
one rate per step, first order before the switch, the cosine schedule of β)."""

import math

import pytest
import torch

from mlcourse.meta.maml import MAML
from mlcourse.meta.mamlpp import MAMLPlusPlus, msl_weights
from mlcourse.nets import MLP, Conv4
from mlcourse.tasks import EpisodeSampler, SinusoidFamily, TaskBatch

F64 = torch.float64
OFF = dict(multi_step_loss=False, per_step_bn=False, per_step_rates=False)


def sinusoids(tasks=3, shots=4, queries=5, seed=0):
    return SinusoidFamily().sample(tasks, shots, queries, device="cpu", dtype=F64,
                                   generator=torch.Generator().manual_seed(seed))


def episodes(tasks=2, seed=0, size=28):
    torch.manual_seed(seed)
    images = (torch.rand(10, 6, size, size) * 255).to(torch.uint8)
    b = EpisodeSampler(images, ways=3, shots=1, queries=2, device="cpu").sample(tasks)
    return TaskBatch(b.x_tr.double(), b.y_tr, b.x_ts.double(), b.y_ts)


def finite_difference(fn, params, eps=1e-6, entries=None):
    """Central differences of fn with respect to every entry of params (or the first ``entries``
    entries of each tensor, to keep convolutional networks cheap)."""
    out = {}
    with torch.no_grad():
        for name, p in params.items():
            g = torch.full_like(p, float("nan"))
            for i in range(p.numel() if entries is None else min(entries, p.numel())):
                p.view(-1)[i] += eps
                up = float(fn(params))
                p.view(-1)[i] -= 2 * eps
                down = float(fn(params))
                p.view(-1)[i] += eps
                g.view(-1)[i] = (up - down) / (2 * eps)
            out[name] = g
    return out


def assert_close_where_known(analytic, numeric, **tol):
    for k in numeric:
        known = ~torch.isnan(numeric[k])
        torch.testing.assert_close(analytic[k][known], numeric[k][known], **tol, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("first_order", [False, True])
def test_with_every_option_off_it_is_maml(first_order):
    net = Conv4(3, channels=4, image_size=16)
    batch = episodes(size=16)
    plain = MAML(net, "cross_entropy", inner_lr=0.4, inner_steps=2, first_order=first_order)
    plus = MAMLPlusPlus(net, "cross_entropy", inner_lr=0.4, inner_steps=2, first_order=first_order, **OFF)
    theta = plain.init_params("cpu", F64)
    assert plus.init_params("cpu").keys() == theta.keys()
    a, b = plain.meta_gradient(theta, batch), plus.meta_gradient(theta, batch)
    for k in theta:
        torch.testing.assert_close(a.grads[k], b.grads[k], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a.metrics["loss"], b.metrics["loss"])
    torch.testing.assert_close(plain.evaluate(theta, batch, steps=3)["loss"], plus.evaluate(theta, batch, steps=3)["loss"])


def test_msl_and_per_step_rates_match_finite_differences():
    torch.manual_seed(1)
    learner = MAMLPlusPlus(MLP((1, 5, 5, 1)), "mse", inner_lr=0.1, inner_steps=3, per_step_bn=False,
                           msl_iterations=100)
    theta = learner.init_params("cpu", F64)
    expected = {f"lr/{j}/{k}" for j in range(3) for k in learner.net.state_dict()}
    assert {k for k in theta if k.startswith("lr/")} == expected
    with torch.no_grad():   # distinct rates per step and layer
        for k, v in theta.items():
            if k.startswith("lr/"):
                v.uniform_(0.02, 0.2)
    learner.iteration = 30
    batch = sinusoids()
    analytic = learner.meta_gradient(theta, batch).grads
    numeric = finite_difference(lambda p: learner.meta_loss(p, batch)[0], theta)
    assert_close_where_known(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_per_step_batch_norm_matches_finite_differences():
    torch.manual_seed(2)
    learner = MAMLPlusPlus(Conv4(3, channels=2, image_size=16), "cross_entropy", inner_lr=0.3, inner_steps=2,
                           msl_iterations=10)
    theta = learner.init_params("cpu", F64)
    assert not any(k in theta for k in learner.bn_names)
    expected = {f"bn/{j}/{k}" for j in range(2) for k in learner.bn_names}
    assert {k for k in theta if k.startswith("bn/")} == expected
    with torch.no_grad():
        for k, v in theta.items():
            if k.startswith("bn/"):
                v.add_(0.1 * torch.randn_like(v))
    batch = episodes(size=16)
    analytic = learner.meta_gradient(theta, batch).grads
    # every per-step batch-norm tensor and rate of the last block and the head, and two weights
    some = [k for k in theta if k.startswith(("bn/", "lr/")) and ("features.3" in k or "head" in k)]
    some += ["features.0.0.weight", "head.weight"]
    numeric = finite_difference(lambda p: learner.meta_loss({**theta, **p}, batch)[0],
                                {k: theta[k].detach().clone() for k in some}, entries=2)
    assert_close_where_known(analytic, numeric, rtol=1e-4, atol=1e-7)


def test_msl_weights_anneal_toward_the_last_step():
    assert msl_weights(5, 0.0) == pytest.approx([0.2] * 5)
    end = msl_weights(5, 1.0)
    assert end[:4] == pytest.approx([0.006] * 4) and end[4] == pytest.approx(1 - 4 * 0.006)
    for p in (0.0, 0.3, 0.7, 1.0):
        assert sum(msl_weights(5, p)) == pytest.approx(1.0)
    learner = MAMLPlusPlus(MLP((1, 4, 1)), "mse", inner_steps=3, per_step_bn=False, msl_iterations=10)
    learner.iteration = 10
    assert learner.step_weights() == [0.0, 0.0, 1.0]   # after the annealing: the last step only
    learner.iteration = 5
    assert learner.step_weights() == pytest.approx(msl_weights(3, 0.5))


def test_the_objective_is_the_weighted_sum_of_the_query_losses_after_each_step():
    learner = MAMLPlusPlus(MLP((1, 6, 6, 1)), "mse", inner_lr=0.05, inner_steps=3, per_step_bn=False,
                           msl_iterations=20)
    theta = learner.init_params("cpu", F64)
    batch = sinusoids()
    learner.iteration = 4
    objective, metrics = learner.meta_loss(theta, batch)
    curve = learner.adaptation_curve(theta, batch, steps=3)["loss"]          # [tasks, 4]
    weights = torch.tensor(msl_weights(3, 4 / 20), dtype=F64)
    torch.testing.assert_close(metrics["loss"], curve[:, 1:] @ weights)
    torch.testing.assert_close(metrics["final_loss"], curve[:, 3])
    torch.testing.assert_close(objective, (curve[:, 1:] @ weights).mean())


def test_each_step_uses_its_own_batch_norm_set_and_rates():
    learner = MAMLPlusPlus(Conv4(3, channels=4), "cross_entropy", inner_lr=0.3, inner_steps=2)
    theta = learner.init_params("cpu", F64)
    batch = episodes()
    before = learner.adaptation_curve(theta, batch, steps=2)["loss"]
    changed = dict(theta)
    changed["bn/1/features.3.1.weight"] = theta["bn/1/features.3.1.weight"] * 3
    after = learner.adaptation_curve(changed, batch, steps=2)["loss"]
    torch.testing.assert_close(after[:, :2], before[:, :2])       # step 1's set plays no part before step 2
    assert (after[:, 2] - before[:, 2]).abs().max() > 1e-6
    frozen = {**theta, **{k: torch.zeros_like(v) for k, v in theta.items() if k.startswith("lr/1/")}}
    phi1, phi2 = learner.adapt(frozen, batch, steps=1), learner.adapt(frozen, batch, steps=2)
    for k in learner._adapted_names():                            # a zero rate at step 2: no move
        torch.testing.assert_close(phi1[k], phi2[k])


def test_derivative_order_annealing_switches_from_first_to_second_order():
    net = MLP((1, 6, 6, 1))
    learner = MAMLPlusPlus(net, "mse", inner_lr=0.1, inner_steps=2, per_step_bn=False, per_step_rates=False,
                           multi_step_loss=False, first_order_iterations=5)
    theta = learner.init_params("cpu", F64)
    batch = sinusoids()
    first = MAML(net, "mse", inner_lr=0.1, inner_steps=2, first_order=True).meta_gradient(theta, batch).grads
    second = MAML(net, "mse", inner_lr=0.1, inner_steps=2).meta_gradient(theta, batch).grads
    for iteration, expected in [(0, first), (4, first), (5, second), (50, second)]:
        learner.iteration = iteration
        got = learner.meta_gradient(theta, batch).grads
        for k in theta:
            torch.testing.assert_close(got[k], expected[k], rtol=1e-12, atol=1e-14)


def test_cosine_annealing_of_beta_and_the_iteration_count():
    learner = MAMLPlusPlus(MLP((1, 4, 1)), "mse", inner_lr=0.01, inner_steps=1, per_step_bn=False,
                           cosine_iterations=4, min_outer_lr=1e-4)
    theta = learner.init_params("cpu")
    optimizer = torch.optim.Adam(theta.values(), lr=1e-2)
    family = SinusoidFamily()
    seen = []
    for _ in range(6):
        learner.step(theta, optimizer, family.sample(2, 3, device="cpu"))
        seen.append(optimizer.param_groups[0]["lr"])
    expected = [1e-4 + (1e-2 - 1e-4) * 0.5 * (1 + math.cos(math.pi * min(t, 4) / 4)) for t in range(6)]
    assert seen == pytest.approx(expected) and learner.iteration == 6
    state = learner.state_dict()
    fresh = MAMLPlusPlus(MLP((1, 4, 1)), "mse", per_step_bn=False)
    fresh.load_state_dict(state)
    assert fresh.iteration == 6


@pytest.mark.parametrize("make,message", [
    (lambda: MAMLPlusPlus(MLP(), "mse"), "per_step_bn=True needs batch-norm layers"),
    (lambda: MAMLPlusPlus(Conv4(5), multi_step_loss="yes"), "multi_step_loss must be True or False"),
    (lambda: MAMLPlusPlus(Conv4(5), msl_iterations=0), "msl_iterations must be an int >= 1"),
    (lambda: MAMLPlusPlus(Conv4(5), first_order_iterations=-1), "first_order_iterations must be an int >= 0"),
    (lambda: MAMLPlusPlus(Conv4(5), cosine_iterations=0), "cosine_iterations must be an int >= 1"),
    (lambda: MAMLPlusPlus(Conv4(5), min_outer_lr=0), "min_outer_lr"),
])
def test_bad_options(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_theta_of_other_options_is_refused():
    learner = MAMLPlusPlus(Conv4(3, channels=4), "cross_entropy", inner_steps=2)
    theta = MAML(Conv4(3, channels=4), "cross_entropy").init_params("cpu", F64)
    with pytest.raises(ValueError, match="θ does not match this MAML\\+\\+ learner's options"):
        learner.meta_gradient(theta, episodes())
