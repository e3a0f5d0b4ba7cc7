"""The sinusoid task family of Finn et al. (2017, §5.1).

Each task is a regression problem y = A · sin(x − b) with amplitude A ~ U[0.1, 5.0], phase
b ~ U[0, π] and inputs x ~ U[−5, 5]; the loss is the mean squared error. Sampling n tasks with K
support and Q query points is a handful of tensor operations on the device, not a loop over tasks.
"""

from __future__ import annotations

import math

import torch

from .. import runtime
from ..checks import check_count
from .batch import TaskBatch


def _check_range(name: str, bounds) -> tuple[float, float]:
    """(low, high) as floats: two finite numbers with low <= high, else an error saying so."""
    if isinstance(bounds, (str, bytes)) or not hasattr(bounds, "__len__") or len(bounds) != 2:
        raise ValueError(f"{name} range must be a pair (low, high), got {bounds!r}.")
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"{name} range must be a pair of numbers (low, high), got {bounds!r}.") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} range must be finite, got {bounds!r}.")
    if not low <= high:
        raise ValueError(f"{name} range must be (low, high) with low <= high, got {bounds!r}.")
    return low, high


def _check_float(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"sinusoid tasks are real-valued: dtype must be a floating-point torch dtype, got {dtype!r}.")
    return dtype


class SinusoidFamily:
    """p(T) over sinusoid regression tasks y = A · sin(x − b).

    >>> family = SinusoidFamily()
    >>> batch = family.sample(25, shots=10)      # 25 tasks, K = 10 support and 10 query points
    >>> batch.x_tr.shape, batch.params["amplitude"].shape
    (torch.Size([25, 10, 1]), torch.Size([25]))
    """

    def __init__(self, amplitude=(0.1, 5.0), phase=(0.0, math.pi), x_range=(-5.0, 5.0)):
        self.amplitude = _check_range("amplitude", amplitude)
        self.phase = _check_range("phase", phase)
        self.x_range = _check_range("x", x_range)

    def __repr__(self) -> str:
        return f"SinusoidFamily(amplitude={self.amplitude}, phase={self.phase}, x_range={self.x_range})"

    @staticmethod
    def function(x: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """y = A · sin(x − b) for x of shape [tasks, points, 1] and A, b of shape [tasks]."""
        return amplitude.view(-1, 1, 1) * torch.sin(x - phase.view(-1, 1, 1))

    def _uniform(self, shape, bounds, device, dtype, generator) -> torch.Tensor:
        low, high = bounds
        gen_device = generator.device if generator is not None else device
        u = torch.rand(shape, generator=generator, device=gen_device, dtype=dtype)
        return (low + (high - low) * u).to(device)

    def sample_params(self, num_tasks: int, *, device=None, dtype=torch.float32, generator=None):
        """Amplitudes and phases of ``num_tasks`` tasks, each of shape [num_tasks]."""
        check_count("num_tasks", num_tasks)
        device = runtime.device() if device is None else runtime.check_device(device)
        _check_float(dtype)
        amplitude = self._uniform((num_tasks,), self.amplitude, device, dtype, generator)
        phase = self._uniform((num_tasks,), self.phase, device, dtype, generator)
        return amplitude, phase

    def sample_x(self, num_tasks: int, points: int, *, device=None, dtype=torch.float32, generator=None):
        """Inputs x ~ U[x_range] of shape [num_tasks, points, 1]."""
        check_count("points", points)
        device = runtime.device() if device is None else runtime.check_device(device)
        _check_float(dtype)
        return self._uniform((num_tasks, points, 1), self.x_range, device, dtype, generator)

    def tasks(self, amplitude: torch.Tensor, phase: torch.Tensor, shots: int, queries: int | None = None,
              *, generator=None) -> TaskBatch:
        """Fresh D^tr and D^ts for given tasks (e.g. to draw a new K-shot set for the same task)."""
        check_count("shots", shots)
        queries = shots if queries is None else check_count("queries", queries)
        amplitude, phase = torch.as_tensor(amplitude).reshape(-1), torch.as_tensor(phase).reshape(-1)
        if amplitude.shape != phase.shape:
            raise ValueError(f"amplitude {tuple(amplitude.shape)} and phase {tuple(phase.shape)} differ in shape.")
        # Sample D^tr and D^ts in one draw: the two are independent samples from p_i(x).
        x = self.sample_x(len(amplitude), shots + queries, device=amplitude.device, dtype=amplitude.dtype,
                          generator=generator)
        y = self.function(x, amplitude, phase)
        return TaskBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:],
                         {"amplitude": amplitude, "phase": phase})

    def sample(self, num_tasks: int, shots: int, queries: int | None = None, *, device=None,
               dtype=torch.float32, generator=None) -> TaskBatch:
        """n tasks T_i ~ p(T), each with K = ``shots`` support points and ``queries`` query points
        (default: as many as shots)."""
        amplitude, phase = self.sample_params(num_tasks, device=device, dtype=dtype, generator=generator)
        return self.tasks(amplitude, phase, shots, queries, generator=generator)

    def grid(self, amplitude: torch.Tensor, phase: torch.Tensor, points: int = 200):
        """x on an even grid over x_range and each task's true y: for plotting, shapes [tasks, points, 1]."""
        amplitude, phase = torch.as_tensor(amplitude).reshape(-1), torch.as_tensor(phase).reshape(-1)
        x = torch.linspace(*self.x_range, points, device=amplitude.device, dtype=amplitude.dtype)
        x = x.view(1, -1, 1).expand(len(amplitude), -1, -1)
        return x, self.function(x, amplitude, phase)
