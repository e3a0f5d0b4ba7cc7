"""Returns, advantages and the linear feature baseline, batched over [tasks, trajectories, time].

Discounted sums over time are one matrix product with a [T, T] matrix of powers γ^(k−t), not a
Python loop: ``R_t = Σ_{k≥t} γ^(k−t) r_k``. Generalised advantage estimation (Schulman et al.
2016) is the same product with (γλ) applied to the TD errors δ_t = r_t + γ b(s_{t+1}) − b(s_t);
with λ = 1 it telescopes to A_t = R_t − b(s_t), the return minus the baseline.

The baseline b is the linear feature baseline of the MAML reference code (from rllab): per task,
a least-squares fit of the discounted returns on the features
(s, s², t/100, (t/100)², (t/100)³, 1) with a small ridge (1e-5), solved for all tasks at once.
"""

from __future__ import annotations

import torch

from ..checks import check_positive


def check_factor(name: str, value) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}.")
    return value


def _check_time(rewards: torch.Tensor, mask: torch.Tensor) -> None:
    if rewards.shape != mask.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and mask {tuple(mask.shape)} must have the same shape "
                         "[..., time].")


def discount_matrix(horizon: int, factor: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """M with M[k, t] = factor^(k−t) for k >= t, else 0: x @ M sums Σ_{k≥t} factor^(k−t) x_k."""
    k = torch.arange(horizon, device=device, dtype=torch.float64)
    power = k[:, None] - k[None, :]
    m = torch.where(power >= 0, factor ** power.clamp(min=0), torch.zeros((), dtype=torch.float64, device=device))
    return m.to(dtype)


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """R_t = Σ_{k≥t} γ^(k−t) r_k (zero after an episode's end), same shape as rewards [..., T]."""
    _check_time(rewards, mask)
    gamma = check_factor("gamma (γ)", gamma)
    m = discount_matrix(rewards.shape[-1], gamma, rewards.device, rewards.dtype)
    return ((rewards * mask) @ m) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimates A_t = Σ_k (γλ)^k δ_{t+k}, δ_t = r_t + γ b_{t+1} − b_t.

    The value after the last step (horizon or an episode's end) is taken as 0, as in the
    reference code.
    """
    _check_time(rewards, mask)
    if values.shape != rewards.shape:
        raise ValueError(f"values {tuple(values.shape)} must have the shape of rewards {tuple(rewards.shape)}.")
    gamma, lam = check_factor("gamma (γ)", gamma), check_factor("lambda (λ)", lam)
    values = values * mask
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], -1)
    deltas = (rewards + gamma * next_values - values) * mask
    m = discount_matrix(rewards.shape[-1], gamma * lam, rewards.device, rewards.dtype)
    return (deltas @ m) * mask


def baseline_features(obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(s, s², t/100, (t/100)², (t/100)³, 1) for obs [..., T, obs_dim]; rows after an episode's end are 0."""
    if obs.shape[:-1] != mask.shape:
        raise ValueError(f"obs {tuple(obs.shape)} must be mask {tuple(mask.shape)} plus an observation dimension.")
    o = obs.clamp(-10, 10)
    t = torch.arange(obs.shape[-2], device=obs.device, dtype=obs.dtype) / 100.0
    t = t[:, None].expand(*obs.shape[:-1], 1)
    feats = torch.cat([o, o * o, t, t**2, t**3, torch.ones_like(t)], -1)
    return feats * mask[..., None]


def fit_baseline(obs: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, reg: float = 1e-5) -> torch.Tensor:
    """Weights w_i of b_i(s_t) = features(s_t, t)·w_i, one per task, fitted on the discounted returns.

    obs [tasks, N, T, obs_dim], returns and mask [tasks, N, T]. Solves (FᵀF + reg·I) w = FᵀR for
    every task in one batched call, in float64 (the features' scales differ by orders of magnitude).
    """
    check_positive("reg", reg)
    if obs.dim() != 4:
        raise ValueError(f"obs must have shape [tasks, trajectories, time, obs_dim], got {tuple(obs.shape)}.")
    wide = torch.float32 if obs.device.type == "mps" else torch.float64  # mps has no float64
    f = baseline_features(obs, mask).flatten(1, 2).to(wide)       # [tasks, N·T, d]
    r = (returns * mask).flatten(1, 2).to(wide)                   # [tasks, N·T]
    eye = torch.eye(f.shape[-1], device=f.device, dtype=wide)
    lhs = f.transpose(1, 2) @ f + reg * eye
    rhs = (f.transpose(1, 2) @ r[..., None])
    return torch.linalg.solve(lhs, rhs)[..., 0].to(obs.dtype)


def baseline_values(weights: torch.Tensor, obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """b_i(s_t) for every step, [tasks, N, T]."""
    return (baseline_features(obs, mask) @ weights[:, None, :, None])[..., 0]


def normalize(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per task (leading dimension): (A − mean)/std over the steps where mask is 1."""
    dims = tuple(range(1, advantages.dim()))
    count = mask.sum(dims, keepdim=True).clamp(min=1)
    mean = (advantages * mask).sum(dims, keepdim=True) / count
    var = ((advantages - mean).pow(2) * mask).sum(dims, keepdim=True) / count
    return (advantages - mean) / (var.sqrt() + 1e-8) * mask


def advantages(traj, gamma: float = 0.99, lam: float = 1.0, normalized: bool = True, reg: float = 1e-5):
    """A_t for a :class:`~mlcourse.rl.rollout.Trajectories` batch: fit the baseline per task on the
    discounted returns, then GAE(γ, λ); ``normalized``: standardised per task (the reference code's
    ``center_adv``). No gradient flows through advantages."""
    with torch.no_grad():
        returns = discounted_returns(traj.rewards, traj.mask, gamma)
        weights = fit_baseline(traj.obs, returns, traj.mask, reg)
        values = baseline_values(weights, traj.obs, traj.mask)
        adv = gae(traj.rewards, values, traj.mask, gamma, lam)
        return normalize(adv, traj.mask) if normalized else adv
