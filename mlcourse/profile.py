"""Time and memory of one training step, measured the same way on CPU and GPU.

- :func:`seconds` times a call (median of repeats, CUDA synchronised).
- :func:`peak_bytes` measures the memory a step needs. On CUDA it is the allocator's peak during
  the step, above what was allocated before. On the CPU torch keeps no such counter, so it is the
  heap memory in use (glibc's ``mallinfo2``) at the moment the forward pass has built its
  autograd graph, above what was in use before: the memory that grows with MAML's inner steps.
  Where ``mallinfo2`` is missing (macOS, Windows) it returns None.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import statistics
import time
from typing import Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        began = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _heap_in_use():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError, TypeError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return info.uordblks + info.hblkhd  # small blocks in use + large mmap'd blocks


def peak_bytes(forward: Callable[[], object], device: torch.device) -> int | None:
    """Memory needed by ``forward()`` and, when it returns a loss that holds a graph, its backward.

    CUDA: peak allocated during the call (and the backward), minus what was allocated before.
    CPU: heap in use just after ``forward()`` (its result, and the graph, still alive), minus
    before. See the module docstring.
    """
    gc.collect()
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        _backward(forward())
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    before = _heap_in_use()
    if before is None:
        return None
    result = forward()
    after = _heap_in_use()
    _backward(result)
    del result
    return max(0, after - before)


def _backward(result) -> None:
    if isinstance(result, torch.Tensor) and result.requires_grad:
        result.backward()
