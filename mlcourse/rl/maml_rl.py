"""MAML for reinforcement learning (Finn et al. 2017, section 3.3).

A task is an MDP M_i ~ p(M). Adaptation is one policy-gradient step from the meta-parameters θ,

    φ_i = θ + α ∇θ V(θ, M_i),     ∇θ V estimated from N trajectories of π_θ on M_i,

and θ is trained so that the adapted policies do well, max_θ Σ_i V(φ_i(θ), M_i), by

    θ ← θ + β ∇θ Σ_i V(θ + α ∇θ V(θ, M_i), M_i)

estimated from fresh trajectories of π_φi. The meta-gradient is (I + α ∇²θ V(θ, M_i)) ∇φ V(φ_i, M_i):
it needs an estimate of the Hessian of V, and a Monte-Carlo estimate of a Hessian has two parts,

    ∇²V = E[ Σ_t ∇² log π(a_t|s_t) A_t ]  +  E[ Σ_t ∇ log π(τ_{≤t}) ∇ log π(τ_{≤t})ᵀ A_t ],

the second coming from the dependence of the *sampling distribution* of the inner trajectories on
θ. Differentiating the usual surrogate Σ_t log π(a_t|s_t) A_t twice gives only the first part (the
estimator of the original implementation, ``estimator="maml"``: biased). The DiCE objective of
Foerster et al. (2018), here in the form with a baseline of Farquhar et al. (2019),

    L_DiCE(θ) = Σ_t [ □(Σ_{t'≤t} log π(a_t'|s_t')) − □(Σ_{t'<t} log π(a_t'|s_t')) ] A_t,    □(x) = exp(x − ⊥x),

has value 0, gradient Σ_t ∇log π(a_t|s_t) A_t (the policy gradient) and a second derivative whose
expectation is the exact Hessian of V (``estimator="dice"``, the default). ``estimator="lvc"``
keeps only the current step in □ (the low-variance curvature of Rothfuss et al. 2019: lower
variance, biased). ``first_order=True`` drops dφ_i/dθ entirely (first-order MAML).

What the DiCE meta-gradient (I + α Ĥ_i) ĝ_i(φ_i) estimates, exactly: Ĥ_i is unbiased for ∇²V, but
φ_i and Ĥ_i come from the same N trajectories, so its expectation differs from the gradient of
V(θ + α∇V(θ)) by O(α²/N); and it equals the gradient of the expected return after a *sampled* step,
E_τ[V(θ + α ĝ(τ))], up to O(α²) (Rothfuss et al. 2019: the score-function term of the inner
sampling distribution in that gradient is, to first order in α, the DiCE Hessian's outer-product
term). The tests check it against finite differences of the closed form on a linear-quadratic
problem. With γ < 1 the advantages discount from the current step (γ^(k−t)), as is common practice
and as in the reference code.

Meta-optimisers: :class:`~mlcourse.rl.trpo.TRPO` (the paper's, KL ≤ 0.01) or any torch optimizer
on the meta-policy-gradient (e.g. Adam). ``inner_steps=0`` turns the same code into multi-task
policy-gradient training on the task distribution (the "pretrained" baseline of the paper).

Everything is batched: rollouts step all tasks × trajectories at once, and the per-task work
(the inner step, the adapted policy's surrogate and KL) is one ``torch.func.vmap`` over tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import grad, vmap

from ..checks import check_count, check_positive
from ..meta.learner import Learner, MetaGradient, apply_gradients
from ..nets import Params, forward, init_params
from .policy import GaussianPolicy, gaussian_kl, gaussian_log_prob
from .returns import advantages, check_factor
from .rollout import Trajectories, rollout
from .trpo import TRPO

ESTIMATORS = ("dice", "lvc", "maml")


def magic_box(x: torch.Tensor) -> torch.Tensor:
    """DiCE's □(x) = exp(x − ⊥x): evaluates to 1, and ∇□(x) = □(x) ∇x at every order."""
    return torch.exp(x - x.detach())


