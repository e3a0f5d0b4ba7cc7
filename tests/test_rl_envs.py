"""Environments of mlcourse.rl: the batched 2D navigation against a per-trajectory loop of the gymnasium
environment, the gymnasium API, the half-cheetah task rewards, rollouts, and errors."""

import numpy as np
import pytest
import torch

gymnasium = pytest.importorskip("gymnasium")  # in requirements.txt; the rl extra of mlcourse

from gymnasium.utils.env_checker import check_env  # noqa: E402

import mlcourse.rl.gym  # noqa: E402,F401  (registers the id)
from mlcourse.nets import init_params  # noqa: E402
from mlcourse.rl.gym import ENV_ID, Navigation2DEnv  # noqa: E402
from mlcourse.rl.navigation import Navigation2D  # noqa: E402
from mlcourse.rl.policy import GaussianPolicy, log_prob, sample  # noqa: E402
from mlcourse.rl.rollout import rollout  # noqa: E402


def test_batched_navigation_matches_a_loop_of_single_environments():
    torch.manual_seed(0)
    env = Navigation2D(horizon=30, device="cpu")
    goals = env.sample_tasks(3)
    goals[0] = torch.tensor([0.05, -0.05])  # reachable in one step of ±0.1: that episode ends early
    obs = env.reset(goals, 4)
    actions = 0.15 * torch.randn(30, 3, 4, 2)
    actions[0, 0] = torch.tensor([0.05, -0.05])
    singles = [[Navigation2DEnv(goal=goals[i].numpy()) for _ in range(4)] for i in range(3)]
    for row in singles:
        for e in row:
            e.reset(seed=0)
    ended = np.zeros((3, 4), dtype=bool)
    for t in range(30):
        obs, reward, done = env.step(actions[t])
        for i in range(3):
            for n in range(4):
                if ended[i, n]:
                    continue  # the batched env keeps stepping; rollouts mask these steps out
                o, r, terminated, truncated, _ = singles[i][n].step(actions[t, i, n].numpy())
                np.testing.assert_allclose(obs[i, n].numpy(), o, atol=1e-6)
                assert reward[i, n].item() == pytest.approx(r, abs=1e-5)
                assert bool(done[i, n]) == terminated and not truncated
                ended[i, n] = terminated
    assert ended[0, 0] and ended.sum() >= 1


def test_navigation_rewards_are_minus_the_distance_and_actions_are_clipped():
    env = Navigation2D(device="cpu")
    env.reset(torch.tensor([[0.3, 0.0]]), 1)
    obs, reward, done = env.step(torch.tensor([[[5.0, -5.0]]]))
    torch.testing.assert_close(obs, torch.tensor([[[0.1, -0.1]]]))
    assert reward.item() == pytest.approx(-np.hypot(0.2, 0.1), abs=1e-6) and not done.item()


@pytest.mark.filterwarnings("ignore:.*infinity")
def test_gym_environment_passes_the_checker_and_is_registered():
    check_env(Navigation2DEnv(), skip_render_check=True)
    env = gymnasium.make(ENV_ID)
    obs, info = env.reset(seed=3, options={"goal": [0.2, 0.1]})
    assert obs.shape == (2,) and np.allclose(info["goal"], [0.2, 0.1])
    steps = 0
    truncated = terminated = False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, _ = env.step(np.zeros(2, dtype=np.float32))
        steps += 1
    assert truncated and steps == 100   # the registered horizon
    # A seeded reset draws the same goal.
    assert np.allclose(env.reset(seed=5)[1]["goal"], env.reset(seed=5)[1]["goal"])


