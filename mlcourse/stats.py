"""Summaries with their uncertainty: every number the book reports comes with a 95% interval."""

from __future__ import annotations

import math

import torch


def mean_ci95(values: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over ``dim`` and the half-width of its 95% normal confidence interval, 1.96·s/√n."""
    values = torch.as_tensor(values, dtype=torch.float64)
    n = values.shape[dim]
    if n < 2:
        raise ValueError(f"a confidence interval needs at least 2 values along dim {dim}, got {n}.")
    return values.mean(dim), 1.96 * values.std(dim) / math.sqrt(n)


def format_ci(mean: float, half: float, scale: float = 1.0, digits: int = 2) -> str:
    """'98.70 ± 0.40' style text; ``scale=100`` turns accuracies into percentages."""
    return f"{float(mean) * scale:.{digits}f} ± {float(half) * scale:.{digits}f}"
