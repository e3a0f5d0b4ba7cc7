"""Time and memory of one training step, measured the same way on CPU and GPU.

- :func:`seconds` times a call (median of repeats, CUDA synchronised).
- :func:`meta_iteration_cost` measures one meta-gradient of MAML, first-order MAML, Reptile or
  iMAML in the sinusoid or the Omniglot setting (the chapters' cost figures and the benchmarks).
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

from .meta.imaml import IMAML
from .meta.maml import MAML
from .meta.reptile import Reptile
from .nets import MLP, Conv4
from .tasks import EpisodeSampler, SinusoidFamily, TaskBatch


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


# --- the cost of one meta-iteration of each method ---------------------------------------------

METHODS = ("maml", "fomaml", "reptile", "imaml")


def setting_batch(setting: str, tasks: int, device, generator=None) -> tuple[torch.nn.Module, str, TaskBatch]:
    """The network, loss and a task batch of a setting: "sinusoid" (MLP, K = 10) or "omniglot"
    (Conv4, 5-way 1-shot, 5 queries per class; random images stand in for characters, since cost
    does not depend on the pixels)."""
    device = torch.device(device)
    if setting == "sinusoid":
        return MLP(), "mse", SinusoidFamily().sample(tasks, 10, device=device, generator=generator)
    if setting == "omniglot":
        images = (torch.rand(20, 20, 28, 28, generator=generator) * 255).to(torch.uint8)
        sampler = EpisodeSampler(images, ways=5, shots=1, queries=5, device=device)
        return Conv4(5, downsample="stride"), "cross_entropy", sampler.sample(tasks)
    raise ValueError(f"setting must be 'sinusoid' or 'omniglot', got {setting!r}.")


def make_learner(method: str, net, loss: str, steps: int, alpha: float):
    if method in ("maml", "fomaml"):
        return MAML(net, loss, inner_lr=alpha, inner_steps=steps, first_order=method == "fomaml")
    if method == "reptile":
        return Reptile(net, loss, inner_lr=alpha, inner_steps=steps)
    if method == "imaml":
        return IMAML(net, loss, lam=2.0, inner_lr=alpha, inner_steps=steps, cg_steps=5, on_cg_failure="ignore")
    raise ValueError(f"method must be one of {METHODS}, got {method!r}.")


def meta_iteration_cost(method: str, setting: str, steps: int, device, tasks: int = 25,
                        repeats: int = 3) -> tuple[float, int | None]:
    """(seconds, peak bytes) of one meta-gradient."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    device = torch.device(device)
    alpha = 0.01 if setting == "sinusoid" else 0.1

    def prepare(tasks, steps):
        net, loss, batch = setting_batch(setting, tasks, device, torch.Generator().manual_seed(0))
        learner = make_learner(method, net, loss, steps, alpha)
        theta = learner.init_params(device)
        return lambda: learner.meta_gradient(theta, batch)

    prepare(1, 1)()  # one-time costs (lazy imports, thread pools, workspaces) stay out of the numbers
    meta_gradient = prepare(tasks, steps)
    memory = peak_bytes(meta_gradient, device)
    return seconds(meta_gradient, device, repeats=repeats), memory