def inner_objective(logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, estimator: str = "dice"):
    """The inner surrogate of one task, (1/#steps) Σ_{n,t} w_{n,t} A_{n,t}; its gradient is the
    policy gradient for every estimator, its Hessian differs (see the module docstring).

    The sum is averaged over all valid time steps of all trajectories, as in the reference code:
    for episodes of fixed length H the gradient is ∇V/H, which is what makes α = 0.1 a sensible step.

    logp, adv, mask: [N, T] (log π(a_t|s_t) with a graph to the parameters; advantages and mask constant).
    """
    lp = logp * mask
    if estimator == "dice":
        before_and_now = lp.cumsum(-1)                       # Σ_{t'≤t} log π(a_t'|s_t') per trajectory
        weight = magic_box(before_and_now) - magic_box(before_and_now - lp)
    elif estimator == "lvc":
        weight = magic_box(lp)
    elif estimator == "maml":
        weight = lp
    else:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    return (weight * adv * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class MetaBatch:
    """What one meta-iteration samples: the tasks, the inner trajectories of π_θ with their
    advantages, and the outer trajectories of the adapted π_φi with theirs."""

    tasks: torch.Tensor
    inner: Trajectories
    inner_adv: torch.Tensor
    outer: Trajectories
    outer_adv: torch.Tensor

    def subsample(self, trajectories: int) -> "MetaBatch":
        """The first ``trajectories`` trajectories of every task (inner and outer), same advantages."""
        n = slice(0, trajectories)
        cut = lambda t: Trajectories(t.obs[:, n], t.actions[:, n], t.rewards[:, n], t.mask[:, n])  # noqa: E731
        return MetaBatch(self.tasks, cut(self.inner), self.inner_adv[:, n], cut(self.outer), self.outer_adv[:, n])

    def __getitem__(self, index) -> "MetaBatch":
        """The tasks ``index`` (a slice or index tensor) of the batch: a process's share of it."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return MetaBatch(self.tasks[index], self.inner[index], self.inner_adv[index], self.outer[index],
                         self.outer_adv[index])

    @property
    def num_tasks(self) -> int:
        return self.tasks.shape[0]


class MAMLRL(Learner):
    """MAML for RL on a batched environment with a Gaussian policy. A task batch is a tensor of
    tasks (e.g. goals); its D^tr and D^ts are the trajectories sampled before and after adaptation.

    >>> env = Navigation2D()
    >>> learner = MAMLRL(env, GaussianPolicy(2, 2), inner_lr=0.1, trajectories=20)
    >>> theta = learner.init_params()
    >>> metrics = learner.step(theta, TRPO(max_kl=0.01), env.sample_tasks(20))
    """

    def __init__(self, env, policy: GaussianPolicy, inner_lr: float = 0.1, trajectories: int = 20,
                 gamma: float = 0.99, gae_lambda: float = 1.0, estimator: str = "dice", first_order: bool = False,
                 inner_steps: int = 1, normalize_advantages: bool = True):
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
        if inner_steps not in (0, 1):
            raise ValueError(f"inner_steps must be 1 (MAML) or 0 (multi-task training without adaptation), "
                             f"got {inner_steps!r}; more adaptation steps are available at evaluation "
                             "(adaptation_curve).")
        self.env, self.policy = env, policy
        self.loss_kind = "negative surrogate return"
        self.inner_lr = check_positive("inner_lr (α)", inner_lr)
        self.trajectories = check_count("trajectories", trajectories)
        self.gamma = check_factor("gamma (γ)", gamma)
        self.gae_lambda = check_factor("gae_lambda (λ)", gae_lambda)
        self.estimator, self.first_order, self.inner_steps = estimator, bool(first_order), inner_steps
        self.normalize_advantages = bool(normalize_advantages)

    def __repr__(self) -> str:
        kind = "multi-task PG" if self.inner_steps == 0 else ("first-order MAML" if self.first_order else "MAML")
        return (f"{kind}(α={self.inner_lr}, trajectories={self.trajectories}, γ={self.gamma}, "
                f"λ={self.gae_lambda}, estimator={self.estimator})")

    def init_params(self, device=None, dtype=None) -> Params:
        """θ: the policy's initial parameters, on ``device`` (default: the environment's)."""
        return init_params(self.policy, self.env.device if device is None else device, dtype)

    # --- pieces -------------------------------------------------------------------------------
    def advantages(self, traj: Trajectories) -> torch.Tensor:
        return advantages(traj, self.gamma, self.gae_lambda, self.normalize_advantages)

    def _adapt_one(self, params: Params, obs, actions, mask, adv, lr) -> Params:
        """φ = params + α ∇ L_in(params) for one task's trajectories [N, T, ...]."""
        def objective(p):
            mean, log_std = forward(self.policy, p, obs)
            return inner_objective(gaussian_log_prob(mean, log_std, actions), adv, mask, self.estimator)

        if self.first_order:
            start = {k: p.detach() for k, p in params.items()}
            g = grad(objective)(start)
            # The value is φ; the gradient with respect to θ passes straight through (dφ/dθ = I).
            return {k: p + lr * g[k].detach() for k, p in params.items()}
        g = grad(objective)(params)
        return {k: p + lr * g[k] for k, p in params.items()}

    def inner_step(self, params: Params, traj: Trajectories, adv: torch.Tensor | None = None, per_task: bool = False,
                   lr: float | None = None) -> Params:
        """φ_i = params + α ∇ V̂(params, M_i) for every task of ``traj``: a dict of [tasks, ...] tensors,
        differentiable with respect to params (θ)."""
        adv = self.advantages(traj) if adv is None else adv
        lr = self.inner_lr if lr is None else lr
        fn = vmap(self._adapt_one, in_dims=(0 if per_task else None, 0, 0, 0, 0, None))
        return fn(params, traj.obs, traj.actions, traj.mask, adv, lr)

    def _outer_one(self, phi, obs, actions, mask, adv, old_logp, old_mean, old_log_std, fresh: bool):
        """Surrogate and KL of one task's adapted policy π_φ on its outer trajectories."""
        mean, log_std = forward(self.policy, phi, obs)
        logp = gaussian_log_prob(mean, log_std, actions)
        if fresh:  # the old policy is the current one
            old_logp, old_mean, old_log_std = logp.detach(), mean.detach(), log_std.detach()
        count = mask.sum().clamp(min=1)
        surrogate = (torch.exp(logp - old_logp) * adv * mask).sum() / count
        kl = (gaussian_kl(old_mean, old_log_std, mean, log_std) * mask).sum() / count
        return surrogate, kl, (old_logp, old_mean, old_log_std)

    def objective(self, theta: Params, batch: MetaBatch, old=None, phi: Params | None = None):
        """Per-task surrogate L_i(θ) = E_{π_φi_old}[π_φi(θ)/π_φi_old · A] and KL(π_φi_old ‖ π_φi(θ)), each
        [tasks], differentiable in θ through the inner step; and the old policy's outputs (for reuse
        as ``old``; None means the old policy is the current one). ``phi``: the adapted parameters
        φ_i(θ) when already computed (with their graph to θ)."""
        fresh = old is None
        if fresh:
            shape = batch.outer.rewards.shape
            z = batch.outer.rewards.new_zeros(shape)
            old = (z, z[..., None].expand(*shape, self.policy.act_dim), z[..., None].expand(*shape, self.policy.act_dim))
        if self.inner_steps == 0:
            phi, phi_dim = theta, None
        else:
            phi = self.inner_step(theta, batch.inner, batch.inner_adv) if phi is None else phi
            phi_dim = 0
        fn = vmap(lambda *a: self._outer_one(*a, fresh), in_dims=(phi_dim,) + (0,) * 7)
        o = batch.outer
        return fn(phi, o.obs, o.actions, o.mask, batch.outer_adv, *old)

    # --- one meta-iteration -------------------------------------------------------------------
    def sample(self, theta: Params, tasks: torch.Tensor, generator=None, keep_graph: bool = False):
        """Inner trajectories of π_θ, the adapted φ_i, outer trajectories of π_φi, as a :class:`MetaBatch`.

        keep_graph=True also returns φ_i(θ) with its graph to θ (for the meta-gradient)."""
        start = {k: p.detach() for k, p in theta.items()}
        inner = rollout(self.env, self.policy, start, tasks, self.trajectories, generator=generator)
        inner_adv = self.advantages(inner)
        phi = None
        if self.inner_steps:
            phi = self.inner_step(theta if keep_graph else start, inner, inner_adv)
            outer = rollout(self.env, self.policy, {k: v.detach() for k, v in phi.items()}, tasks,
                            self.trajectories, per_task=True, generator=generator)
        else:
            outer = rollout(self.env, self.policy, start, tasks, self.trajectories, generator=generator)
        batch = MetaBatch(tasks, inner, inner_adv, outer, self.advantages(outer))
        return (batch, phi) if keep_graph else batch

    def meta_gradient(self, theta: Params, batch: MetaBatch | torch.Tensor) -> MetaGradient:
        """∇θ (1/n) Σ_i L_i(θ), the meta-policy-gradient (of the return: ascend it), and per task the
        mean return before and after adaptation. ``batch``: sampled trajectories (a
        :class:`MetaBatch`) or the tasks to sample them for."""
        if not isinstance(batch, MetaBatch):
            batch = self.sample(theta, batch)
        surrogate, _, _ = self.objective(theta, batch)
        grads = torch.autograd.grad(surrogate.mean(), list(theta.values()))
        metrics = {"loss": -surrogate.detach(), "return_before": batch.inner.returns.mean(1),
                   "return_after": batch.outer.returns.mean(1)}
        return MetaGradient(dict(zip(theta.keys(), grads)), metrics)

    def adapt(self, theta: Params, tasks: torch.Tensor, steps: int | None = None, generator=None) -> Params:
        """φ_i for every task after ``steps`` (default 1) policy-gradient steps, each on freshly
        sampled trajectories of the current policy; stacked along a task dimension, no graph."""
        steps = 1 if steps is None else check_count("steps", steps)
        params, per_task = {k: p.detach() for k, p in theta.items()}, False
        for _ in range(steps):
            traj = rollout(self.env, self.policy, params, tasks, self.trajectories, per_task=per_task,
                           generator=generator)
            params = {k: v.detach() for k, v in self.inner_step(params, traj, per_task=per_task).items()}
            per_task = True
        return params

    def evaluate(self, theta: Params, tasks: torch.Tensor, steps: int | None = None) -> dict[str, torch.Tensor]:
        """The mean return of every task's trajectories after ``steps`` (default 1) adaptation steps."""
        curve = self.adaptation_curve(theta, tasks, steps=1 if steps is None else steps)
        return {"return": curve[:, -1]}

    def step(self, theta: Params, optimizer, tasks: torch.Tensor | MetaBatch,
             generator=None) -> dict[str, torch.Tensor]:
        """One meta-update of θ (in place) with ``optimizer``: a :class:`TRPO` or a torch optimizer
        (which then ascends the meta-policy-gradient). ``tasks``: the tasks to sample trajectories
        for, or trajectories already sampled (a :class:`MetaBatch`). Returns the mean return of the
        trajectories before adaptation (π_θ) and after (π_φi), and the step's diagnostics, as tensors.

        Under ``torch.distributed`` each process passes its share of the tasks; the update is the
        one of a single process holding all of them (TRPO reduces its quantities across processes,
        a torch optimizer gets the averaged meta-gradient)."""
        from .. import distributed

        if not isinstance(optimizer, (TRPO, torch.optim.Optimizer)):
            raise TypeError(f"optimizer must be a TRPO or a torch.optim.Optimizer, got {type(optimizer).__name__}.")
        if isinstance(tasks, MetaBatch):
            batch, phi = tasks, None
        else:
            batch, phi = self.sample(theta, tasks, generator, keep_graph=True)
        metrics = distributed.average({"return_before": batch.inner.returns.mean(),
                                       "return_after": batch.outer.returns.mean()})
        if isinstance(optimizer, TRPO):
            old = []

            def objective():
                if not old:  # at the current θ: reuse φ_i(θ) from sampling
                    surrogate, kl, old_now = self.objective(theta, batch, None, phi)
                    old.append(tuple(t.detach() for t in old_now))
                else:
                    surrogate, kl, _ = self.objective(theta, batch, old[0])
                return surrogate.mean(), kl.mean()

            fisher_kl = None
            if optimizer.fisher_fraction < 1:
                small = batch.subsample(max(1, round(optimizer.fisher_fraction * self.trajectories)))
                fisher_kl = lambda: self.objective(theta, small)[1].mean()  # noqa: E731
            metrics.update(optimizer.step(theta, objective, fisher_kl))
        else:
            surrogate, _, _ = self.objective(theta, batch, None, phi)
            grads = torch.autograd.grad(-surrogate.mean(), list(theta.values()))  # ascend V
            apply_gradients(theta, distributed.average(dict(zip(theta, grads))))
            optimizer.step()
        return metrics

    # --- evaluation ---------------------------------------------------------------------------
    def adaptation_curve(self, theta: Params, tasks: torch.Tensor, steps: int = 1, lr: float | None = None,
                         trajectories: int | None = None, keep: bool = False, generator=None):
        """Mean return on every task after 0, 1, ..., ``steps`` adaptation steps, [tasks, steps + 1]
        (each step: sample N trajectories with the current parameters, take one policy-gradient
        step). ``keep=True`` also returns the list of sampled :class:`Trajectories`."""
        check_count("steps", steps, minimum=0)
        n = self.trajectories if trajectories is None else check_count("trajectories", trajectories)
        lr = self.inner_lr if lr is None else lr
        params, per_task = {k: p.detach() for k, p in theta.items()}, False
        curve, kept = [], []
        for k in range(steps + 1):
            traj = rollout(self.env, self.policy, params, tasks, n, per_task=per_task, generator=generator)
            curve.append(traj.returns.mean(1))
            kept.append(traj)
            if k < steps:
                params = {k2: v.detach() for k2, v in self.inner_step(params, traj, per_task=per_task,
                                                                      lr=lr).items()}
                per_task = True
        curve = torch.stack(curve, 1)
        return (curve, kept) if keep else curve
