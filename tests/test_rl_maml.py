"""MAML-RL's batched adaptation, the TRPO meta-step and the meta-training loop of mlcourse.rl."""

import pytest
import torch
from torch.func import hessian

from mlcourse.rl.maml_rl import MAMLRL
from mlcourse.rl.navigation import Navigation2D
from mlcourse.rl.policy import GaussianPolicy, distribution, gaussian_kl
from mlcourse.rl.trpo import TRPO, flat, unflat


def small(hidden=(16,), tasks=3, trajectories=4, horizon=15, seed=0, **kwargs):
    torch.manual_seed(seed)
    env = Navigation2D(horizon=horizon, device="cpu", dtype=torch.float64)
    learner = MAMLRL(env, GaussianPolicy(2, 2, hidden=hidden).double(), inner_lr=0.1, trajectories=trajectories,
                     **kwargs)
    theta = {k: v.double().detach().requires_grad_(True) for k, v in learner.init_params().items()}
    return env, learner, theta, env.sample_tasks(tasks)


def test_batched_adaptation_matches_a_loop_over_tasks():
    env, learner, theta, tasks = small()
    batch = learner.sample(theta, tasks)
    phi = learner.inner_step(theta, batch.inner, batch.inner_adv)
    for i in range(len(tasks)):
        one = learner.inner_step(theta, batch.inner[i], batch.inner_adv[i:i + 1])
        for k in theta:
            torch.testing.assert_close(phi[k][i], one[k][0])


def test_first_order_and_no_adaptation_variants():
    env, learner, theta, tasks = small(first_order=True)
    batch = learner.sample(theta, tasks)
    phi = learner.inner_step(theta, batch.inner, batch.inner_adv)
    key = "log_std"
    rows = [torch.autograd.grad(phi[key][0, j], theta[key], retain_graph=True)[0] for j in range(2)]
    torch.testing.assert_close(torch.stack(rows), torch.eye(2, dtype=torch.float64))   # dφ/dθ = I
    env, pretrain, theta, tasks = small(inner_steps=0)
    batch = pretrain.sample(theta, tasks)
    surrogate, kl, _ = pretrain.objective(theta, batch)
    assert surrogate.shape == (3,) and torch.all(kl.abs() < 1e-12)


def test_trpo_direction_is_the_natural_gradient_and_its_quadratic_kl_is_delta():
    env, learner, theta, tasks = small(hidden=(), trajectories=6)   # a linear policy: 8 parameters
    batch = learner.sample(theta, tasks)
    _, _, old = learner.objective(theta, batch)
    old = tuple(o.detach() for o in old)
    start = flat(theta.values()).detach()
    surrogate = lambda v: learner.objective(unflat(v, theta), batch, old)[0].mean()  # noqa: E731
    kl = lambda v: learner.objective(unflat(v, theta), batch, old)[1].mean()  # noqa: E731
    g = torch.func.grad(surrogate)(start)
    fisher = hessian(kl)(start)                          # through the inner step, explicitly
    natural = torch.linalg.solve(fisher + 1e-5 * torch.eye(len(start), dtype=start.dtype), g)
    trpo = TRPO(max_kl=0.01, cg_iters=len(start), backtrack=0.5, line_search_steps=30)
    metrics = trpo.step(theta, lambda: tuple(t.mean() for t in learner.objective(theta, batch, old)[:2]))
    step = flat(theta.values()).detach() - start
    assert metrics["step_fraction"] > 0
    full = step / metrics["step_fraction"]
    torch.testing.assert_close(full / full.norm(), natural / natural.norm(), rtol=1e-4, atol=1e-6)
    assert 0.5 * full @ fisher @ full == pytest.approx(0.01, rel=1e-3)


