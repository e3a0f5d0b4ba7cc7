"""Argument checks that fail with a message saying what was given and what is allowed."""

from __future__ import annotations

import math


def check_count(name: str, value, minimum: int = 1) -> int:
    """``value`` if it is an int >= minimum (shots, ways, tasks, steps, ...), else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return value


def check_positive(name: str, value) -> float:
    """``value`` as a float if it is finite and > 0 (learning rates, λ, ...), else a ValueError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}.") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    return number
