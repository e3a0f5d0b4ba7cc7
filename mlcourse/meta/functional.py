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
from ..nets import MLP, Params, first_derivatives_only, forward

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


def has_task_batched_forward(net: nn.Module) -> bool:
    """Whether ``net`` computes a whole batch of tasks with per-task parameters in plain autograd
    (``net.forward_tasks``), and that forward is the one its ``forward`` computes per task."""
    return isinstance(net, MLP) and type(net).forward is MLP.forward


def batched_loss(net: nn.Module, kind: str, params: Params, x, y) -> dict[str, torch.Tensor]:
    """Per-task metrics [tasks] of ``net`` with stacked per-task parameters on x [tasks, examples, ...]:
    the same numbers as :func:`task_metrics` task by task, in one batched computation."""
    out = net.forward_tasks(params, x)
    if kind == "mse":
        return {"loss": (out - y).pow(2).flatten(1).mean(1)}
    loss = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)
    return {"loss": loss, "accuracy": (out.argmax(-1) == y).float().mean(1)}


def batched_sgd_steps(net: nn.Module, kind: str, params: Params, x, y, lr: LearningRate, steps: int,
                      first_order: bool = False) -> Params:
    """:func:`sgd_steps` for every task at once: ``params`` carry a leading task dimension (θ
    expanded to [tasks, ...] at the start), x and y are [tasks, examples, ...].

    Each task's loss depends only on its own slice of the stacked parameters, so the gradient of
    the sum of the tasks' losses with respect to them is every task's own gradient. Plain autograd
    with ``create_graph=True`` keeps the steps differentiable (second order) with respect to θ
    and α; ``first_order=True`` holds each step's gradient constant, as :func:`sgd_steps` does.
    """
    for _ in range(steps):
        if first_order:
            point = {k: p.detach().requires_grad_(True) for k, p in params.items()}
        else:
            point = params
        total = batched_loss(net, kind, point, x, y)["loss"].sum()
        g = torch.autograd.grad(total, list(point.values()), create_graph=not first_order)
        params = {k: p - lr_for(lr, k) * gk for (k, p), gk in zip(params.items(), g)}
    return params


def expand_tasks(params: Params, tasks: int) -> Params:
    """θ viewed as ``tasks`` per-task copies [tasks, ...] (no copy is made; gradients flow back summed)."""
    return {k: v.expand(tasks, *v.shape) for k, v in params.items()}


def chain_mean_gradient(phi: Params, theta: Params, task_fn, execution: str, per_task: tuple):
    """∇θ (1/n) Σ_i task_fn(φ_i, *task_i)["loss"] where the stacked φ (a dict of [tasks, ...] tensors)
    was computed from θ with a graph, and the loss depends on θ only through φ_i.

    By the chain rule the gradient is (1/n) Σ_i (∂φ_i/∂θ)ᵀ ∇φ L_i(φ_i). So the query pass needs
    first derivatives only: v_i = ∇φ L_i at φ_i held constant, taken task by task (``"loop"``, each
    graph freed at once; outside ``vmap`` the fused kernels are exact) or for all tasks at once
    (``"vmap"``); then one backward pass through the adaptation's graph gives the rest. Returns
    (gradients keyed like θ, per-task metrics [tasks] detached).
    """
    names, leaves = list(theta), list(theta.values())
    constant = {k: v.detach() for k, v in phi.items()}
    if execution == "vmap":
        def one(p, *task):
            metrics = task_fn(p, *task)
            return metrics["loss"], {k: v.detach() for k, v in metrics.items()}
        v, metrics = vmap(grad(one, has_aux=True), in_dims=(0,) + (0,) * len(per_task))(constant, *per_task)
        tasks = _task_count(per_task)
        v = {k: g / tasks for k, g in v.items()}
    else:
        tasks = _task_count(per_task)
        v = {k: torch.empty_like(p) for k, p in constant.items()}
        rows = []
        for i in range(tasks):
            point = {k: p[i].detach().requires_grad_(True) for k, p in constant.items()}
            with first_derivatives_only():  # lets the nets use kernels without a second derivative
                metrics = task_fn(point, *(_index(t, i) for t in per_task))
                g = torch.autograd.grad(metrics["loss"] / tasks, list(point.values()), allow_unused=True)
            for k, gk in zip(point, g):
                v[k][i] = 0 if gk is None else gk
            rows.append({k: m.detach() for k, m in metrics.items()})
        metrics = _stack(rows)
    outputs = [phi[k] for k in v if phi[k].requires_grad]
    grads = torch.autograd.grad(outputs, leaves, [v[k] for k in v if phi[k].requires_grad],
                                allow_unused=True) if outputs else [None] * len(leaves)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, leaves)]
    return dict(zip(names, grads)), metrics


