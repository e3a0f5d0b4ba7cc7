"""The Gaussian MLP policy π_θ(a|s) = N(μ_θ(s), diag σ_θ²) of the MAML experiments.

μ_θ is an MLP (two hidden layers of 100 ReLU units in Finn et al. 2017); log σ_θ is a learned
vector that does not depend on the state, initialised at log 1 = 0 as in the reference code. As
everywhere in the course, the module only describes the computation and the numbers live in a
parameter dict (θ, or a φ_i per task), so one module serves a whole meta-batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import vmap

from ..checks import check_count, check_positive
from ..nets import MLP, Params, forward

LOG_2PI = math.log(2 * math.pi)


class GaussianPolicy(nn.Module):
    """μ_θ(s) by an MLP of the given hidden sizes, and a state-independent log σ_θ."""

    def __init__(self, obs_dim: int, act_dim: int, hidden=(100, 100), init_std: float = 1.0):
        super().__init__()
        check_count("obs_dim", obs_dim)
        check_count("act_dim", act_dim)
        check_positive("init_std", init_std)
        self.mean = MLP((obs_dim, *hidden, act_dim))
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))
        self.obs_dim, self.act_dim = obs_dim, act_dim

    def forward(self, obs):
        mean = self.mean(obs)
        return mean, self.log_std.expand_as(mean)


def check_obs(policy: GaussianPolicy, obs: torch.Tensor) -> None:
    if obs.shape[-1] != policy.obs_dim:
        raise ValueError(f"observations end in size {obs.shape[-1]} (shape {tuple(obs.shape)}) "
                         f"but the policy reads {policy.obs_dim}-dimensional observations.")


def distribution(policy: GaussianPolicy, params: Params, obs, per_task: bool = False):
    """(μ, log σ) of π_params(·|obs), each of shape obs.shape[:-1] + [act_dim].

    per_task: params carry a leading task dimension (one φ_i per task) matching obs's first one.
    """
    check_obs(policy, obs)
    if per_task:
        return vmap(lambda p, o: forward(policy, p, o))(params, obs)
    return forward(policy, params, obs)


def gaussian_log_prob(mean, log_std, actions):
    """log N(actions; mean, diag σ²), summed over the action dimension."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * LOG_2PI).sum(-1)


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q):
    """KL(N(mean_p, σ_p²) ‖ N(mean_q, σ_q²)) for diagonal Gaussians, summed over the action dimension."""
    var_p, var_q = torch.exp(2 * log_std_p), torch.exp(2 * log_std_q)
    return (log_std_q - log_std_p + (var_p + (mean_p - mean_q).pow(2)) / (2 * var_q) - 0.5).sum(-1)


def log_prob(policy: GaussianPolicy, params: Params, obs, actions, per_task: bool = False):
    """log π_params(actions | obs), one number per (obs, action) pair."""
    mean, log_std = distribution(policy, params, obs, per_task)
    if actions.shape != mean.shape:
        raise ValueError(f"actions have shape {tuple(actions.shape)}; for observations of shape "
                         f"{tuple(obs.shape)} the policy expects {tuple(mean.shape)}.")
    return gaussian_log_prob(mean, log_std, actions)


def sample(policy: GaussianPolicy, params: Params, obs, per_task: bool = False, generator=None):
    """a ~ π_params(·|obs) (no gradient)."""
    with torch.no_grad():
        mean, log_std = distribution(policy, params, obs, per_task)
        noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        return mean + torch.exp(log_std) * noise
