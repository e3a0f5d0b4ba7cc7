"""Model-agnostic meta-learning (Finn et al. 2017) and its first-order variant.

Adaptation is a few steps of gradient descent from the meta-parameters θ on a task's D^tr,

    φ_i = θ − α ∇θ L(θ, D_i^tr)            (repeated for more inner steps),

and θ is trained so that the adapted φ_i do well on the task's D^ts:

    θ ← θ − β ∇θ (1/n) Σ_i L(φ_i(θ), D_i^ts).

The meta-gradient differentiates through the inner steps (second order: it contains the
Hessian of the training loss). First-order MAML drops dφ_i/dθ and uses ∇φ L(φ_i, D_i^ts) as the
gradient for θ. Meta-SGD (:mod:`mlcourse.meta.metasgd`) is this learner with α learned too.

One meta-batch is one batched computation: the per-task function below is mapped over the task
dimension with ``torch.func.vmap``, or, where measurement shows it is faster, looped over with
each task's graph freed as soon as its gradient is taken (:func:`functional.mean_gradient`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import check_count, check_positive
from ..nets import Params
from ..tasks import Task, TaskBatch
from .functional import (LearningRate, adaptation_curve, adapted_mean_gradient, batched_loss, batched_sgd_steps,
                         check_rates, choose_execution, expand_tasks, map_tasks, mean_gradient, sgd_steps,
                         task_metrics)
from .learner import GradientLearner, MetaGradient, NetworkLearner


class MAML(NetworkLearner, GradientLearner):
    """MAML with ``inner_steps`` steps of size α (``inner_lr``) in meta-training and
    ``test_steps`` (default: as many) at test time; ``first_order=True`` gives first-order MAML.

    >>> maml = MAML(MLP(), loss="mse", inner_lr=0.01, inner_steps=1)
    >>> theta = maml.init_params()
    >>> optimizer = torch.optim.Adam(theta.values(), lr=1e-3)     # β
    >>> metrics = maml.step(theta, optimizer, family.sample(25, shots=10))
    """

    def __init__(self, net: nn.Module, loss: str = "mse", inner_lr: float = 0.01, inner_steps: int = 1,
                 first_order: bool = False, test_steps: int | None = None, execution: str = "auto"):
        super().__init__(net, loss, execution)
        self.inner_lr = check_positive("inner_lr (α)", inner_lr)
        self.inner_steps = check_count("inner_steps", inner_steps, minimum=0)
        self.test_steps = self.inner_steps if test_steps is None else check_count("test_steps", test_steps, minimum=0)
        self.first_order = bool(first_order)

    def __repr__(self) -> str:
        kind = "first-order MAML" if self.first_order else "MAML"
        return f"{kind}(α={self.inner_lr}, inner_steps={self.inner_steps}, loss={self.loss_kind})"

    # --- what of θ is the network, and what the inner loop's rates ---------------------------------
    def split(self, theta: Params) -> tuple[Params, LearningRate]:
        """(the network's parameters, α): for MAML all of θ is the network and α is fixed."""
        return theta, self.inner_lr

    def _rates(self, theta: Params, inner_lr: LearningRate | None) -> tuple[Params, LearningRate]:
        params, lr = self.split(theta)
        if inner_lr is not None:
            check_rates(inner_lr, params)
            lr = inner_lr
        return params, lr

    # --- adaptation ---------------------------------------------------------------------------
    def adapt(self, theta: Params, batch: Task | TaskBatch, steps: int | None = None,
              inner_lr: LearningRate | None = None) -> Params:
        """φ = Alg(θ, D^tr): ``steps`` gradient steps (default: the training's) on each task's D^tr.
        A :class:`Task` gives φ, a :class:`TaskBatch` the φ_i stacked along a task dimension.
        Differentiable with respect to θ (and α); ``inner_lr`` overrides α."""
        steps = self.inner_steps if steps is None else check_count("steps", steps, minimum=0)
        params, lr = self._rates(theta, inner_lr)
        if isinstance(batch, Task):
            self.check_task(params, batch)
            return sgd_steps(self.loss, params, batch.x_tr, batch.y_tr, lr, steps, first_order=self.first_order)
        self.check_batch(params, batch)
        return map_tasks(lambda p, a, x, y: sgd_steps(self.loss, p, x, y, a, steps, first_order=self.first_order),
                         self._execution(batch), (params, lr), (batch.x_tr, batch.y_tr))

    def _task(self, theta: Params, x_tr, y_tr, x_ts, y_ts) -> dict[str, torch.Tensor]:
        """Query loss (and accuracy) of φ_i = Alg(θ, D_i^tr) on D_i^ts: one task's term of the meta-loss."""
        params, lr = self.split(theta)
        phi = sgd_steps(self.loss, params, x_tr, y_tr, lr, self.inner_steps, first_order=self.first_order)
        return task_metrics(self.net, self.loss_kind, phi, x_ts, y_ts)

    # --- the meta-objective -------------------------------------------------------------------
    def meta_loss(self, theta: Params, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(1/n) Σ_i L(φ_i(θ), D_i^ts), differentiable in θ, and the per-task metrics (detached).
        Keeps every task's graph until the caller's backward: :meth:`meta_gradient` is cheaper."""
        self.check_batch(self.split(theta)[0], batch)
        per_task = map_tasks(self._task, self._execution(batch), (theta,),
                             (batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts))
        return per_task["loss"].mean(), {k: v.detach() for k, v in per_task.items()}

    def meta_gradient(self, theta: Params, batch: TaskBatch) -> MetaGradient:
        """∇θ of the meta-loss (second order unless first_order=True) and the per-task metrics."""
        params, lr = self.split(theta)
        self.check_batch(params, batch)
        if type(self)._task is not MAML._task:  # a subclass with its own task term: the generic path
            return MetaGradient(*mean_gradient(self._task, theta, self._execution(batch), (),
                                               (batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts)))
        # How to run it is chosen per phase, by the measured rule of choose_execution: the
        # adaptation sees D^tr (K·N examples a task), the query pass D^ts.
        adapting = choose_execution(self.execution, self.net, batch.device, batch.shots, batched=True)
        querying = choose_execution(self.execution, self.net, batch.device, batch.queries, batched=True)
        if adapting == querying == "batched":
            phi = batched_sgd_steps(self.net, self.loss_kind, expand_tasks(params, batch.num_tasks), batch.x_tr,
                                    batch.y_tr, lr, self.inner_steps, self.first_order)
            metrics = batched_loss(self.net, self.loss_kind, phi, batch.x_ts, batch.y_ts)
            leaves = list(theta.values())
            grads = torch.autograd.grad(metrics["loss"].mean(), leaves, allow_unused=True)
            grads = {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(theta.items(), grads)}
            return MetaGradient(grads, {k: v.detach() for k, v in metrics.items()})
        if adapting == querying:
            return MetaGradient(*mean_gradient(self._task, theta, adapting, (),
                                               (batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts)))
        # Small D^tr, large D^ts (Omniglot on the CPU): a chunk of tasks adapts in one vmap, then each
        # task's query gradient is taken on its own with its graph freed, and one backward pass
        # through the chunk's adaptation finishes the chain rule (functional.adapted_mean_gradient).
        # A chunk holds about as many D^tr examples as one task has in D^ts, so its adaptation
        # needs no more memory than one query pass.
        def adapt(t, x, y):
            p, a = self.split(t)
            return sgd_steps(self.loss, p, x, y, a, self.inner_steps, first_order=self.first_order)

        return MetaGradient(*adapted_mean_gradient(
            adapt, lambda p, x, y: task_metrics(self.net, self.loss_kind, p, x, y), theta,
            (batch.x_tr, batch.y_tr), (batch.x_ts, batch.y_ts), "vmap" if adapting == "batched" else adapting,
            "vmap" if querying == "batched" else querying, chunk=max(1, batch.queries // max(1, batch.shots))))

    # --- evaluation ---------------------------------------------------------------------------
    def adaptation_curve(self, theta: Params, batch: TaskBatch, steps: int, inner_lr: LearningRate | None = None,
                         execution: str | None = None) -> dict[str, torch.Tensor]:
        """Query metrics of every task after 0, 1, ..., ``steps`` steps of gradient descent on its
        D^tr: tensors of shape [tasks, steps + 1]. Evaluation only: no graph to θ is kept."""
        params, lr = self._rates(theta, inner_lr)
        self.check_batch(params, batch)
        return adaptation_curve(self.net, self.loss_kind, params, batch, steps, lr, execution or self.execution)

    def evaluate(self, theta: Params, batch: TaskBatch, steps: int | None = None,
                 inner_lr: LearningRate | None = None) -> dict[str, torch.Tensor]:
        """Per-task query metrics after ``steps`` (default ``test_steps``) steps on D^tr."""
        steps = self.test_steps if steps is None else check_count("steps", steps, minimum=0)
        curve = self.adaptation_curve(theta, batch, steps, inner_lr)
        return {k: v[:, -1] for k, v in curve.items()}

    def divergence_hint(self) -> str:
        return (f"MAML's inner learning rate α = {self.inner_lr} may be too large for this task family: "
                "try a smaller α (or fewer inner steps).")