def test_rollout_shapes_mask_and_log_probs():
    torch.manual_seed(0)
    env = Navigation2D(horizon=12, device="cpu")
    policy = GaussianPolicy(2, 2, hidden=(8,))
    theta = init_params(policy, "cpu")
    env.goal_radius = 0.3   # wide, so that some episodes end early
    goals = torch.tensor([[0.0, 0.0], [0.4, 0.4]])
    traj = rollout(env, policy, theta, goals, 5)
    assert traj.obs.shape == (2, 5, 12, 2) and traj.actions.shape == (2, 5, 12, 2) and traj.rewards.shape == (2, 5, 12)
    # The mask is 1 up to and including the step that ended an episode, then 0, and so are the rewards.
    mask = traj.mask
    assert (mask == 0).any()
    assert ((mask[..., 1:] <= mask[..., :-1])).all() and (mask[..., 0] == 1).all()
    assert (traj.rewards[mask == 0] == 0).all()
    lp = log_prob(policy, theta, traj.obs, traj.actions)
    assert lp.shape == (2, 5, 12) and torch.isfinite(lp).all()
    # per-task parameters: one φ_i per task gives the same result as θ repeated.
    phi = {k: v.detach().expand(2, *v.shape) for k, v in theta.items()}
    torch.testing.assert_close(log_prob(policy, phi, traj.obs, traj.actions, per_task=True), lp.detach())


def test_clear_errors():
    env = Navigation2D(device="cpu")
    with pytest.raises(ValueError, match="horizon must be a positive int"):
        Navigation2D(horizon=0)
    with pytest.raises(ValueError, match="horizon must be a positive int"):
        Navigation2D(horizon=2.5)
    with pytest.raises(RuntimeError, match="call reset"):
        Navigation2D(device="cpu").step(torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match=r"goals must be a tensor of shape \[tasks, 2\], got \(3,\)"):
        env.reset(torch.zeros(3), 2)
    env.reset(torch.zeros(3, 2), 4)
    with pytest.raises(ValueError, match=r"actions must have shape \(3, 4, 2\).*got \(3, 4, 3\)"):
        env.step(torch.zeros(3, 4, 3))
    with pytest.raises(ValueError, match="trajectories must be an int >= 1"):
        env.reset(torch.zeros(3, 2), 0)
    policy = GaussianPolicy(3, 2)
    with pytest.raises(ValueError, match="observations end in size 2"):
        sample(policy, init_params(policy, "cpu"), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="the policy maps 3 observations"):
        rollout(env, policy, init_params(policy, "cpu"), torch.zeros(3, 2), 2)
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        Navigation2DEnv().step(np.zeros(3))


@pytest.mark.parametrize("kind", ["velocity", "direction"])
def test_half_cheetah_rewards_follow_the_task(kind):
    pytest.importorskip("mujoco")
    from mlcourse.rl.cheetah import HalfCheetahTasks

    env = HalfCheetahTasks(kind, horizon=5, device="cpu")
    goals = env.sample_tasks(2)
    if kind == "velocity":
        assert ((goals >= 0) & (goals <= 2)).all()
    else:
        assert set(goals.tolist()) <= {-1.0, 1.0}
    obs = env.reset(goals, 2)
    assert obs.shape == (2, 2, 17)
    single = gymnasium.make("HalfCheetah-v5")
    single.reset(seed=0)  # the vector env seeds its first robot with the same seed
    actions = torch.rand(5, 2, 2, 6) * 3 - 1.5   # partly outside [-1, 1]: clipped
    for t in range(5):
        obs, reward, done = env.step(actions[t])
        a = np.clip(actions[t, 0, 0].double().numpy(), -1, 1)
        _, _, _, _, info = single.step(a)
        goal = goals[0].item()
        forward = -abs(info["x_velocity"] - goal) if kind == "velocity" else goal * info["x_velocity"]
        assert reward[0, 0].item() == pytest.approx(forward - 0.05 * np.sum(a**2), rel=1e-5, abs=1e-5)
        assert not done.any()
    with pytest.raises(ValueError, match=r"actions must have shape \(2, 2, 6\)"):
        env.step(torch.zeros(2, 2, 5))
    env.close()
    with pytest.raises(ValueError, match="kind must be one of"):
        HalfCheetahTasks("backflip")
