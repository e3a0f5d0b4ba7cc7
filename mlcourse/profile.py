"""Time and memory of one training step, measured the same way on CPU and GPU.

- :func:`seconds` times a call (median of repeats, CUDA synchronised).
- :func:`peak_bytes` measures the memory a call needs at its peak, above what was in use before
  it. On CUDA it is the caching allocator's own peak counter. The CPU has no such counter, so a
  background thread samples the heap memory in use (glibc's ``mallinfo2``: bytes handed out by
  ``malloc``, whether small blocks or large mapped ones, not memory merely cached) every 0.2 ms
  and keeps the largest value; torch releases the interpreter lock inside its kernels, so the
  sampler runs while they do. Where ``mallinfo2`` is missing (macOS, Windows, musl) it returns
  None.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import statistics
import threading
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


def _mallinfo2():
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c")).mallinfo2
    except (OSError, AttributeError, TypeError):
        return None
    function.restype = _MallInfo2
    return function


_MALLINFO2 = _mallinfo2()


def heap_in_use() -> int | None:
    """Bytes currently allocated by malloc in this process (None where mallinfo2 is missing)."""
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return info.uordblks + info.hblkhd


def peak_bytes(fn: Callable[[], object], device: torch.device, interval: float = 2e-4) -> int | None:
    """Peak memory in use during ``fn()`` above what was in use before (see the module docstring)."""
    gc.collect()
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    before = heap_in_use()
    if before is None:
        return None
    peak, running = [before], threading.Event()

    def sample():
        while not running.is_set():
            peak[0] = max(peak[0], heap_in_use())
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        running.set()
        sampler.join()
    return max(peak[0], heap_in_use()) - before
