"""Model-agnostic meta-learning (Finn et al. 2017), its first-order variant, and Meta-SGD.

Adaptation is a few steps of gradient descent from the meta-parameters θ on a task's D^tr,

    φ_i = θ − α ∇θ L(θ, D_i^tr)            (repeated for more inner steps),

and θ is trained so that the adapted φ_i do well on the task's D^ts:

    θ ← θ − β ∇θ (1/n) Σ_i L(φ_i(θ), D_i^ts).

The meta-gradient differentiates through the inner steps (second order: it contains the
Hessian of the training loss). First-order MAML drops dφ_i/dθ and uses ∇φ L(φ_i, D_i^ts) as the
gradient for θ. Meta-SGD (Li et al. 2017) also learns α, one rate per parameter entry.

One meta-batch is one batched computation: the per-task function below is mapped over the task
dimension with ``torch.func.vmap`` (or, where measurement shows it is faster, a loop).
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import check_count, check_positive
from ..nets import Params, check_functional, init_params
from ..tasks import TaskBatch
from .functional import (LearningRate, adaptation_curve, choose_execution, map_tasks, sgd_steps, task_loss,
                         task_metrics)


def check_batch(theta: Params, batch: TaskBatch) -> None:
    """A clear error when a task batch cannot meet θ (another device or float type)."""
    if not isinstance(batch, TaskBatch):
        raise TypeError(f"expected a TaskBatch, got {type(batch).__name__}.")
    p = next(iter(theta.values()))
    if batch.device != p.device:
        raise ValueError(f"the task batch is on {batch.device} but θ is on {p.device}; move one with .to().")
    if batch.x_tr.is_floating_point() and batch.x_tr.dtype != p.dtype:
        raise ValueError(f"the task batch holds {batch.x_tr.dtype} inputs but θ is {p.dtype}; "
                         "use batch.to(device, dtype=...) to match.")


class MAML:
    """MAML with ``inner_steps`` steps of size α (``inner_lr``); ``first_order=True`` gives
    first-order MAML. Pass a dict of per-parameter rates as ``inner_lr`` to any method for Meta-SGD
    (:meth:`init_inner_lr` makes one to train alongside θ).

    >>> maml = MAML(MLP(), loss="mse", inner_lr=0.01, inner_steps=1)
    >>> theta = maml.init_params()
    >>> optimizer = torch.optim.Adam(theta.values(), lr=1e-3)     # β
    >>> metrics = maml.step(theta, optimizer, family.sample(25, shots=10))
    """

    def __init__(self, net: nn.Module, loss: str = "mse", inner_lr: float = 0.01, inner_steps: int = 1,
                 first_order: bool = False, execution: str = "auto"):
        check_functional(net)
        self.net = net
        self.loss_kind = loss
        self.loss = task_loss(net, loss)
        self.inner_lr = check_positive("inner_lr (α)", inner_lr)
        self.inner_steps = check_count("inner_steps", inner_steps, minimum=0)
        self.first_order = bool(first_order)
        self.execution = execution
        choose_execution(execution, net, torch.device("cpu"))  # validates the name now

    def __repr__(self) -> str:
        kind = "first-order MAML" if self.first_order else "MAML"
        return f"{kind}(α={self.inner_lr}, inner_steps={self.inner_steps}, loss={self.loss_kind})"

    # --- parameters ---------------------------------------------------------------------------
    def init_params(self, device=None, dtype=None) -> Params:
        """θ, initialised as the network's own initialisation (leaf tensors that require grad)."""
        from .. import runtime

        return init_params(self.net, runtime.device() if device is None else device, dtype)

    def init_inner_lr(self, theta: Params, value: float | None = None) -> Params:
        """Meta-SGD's α: one learnable rate per entry of θ, all starting at ``value`` (default α)."""
        value = self.inner_lr if value is None else check_positive("inner_lr", value)
        return {k: torch.full_like(p, value).detach().requires_grad_(True) for k, p in theta.items()}

    # --- one task -----------------------------------------------------------------------------
    def adapt(self, theta: Params, x_tr, y_tr, steps: int | None = None, inner_lr: LearningRate | None = None) -> Params:
        """φ = Alg(θ, D^tr): ``steps`` gradient steps on one task's D^tr (test-time adaptation)."""
        steps = self.inner_steps if steps is None else check_count("steps", steps, minimum=0)
        return sgd_steps(self.loss, theta, x_tr, y_tr, self.inner_lr if inner_lr is None else inner_lr, steps)

    def _task(self, theta: Params, lr: LearningRate, x_tr, y_tr, x_ts, y_ts) -> dict[str, torch.Tensor]:
        """Query loss (and accuracy) of φ_i = Alg(θ, D_i^tr) on D_i^ts: one task's term of the meta-loss."""
        if self.first_order:
            start = {k: p.detach() for k, p in theta.items()}
            phi = sgd_steps(self.loss, start, x_tr, y_tr, lr, self.inner_steps)
            # θ + (φ − θ) with the difference held constant: the value is φ, the gradient with
            # respect to θ is ∇φ L(φ, D^ts): dφ/dθ is dropped.
            phi = {k: p + (phi[k] - p).detach() for k, p in theta.items()}
        else:
            phi = sgd_steps(self.loss, theta, x_tr, y_tr, lr, self.inner_steps)
        return task_metrics(self.net, self.loss_kind, phi, x_ts, y_ts)

    # --- a meta-batch -------------------------------------------------------------------------
    def task_metrics(self, theta: Params, batch: TaskBatch, inner_lr: LearningRate | None = None):
        """Per-task query metrics after adaptation, each of shape [tasks]; differentiable in θ."""
        check_batch(theta, batch)
        lr = self.inner_lr if inner_lr is None else inner_lr
        execution = choose_execution(self.execution, self.net, batch.device, batch.shots + batch.queries)
        return map_tasks(self._task, execution, (theta, lr), (batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts))

    def meta_loss(self, theta: Params, batch: TaskBatch, inner_lr: LearningRate | None = None):
        """(1/n) Σ_i L(φ_i(θ), D_i^ts), and the batch means of the metrics (tensors, no host sync)."""
        per_task = self.task_metrics(theta, batch, inner_lr)
        means = {k: v.mean() for k, v in per_task.items()}
        return means["loss"], {k: v.detach() for k, v in means.items()}

    def meta_gradient(self, theta: Params, batch: TaskBatch, inner_lr: LearningRate | None = None) -> Params:
        """∇θ of the meta-loss (second order unless first_order=True), as a dict like θ."""
        loss, _ = self.meta_loss(theta, batch, inner_lr)
        grads = torch.autograd.grad(loss, list(theta.values()))
        return dict(zip(theta.keys(), grads))

    def step(self, theta: Params, optimizer: torch.optim.Optimizer, batch: TaskBatch,
             inner_lr: LearningRate | None = None) -> dict[str, torch.Tensor]:
        """One meta-update θ ← θ − β ∇θ meta-loss with the given optimizer; returns the metrics."""
        optimizer.zero_grad(set_to_none=True)
        loss, metrics = self.meta_loss(theta, batch, inner_lr)
        loss.backward()
        optimizer.step()
        return metrics

    # --- evaluation ---------------------------------------------------------------------------
    def adaptation_curve(self, theta: Params, batch: TaskBatch, steps: int, inner_lr: LearningRate | None = None,
                         execution: str | None = None) -> dict[str, torch.Tensor]:
        """Query metrics of every task after 0, 1, ..., ``steps`` steps of gradient descent on its
        D^tr: tensors of shape [tasks, steps + 1]. Evaluation only: no graph to θ is kept."""
        check_batch(theta, batch)
        lr = self.inner_lr if inner_lr is None else inner_lr
        return adaptation_curve(self.net, self.loss_kind, theta, batch, steps, lr, execution or self.execution)

    def divergence_hint(self) -> str:
        return (f"MAML's inner learning rate α = {self.inner_lr} may be too large for this task family: "
                "try a smaller α (or fewer inner steps).")
