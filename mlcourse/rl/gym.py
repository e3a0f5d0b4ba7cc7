"""2D navigation through the gymnasium API, for readers who use other RL code.

    import gymnasium
    import mlcourse.rl.gym  # registers the id
    env = gymnasium.make("mlcourse/Navigation2D-v0")                    # a random goal at each reset
    obs, info = env.reset(seed=0, options={"goal": [0.3, -0.2]})         # or a chosen goal

The dynamics are those of :class:`mlcourse.rl.navigation.Navigation2D`, written here with numpy
for one agent (the tests check that the two agree step for step). The episode ends (terminated)
when both coordinates are within 0.01 of the goal and is cut (truncated) after 100 steps by the
registered time limit. The goal is in ``info["goal"]``, not in the observation.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

ENV_ID = "mlcourse/Navigation2D-v0"


class Navigation2DEnv(gymnasium.Env):
    """A point agent at the origin walks toward a hidden goal g ~ U[-0.5, 0.5]²; reward −‖s − g‖."""

    metadata = {"render_modes": []}

    def __init__(self, goal=None, goal_range: float = 0.5, max_action: float = 0.1, goal_radius: float = 0.01):
        self.goal_range, self.max_action, self.goal_radius = float(goal_range), float(max_action), float(goal_radius)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-self.max_action, self.max_action, shape=(2,), dtype=np.float32)
        self._fixed_goal = None if goal is None else self._check_goal(goal)
        self._goal = self._fixed_goal
        self._position = np.zeros(2, dtype=np.float32)

    @staticmethod
    def _check_goal(goal) -> np.ndarray:
        goal = np.asarray(goal, dtype=np.float32)
        if goal.shape != (2,):
            raise ValueError(f"a goal is a point of the plane, shape (2,), got shape {goal.shape}.")
        return goal

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if options and "goal" in options:
            self._goal = self._check_goal(options["goal"])
        elif self._fixed_goal is not None:
            self._goal = self._fixed_goal
        else:
            self._goal = self.np_random.uniform(-self.goal_range, self.goal_range, size=2).astype(np.float32)
        self._position = np.zeros(2, dtype=np.float32)
        return self._position.copy(), {"goal": self._goal.copy()}

    def step(self, action):
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (2,):
            raise ValueError(f"an action is a velocity in the plane, shape (2,), got shape {action.shape}.")
        self._position = (self._position + np.clip(action, -self.max_action, self.max_action)).astype(np.float32)
        offset = self._position - self._goal
        reward = -float(np.sqrt(np.sum(offset.astype(np.float64) ** 2)))
        terminated = bool(np.all(np.abs(offset) < self.goal_radius))
        return self._position.copy(), reward, terminated, False, {"goal": self._goal.copy()}


def register() -> None:
    """Register ``mlcourse/Navigation2D-v0`` (100 steps) with gymnasium; safe to call twice."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="mlcourse.rl.gym:Navigation2DEnv", max_episode_steps=100)


register()
