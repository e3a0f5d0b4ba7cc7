"""Returns, GAE and the linear feature baseline of mlcourse.rl.returns against loops and numpy."""

import numpy as np
import pytest
import torch

from mlcourse.rl.returns import (advantages, baseline_features, baseline_values, discounted_returns, fit_baseline,
                                 gae, normalize)
from mlcourse.rl.rollout import Trajectories


def _batch(tasks=3, n=4, t=9, obs_dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(tasks, n, t, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (tasks, n), generator=g)
    mask = (torch.arange(t) < lengths[..., None]).double()
    obs = torch.randn(tasks, n, t, obs_dim, generator=g, dtype=torch.float64)
    return obs, rewards * mask, mask


def test_discounted_returns_match_a_loop():
    _, rewards, mask = _batch()
    got = discounted_returns(rewards, mask, 0.9)
    want = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[:-1], dtype=rewards.dtype)
    for t in reversed(range(rewards.shape[-1])):
        running = rewards[..., t] + 0.9 * running * mask[..., t + 1] if t + 1 < rewards.shape[-1] else rewards[..., t]
        want[..., t] = running * mask[..., t]
    torch.testing.assert_close(got, want)


def test_gae_matches_a_loop_and_lambda_one_is_returns_minus_baseline():
    _, rewards, mask = _batch(seed=1)
    values = torch.randn_like(rewards) * mask
    gamma, lam = 0.95, 0.7
    want = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[:-1], dtype=rewards.dtype)
    horizon = rewards.shape[-1]
    for t in reversed(range(horizon)):
        next_value = values[..., t + 1] * mask[..., t + 1] if t + 1 < horizon else torch.zeros_like(running)
        delta = (rewards[..., t] + gamma * next_value - values[..., t]) * mask[..., t]
        running = delta + gamma * lam * running * (mask[..., t + 1] if t + 1 < horizon else 0)
        want[..., t] = running
    torch.testing.assert_close(gae(rewards, values, mask, gamma, lam), want)
    torch.testing.assert_close(gae(rewards, values, mask, gamma, 1.0),
                               discounted_returns(rewards, mask, gamma) - values * mask)


def test_baseline_fit_matches_numpy_lstsq():
    obs, rewards, mask = _batch(tasks=2, n=5, t=20, obs_dim=3, seed=2)
    returns = discounted_returns(rewards, mask, 0.99)
    reg = 1e-5
    weights = fit_baseline(obs, returns, mask, reg)
    feats = baseline_features(obs, mask)
    for i in range(2):
        f = feats[i].reshape(-1, feats.shape[-1]).numpy()
        r = (returns[i] * mask[i]).reshape(-1).numpy()
        # ridge regression as an augmented least-squares problem: [F; √reg I] w ≈ [R; 0]
        a = np.vstack([f, np.sqrt(reg) * np.eye(f.shape[1])])
        b = np.concatenate([r, np.zeros(f.shape[1])])
        want, *_ = np.linalg.lstsq(a, b, rcond=None)
        np.testing.assert_allclose(weights[i].numpy(), want, rtol=1e-6, atol=1e-8)
    values = baseline_values(weights, obs, mask)
    assert values.shape == rewards.shape and (values[mask == 0] == 0).all()


def test_features_are_the_reference_ones():
    obs = torch.tensor([[[[2.0], [-20.0]]]])        # one task, one trajectory, two steps, 1-d observation
    feats = baseline_features(obs, torch.ones(1, 1, 2))[0, 0]
    torch.testing.assert_close(feats[1], torch.tensor([-10.0, 100.0, 0.01, 1e-4, 1e-6, 1.0]))  # clipped to ±10


def test_advantages_are_normalised_per_task_over_valid_steps():
    obs, rewards, mask = _batch(seed=3)
    adv = advantages(Trajectories(obs, torch.zeros(*obs.shape), rewards, mask), 0.99, 1.0)
    for i in range(adv.shape[0]):
        valid = adv[i][mask[i] == 1]
        assert valid.mean().abs() < 1e-9 and (valid.std(unbiased=False) - 1).abs() < 1e-6
    assert (adv[mask == 0] == 0).all()
    torch.testing.assert_close(normalize(adv, mask), adv)


def test_clear_errors():
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns(torch.zeros(2, 3), torch.ones(2, 3), 1.5)
    with pytest.raises(ValueError, match="same shape"):
        discounted_returns(torch.zeros(2, 3), torch.ones(2, 4), 0.9)
    with pytest.raises(ValueError, match="lambda"):
        gae(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3), 0.9, -0.1)
    with pytest.raises(ValueError, match=r"\[tasks, trajectories, time, obs_dim\]"):
        fit_baseline(torch.zeros(2, 3, 2), torch.zeros(2, 3), torch.ones(2, 3))
