"""ANIL, "almost no inner loop" (Raghu et al. 2020): MAML whose inner loop adapts only the head.

θ = (θ_trunk, θ_head). The inner loop runs gradient descent on the head alone, with the trunk
held at θ_trunk:

    φ_i = (θ_trunk, θ_head − α ∇_head L(θ_trunk, θ_head, D_i^tr))    (repeated for more steps),
    θ ← θ − β ∇θ (1/n) Σ_i L(φ_i(θ), D_i^ts).

The outer loop still trains every parameter, and the meta-gradient still reaches the trunk
twice: directly (the query loss of φ_i depends on θ_trunk) and through the head's adaptation
(whose gradient depends on the trunk's features). Raghu et al. found that a MAML-trained
network barely changes its trunk's representations in the inner loop ("feature reuse"), and
that ANIL matches MAML's accuracy at a fraction of the inner loop's cost.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import check_count, check_positive
from ..nets import Params
from ..tasks import Task, TaskBatch
from .functional import choose_execution, map_tasks, sgd_steps, task_metrics
from .maml import MAML


def last_layer(net: nn.Module) -> str:
    """The name of the module that holds the network's last parameters (its head): "head" for
    Conv4, "layers.4" for the 1-40-40-1 MLP."""
    names = [name for name, _ in net.named_parameters()]
    if not names:
        raise ValueError(f"{type(net).__name__} has no parameters.")
    return names[-1].rpartition(".")[0]


class ANIL(MAML):
    """MAML with head-only adaptation. ``head``: the name (or names) of the module(s) whose
    parameters the inner loop adapts (default: the last layer, :func:`last_layer`); every other
    parameter is the trunk. The other arguments are MAML's."""

    def __init__(self, net: nn.Module, loss: str = "mse", inner_lr: float = 0.01, inner_steps: int = 1,
                 first_order: bool = False, test_steps: int | None = None, execution: str = "auto",
                 head: str | tuple[str, ...] | None = None):
        super().__init__(net, loss, inner_lr, inner_steps, first_order, test_steps, execution)
        prefixes = (last_layer(net),) if head is None else ((head,) if isinstance(head, str) else tuple(head))
        names = [name for name, _ in net.named_parameters()]
        if not prefixes or not all(isinstance(p, str) and p for p in prefixes):
            raise ValueError(f"head must name one or more modules of the network, got {head!r}.")
        chosen = []
        for prefix in prefixes:
            matched = [n for n in names if n == prefix or n.startswith(prefix + ".")]
            if not matched:
                modules = sorted({n.rpartition(".")[0] for n in names})
                raise ValueError(f"head {prefix!r} names no parameters of {type(net).__name__}; its modules with "
                                 f"parameters are {modules}.")
            chosen += matched
        if len(set(chosen)) == len(names):
            raise ValueError(f"head {prefixes} covers every parameter of the network: that is MAML, not ANIL "
                             "(the trunk would be empty).")
        self.head = prefixes
        self.head_names = tuple(n for n in names if n in set(chosen))

    def __repr__(self) -> str:
        kind = "first-order ANIL" if self.first_order else "ANIL"
        return f"{kind}(head={self.head}, α={self.inner_lr}, inner_steps={self.inner_steps}, loss={self.loss_kind})"

    def trunk_and_head(self, params: Params) -> tuple[Params, Params]:
        head = {k: params[k] for k in self.head_names}
        return {k: v for k, v in params.items() if k not in head}, head

    # --- the inner loop: the head alone ---------------------------------------------------------------
    def _adapt_one(self, theta: Params, x, y, steps: int, lr: float, first_order: bool) -> Params:
        """φ = (θ_trunk, head after ``steps`` steps) for one task; works inside ``vmap``."""
        trunk, head = self.trunk_and_head(theta)
        # First order: the head's step gradients are constants, so the trunk inside them is too.
        fixed = {k: v.detach() for k, v in trunk.items()} if first_order else trunk

        def loss(h, x, y):
            return self.loss({**fixed, **h}, x, y)

        return {**trunk, **sgd_steps(loss, head, x, y, lr, steps, first_order=first_order)}

    def _task(self, theta: Params, x_tr, y_tr, x_ts, y_ts) -> dict[str, torch.Tensor]:
        phi = self._adapt_one(theta, x_tr, y_tr, self.inner_steps, self.inner_lr, self.first_order)
        return task_metrics(self.net, self.loss_kind, phi, x_ts, y_ts)

    def adapt(self, theta: Params, batch: Task | TaskBatch, steps: int | None = None,
              inner_lr: float | None = None) -> Params:
        """φ = (θ_trunk, adapted head) after ``steps`` head steps on D^tr (a :class:`TaskBatch` gives
        them stacked along a task dimension); differentiable with respect to θ."""
        steps = self.inner_steps if steps is None else check_count("steps", steps, minimum=0)
        lr = self.inner_lr if inner_lr is None else check_positive("inner_lr (α)", inner_lr)
        if isinstance(batch, Task):
            self.check_task(theta, batch)
            return self._adapt_one(theta, batch.x_tr, batch.y_tr, steps, lr, self.first_order)
        self.check_batch(theta, batch)
        return map_tasks(lambda t, x, y: self._adapt_one(t, x, y, steps, lr, self.first_order),
                         self._execution(batch), (theta,), (batch.x_tr, batch.y_tr))

    def adaptation_curve(self, theta: Params, batch: TaskBatch, steps: int, inner_lr: float | None = None,
                         execution: str | None = None) -> dict[str, torch.Tensor]:
        """Query metrics after 0, 1, ..., ``steps`` head steps: tensors [tasks, steps + 1]. No graph."""
        steps = check_count("steps", steps, minimum=0)
        lr = self.inner_lr if inner_lr is None else check_positive("inner_lr (α)", inner_lr)
        self.check_batch(theta, batch)
        start = {k: v.detach() for k, v in theta.items()}

        def curve(x_tr, y_tr, x_ts, y_ts):
            phi, points = start, [task_metrics(self.net, self.loss_kind, start, x_ts, y_ts)]
            for _ in range(steps):
                phi = self._adapt_one(phi, x_tr, y_tr, 1, lr, first_order=True)
                points.append(task_metrics(self.net, self.loss_kind, phi, x_ts, y_ts))
            return {k: torch.stack([p[k] for p in points]) for k in points[0]}

        execution = choose_execution(execution or self.execution, self.net, batch.device, batch.shots + batch.queries)
        return map_tasks(curve, execution, (), (batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts))

    def divergence_hint(self) -> str:
        return (f"ANIL's head step α = {self.inner_lr} may be too large for this task family: try a smaller α "
                "(or fewer inner steps).")
