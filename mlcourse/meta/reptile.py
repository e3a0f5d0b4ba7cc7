"""Reptile (Nichol et al. 2018): move θ toward the solutions of the tasks.

For each task, k steps of SGD (or of Adam with β1 = 0, the paper's Omniglot setting) on D_i^tr
give φ_i; then

    θ ← θ + β (1/n) Σ_i (φ_i − θ).

No gradient flows through the inner steps, so memory does not grow with k. The update is
returned as a pseudo-gradient g = θ − mean_i φ_i, so any optimizer can apply it: plain SGD with
learning rate β gives exactly the update above.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import grad

from ..checks import check_count, check_positive
from ..nets import Params
from ..tasks import Task, TaskBatch
from .functional import adaptation_curve, choose_execution, map_tasks, task_metrics
from .learner import GradientLearner, MetaGradient, NetworkLearner

ADAM_BETA2, ADAM_EPS = 0.999, 1e-8


class Reptile(NetworkLearner, GradientLearner):
    """Reptile with ``inner_steps`` steps of ``inner_optimizer`` ("sgd" or "adam", β1 = 0) at rate
    ``inner_lr`` on minibatches of ``inner_batch`` examples of D^tr (default: all of D^tr). At
    test time it adapts with ``test_steps`` steps on minibatches of ``test_batch`` (defaults: the
    training values; the paper evaluates Omniglot with 50 steps on minibatches of 5)."""

    def __init__(self, net: nn.Module, loss: str = "mse", inner_lr: float = 0.01, inner_steps: int = 5,
                 inner_batch: int | None = None, inner_optimizer: str = "sgd", test_steps: int | None = None,
                 test_batch: int | None = None, execution: str = "auto"):
        super().__init__(net, loss, execution)
        if inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"inner_optimizer must be 'sgd' or 'adam', got {inner_optimizer!r}.")
        self.inner_lr = check_positive("inner_lr (α)", inner_lr)
        self.inner_steps = check_count("inner_steps", inner_steps)
        self.inner_batch = None if inner_batch is None else check_count("inner_batch", inner_batch)
        self.inner_optimizer = inner_optimizer
        self.test_steps = self.inner_steps if test_steps is None else check_count("test_steps", test_steps)
        self.test_batch = self.inner_batch if test_batch is None else check_count("test_batch", test_batch)

    def __repr__(self) -> str:
        return (f"Reptile(α={self.inner_lr}, inner_steps={self.inner_steps}, inner_batch={self.inner_batch}, "
                f"inner_optimizer={self.inner_optimizer}, loss={self.loss_kind})")

    def _minibatches(self, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int | None, generator=None):
        """[tasks, steps, batch, ...]: the examples each inner step sees, cycling through a random
        order of D^tr per task (all of D^tr at every step when batch_size is None)."""
        tasks, shots = x.shape[:2]
        if batch_size is None or batch_size >= shots:
            index = torch.arange(shots, device=x.device).expand(tasks, steps, shots)
        else:
            order = torch.rand(tasks, shots, device=x.device, generator=generator).argsort(dim=1)
            position = torch.arange(steps * batch_size, device=x.device) % shots
            index = order[:, position].view(tasks, steps, batch_size)

        def gather(t):
            flat = index.reshape(tasks, -1)
            picked = torch.gather(t, 1, flat.view(tasks, -1, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:]))
            return picked.view(tasks, *index.shape[1:], *t.shape[2:])

        return gather(x), gather(y)

    def _solve(self, theta: Params, x_steps, y_steps) -> Params:
        """φ for one task: the inner optimizer run over its minibatches [steps, batch, ...]."""
        gradient = grad(self.loss)
        params = theta
        second = {k: torch.zeros_like(p) for k, p in theta.items()}
        for t in range(x_steps.shape[0]):
            g = gradient(params, x_steps[t], y_steps[t])
            if self.inner_optimizer == "sgd":
                params = {k: p - self.inner_lr * g[k] for k, p in params.items()}
            else:  # Adam with β1 = 0: a per-entry step size from a running mean of g²
                second = {k: ADAM_BETA2 * second[k] + (1 - ADAM_BETA2) * g[k] ** 2 for k in params}
                correction = 1 - ADAM_BETA2 ** (t + 1)
                params = {k: p - self.inner_lr * g[k] / ((second[k] / correction).sqrt() + ADAM_EPS)
                          for k, p in params.items()}
        return params

    def adapt(self, theta: Params, batch: Task | TaskBatch, steps: int | None = None,
              batch_size: int | None = None, generator=None) -> Params:
        """φ_i for every task of the batch (a :class:`Task` gives one φ), stacked along a leading
        task dimension; no graph. ``steps`` and ``batch_size`` override the training values."""
        single = isinstance(batch, Task)
        if single:
            batch = TaskBatch.stack([batch])
        self.check_batch(theta, batch)
        steps = self.inner_steps if steps is None else check_count("steps", steps)
        batch_size = self.inner_batch if batch_size is None else check_count("batch_size", batch_size)
        x_steps, y_steps = self._minibatches(batch.x_tr, batch.y_tr, steps, batch_size, generator)
        start = {k: p.detach() for k, p in theta.items()}
        execution = choose_execution(self.execution, self.net, batch.device, batch.shots)
        phi = map_tasks(self._solve, execution, (start,), (x_steps, y_steps))
        return {k: v[0] for k, v in phi.items()} if single else phi

    def meta_gradient(self, theta: Params, batch: TaskBatch, generator=None) -> MetaGradient:
        """The pseudo-gradient θ − (1/n) Σ_i φ_i (an optimizer step against it moves θ toward the
        φ_i), and the query metrics of the φ_i for monitoring."""
        phi = self.adapt(theta, batch, generator=generator)
        grads = {k: p.detach() - phi[k].mean(0) for k, p in theta.items()}
        return MetaGradient(grads, self.query_metrics(phi, batch))

    def query_metrics(self, phi: Params, batch: TaskBatch) -> dict[str, torch.Tensor]:
        """Metrics of stacked task parameters φ_i on each task's D^ts, each of shape [tasks]."""
        execution = choose_execution(self.execution, self.net, batch.device, batch.queries)
        return map_tasks(lambda params, x, y: task_metrics(self.net, self.loss_kind, params, x, y),
                         execution, (), (phi, batch.x_ts, batch.y_ts))

    def evaluate(self, theta: Params, batch: TaskBatch, steps: int | None = None,
                 batch_size: int | None = None) -> dict[str, torch.Tensor]:
        """Per-task query metrics after ``test_steps`` inner-optimizer steps on minibatches of
        ``test_batch`` (the paper's evaluation)."""
        phi = self.adapt(theta, batch, self.test_steps if steps is None else steps,
                         self.test_batch if batch_size is None else batch_size)
        return self.query_metrics(phi, batch)

    def adaptation_curve(self, theta: Params, batch: TaskBatch, steps: int, inner_lr: float | None = None,
                         execution: str | None = None) -> dict[str, torch.Tensor]:
        """Query metrics after 0..steps full-batch SGD steps on D^tr (as MAML's); [tasks, steps + 1]."""
        self.check_batch(theta, batch)
        lr = self.inner_lr if inner_lr is None else check_positive("inner_lr", inner_lr)
        return adaptation_curve(self.net, self.loss_kind, theta, batch, steps, lr, execution or self.execution)
