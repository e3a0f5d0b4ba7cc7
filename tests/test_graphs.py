"""The GPU paths keep one semantics, checked on the CPU: the steps captured as CUDA graphs run on
meta tensors (no host synchronisation, no data-dependent Python control flow), TRPO's line search
without host reads takes the same step as the sequential one, and fit's graphed loop takes as many
real steps, with the same result, as the eager loop."""

import pytest
import torch

from mlcourse import graphs, train
from mlcourse.meta.imaml import IMAML
from mlcourse.meta.maml import MAML
from mlcourse.meta.reptile import Reptile
from mlcourse.nets import MLP, Conv4
from mlcourse.tasks import TaskBatch

META = torch.device("meta")


def _omniglot_like(tasks=2, ways=3, shots=2):
    x = torch.rand(tasks, ways * shots, 1, 28, 28)
    y = torch.arange(ways).repeat_interleave(shots).expand(tasks, -1)
    return TaskBatch(x, y, x.flip(1), y.flip(1))


@pytest.mark.parametrize("make", [
    lambda: Reptile(Conv4(3, channels=4, downsample="stride"), "cross_entropy", inner_steps=2, inner_batch=3,
                    inner_optimizer="adam", execution="vmap"),
    lambda: IMAML(Conv4(3, channels=4, downsample="stride"), "cross_entropy", inner_steps=2, cg_steps=2,
                  on_cg_failure="ignore", execution="vmap"),
    lambda: MAML(Conv4(3, channels=4, downsample="stride"), "cross_entropy", execution="vmap"),
], ids=["reptile", "imaml", "maml"])
def test_learner_steps_have_no_host_synchronisation(make):
    learner = make()
    batch = _omniglot_like()
    theta = learner.init_params("cpu")
    learner.step(theta, torch.optim.SGD(theta.values(), lr=0.1), batch)  # the one-time shape checks, on the CPU
    meta_theta = graphs.to_meta(theta)
    optimizer = torch.optim.SGD(meta_theta.values(), lr=0.1)
    metrics = graphs.check_capturable(lambda: learner.step(meta_theta, optimizer, batch.to(META)),
                                      type(learner).__name__)
    assert all(v.device == META for v in metrics.values())


def test_the_check_catches_a_host_synchronisation():
    learner = IMAML(MLP((1, 4, 1)), "mse", inner_steps=2, cg_steps=2, on_cg_failure="warn")  # checks CG on the host
    x = torch.rand(2, 5, 1)
    batch = TaskBatch(x, x, x, x)
    theta = learner.init_params("cpu")
    meta_theta = graphs.to_meta(theta)
    with pytest.raises(RuntimeError, match="IMAML reads a tensor's value on the host"):
        graphs.check_capturable(lambda: learner.meta_gradient(meta_theta, batch.to(META)), "IMAML")


def _navigation(device, line_search):
    from mlcourse.rl.maml_rl import MAMLRL
    from mlcourse.rl.navigation import Navigation2D
    from mlcourse.rl.policy import GaussianPolicy
    from mlcourse.rl.trpo import TRPO

    env = Navigation2D(horizon=6, device=device)
    torch.manual_seed(0)
    learner = MAMLRL(env, GaussianPolicy(2, 2, hidden=(8,)), inner_lr=0.1, trajectories=3)
    return env, learner, TRPO(max_kl=0.01, line_search=line_search)


def test_maml_rl_navigation_step_has_no_host_synchronisation():
    env, learner, trpo = _navigation(META, "parallel")
    theta = graphs.to_meta(learner.init_params("cpu"))
    metrics = graphs.check_capturable(lambda: learner.step(theta, trpo, env.sample_tasks(3)), "MAML-TRPO")
    assert metrics["step_fraction"].device == META
    env, learner, trpo = _navigation(META, "sequential")  # the sequential line search must decide on the host
    theta = graphs.to_meta(learner.init_params("cpu"))
    with pytest.raises(RuntimeError, match="reads a tensor's value on the host"):
        graphs.check_capturable(lambda: learner.step(theta, trpo, env.sample_tasks(3)), "MAML-TRPO")