def adapted_mean_gradient(adapt, query, theta: Params, support: tuple, queries: tuple, adapting: str,
                          querying: str, chunk: int | None = None):
    """∇θ (1/n) Σ_i query(adapt(θ, *support_i), *queries_i)["loss"] and the per-task metrics, by
    :func:`chain_mean_gradient`, ``chunk`` tasks at a time (default: all at once).

    ``adapt(θ, *support_i)`` gives φ_i with its graph to θ and is mapped over the tasks of a chunk
    with ``adapting``; the query pass runs with ``querying``. A chunk's adaptation graph is freed
    before the next chunk adapts, so memory holds one chunk's adaptation and one query pass. (It
    also keeps each tensor small: on glibc, blocks above 32 MiB are mapped afresh from the system at
    every allocation, and their page faults made a 32-task Omniglot adaptation slower than a loop.)
    """
    tasks = _task_count(support)
    chunk = tasks if chunk is None else max(1, min(int(chunk), tasks))
    count = -(-tasks // chunk)
    bounds = [round(j * tasks / count) for j in range(count + 1)]  # chunks of near-equal size
    total, rows = None, []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = lambda ts: tuple(_slice(t, lo, hi) for t in ts)  # noqa: E731
        phi = map_tasks(adapt, adapting, (theta,), part(support))
        grads, metrics = chain_mean_gradient(phi, theta, query, querying, part(queries))
        weight = (hi - lo) / tasks
        total = ({k: g * weight for k, g in grads.items()} if total is None
                 else {k: total[k] + g * weight for k, g in grads.items()})
        rows.append(metrics)
    return total, {k: torch.cat([r[k] for r in rows]) for k in rows[0]}


def _slice(t, lo: int, hi: int):
    return {k: v[lo:hi] for k, v in t.items()} if isinstance(t, dict) else t[lo:hi]


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
EXECUTIONS = ("vmap", "loop", "batched")


def choose_execution(execution: str, net: nn.Module, device: torch.device, examples_per_task: int | None = None,
                     batched: bool = False) -> str:
    """How to run a batch of tasks on ``device``: ``"vmap"``, ``"loop"``, or ``"batched"``.

    - ``"vmap"``: one ``torch.func.vmap`` over the task dimension.
    - ``"loop"``: a Python loop over tasks (where gradients are taken, each task's graph is freed
      as soon as its gradient is).
    - ``"batched"``: the network's own task-batched forward in plain autograd
      (:func:`has_task_batched_forward`: the MLP, one batched matrix product per layer). Only
      where the caller has a batched form (``batched=True``: MAML's adaptation and
      meta-gradient); elsewhere a request for it runs as ``"vmap"``, which computes the same.

    All compute the same thing (the tests check it); the choice is speed, measured with
    ``benchmarks/maml_vs_textbook.py``, ``benchmarks/maml_omniglot.py`` and
    ``benchmarks/finetune_vectorised.py`` on the development machine's 2-core CPU:

    - The MLP on the CPU: the batched form beats vmap, whose per-operation transform overhead
      dominates such small tensors ("auto" picks "batched" where the caller offers it, else vmap).
    - Conv4 on the CPU: vmap turns per-task convolutions into grouped convolutions, about 1.3x
      faster than a loop for tasks of 10 images or fewer (Python overhead dominates) and about 3x
      slower for tasks of 50 to 80 images. So "auto" loops only for convolutional nets with more
      than ``SMALL_CONV_TASK`` examples per task (or an unknown number). MAML asks separately for
      its adaptation (D^tr: 5 images in 5-way 1-shot, so vmap) and its query pass (75 images, so a
      loop), see :func:`chain_mean_gradient`.
    - CUDA: vmap (grouped convolutions are fast there); the batched MLP is not measured there yet.
    """
    if execution not in ("auto", *EXECUTIONS):
        raise ValueError(f"execution must be 'auto', 'vmap', 'loop' or 'batched', got {execution!r}.")
    if execution == "batched":
        if not has_task_batched_forward(net):
            raise ValueError(f"execution='batched' needs a network with a task-batched forward (MLP); "
                             f"{type(net).__name__} has none: use 'vmap' or 'loop'.")
        return "batched" if batched else "vmap"
    if execution != "auto":
        return execution
    if device.type == "cpu" and has_task_batched_forward(net):
        return "batched" if batched else "vmap"
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
