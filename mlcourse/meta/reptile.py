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
from ..nets import Params, check_functional, init_params
from ..tasks import TaskBatch
from .functional import adaptation_curve, choose_execution, map_tasks, task_loss, task_metrics
from .maml import check_batch

ADAM_BETA2, ADAM_EPS = 0.999, 1e-8


class Reptile:
    """Reptile with ``inner_steps`` steps of ``inner_optimizer`` ("sgd" or "adam", β1 = 0) at rate
    ``inner_lr`` on minibatches of ``inner_batch`` examples of D^tr (default: all of D^tr)."""

    def __init__(self, net: nn.Module, loss: str = "mse", inner_lr: float = 0.01, inner_steps: int = 5,
                 inner_batch: int | None = None, inner_optimizer: str = "sgd", execution: str = "auto"):
        check_functional(net)
        if inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"inner_optimizer must be 'sgd' or 'adam', got {inner_optimizer!r}.")
        self.net, self.loss_kind, self.loss = net, loss, task_loss(net, loss)
        self.inner_lr = check_positive("inner_lr (α)", inner_lr)
        self.inner_steps = check_count("inner_steps", inner_steps)
        self.inner_batch = None if inner_batch is None else check_count("inner_batch", inner_batch)
        self.inner_optimizer = inner_optimizer
        self.execution = execution
        choose_execution(execution, net, torch.device("cpu"))

    def __repr__(self) -> str:
        return (f"Reptile(α={self.inner_lr}, inner_steps={self.inner_steps}, inner_batch={self.inner_batch}, "
                f"inner_optimizer={self.inner_optimizer}, loss={self.loss_kind})")

    def init_params(self, device=None, dtype=None) -> Params:
        from .. import runtime

        return init_params(self.net, runtime.device() if device is None else device, dtype)

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

    def solutions(self, theta: Params, batch: TaskBatch, steps: int | None = None, batch_size: int | None = None,
                  generator=None) -> Params:
        """φ_i for every task of the batch, stacked along a leading task dimension (no graph).
        ``steps`` and ``batch_size`` override the training values (the paper evaluates with
        50 steps on minibatches of 5)."""
        check_batch(theta, batch)
        steps = self.inner_steps if steps is None else check_count("steps", steps)
        batch_size = self.inner_batch if batch_size is None else check_count("batch_size", batch_size)
        x_steps, y_steps = self._minibatches(batch.x_tr, batch.y_tr, steps, batch_size, generator)
        start = {k: p.detach() for k, p in theta.items()}
        execution = choose_execution(self.execution, self.net, batch.device, batch.shots)
        return map_tasks(self._solve, execution, (start,), (x_steps, y_steps))

    def meta_gradient(self, theta: Params, batch: TaskBatch, generator=None) -> Params:
        """The pseudo-gradient θ − (1/n) Σ_i φ_i (an optimizer step against it moves θ toward the φ_i)."""
        phi = self.solutions(theta, batch, generator=generator)
        return {k: p.detach() - phi[k].mean(0) for k, p in theta.items()}

    def step(self, theta: Params, optimizer: torch.optim.Optimizer, batch: TaskBatch, generator=None):
        """One Reptile update through ``optimizer`` (SGD with lr β is the paper's update). Returns the
        query metrics of the adapted φ_i, for monitoring only."""
        phi = self.solutions(theta, batch, generator=generator)
        with torch.no_grad():
            for k, p in theta.items():
                p.grad = p - phi[k].mean(0)
        optimizer.step()
        metrics = self.query_metrics(phi, batch)
        return {k: v.mean().detach() for k, v in metrics.items()}

    def query_metrics(self, phi: Params, batch: TaskBatch) -> dict[str, torch.Tensor]:
        """Metrics of stacked task parameters φ_i on each task's D^ts, each of shape [tasks]."""
        execution = choose_execution(self.execution, self.net, batch.device, batch.queries)
        return map_tasks(lambda params, x, y: task_metrics(self.net, self.loss_kind, params, x, y),
                         execution, (), (phi, batch.x_ts, batch.y_ts))

    def adaptation_curve(self, theta: Params, batch: TaskBatch, steps: int, inner_lr: float | None = None,
                         execution: str | None = None) -> dict[str, torch.Tensor]:
        """Query metrics after 0..steps full-batch SGD steps on D^tr (as MAML's); [tasks, steps + 1]."""
        check_batch(theta, batch)
        lr = self.inner_lr if inner_lr is None else check_positive("inner_lr", inner_lr)
        return adaptation_curve(self.net, self.loss_kind, theta, batch, steps, lr, execution or self.execution)