def test_trpo_meta_step_satisfies_the_kl_constraint_and_improves_the_surrogate():
    env, learner, theta, tasks = small(hidden=(16, 16), tasks=4, trajectories=5)
    batch = learner.sample(theta, tasks)
    before = {k: v.detach().clone() for k, v in theta.items()}
    surrogate_before, _, old = learner.objective(theta, batch)
    trpo = TRPO(max_kl=0.01)
    metrics = trpo.step(theta, lambda: tuple(t.mean() for t in learner.objective(theta, batch, old)[:2]))
    assert metrics["step_fraction"] > 0
    assert any(not torch.equal(before[k], theta[k]) for k in theta)

    # The KL between the adapted policies before and after the step, recomputed from scratch.
    def adapted(params):
        phi = learner.inner_step(params, batch.inner, batch.inner_adv)
        return distribution(learner.policy, {k: v.detach() for k, v in phi.items()}, batch.outer.obs, per_task=True)

    (m0, s0), (m1, s1) = adapted(before), adapted(theta)
    mask = batch.outer.mask
    kl = ((gaussian_kl(m0, s0, m1, s1) * mask).sum((1, 2)) / mask.sum((1, 2))).mean()
    assert 0 < kl.item() <= 0.01 + 1e-9
    assert kl.item() == pytest.approx(metrics["kl"].item(), rel=1e-6)
    surrogate_after, _, _ = learner.objective(theta, batch, old)
    assert surrogate_after.mean() > surrogate_before.mean()


def test_trpo_fisher_on_a_subsample_still_respects_the_constraint():
    env, learner, theta, tasks = small(hidden=(16, 16), tasks=4, trajectories=8)
    trpo = TRPO(max_kl=0.005, fisher_fraction=0.25)
    metrics = learner.step(theta, trpo, tasks)
    assert metrics["kl"] <= 0.005 and metrics["step_fraction"] > 0


def test_meta_training_improves_the_return_after_adaptation():
    env, learner, theta, _ = small(hidden=(32, 32), tasks=8, trajectories=8, horizon=30, seed=1)
    trpo = TRPO(max_kl=0.01)
    first = [learner.step(theta, trpo, env.sample_tasks(8))["return_after"] for _ in range(3)]
    for _ in range(12):
        learner.step(theta, trpo, env.sample_tasks(8))
    last = [learner.step(theta, trpo, env.sample_tasks(8))["return_after"] for _ in range(3)]
    assert torch.stack(last).mean() > torch.stack(first).mean() + 2


def test_adam_step_and_adaptation_curve():
    env, learner, theta, tasks = small()
    opt = torch.optim.Adam(theta.values(), lr=1e-2)
    before = {k: v.detach().clone() for k, v in theta.items()}
    metrics = learner.step(theta, opt, tasks)
    assert set(metrics) == {"return_before", "return_after"}
    assert any(not torch.equal(before[k], theta[k]) for k in theta)
    curve, kept = learner.adaptation_curve(theta, tasks, steps=2, keep=True)
    assert curve.shape == (3, 3) and len(kept) == 3
    torch.testing.assert_close(curve[:, 0], kept[0].returns.mean(1))


def test_clear_errors():
    env = Navigation2D(device="cpu")
    policy = GaussianPolicy(2, 2)
    with pytest.raises(ValueError, match="estimator must be one of"):
        MAMLRL(env, policy, estimator="reinforce")
    with pytest.raises(ValueError, match="inner_steps must be 1"):
        MAMLRL(env, policy, inner_steps=2)
    with pytest.raises(ValueError, match="inner_lr"):
        MAMLRL(env, policy, inner_lr=0)
    with pytest.raises(ValueError, match="gamma"):
        MAMLRL(env, policy, gamma=1.2)
    learner = MAMLRL(env, policy, trajectories=2)
    with pytest.raises(TypeError, match="TRPO or a torch.optim.Optimizer"):
        learner.step(learner.init_params(), "adam", env.sample_tasks(2))
    with pytest.raises(ValueError, match="max_kl"):
        TRPO(max_kl=-1)
    with pytest.raises(ValueError, match="fisher_fraction"):
        TRPO(fisher_fraction=0)