@pytest.mark.parametrize("max_kl", [0.01, 0.5])
def test_parallel_and_sequential_line_searches_take_the_same_step(max_kl):
    results = []
    for line_search in ("sequential", "parallel"):
        env, learner, trpo = _navigation("cpu", line_search)
        trpo.max_kl = max_kl
        theta = learner.init_params()
        g = torch.Generator().manual_seed(1)
        for _ in range(2):
            batch = learner.sample(theta, env.sample_tasks(3, generator=g), generator=g)
            metrics = learner.step(theta, trpo, batch)
        results.append(({k: v.detach().clone() for k, v in theta.items()}, metrics))
    (a, ma), (b, mb) = results
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for k in ("improvement", "kl", "step_fraction"):
        torch.testing.assert_close(ma[k], mb[k])
    assert float(ma["step_fraction"]) > 0


def _emulated_recorder(calls):
    """A stand-in for CUDA-graph capture on the CPU: 'recording' takes no step, each replay runs the
    step again (what a replay does on the GPU) and returns the same metric tensors, refreshed."""
    def record(step):
        calls.append("record")
        metrics = None

        def replay():
            nonlocal metrics
            fresh = step()
            if metrics is None:
                metrics = fresh
            else:
                for k, v in fresh.items():
                    metrics[k].copy_(v)  # static outputs, overwritten at every replay
            return metrics

        return replay

    return record


def _problem():
    torch.manual_seed(0)
    maml = MAML(MLP((1, 8, 1)), "mse", inner_lr=0.01)
    theta = maml.init_params("cpu")
    optimizer = torch.optim.Adam(theta.values(), lr=1e-2)
    from mlcourse.tasks import SinusoidFamily

    family = SinusoidFamily()
    return theta, optimizer, lambda it: maml.step(theta, optimizer, family.sample(4, 5, device="cpu"))


def test_fit_with_a_graph_takes_as_many_steps_as_the_eager_loop(monkeypatch, tmp_path):
    theta, optimizer, step = _problem()
    eager = train.fit(step, 12, log_every=4, progress=False)
    expected = {k: v.detach().clone() for k, v in theta.items()}

    calls = []
    monkeypatch.setattr(train, "_RECORDER", _emulated_recorder(calls))
    theta, optimizer, step = _problem()
    graphed = train.fit(step, 12, log_every=4, progress=False, graph=True)
    assert calls == ["record"]                       # captured once, after the warm-up steps
    for k in expected:
        assert torch.equal(theta[k], expected[k])    # 12 real steps either way, bit for bit
    assert graphed.train == eager.train

    # Resuming a graphed run: the checkpoint is loaded before the capture, so it is replayed too.
    theta, optimizer, step = _problem()
    state = {"theta": theta, "optimizer": optimizer}
    train.fit(step, 5, progress=False, graph=True, checkpoint=tmp_path / "g.pt", state=state)
    theta2, optimizer2, step2 = _problem()
    train.fit(step2, 12, progress=False, graph=True, checkpoint=tmp_path / "g.pt",
              state={"theta": theta2, "optimizer": optimizer2})
    for k in expected:
        assert torch.equal(theta2[k], expected[k])


def test_graphed_step_is_eager_off_cuda():
    count = []
    step = graphs.GraphedStep(lambda: count.append(1) or {"x": torch.zeros(())}, torch.device("cpu"))
    for _ in range(5):
        step()
    assert len(count) == 5 and not step.graphed


def test_no_update_leaves_theta_and_sets_the_gradient():
    maml = MAML(MLP((1, 4, 1)), "mse", inner_lr=0.01)
    theta = maml.init_params("cpu")
    before = {k: v.detach().clone() for k, v in theta.items()}
    x = torch.rand(2, 5, 1)
    maml.step(theta, graphs.NoUpdate(), TaskBatch(x, x, x, x))
    assert all(torch.equal(theta[k], before[k]) for k in theta)
    assert all(theta[k].grad is not None and theta[k].grad.abs().sum() > 0 for k in theta)
