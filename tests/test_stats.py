import math

import pytest
import torch

from mlcourse.stats import format_ci, mean_ci95


def test_mean_ci95_matches_formula():
    values = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]])
    mean, half = mean_ci95(values, dim=0)
    assert torch.allclose(mean, torch.tensor([3.0, 6.0], dtype=torch.float64))
    assert torch.allclose(half, 1.96 * torch.tensor([2.0, 4.0], dtype=torch.float64) / math.sqrt(3))


def test_mean_ci95_covers_the_mean_about_95_percent():
    torch.manual_seed(0)
    samples = torch.randn(4000, 50) + 1.0
    mean, half = mean_ci95(samples, dim=1)
    coverage = ((mean - 1.0).abs() <= half).double().mean().item()
    assert 0.92 < coverage < 0.97


def test_mean_ci95_needs_two_values():
    with pytest.raises(ValueError, match="at least 2 values"):
        mean_ci95(torch.tensor([1.0]))


def test_format_ci():
    assert format_ci(0.987, 0.004, scale=100) == "98.70 ± 0.40"
