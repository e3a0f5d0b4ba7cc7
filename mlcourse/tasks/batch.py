"""A batch of tasks: the one data structure every meta-learning method of the course consumes.

A task T_i = {p_i(x), p_i(y|x), L_i} comes to a learner as two disjoint samples: the training
set D_i^tr (the *support* set, K shots) and the test set D_i^ts (the *query* set). A
:class:`TaskBatch` holds n tasks at once with a leading task dimension, so that a method can
process all of them in one batched computation::

    x_tr: [tasks, shots, ...]    y_tr: [tasks, shots, ...]
    x_ts: [tasks, queries, ...]  y_ts: [tasks, queries, ...]

``batch[i]`` is the i-th :class:`Task` (no task dimension), ``batch[2:5]`` or
``batch[index_tensor]`` a smaller TaskBatch, and ``batch.to(device)`` moves every tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def _check_pair(name: str, x: torch.Tensor, y: torch.Tensor, lead: int) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{name}: x and y must be tensors, got {type(x).__name__} and {type(y).__name__}.")
    if x.dim() < lead or y.dim() < lead:
        raise ValueError(
            f"{name}: x and y need at least {lead} leading dimension(s) "
            f"({'[tasks, shots, ...]' if lead == 2 else '[shots, ...]'}), got x {tuple(x.shape)}, y {tuple(y.shape)}."
        )
    if x.shape[:lead] != y.shape[:lead]:
        raise ValueError(
            f"{name}: x and y disagree on their leading dimensions: x {tuple(x.shape)}, y {tuple(y.shape)}."
        )


@dataclass
class Task:
    """One task: its training set D^tr = (x_tr, y_tr), its test set D^ts = (x_ts, y_ts), and the
    parameters that generated it (e.g. a sinusoid's amplitude and phase), if known."""

    x_tr: torch.Tensor
    y_tr: torch.Tensor
    x_ts: torch.Tensor
    y_ts: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_pair("Task D^tr", self.x_tr, self.y_tr, 1)
        _check_pair("Task D^ts", self.x_ts, self.y_ts, 1)


@dataclass
class TaskBatch:
    """n tasks with a leading task dimension. See the module docstring for shapes."""

    x_tr: torch.Tensor
    y_tr: torch.Tensor
    x_ts: torch.Tensor
    y_ts: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_pair("TaskBatch D^tr", self.x_tr, self.y_tr, 2)
        _check_pair("TaskBatch D^ts", self.x_ts, self.y_ts, 2)
        n = self.x_tr.shape[0]
        if self.x_ts.shape[0] != n:
            raise ValueError(
                f"TaskBatch: D^tr holds {n} tasks but D^ts holds {self.x_ts.shape[0]}; "
                "support and query must come from the same tasks."
            )
        if self.x_tr.shape[2:] != self.x_ts.shape[2:]:
            raise ValueError(
                f"TaskBatch: inputs of D^tr {tuple(self.x_tr.shape[2:])} and D^ts "
                f"{tuple(self.x_ts.shape[2:])} have different shapes."
            )
        for key, value in self.params.items():
            if value.shape[:1] != (n,):
                raise ValueError(f"TaskBatch: params[{key!r}] has shape {tuple(value.shape)}, expected [{n}, ...].")
        devices = {t.device for t in self._tensors()}
        if len(devices) > 1:
            raise ValueError(f"TaskBatch: tensors live on several devices {sorted(map(str, devices))}.")

    def _tensors(self) -> list[torch.Tensor]:
        return [self.x_tr, self.y_tr, self.x_ts, self.y_ts, *self.params.values()]

    @property
    def num_tasks(self) -> int:
        return self.x_tr.shape[0]

    @property
    def shots(self) -> int:
        """Examples per task in D^tr."""
        return self.x_tr.shape[1]

    @property
    def queries(self) -> int:
        """Examples per task in D^ts."""
        return self.x_ts.shape[1]

    @property
    def device(self) -> torch.device:
        return self.x_tr.device

    def __len__(self) -> int:
        return self.num_tasks

    def __getitem__(self, index) -> Task | TaskBatch:
        if isinstance(index, int):
            if not -self.num_tasks <= index < self.num_tasks:
                raise IndexError(f"task index {index} out of range for a batch of {self.num_tasks} tasks.")
            return Task(
                self.x_tr[index], self.y_tr[index], self.x_ts[index], self.y_ts[index],
                {k: v[index] for k, v in self.params.items()},
            )
        return TaskBatch(
            self.x_tr[index], self.y_tr[index], self.x_ts[index], self.y_ts[index],
            {k: v[index] for k, v in self.params.items()},
        )

    def __iter__(self):
        return (self[i] for i in range(self.num_tasks))

    def to(self, device, dtype: torch.dtype | None = None) -> TaskBatch:
        """The same tasks on another device; ``dtype`` casts floating-point tensors only (labels stay integer)."""

        def move(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device)

        return TaskBatch(move(self.x_tr), move(self.y_tr), move(self.x_ts), move(self.y_ts),
                         {k: move(v) for k, v in self.params.items()})

    @staticmethod
    def stack(tasks: list[Task]) -> TaskBatch:
        """A batch from single tasks of equal sizes (useful in tests and exercises)."""
        if not tasks:
            raise ValueError("TaskBatch.stack needs at least one task.")
        keys = tasks[0].params.keys()
        return TaskBatch(
            torch.stack([t.x_tr for t in tasks]), torch.stack([t.y_tr for t in tasks]),
            torch.stack([t.x_ts for t in tasks]), torch.stack([t.y_ts for t in tasks]),
            {k: torch.stack([t.params[k] for t in tasks]) for k in keys},
        )

    def __repr__(self) -> str:
        return (
            f"TaskBatch(tasks={self.num_tasks}, D^tr x{tuple(self.x_tr.shape)} y{tuple(self.y_tr.shape)}, "
            f"D^ts x{tuple(self.x_ts.shape)} y{tuple(self.y_ts.shape)}, device={self.device})"
        )
