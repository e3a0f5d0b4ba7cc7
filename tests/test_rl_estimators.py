"""The policy-gradient, Hessian and meta-gradient estimators of mlcourse.rl, checked in expectation
against closed forms on a two-step linear-quadratic problem.

The problem: s_0 = x (fixed), a_t ~ N(W s_t + b, diag σ²), s_{t+1} = s_t + a_t, reward
r_t = −‖s_{t+1} − g‖², two steps, γ = 1. Every state is Gaussian, so
V(θ) = −Σ_t (‖E s_{t+1} − g‖² + tr Cov s_{t+1}) has a closed form in θ = (W, b, log σ), and so do
its gradient, its Hessian and the expected post-adaptation return V(θ + α∇V(θ)) (autograd of the
closed form, in float64). The package's surrogates average over all time steps, as the reference
code does, so they estimate ∇V/H with H = 2 steps here. Each estimate is averaged over many independent replicates and compared
within a multiple of its standard error; each test also shows that the biased alternative fails.
"""

import math

import pytest
import torch
from torch.func import functional_call, hessian, vmap

from mlcourse.rl.maml_rl import MAMLRL, MetaBatch, inner_objective
from mlcourse.rl.policy import GaussianPolicy, log_prob
from mlcourse.rl.returns import discounted_returns
from mlcourse.rl.rollout import rollout
from mlcourse.rl.trpo import flat, unflat

DT = torch.float64
X0 = torch.tensor([0.3, -0.2], dtype=DT)
GOAL = torch.tensor([0.5, 0.4], dtype=DT)
H = 2


class LinearQuadratic:
    """The two-step problem as a batched environment (tasks: goals [n, 2], here all equal)."""

    obs_dim, act_dim, horizon = 2, 2, 2
    device = torch.device("cpu")

    def reset(self, goals, trajectories):
        self.goal = goals[:, None, :]
        self.s = X0.expand(goals.shape[0], trajectories, 2).clone()
        return self.s

    def step(self, actions):
        self.s = self.s + actions
        reward = -(self.s - self.goal).pow(2).sum(-1)
        return self.s, reward, torch.zeros(reward.shape, dtype=torch.bool)


def policy_and_theta():
    policy = GaussianPolicy(2, 2, hidden=()).to(DT)
    theta = {"mean.layers.0.weight": torch.tensor([[-0.4, 0.1], [0.05, -0.3]], dtype=DT),
             "mean.layers.0.bias": torch.tensor([0.2, 0.1], dtype=DT),
             "log_std": torch.tensor([math.log(0.3), math.log(0.4)], dtype=DT)}
    return policy, {k: v.clone().requires_grad_(True) for k, v in theta.items()}


def value(theta):
    """V(θ) in closed form."""
    w, b, log_std = theta["mean.layers.0.weight"], theta["mean.layers.0.bias"], theta["log_std"]
    var = torch.diag(torch.exp(2 * log_std))
    mean, cov, v = X0, torch.zeros(2, 2, dtype=DT), 0.0
    for _ in range(2):
        a = torch.eye(2, dtype=DT) + w  # s' = (I + W) s + b + σ ε
        mean, cov = a @ mean + b, a @ cov @ a.T + var
        v = v - ((mean - GOAL).pow(2).sum() + torch.trace(cov))
    return v


def value_grad(theta):
    return dict(zip(theta, torch.autograd.grad(value(theta), list(theta.values()), create_graph=True)))


def post_adaptation_value(theta, alpha):
    """V(θ + α ∇V(θ)): the expected return after one exact policy-gradient step."""
    theta = {k: p.detach().requires_grad_(True) for k, p in theta.items()}
    g = value_grad(theta)
    return value({k: p + alpha * g[k] for k, p in theta.items()})


def learner(policy, estimator="dice", alpha=0.1, first_order=False):
    return MAMLRL(LinearQuadratic(), policy, inner_lr=alpha, trajectories=1, gamma=1.0, estimator=estimator,
                  first_order=first_order, normalize_advantages=False)


def sample(policy, params, replicates, n, per_task=False):
    traj = rollout(LinearQuadratic(), policy, params, GOAL.expand(replicates, 2), n, per_task=per_task)
    return traj, discounted_returns(traj.rewards, traj.mask, 1.0)  # returns-to-go, no baseline


def mean_and_se(samples):
    return samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])


def assert_within(estimate, se, exact, z=4.5):
    err = (estimate - exact).abs()
    assert (err <= z * se + 1e-12).all(), f"estimate {estimate} vs exact {exact}: |error| {err} > {z} SE {z * se}"


def test_policy_gradient_is_unbiased():
    torch.manual_seed(1)
    policy, theta = policy_and_theta()
    traj, adv = sample(policy, theta, 400, 250)
    alpha = 0.1
    phi = learner(policy, alpha=alpha).inner_step(theta, traj, adv)       # φ_m = θ + α ĝ_m, one per replicate
    per_replicate = torch.cat([((phi[k] - theta[k]) / alpha).detach().flatten(1) for k in theta], 1)
    estimate, se = mean_and_se(per_replicate)
    exact = flat(value_grad(theta).values()).detach() / H
    assert (se < 0.05 * exact.abs().max()).all()          # the test can tell a wrong gradient apart
    assert_within(estimate, se, exact)


