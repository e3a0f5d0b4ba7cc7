"""2D navigation (Finn et al. 2017): a point agent walks from the origin to a goal it cannot see.

A task M_i is a goal g_i ~ U[-0.5, 0.5]². The state is the agent's position s_t ∈ R² (also the
observation; the goal is not observed, it must be inferred from rewards), an action is a
velocity a_t clipped to [-0.1, 0.1]², s_{t+1} = s_t + clip(a_t), and the reward is the negative
distance to the goal after the move, r_t = −‖s_{t+1} − g_i‖. An episode lasts H = 100 steps, or
ends earlier when both coordinates are within 0.01 of the goal (as in the reference code).

The environment is written in torch and steps a whole meta-batch at once: positions have shape
[tasks, trajectories, 2], so 20 tasks × 20 trajectories is one batched addition per time step, on
whatever device the tensors live. :mod:`mlcourse.rl.gym` exposes the same dynamics through the
gymnasium API.
"""

from __future__ import annotations

import torch

from ..checks import check_count, check_positive


def check_horizon(horizon) -> int:
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be a positive int (number of time steps), got {horizon!r}.")
    return horizon


class Navigation2D:
    """A batch of 2D navigation tasks: ``reset(goals, trajectories)`` then ``step(actions)``.

    >>> env = Navigation2D()
    >>> goals = env.sample_tasks(20)            # [20, 2]
    >>> obs = env.reset(goals, 20)              # [20, 20, 2]: every agent at the origin
    >>> obs, reward, done = env.step(actions)   # actions [20, 20, 2]
    """

    obs_dim = 2
    act_dim = 2

    def __init__(self, horizon: int = 100, goal_range: float = 0.5, max_action: float = 0.1,
                 goal_radius: float = 0.01, device=None, dtype=torch.float32):
        self.horizon = check_horizon(horizon)
        self.goal_range = check_positive("goal_range", goal_range)
        self.max_action = check_positive("max_action", max_action)
        self.goal_radius = float(goal_radius)
        if self.goal_radius < 0:
            raise ValueError(f"goal_radius must be >= 0 (0: never end early), got {goal_radius!r}.")
        from .. import runtime

        self.device = runtime.device() if device is None else torch.device(device)
        self.dtype = dtype
        self._position = None
        self._goals = None

    def __repr__(self) -> str:
        return (f"Navigation2D(horizon={self.horizon}, goals U[-{self.goal_range}, {self.goal_range}]², "
                f"actions clipped to ±{self.max_action})")

    def sample_tasks(self, n: int, generator=None) -> torch.Tensor:
        """n goals g_i ~ U[-goal_range, goal_range]², shape [n, 2]."""
        check_count("number of tasks", n)
        u = torch.rand(n, 2, generator=generator, device=self.device if generator is None else generator.device,
                       dtype=self.dtype)
        return ((2 * u - 1) * self.goal_range).to(self.device)

    def reset(self, goals: torch.Tensor, trajectories: int) -> torch.Tensor:
        """Start ``trajectories`` agents at the origin for each goal; returns observations [tasks, N, 2]."""
        check_count("trajectories", trajectories)
        if not isinstance(goals, torch.Tensor) or goals.dim() != 2 or goals.shape[1] != 2:
            shape = tuple(goals.shape) if isinstance(goals, torch.Tensor) else type(goals).__name__
            raise ValueError(f"goals must be a tensor of shape [tasks, 2], got {shape}.")
        self._goals = goals.to(self.device, self.dtype)
        self._position = torch.zeros(goals.shape[0], trajectories, 2, device=self.device, dtype=self.dtype)
        return self._position

    def step(self, actions: torch.Tensor):
        """Move every agent: returns (observations [tasks, N, 2], rewards [tasks, N], done [tasks, N])."""
        if self._position is None:
            raise RuntimeError("call reset(goals, trajectories) before step(actions).")
        if actions.shape != self._position.shape:
            raise ValueError(f"actions must have shape {tuple(self._position.shape)} ([tasks, trajectories, 2]), "
                             f"got {tuple(actions.shape)}.")
        position, reward, done = navigation_step(self._position, actions, self._goals[:, None, :],
                                                 self.max_action, self.goal_radius)
        self._position = position
        return position, reward, done


def navigation_step(position, action, goal, max_action: float = 0.1, goal_radius: float = 0.01):
    """One step of the dynamics for positions, actions and goals of any broadcastable shape [..., 2]."""
    position = position + action.clamp(-max_action, max_action)
    offset = position - goal
    reward = -torch.linalg.vector_norm(offset, dim=-1)
    done = (offset.abs() < goal_radius).all(-1)
    return position, reward, done
