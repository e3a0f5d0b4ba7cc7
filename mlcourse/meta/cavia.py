"""CAVIA (Zintgraf et al. 2019): fast context adaptation via meta-learning.

The network's parameters are split in two. The shared parameters θ are meta-learned and never
change within a task; a small vector of context parameters c is the only thing the inner loop
adapts, always starting from zero:

    c_i = 0 − α ∇_c L(θ, c, D_i^tr)|_{c=0}          (repeated for more inner steps),
    θ ← θ − β ∇θ (1/n) Σ_i L(θ, c_i(θ), D_i^ts).

The meta-gradient flows through c_i(θ): second order in θ, like MAML's, but the inner loop now
moves a handful of numbers instead of every weight. The context enters the network as extra
inputs of the first layer (regression, :class:`ContextMLP`) or through a FiLM layer that scales
and shifts one convolutional block's feature maps (classification, :class:`ContextConv4`).
Starting c at zero costs nothing: a learned start would only duplicate the bias of the layer the
context feeds.

In the package a context network is an ordinary module with one parameter named ``"context"``
(zeros); θ from :meth:`CAVIA.init_params` holds every other parameter, and the task parameters
φ_i = (θ, c_i) that :meth:`CAVIA.adapt` returns are the full parameter dict of the task's network.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import check_count, check_positive
from ..nets import MLP, Conv4, Params
from ..tasks import Task, TaskBatch
from .functional import choose_execution, map_tasks, mean_gradient, sgd_steps, task_metrics
from .learner import GradientLearner, MetaGradient, NetworkLearner

CONTEXT = "context"


class ContextMLP(nn.Module):
    """An MLP whose first layer reads the input and the context, [x, c]: the regression network
    of Zintgraf et al. (1-40-40-1 with 5 context parameters by default)."""

    def __init__(self, sizes=(1, 40, 40, 1), context: int = 5):
        super().__init__()
        check_count("context (the number of context parameters)", context)
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes needs an input and an output size, got {sizes!r}.")
        self.context = nn.Parameter(torch.zeros(context))
        self.body = MLP((sizes[0] + context, *sizes[1:]))
        self.sizes = sizes

    def forward(self, x):
        return self.body(torch.cat([x, self.context.expand(*x.shape[:-1], -1)], dim=-1))


class ContextConv4(nn.Module):
    """Conv4 whose block ``film_block`` (0-based) is modulated by the context through FiLM: after
    that block's batch norm, h ← γ ⊙ h + b with (γ − 1, b) = W c + w₀ one linear map of the
    context (Zintgraf et al. use 100 context parameters at the third block). The map's bias starts
    at zero, so the zero context leaves the network exactly Conv4 (the authors' code uses γ
    itself, not 1 + ..., as the scale)."""

    def __init__(self, ways: int = 5, context: int = 100, film_block: int = 2, in_channels: int = 1,
                 channels: int = 64, image_size: int = 28, downsample: str = "maxpool"):
        super().__init__()
        check_count("context (the number of context parameters)", context)
        if isinstance(film_block, bool) or not isinstance(film_block, int) or not 0 <= film_block < 4:
            raise ValueError(f"film_block must be one of Conv4's blocks 0, 1, 2 or 3, got {film_block!r}.")
        self.body = Conv4(ways, in_channels, channels, image_size, downsample)
        self.film = nn.Linear(context, 2 * channels)
        nn.init.zeros_(self.film.bias)
        self.context = nn.Parameter(torch.zeros(context))
        self.film_block = film_block
        self.channels = channels

    def forward(self, x):
        scale_shift = self.film(self.context)
        gamma = (1 + scale_shift[: self.channels]).view(1, -1, 1, 1)
        beta = scale_shift[self.channels:].view(1, -1, 1, 1)
        h = x
        for i, block in enumerate(self.body.features):
            conv, norm, *rest = block          # [conv, batch norm, ReLU, (max-pool)]
            h = norm(conv(h))
            if i == self.film_block:
                h = gamma * h + beta
            for layer in rest:
                h = layer(h)
        return self.body.head(h.flatten(1))


class CAVIA(NetworkLearner, GradientLearner):
    """CAVIA with ``inner_steps`` steps of size α (``inner_lr``) on the context in meta-training
    and ``test_steps`` (default: as many) at test time; ``first_order=True`` treats the context's
    inner gradients as constants (the authors' first-order variant).

    >>> cavia = CAVIA(ContextMLP(context=5), "mse", inner_lr=1.0)
    >>> theta = cavia.init_params()                       # every parameter but the context
    >>> phi = cavia.adapt(theta, family.sample(25, shots=10))
    >>> phi["context"].shape                              # one context per task
    torch.Size([25, 5])
    """

    def __init__(self, net: nn.Module, loss: str = "mse", inner_lr: float = 1.0, inner_steps: int = 1,
                 first_order: bool = False, test_steps: int | None = None, execution: str = "auto"):
        context = dict(net.named_parameters()).get(CONTEXT) if isinstance(net, nn.Module) else None
        if context is None or context.dim() != 1:
            raise ValueError(f"CAVIA needs a network with a one-dimensional parameter named {CONTEXT!r} (the "
                             f"context, e.g. ContextMLP or ContextConv4); {type(net).__name__} has none.")
        super().__init__(net, loss, execution)
        self.context_size = context.numel()
        self.inner_lr = check_positive("inner_lr (α)", inner_lr)
        self.inner_steps = check_count("inner_steps", inner_steps, minimum=0)
        self.test_steps = self.inner_steps if test_steps is None else check_count("test_steps", test_steps, minimum=0)
        self.first_order = bool(first_order)

    def __repr__(self) -> str:
        return (f"CAVIA(context={self.context_size}, α={self.inner_lr}, inner_steps={self.inner_steps}, "
                f"first_order={self.first_order}, loss={self.loss_kind})")

    # --- θ and the task parameters --------------------------------------------------------------
    def init_params(self, device=None, dtype=None) -> Params:
        """θ: the shared parameters, i.e. every parameter of the network except the context."""
        theta = super().init_params(device, dtype)
        del theta[CONTEXT]
        return theta

    def _shared(self, theta: Params) -> Params:
        if CONTEXT in theta:
            raise ValueError(f"θ must not hold {CONTEXT!r}: the context is not meta-learned, it restarts at zero "
                             "for every task (make θ with CAVIA.init_params).")
        return theta

    def _zero_context(self, theta: Params) -> torch.Tensor:
        p = next(iter(theta.values()))
        return torch.zeros(self.context_size, device=p.device, dtype=p.dtype)

    def check_batch(self, theta: Params, batch: TaskBatch) -> None:
        self._shared(theta)
        super().check_batch({**theta, CONTEXT: self._zero_context(theta)} if theta else theta, batch)

    def check_task(self, theta: Params, task: Task) -> None:
        self._shared(theta)
        super().check_task({**theta, CONTEXT: self._zero_context(theta)} if theta else theta, task)

    # --- the inner loop: only the context moves ---------------------------------------------------
    def context_for(self, theta: Params, x_tr, y_tr, steps: int, inner_lr: float | None = None) -> torch.Tensor:
        """c after ``steps`` gradient steps from zero on one task's D^tr, differentiable in θ (unless
        first order). Works inside ``vmap``."""
        shared = {k: v.detach() for k, v in theta.items()} if self.first_order else theta

        def loss(c, x, y):
            return self.loss({**shared, **c}, x, y)

        start = {CONTEXT: self._zero_context(theta)}
        lr = self.inner_lr if inner_lr is None else inner_lr
        return sgd_steps(loss, start, x_tr, y_tr, lr, steps, first_order=self.first_order)[CONTEXT]

    def _task(self, theta: Params, x_tr, y_tr, x_ts, y_ts) -> dict[str, torch.Tensor]:
        """Query loss (and accuracy) of (θ, c_i) on D_i^ts: one task's term of the meta-loss."""
        c = self.context_for(theta, x_tr, y_tr, self.inner_steps)
        return task_metrics(self.net, self.loss_kind, {**theta, CONTEXT: c}, x_ts, y_ts)

    def adapt(self, theta: Params, batch: Task | TaskBatch, steps: int | None = None,
              inner_lr: float | None = None) -> Params:
        """φ = (θ, c): the task network's parameters after ``steps`` (default: the training's) context
        steps on D^tr. For a :class:`TaskBatch` every entry has a leading task dimension (θ's entries
        are expanded views: they are shared); differentiable with respect to θ."""
        steps = self.inner_steps if steps is None else check_count("steps", steps, minimum=0)
        lr = None if inner_lr is None else check_positive("inner_lr (α)", inner_lr)
        if isinstance(batch, Task):
            self.check_task(theta, batch)
            return {**theta, CONTEXT: self.context_for(theta, batch.x_tr, batch.y_tr, steps, lr)}
        self.check_batch(theta, batch)
        contexts = map_tasks(lambda t, x, y: self.context_for(t, x, y, steps, lr), self._execution(batch),
                             (theta,), (batch.x_tr, batch.y_tr))
        n = batch.num_tasks
        return {**{k: v.expand(n, *v.shape) for k, v in theta.items()}, CONTEXT: contexts}

    # --- the meta-objective -------------------------------------------------------------------------
    def meta_gradient(self, theta: Params, batch: TaskBatch) -> MetaGradient:
        """∇θ of the meta-loss through the context's adaptation, and the per-task metrics."""
        self.check_batch(theta, batch)
        grads, metrics = mean_gradient(self._task, theta, self._execution(batch), (),
                                       (batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts))
        return MetaGradient(grads, metrics)

    # --- evaluation -----------------------------------------------------------------------------------
    def adaptation_curve(self, theta: Params, batch: TaskBatch, steps: int, inner_lr: float | None = None,
                         execution: str | None = None) -> dict[str, torch.Tensor]:
        """Query metrics after 0, 1, ..., ``steps`` context steps: tensors [tasks, steps + 1]. No graph."""
        steps = check_count("steps", steps, minimum=0)
        lr = self.inner_lr if inner_lr is None else check_positive("inner_lr (α)", inner_lr)
        self.check_batch(theta, batch)
        shared = {k: v.detach() for k, v in theta.items()}

        def loss(c, x, y):
            return self.loss({**shared, **c}, x, y)

        def curve(x_tr, y_tr, x_ts, y_ts):
            c = {CONTEXT: self._zero_context(shared)}
            points = [task_metrics(self.net, self.loss_kind, {**shared, **c}, x_ts, y_ts)]
            for _ in range(steps):
                c = sgd_steps(loss, c, x_tr, y_tr, lr, 1)
                points.append(task_metrics(self.net, self.loss_kind, {**shared, **c}, x_ts, y_ts))
            return {k: torch.stack([p[k] for p in points]) for k in points[0]}

        execution = choose_execution(execution or self.execution, self.net, batch.device, batch.shots + batch.queries)
        return map_tasks(curve, execution, (), (batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts))

    def evaluate(self, theta: Params, batch: TaskBatch, steps: int | None = None,
                 inner_lr: float | None = None) -> dict[str, torch.Tensor]:
        """Per-task query metrics after ``steps`` (default ``test_steps``) context steps on D^tr."""
        steps = self.test_steps if steps is None else check_count("steps", steps, minimum=0)
        curve = self.adaptation_curve(theta, batch, steps, inner_lr)
        return {k: v[:, -1] for k, v in curve.items()}

    def divergence_hint(self) -> str:
        return (f"CAVIA's context step α = {self.inner_lr} may be too large for this network: try a smaller α "
                "(or fewer inner steps).")