def _hessians(policy, theta, traj, adv, estimator):
    """The Hessian of the inner objective for each replicate, [replicates, P, P]."""
    start = flat(theta.values()).detach()

    def objective(vector, obs, actions, mask, a):
        logp = log_prob(policy, unflat(vector, theta), obs, actions)
        return inner_objective(logp, a, mask, estimator)

    return vmap(hessian(objective), in_dims=(None, 0, 0, 0, 0))(start, traj.obs, traj.actions, traj.mask, adv)


def test_dice_hessian_is_unbiased_and_the_surrogates_hessian_is_not():
    torch.manual_seed(2)
    policy, theta = policy_and_theta()
    traj, adv = sample(policy, theta, 400, 250)
    exact = hessian(lambda v: value(unflat(v, theta)))(flat(theta.values()).detach()) / H
    estimate, se = mean_and_se(_hessians(policy, theta, traj, adv, "dice").flatten(1))
    assert_within(estimate, se, exact.flatten())
    for biased in ("maml", "lvc"):  # drop all, or the cross-time part, of the score-function term
        estimate, se = mean_and_se(_hessians(policy, theta, traj, adv, biased).flatten(1))
        assert ((estimate - exact.flatten()).abs() > 6 * se).any(), f"{biased} should be biased here"


def _meta_gradients(policy, theta, estimator, alpha, replicates, n, first_order=False, groups=30):
    """Meta-gradient estimates from independent replicates (inner and outer trajectories of their own),
    averaged within ``groups`` groups: [groups, P], each row an independent estimate."""
    maml = learner(policy, estimator, alpha, first_order)
    inner, inner_adv = sample(policy, {k: v.detach() for k, v in theta.items()}, replicates, n)
    phi = {k: v.detach() for k, v in maml.inner_step(theta, inner, inner_adv).items()}
    outer, outer_adv = sample(policy, phi, replicates, n, per_task=True)
    rows = []
    for part in torch.arange(replicates).chunk(groups):
        batch = MetaBatch(GOAL.expand(len(part), 2), inner[part], inner_adv[part], outer[part], outer_adv[part])
        rows.append(flat(maml.meta_gradient(theta, batch).grads.values()))
    return torch.stack(rows)


def test_meta_gradient_matches_finite_differences_of_the_post_adaptation_return():
    """E[∇θ L(φ(θ))] with DiCE = ∇θ V(θ + α∇V(θ)), the latter by central finite differences of the closed
    form. (The estimator's φ uses N sampled trajectories; its expectation differs from the exact-step
    objective by O(α²/N), far below the tolerance with N = 200.)"""
    torch.manual_seed(3)
    policy, theta = policy_and_theta()
    alpha, eps = 0.1, 1e-5
    start = flat(theta.values()).detach()
    # φ = θ + α ∇V/H and the outer surrogate estimates ∇V(φ)/H: the objective is V(θ + (α/H)∇V(θ))/H.
    fd = torch.stack([(post_adaptation_value(unflat(start + eps * e, theta), alpha / H)
                       - post_adaptation_value(unflat(start - eps * e, theta), alpha / H)) / (2 * eps)
                      for e in torch.eye(len(start), dtype=DT)]).detach() / H
    estimate, se = mean_and_se(_meta_gradients(policy, theta, "dice", alpha, 300, 200))
    assert_within(estimate, se, fd)
    # The surrogate's Hessian (the original implementation) and first-order MAML miss the second-order terms.
    for kind, first_order in (("maml", False), ("dice", True)):
        estimate, se = mean_and_se(_meta_gradients(policy, theta, kind, alpha, 300, 200, first_order))
        assert ((estimate - fd).abs() > 6 * se).any(), f"{kind} first_order={first_order} should be biased"


def test_every_estimator_has_the_policy_gradient_as_first_derivative():
    torch.manual_seed(4)
    policy, theta = policy_and_theta()
    traj, adv = sample(policy, theta, 3, 5)
    grads = {}
    for est in ("dice", "lvc", "maml"):
        grads[est] = flat(learner(policy, est).inner_step(theta, traj, adv).values()).detach()
    torch.testing.assert_close(grads["dice"], grads["maml"])
    torch.testing.assert_close(grads["lvc"], grads["maml"])
    logp = log_prob(policy, theta, traj.obs[0], traj.actions[0])
    assert inner_objective(logp, adv[0], traj.mask[0], "dice").abs() < 1e-12   # DiCE's value is 0


def test_functional_call_agrees_with_the_module():
    policy, theta = policy_and_theta()
    mean, log_std = functional_call(policy, theta, (X0[None],))
    torch.testing.assert_close(mean[0], theta["mean.layers.0.weight"] @ X0 + theta["mean.layers.0.bias"])
    torch.testing.assert_close(log_std[0], theta["log_std"])


def test_unknown_estimator_is_rejected():
    with pytest.raises(ValueError, match="estimator must be one of"):
        inner_objective(torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2, 2), "reinforce")
