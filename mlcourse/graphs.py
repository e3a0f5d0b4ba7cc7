"""Replaying a whole training step as one CUDA graph.

A meta-iteration of MAML on sinusoids is hundreds of tiny kernels; on a GPU, launching them costs
more than running them. Capturing the step (sampling the tasks, the meta-gradient and the
optimizer update) once as a CUDA graph and replaying it removes the launch overhead. The step
must be free of host synchronisation and use tensors of fixed shapes; the optimizer must be
created with ``capturable=True`` (Adam, AdamW, SGD support it).
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
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        metrics = step()

    def replay() -> dict[str, torch.Tensor]:
        graph.replay()
        return metrics

    replay.warmup_steps = warmup  # real steps already taken while capturing
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
