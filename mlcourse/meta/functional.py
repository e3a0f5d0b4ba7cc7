"""The pieces every optimisation-based method shares: a task loss L(φ, D) as a pure function of
parameters, gradient steps on it, and the choice between batching tasks with ``vmap`` and
looping over them.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from ..checks import check_count, check_positive
from ..nets import Params, forward

LossFn = Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor]
LearningRate = float | Params


def task_loss(net: nn.Module, kind: str = "mse") -> LossFn:
    """L(φ, D): the mean loss of ``net`` with parameters φ on the examples (x, y) of one task.

    kind: ``"mse"`` (regression) or ``"cross_entropy"`` (classification, y holds class indices).
    """
    if kind == "mse":
        def loss(params, x, y):
            return (forward(net, params, x) - y).pow(2).mean()
    elif kind == "cross_entropy":
        def loss(params, x, y):
            return F.cross_entropy(forward(net, params, x), y)
    else:
        raise ValueError(f"unknown loss {kind!r}; allowed: 'mse' or 'cross_entropy'.")
    loss.kind = kind
    return loss


def task_metrics(net: nn.Module, kind: str, params: Params, x, y) -> dict[str, torch.Tensor]:
    """Loss and, for classification, accuracy of params on (x, y) (one task), without host syncs."""
    out = forward(net, params, x)
    if kind == "mse":
        return {"loss": (out - y).pow(2).mean()}
    return {"loss": F.cross_entropy(out, y), "accuracy": (out.argmax(-1) == y).float().mean()}


def lr_for(lr: LearningRate, name: str):
    """α for one parameter: a float, or a per-parameter tensor (Meta-SGD)."""
    return lr[name] if isinstance(lr, dict) else lr


def check_rates(lr: LearningRate, params: Params, name: str = "inner_lr (α)") -> None:
    """A clear error unless ``lr`` is a positive number or a dict with one tensor per entry of
    ``params``, each broadcastable to it (Meta-SGD's per-parameter rates)."""
    if not isinstance(lr, dict):
        check_positive(name, lr)
        return
    missing, unexpected = sorted(params.keys() - lr.keys()), sorted(lr.keys() - params.keys())
    if missing or unexpected:
        raise ValueError(f"per-parameter {name} must have one entry per parameter; "
                         f"missing {missing[:4]}, unexpected {unexpected[:4]}.")
    for k, rate in lr.items():
        if not isinstance(rate, torch.Tensor):
            raise TypeError(f"per-parameter {name}[{k!r}] must be a tensor, got {type(rate).__name__}.")
        try:
            torch.broadcast_shapes(rate.shape, params[k].shape)
        except RuntimeError:
            raise ValueError(f"per-parameter {name}[{k!r}] has shape {tuple(rate.shape)}, which does not "
                             f"broadcast to the parameter's {tuple(params[k].shape)}.") from None


def sgd_steps(loss: LossFn, params: Params, x, y, lr: LearningRate, steps: int,
              proximal: tuple[Params, float] | None = None, first_order: bool = False) -> Params:
    """φ after ``steps`` steps of φ ← φ − α ∇φ L(φ, (x, y)), starting from ``params``.

    ``proximal=(θ, λ)`` adds the term λ/2 ‖φ − θ‖² to the loss (iMAML's inner problem).
    Written with ``torch.func.grad``, so it works inside ``vmap`` and stays differentiable with
    respect to ``params`` (and α): that is what lets MAML differentiate through adaptation.

    ``first_order=True`` treats each step's gradient as a constant (first-order MAML): then
    dφ/dθ = I, while the rates α keep their exact gradient −Σ_j ∇L(φ_j) ⊙ (∂L^ts/∂φ), which
    needs no Hessian (first-order Meta-SGD).
    """
    gradient = grad(loss)
    for _ in range(steps):
        point = {k: p.detach() for k, p in params.items()} if first_order else params
        g = gradient(point, x, y)
        if proximal is not None:
            anchor, lam = proximal
            g = {k: g[k] + lam * (point[k] - anchor[k]) for k in g}
        params = {k: p - lr_for(lr, k) * g[k] for k, p in params.items()}
    return params


def mean_gradient(task_fn, theta: Params, execution: str, shared: tuple, per_task: tuple):
    """The gradient with respect to θ of the mean over tasks of ``task_fn(θ, *shared, *task_i)["loss"]``,
    and every task's metrics (detached, stacked to [tasks]).

    With ``execution="vmap"`` the tasks are one batched computation and one backward pass. With
    ``"loop"`` each task's gradient is taken as soon as its loss is computed, so only one task's
    graph is alive at a time (the memory of one task, not of the whole meta-batch).
    """
    names, leaves = list(theta), list(theta.values())
    if execution == "vmap":
        metrics = map_tasks(task_fn, "vmap", (theta, *shared), per_task)
        grads = torch.autograd.grad(metrics["loss"].mean(), leaves, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, leaves)]
        return dict(zip(names, grads)), {k: v.detach() for k, v in metrics.items()}
    tasks = _task_count(per_task)
    total = [torch.zeros_like(p) for p in leaves]
    rows = []
    for i in range(tasks):
        metrics = task_fn(theta, *shared, *(_index(t, i) for t in per_task))
        grads = torch.autograd.grad(metrics["loss"] / tasks, leaves, allow_unused=True)
        for acc, g in zip(total, grads):
            if g is not None:
                acc.add_(g)
        rows.append({k: v.detach() for k, v in metrics.items()})
    return dict(zip(names, total)), _stack(rows)


