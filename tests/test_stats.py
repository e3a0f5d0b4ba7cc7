import math

import pytest
import torch

from mlcourse.stats import format_ci, mean_ci95, t_quantile


def test_mean_ci95_matches_formula():
    values = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]])
    mean, half = mean_ci95(values, dim=0)
    assert torch.allclose(mean, torch.tensor([3.0, 6.0], dtype=torch.float64))
    # Student's t with 2 degrees of freedom: 4.303, not the normal 1.96, for three values.
    assert torch.allclose(half, 4.302653 * torch.tensor([2.0, 4.0], dtype=torch.float64) / math.sqrt(3), rtol=1e-5)


@pytest.mark.parametrize("df,expected", [(1, 12.706205), (2, 4.302653), (5, 2.570582), (10, 2.228139),
                                         (30, 2.042272), (100, 1.983972), (1000, 1.962339)])
def test_t_quantiles_match_the_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=2e-5)


def test_small_samples_cover_the_mean_95_percent_with_t():
    torch.manual_seed(1)
    samples = torch.randn(20000, 4)
    mean, half = mean_ci95(samples, dim=1)
    coverage = (mean.abs() <= half).double().mean().item()
    assert 0.94 < coverage < 0.96      # 1.96 would cover only about 86% with four values


def test_t_quantile_refuses_bad_arguments():
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0.975, 0)
    with pytest.raises(ValueError, match="p must lie"):
        t_quantile(1.5, 3)


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
