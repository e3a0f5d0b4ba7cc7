"""Half-cheetah locomotion tasks of Finn et al. (2017): run at a goal velocity, or in a goal direction.

The robot is gymnasium's ``HalfCheetah-v5`` (MuJoCo); only the reward changes with the task:

    velocity:  r_t = −|v_t − v_goal| − 0.05 ‖a_t‖²,   v_goal ~ U[0, 2]
    direction: r_t = d · v_t − 0.05 ‖a_t‖²,            d ∈ {−1, +1} with probability 1/2

where v_t is the forward velocity of the robot's root over the step (gymnasium's ``x_velocity``)
and a_t the action clipped to the action space [−1, 1]⁶. Episodes last H = 200 steps. The
17-dimensional observation does not contain the task: the policy must infer it from rewards.

A meta-batch of ``tasks × trajectories`` robots runs as one ``gymnasium.vector.SyncVectorEnv`` (MuJoCo
simulates on the CPU whatever device the policy is on). gymnasium and mujoco are imported only when
an environment is built, so ``import mlcourse.rl`` works without them
(``pip install "gymnasium[mujoco]"``, the ``rl`` extra of mlcourse).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from ..checks import check_count
from .navigation import check_horizon

KINDS = ("velocity", "direction")


def _import_gymnasium():
    try:
        import gymnasium
        import mujoco  # noqa: F401
    except ImportError as err:
        raise ImportError("the half-cheetah tasks need gymnasium with MuJoCo: pip install \"gymnasium[mujoco]\" "
                          f"(or the rl extra: pip install \"mlcourse[rl]\"); the import failed with: {err}") from err
    return gymnasium


def missing_dependencies() -> str | None:
    """None where the half-cheetah tasks can be built; otherwise what is missing and how to install it.

    A chapter calls this to skip its half-cheetah part with a message instead of stopping.
    """
    try:
        _import_gymnasium()
    except ImportError as err:
        return str(err)
    return None


@contextlib.contextmanager
def _quiet_stderr():
    """Silence what C libraries write to file descriptor 2 (Python's own errors still propagate)."""
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (some notebook front ends): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class HalfCheetahTasks:
    """A batch of half-cheetah tasks with the batched-environment interface of :mod:`mlcourse.rl.rollout`.

    kind: ``"velocity"`` (goal velocity) or ``"direction"`` (forward or backward).
    """

    obs_dim = 17
    act_dim = 6

    def __init__(self, kind: str = "velocity", horizon: int = 200, ctrl_cost: float = 0.05, device=None,
                 dtype=torch.float32, seed: int = 0):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
        _import_gymnasium()  # fail here, with the install command, rather than at the first reset
        self.kind = kind
        self.horizon = check_horizon(horizon)
        self.ctrl_cost = float(ctrl_cost)
        from .. import runtime

        self.device = runtime.device() if device is None else torch.device(device)
        self.dtype = dtype
        self._envs = None
        self._goals = None
        self._seed = int(seed)

    def __repr__(self) -> str:
        return f"HalfCheetahTasks(kind={self.kind!r}, horizon={self.horizon})"

    def sample_tasks(self, n: int, generator=None) -> torch.Tensor:
        """n goal velocities U[0, 2] or directions ±1, shape [n]."""
        check_count("number of tasks", n)
        u = torch.rand(n, generator=generator, dtype=self.dtype)
        goals = 2 * u if self.kind == "velocity" else torch.where(u < 0.5, -1.0, 1.0).to(self.dtype)
        return goals.to(self.device)

    def _vector_env(self, count: int):
        if self._envs is None or self._envs.num_envs != count:
            gymnasium = _import_gymnasium()
            if self._envs is not None:
                self._envs.close()
            with _quiet_stderr():  # MuJoCo's compiler warns about the model file once per robot
                self._envs = gymnasium.vector.SyncVectorEnv(
                    [lambda: gymnasium.make("HalfCheetah-v5", max_episode_steps=None) for _ in range(count)])
        return self._envs

    def reset(self, tasks: torch.Tensor, trajectories: int) -> torch.Tensor:
        check_count("trajectories", trajectories)
        if not isinstance(tasks, torch.Tensor) or tasks.dim() != 1:
            shape = tuple(tasks.shape) if isinstance(tasks, torch.Tensor) else type(tasks).__name__
            raise ValueError(f"tasks must be a tensor of goals of shape [tasks], got {shape}.")
        self._shape = (tasks.shape[0], trajectories)
        self._goals = tasks.detach().cpu().double().numpy().repeat(trajectories)
        envs = self._vector_env(tasks.shape[0] * trajectories)
        obs, _ = envs.reset(seed=self._seed)  # robot k gets seed + k: fresh seeds for every rollout
        self._seed += envs.num_envs
        return self._to_torch(obs).view(*self._shape, self.obs_dim)

    def step(self, actions: torch.Tensor):
        if self._goals is None:
            raise RuntimeError("call reset(tasks, trajectories) before step(actions).")
        if actions.shape != (*self._shape, self.act_dim):
            raise ValueError(f"actions must have shape {(*self._shape, self.act_dim)} ([tasks, trajectories, 6]), "
                             f"got {tuple(actions.shape)}.")
        a = np.clip(actions.detach().cpu().double().numpy().reshape(-1, self.act_dim), -1.0, 1.0)
        obs, _, terminated, truncated, info = self._envs.step(a)
        reward = self.task_reward(info["x_velocity"], a, self._goals)
        done = np.logical_or(terminated, truncated)
        view = lambda x: self._to_torch(x).view(self._shape)  # noqa: E731
        return self._to_torch(obs).view(*self._shape, self.obs_dim), view(reward), view(done).bool()

    def task_reward(self, velocity: np.ndarray, action: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """The task's reward from the forward velocity, the (clipped) action and the goal."""
        control = self.ctrl_cost * np.sum(np.square(action), axis=-1)
        forward = -np.abs(velocity - goal) if self.kind == "velocity" else goal * velocity
        return forward - control

    def _to_torch(self, x) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=self.dtype if np.asarray(x).dtype != bool else torch.bool,
                               device=self.device)

    def close(self) -> None:
        if self._envs is not None:
            self._envs.close()
            self._envs = None
