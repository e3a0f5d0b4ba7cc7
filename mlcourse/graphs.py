"""Replaying a whole training step as one CUDA graph.

A meta-iteration of MAML on sinusoids is hundreds of tiny kernels; on a GPU, launching them costs
more than running them. Capturing the step (sampling the tasks, the meta-gradient and the
optimizer update) once as a CUDA graph and replaying it removes the launch overhead. The step
must be free of host synchronisation and use tensors of fixed shapes; the optimizer must be
created with ``capturable=True`` (Adam, AdamW) or take its learning rate as a tensor (SGD under a
scheduler), so that what changes between steps lives in device memory.

Two ways in:

- :class:`GraphedStep` (what ``train.fit(..., graph=True)`` uses): every call is one real
  training step. The first ``warmup`` calls run eagerly on a side stream (CUDA graphs require
  it), the next call is captured and then replayed, and so is every later one; the number of
  steps taken is the number of calls, as in an eager run.
- :func:`capture` / :func:`fast_step`: the captured replay of a step, after ``warmup`` real
  steps taken while capturing (the older interface, kept for the MAML experiments).

Whether a step can be captured is checked on a CPU by running it on the ``meta`` device
(:func:`check_capturable`): meta tensors hold no data, so ``.item()``, ``bool()`` of a tensor,
``.tolist()`` and data-dependent shapes fail there as host synchronisations would on a GPU, and
code that tests ``device.type == "cpu"`` takes its accelerator branch.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch

Step = Callable[[], dict[str, torch.Tensor]]


def capture(step: Step, warmup: int = 3) -> Step:
    """A function that replays ``step`` as a CUDA graph and returns its (static) metric tensors.

    ``step()`` runs ``warmup`` times on a side stream first (these are real training steps, as
    CUDA graphs require), then once more while being captured; a captured call only records its
    kernels, so after ``capture`` the model has taken ``warmup`` steps.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA graphs need a CUDA device; on other devices call the step directly.")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    replay = record(step)
    replay.warmup_steps = warmup  # real steps already taken while capturing
    return replay


def record(step: Step) -> Step:
    """Capture one call of ``step`` as a CUDA graph (recording only: no step is taken) and return
    the function that replays it. The step must have run eagerly before (see :func:`capture`)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        metrics = step()

    def replay() -> dict[str, torch.Tensor]:
        graph.replay()
        return metrics

    return replay


def fast_step(step: Step, device: torch.device, use_graph: bool | None = None) -> Step:
    """``step`` itself, or its CUDA-graph replay on a CUDA device (``use_graph=None`` decides by
    device). If capturing fails (an operation that cannot be captured), the step runs eagerly,
    with a warning that says why."""
    use_graph = device.type == "cuda" if use_graph is None else use_graph
    if not use_graph:
        return step
    try:
        return capture(step)
    except RuntimeError as err:
        warnings.warn(f"CUDA-graph capture failed ({err}); running the step eagerly.", RuntimeWarning, stacklevel=2)
        torch.cuda.synchronize()
        return step


class GraphedStep:
    """``step`` as a CUDA graph, one real training step per call (see the module docstring).

    On a device other than CUDA, or if capturing fails (with a warning that says why), every call
    runs ``step`` eagerly; ``graphed`` says which happened. ``recorder`` is the function that
    captures (tests replace it to exercise the bookkeeping on a CPU).
    """

    def __init__(self, step: Step, device: torch.device, warmup: int = 3, recorder: Callable[[Step], Step] = None):
        self.step, self.warmup = step, warmup
        self.recorder = recorder or record
        self.wanted = device.type == "cuda" or recorder is not None
        self.calls, self.replay, self.graphed = 0, None, False
        self._side = torch.cuda.Stream() if device.type == "cuda" and torch.cuda.is_available() else None

    def __call__(self) -> dict[str, torch.Tensor]:
        self.calls += 1
        if not self.wanted:
            return self.step()
        if self.replay is None and self.calls <= self.warmup:
            return self._eager_on_side_stream()
        if self.replay is None:
            try:
                self.replay = self.recorder(self.step)
                self.graphed = True
            except RuntimeError as err:
                warnings.warn(f"CUDA-graph capture failed ({err}); running the step eagerly.", RuntimeWarning,
                              stacklevel=2)
                if self._side is not None:
                    torch.cuda.synchronize()
                self.wanted = False
                return self.step()
        return self.replay()

    def _eager_on_side_stream(self):
        if self._side is None:
            return self.step()
        self._side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._side):
            out = self.step()
        torch.cuda.current_stream().wait_stream(self._side)
        return out


def to_meta(tree):
    """Tensors (in dicts, lists, tuples, dataclasses' fields left alone) moved to the meta device,
    keeping requires_grad: the inputs of :func:`check_capturable`."""
    if isinstance(tree, torch.Tensor):
        out = tree.detach().to("meta")
        return out.requires_grad_() if tree.requires_grad else out
    if isinstance(tree, dict):
        return {k: to_meta(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_meta(v) for v in tree)
    return tree


def check_capturable(step: Step, what: str = "the step") -> dict[str, torch.Tensor]:
    """Run ``step()`` (built on meta tensors by the caller) and turn a host synchronisation into
    an error that says so: the CPU-side check that a step can be captured as a CUDA graph."""
    try:
        return step()
    except (RuntimeError, NotImplementedError) as err:
        text = str(err)
        if "meta" in text and any(w in text for w in ("item", "data", "bool", "nonzero", "cannot")):
            raise RuntimeError(f"{what} reads a tensor's value on the host (a synchronisation that a CUDA graph "
                               f"cannot hold, or Python control flow that depends on the data): {text}") from err
        raise


class NoUpdate:
    """An optimiser stand-in whose ``step()`` does nothing: ``learner.step(θ, NoUpdate(), batch)``
    computes the meta-gradient and stores it in θ's ``.grad`` without updating θ, so that the
    graph can hold that part and the real optimiser steps after it, eagerly (for an optimiser
    that cannot be captured, such as SGD whose learning rate a scheduler changes)."""

    def step(self) -> None:
        return None
