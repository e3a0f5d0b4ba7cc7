"""Evaluation of any learner on many new tasks, in chunks that fit in memory.

Every learner meets :class:`mlcourse.meta.learner.Learner`, so one function evaluates them all:
it draws ``tasks`` new tasks from a sampler (anything with ``sample(n) -> TaskBatch``), adapts θ
to each with the learner's own test-time procedure and returns the query metrics per task.
"""

from __future__ import annotations

import torch

from .checks import check_count
from .meta.learner import Learner
from .nets import Params


def evaluate(learner: Learner, theta: Params, sampler, tasks: int, chunk: int = 100,
             **options) -> dict[str, torch.Tensor]:
    """Per-task query metrics (each [tasks], on the CPU) of ``learner.evaluate`` on ``tasks`` new
    tasks from ``sampler``, sampled and evaluated ``chunk`` at a time. ``options`` go to
    ``learner.evaluate`` (e.g. ``steps``)."""
    if not isinstance(learner, Learner):
        raise TypeError(f"expected a Learner (see mlcourse.meta.learner), got {type(learner).__name__}.")
    check_count("tasks", tasks)
    check_count("chunk", chunk)
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, tasks, chunk):
        metrics = learner.evaluate(theta, sampler.sample(min(chunk, tasks - start)), **options)
        for k, v in metrics.items():
            parts.setdefault(k, []).append(v.detach().cpu())
    return {k: torch.cat(v) for k, v in parts.items()}