def has_conv(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in net.modules())


# Examples per task up to which vmap beats a loop for convolutional nets on the CPU.
SMALL_CONV_TASK = 16


def choose_execution(execution: str, net: nn.Module, device: torch.device, examples_per_task: int | None = None) -> str:
    """``"vmap"`` or ``"loop"`` for a batch of tasks on ``device``.

    Both compute the same thing (the tests check it); the choice is speed. Measured with
    ``benchmarks/maml_omniglot.py`` and ``benchmarks/finetune_vectorised.py``: vmap wins for the
    MLP everywhere and for Conv4 on CUDA. On the CPU, vmap turns Conv4's per-task convolutions into
    grouped convolutions: about 1.3x faster than a loop for tasks of 10 images (Python overhead
    dominates), about 3x slower for tasks of 50 to 80 images. So "auto" loops over tasks only for
    convolutional nets on the CPU with more than ``SMALL_CONV_TASK`` examples per task (or an unknown
    number).
    """
    if execution not in ("auto", "vmap", "loop"):
        raise ValueError(f"execution must be 'auto', 'vmap' or 'loop', got {execution!r}.")
    if execution != "auto":
        return execution
    small = examples_per_task is not None and examples_per_task <= SMALL_CONV_TASK
    return "loop" if device.type == "cpu" and has_conv(net) and not small else "vmap"


def map_tasks(fn, execution: str, shared: tuple, per_task: tuple):
    """fn(*shared, *task_i) for every task i, stacked. ``per_task`` holds tensors (or dicts of
    tensors) with a leading task dimension; ``execution`` is "vmap" or "loop". fn returns a tensor,
    or dicts and tuples of tensors."""
    if execution == "vmap":
        return vmap(fn, in_dims=(None,) * len(shared) + (0,) * len(per_task))(*shared, *per_task)
    return _stack([fn(*shared, *(_index(t, i) for t in per_task)) for i in range(_task_count(per_task))])


def _index(t, i):
    return {k: v[i] for k, v in t.items()} if isinstance(t, dict) else t[i]


def _task_count(per_task: tuple) -> int:
    leaves = [v for t in per_task for v in (t.values() if isinstance(t, dict) else (t,))]
    return leaves[0].shape[0]  # a dict may be empty (nothing of θ differs between tasks)


def _stack(results: list):
    """Stack a list of equally structured results (tensors, dicts or tuples of them)."""
    first = results[0]
    if isinstance(first, dict):
        return {k: _stack([r[k] for r in results]) for k in first}
    if isinstance(first, tuple):
        return tuple(_stack([r[i] for r in results]) for i in range(len(first)))
    return torch.stack(results)


def adaptation_curve(net: nn.Module, kind: str, theta: Params, batch, steps: int, lr: LearningRate,
                     execution: str = "auto", lam: float | None = None) -> dict[str, torch.Tensor]:
    """Query metrics of every task of ``batch`` after 0, 1, ..., ``steps`` steps of gradient descent
    from θ on its D^tr (test-time adaptation): tensors of shape [tasks, steps + 1]. No graph to θ.
    ``lam`` adds iMAML's proximal term λ/2 ‖φ − θ‖² to the adaptation loss."""
    steps = check_count("steps", steps, minimum=0)
    loss = task_loss(net, kind)
    start = {k: p.detach() for k, p in theta.items()}
    lr = {k: v.detach() for k, v in lr.items()} if isinstance(lr, dict) else lr

    def curve(params, x_tr, y_tr, x_ts, y_ts):
        anchor, points = params, [task_metrics(net, kind, params, x_ts, y_ts)]
        for _ in range(steps):
            params = sgd_steps(loss, params, x_tr, y_tr, lr, 1, None if lam is None else (anchor, lam))
            points.append(task_metrics(net, kind, params, x_ts, y_ts))
        return {k: torch.stack([p[k] for p in points]) for k in points[0]}

    execution = choose_execution(execution, net, batch.device, batch.shots + batch.queries)
    return map_tasks(curve, execution, (start,), (batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts))
