"""Sampling trajectories of a meta-batch: every task, every trajectory, one time step at a time.

The batch is a :class:`Trajectories` of tensors shaped [tasks, trajectories, time, ...]. An
episode that ends before the horizon (the navigation agent reached its goal) keeps its slots,
with ``mask`` 0 from the step after its end: every sum over time in the package is weighted by
``mask``, so the slots after an episode's end count for nothing.

An environment here is any object with ``obs_dim``, ``act_dim``, ``horizon``,
``reset(tasks, trajectories) -> obs [tasks, N, obs_dim]`` and
``step(actions) -> (obs, reward [tasks, N], done [tasks, N])``: :class:`~mlcourse.rl.navigation.Navigation2D`
(torch, on the device) and :class:`~mlcourse.rl.cheetah.HalfCheetahTasks` (MuJoCo, on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_count
from ..nets import Params
from .policy import GaussianPolicy, sample


@dataclass
class Trajectories:
    """obs [tasks, N, T, obs_dim], actions [tasks, N, T, act_dim] (as sampled, before any clipping
    by the environment), rewards and mask [tasks, N, T]."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor

    @property
    def returns(self) -> torch.Tensor:
        """Undiscounted return of each trajectory, [tasks, N]: the number the papers report."""
        return (self.rewards * self.mask).sum(-1)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.rewards.shape)

    def __getitem__(self, index) -> "Trajectories":
        """A subset of the tasks (an int index keeps the task dimension)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Trajectories(self.obs[index], self.actions[index], self.rewards[index], self.mask[index])


def rollout(env, policy: GaussianPolicy, params: Params, tasks, trajectories: int, per_task: bool = False,
            generator=None) -> Trajectories:
    """``trajectories`` episodes of π_params on each task of ``tasks`` (no gradient).

    per_task: params hold one φ_i per task (leading task dimension), else one θ shared by all.
    """
    check_count("trajectories", trajectories)
    if policy.obs_dim != env.obs_dim or policy.act_dim != env.act_dim:
        raise ValueError(f"the policy maps {policy.obs_dim} observations to {policy.act_dim} actions; "
                         f"the environment has {env.obs_dim} and {env.act_dim}.")
    obs_list, act_list, rew_list, mask_list = [], [], [], []
    with torch.no_grad():
        obs = env.reset(tasks, trajectories)
        alive = torch.ones(obs.shape[:2], device=obs.device, dtype=obs.dtype)
        for _ in range(env.horizon):
            actions = sample(policy, params, obs, per_task, generator)
            next_obs, reward, done = env.step(actions)
            obs_list.append(obs)
            act_list.append(actions)
            rew_list.append(reward * alive)
            mask_list.append(alive)
            alive = alive * (~done).to(alive.dtype)
            obs = next_obs
    return Trajectories(torch.stack(obs_list, 2), torch.stack(act_list, 2), torch.stack(rew_list, 2),
                        torch.stack(mask_list, 2))
