"""Summaries with their uncertainty: every number the book reports comes with a 95% interval."""

from __future__ import annotations

import functools
import math

import torch


def _t_density(t: float, df: float) -> float:
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))


def _t_cdf(t: float, df: float, intervals: int = 2000) -> float:
    """P(T <= t) for t >= 0: 1/2 plus Simpson's rule on the density over [0, t]."""
    h = t / intervals
    total = _t_density(0.0, df) + _t_density(t, df)
    total += sum((4 if i % 2 else 2) * _t_density(i * h, df) for i in range(1, intervals))
    return 0.5 + total * h / 3


@functools.lru_cache(maxsize=None)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p in [0.5, 1)) of Student's t distribution with ``df`` degrees of freedom,
    by bisection on its CDF; accurate to about 1e-6."""
    if not 0.5 <= p < 1:
        raise ValueError(f"p must lie in [0.5, 1), got {p!r}.")
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"degrees of freedom must be an int >= 1, got {df!r}.")
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        high *= 2
    for _ in range(50):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


def mean_ci95(values: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over ``dim`` and the half-width of its 95% confidence interval, t·s/√n with Student's
    t quantile for n − 1 degrees of freedom (1.96 only in the limit of many values)."""
    values = torch.as_tensor(values, dtype=torch.float64)
    n = values.shape[dim]
    if n < 2:
        raise ValueError(f"a confidence interval needs at least 2 values along dim {dim}, got {n}.")
    return values.mean(dim), t_quantile(0.975, n - 1) * values.std(dim) / math.sqrt(n)


def format_ci(mean: float, half: float, scale: float = 1.0, digits: int = 2) -> str:
    """'98.70 ± 0.40' style text; ``scale=100`` turns accuracies into percentages."""
    return f"{float(mean) * scale:.{digits}f} ± {float(half) * scale:.{digits}f}"
