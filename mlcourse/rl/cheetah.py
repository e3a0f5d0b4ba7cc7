"""Half-cheetah locomotion tasks of Finn et al. (2017): run at a goal velocity, or in a goal direction.

The robot is gymnasium's ``HalfCheetah-v5`` (MuJoCo); only the reward changes with the task:

    velocity:  r_t = −|v_t − v_goal| − 0.05 ‖a_t‖²,   v_goal ~ U[0, 2]
    direction: r_t = d · v_t − 0.05 ‖a_t‖²,            d ∈ {−1, +1} with probability 1/2

where v_t is the forward velocity of the robot's root over the step (gymnasium's ``x_velocity``)
and a_t the action clipped to the action space [−1, 1]⁶. Episodes last H = 200 steps. The
17-dimensional observation does not contain the task: the policy must infer it from rewards.

A meta-batch of ``tasks × trajectories`` robots runs as one ``gymnasium.vector.SyncVectorEnv`` (MuJoCo
simulates on the CPU whatever device the policy is on), or, with ``workers=W``, split over W worker
processes that each step their share of the robots at the same time (simulation dominates the
cost of a meta-iteration; the results are identical, robot k always gets seed ``seed + k``).
gymnasium and mujoco are imported only when an environment is built, so ``import mlcourse.rl``
works without them (``pip install "gymnasium[mujoco]"``, the ``rl`` extra of mlcourse).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys

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
    workers: processes that simulate the robots in parallel (1: all in this process).
    """

    obs_dim = 17
    act_dim = 6

    def __init__(self, kind: str = "velocity", horizon: int = 200, ctrl_cost: float = 0.05, device=None,
                 dtype=torch.float32, seed: int = 0, workers: int = 1):
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
        self.workers = check_count("workers", workers)

    def __repr__(self) -> str:
        return f"HalfCheetahTasks(kind={self.kind!r}, horizon={self.horizon})"

    def sample_tasks(self, n: int, generator=None) -> torch.Tensor:
        """n goal velocities U[0, 2] or directions ±1, shape [n]."""
        check_count("number of tasks", n)
        u = torch.rand(n, generator=generator, dtype=self.dtype)
        goals = 2 * u if self.kind == "velocity" else torch.where(u < 0.5, -1.0, 1.0).to(self.dtype)
        return goals.to(self.device)

    def state_dict(self) -> dict:
        """What a checkpoint needs to continue the same rollouts: the next robots' seed."""
        return {"seed": self._seed}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or not isinstance(state.get("seed"), int):
            raise ValueError(f"expected a state {{'seed': int}}, got {state!r}.")
        self._seed = state["seed"]

    def _vector_env(self, count: int):
        if self._envs is None or self._envs.num_envs != count:
            if self._envs is not None:
                self._envs.close()
            self._envs = _robots(count) if self.workers == 1 else _ParallelRobots(count, self.workers)
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

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the workers end with their pipes
            pass


def _robots(count: int):
    """``count`` half-cheetahs in one SyncVectorEnv of this process."""
    gymnasium = _import_gymnasium()
    with _quiet_stderr():  # MuJoCo's compiler warns about the model file once per robot
        return gymnasium.vector.SyncVectorEnv(
            [lambda: gymnasium.make("HalfCheetah-v5", max_episode_steps=None) for _ in range(count)])


def _worker_main(count: int) -> None:
    """A worker process (``python -m mlcourse.rl.cheetah --worker COUNT``): its share of the robots,
    stepped on request (reset, step, close) read from stdin, answers written to stdout."""
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    envs = _robots(count)
    try:
        while True:
            command, payload = pickle.load(requests)
            if command == "reset":
                obs, _ = envs.reset(seed=payload)
                answer = obs
            elif command == "step":
                obs, _, terminated, truncated, info = envs.step(payload)
                answer = (obs, terminated, truncated, info["x_velocity"])
            else:
                break
            pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
            answers.flush()
    except EOFError:  # the parent went away
        pass
    finally:
        envs.close()


class _ParallelRobots:
    """The robots of a meta-batch split over ``workers`` processes, with the SyncVectorEnv calls
    that :class:`HalfCheetahTasks` makes (reset with a base seed, step with all actions). The
    workers are this package's own processes, started with the same Python (no re-import of the
    caller's main module, so it works from notebooks and scripts alike)."""

    def __init__(self, count: int, workers: int):
        _import_gymnasium()
        self.num_envs = count
        workers = min(workers, count)
        sizes = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
        self.bounds = np.cumsum([0] + sizes)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.processes = [subprocess.Popen([sys.executable, "-m", "mlcourse.rl.cheetah", "--worker", str(size)],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
                          for size in sizes]

    def _send(self, process, message) -> None:
        pickle.dump(message, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        process.stdin.flush()

    def _receive(self, process):
        try:
            return pickle.load(process.stdout)
        except EOFError:
            raise RuntimeError(f"a half-cheetah worker process ended unexpectedly (exit status {process.wait()}).") \
                from None

    def reset(self, seed: int):
        for p, start in zip(self.processes, self.bounds[:-1]):
            self._send(p, ("reset", int(seed + start)))  # robot k of the batch gets seed + k, as in one process
        return np.concatenate([self._receive(p) for p in self.processes]), {}

    def step(self, actions: np.ndarray):
        for p, a, b in zip(self.processes, self.bounds[:-1], self.bounds[1:]):
            self._send(p, ("step", actions[a:b]))
        parts = [self._receive(p) for p in self.processes]
        obs, terminated, truncated, velocity = (np.concatenate([part[i] for part in parts]) for i in range(4))
        return obs, None, terminated, truncated, {"x_velocity": velocity}

    def close(self) -> None:
        for p in self.processes:
            try:
                self._send(p, ("close", None))
                p.stdin.close()
            except (OSError, ValueError):
                pass
        for p in self.processes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stdout.close()
        self.processes = []


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker_main(int(sys.argv[2]))
    else:
        raise SystemExit("usage: python -m mlcourse.rl.cheetah --worker COUNT (started by HalfCheetahTasks)")
