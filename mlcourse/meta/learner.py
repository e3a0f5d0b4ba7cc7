"""The one interface every meta-learner of the course meets.

A learner is the lecture's pair (θ, Alg): meta-parameters θ and an adaptation procedure that
turns θ and a task's training set into task parameters φ_i = Alg(θ, D_i^tr), judged on the
task's test set by L(φ_i, D_i^ts). Every learner in :mod:`mlcourse.meta` (MAML and its family,
Reptile, iMAML, the black-box and metric-based learners) and MAML for RL is used the same way::

    learner = MAML(Conv4(5), "cross_entropy", inner_lr=0.4)
    theta = learner.init_params(device)                 # every meta-parameter, in one dict
    optimizer = torch.optim.Adam(theta.values(), lr=1e-3)
    for it in range(iterations):
        metrics = learner.step(theta, optimizer, sampler.sample(32))   # one meta-update
    per_task = learner.evaluate(theta, test_batch)      # query metrics after adaptation

so that training loops, evaluation, reproductions and distributed training are written once
and never ask which learner they hold.

The pieces:

- :meth:`Learner.init_params` — θ: *all* meta-parameters as one flat dict of leaf tensors that
  require grad (the network's weights, and whatever else the learner learns: Meta-SGD's rates,
  MAML++'s per-step rates). One dict is what optimisers, checkpoints and all-reduces take.
- :meth:`Learner.adapt` — φ_i = Alg(θ, D_i^tr) for every task of a batch, stacked along a
  leading task dimension (for a black-box learner: whatever f_θ(D^tr) produces).
- :meth:`Learner.meta_gradient` — the gradient of the meta-objective (1/n) Σ_i L(φ_i, D_i^ts)
  with respect to every entry of θ, with per-task diagnostics, as a :class:`MetaGradient`.
  For Reptile it is the update direction θ − mean_i φ_i (a "pseudo-gradient").
- :meth:`Learner.step` — one meta-update: the meta-gradient (averaged across processes under
  ``torch.distributed``) handed to a torch optimiser. Provided here; learners rarely override it.
- :meth:`Learner.evaluate` — per-task query metrics after test-time adaptation, no graph to θ.

Gradient-based learners also offer ``adaptation_curve(theta, batch, steps)``: the query
metrics after 0, 1, ..., ``steps`` adaptation steps (:class:`GradientLearner`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import torch
from torch import nn

from ..nets import Params, check_functional, forward, init_params
from ..tasks import Task, TaskBatch


class MetaGradient(NamedTuple):
    """What :meth:`Learner.meta_gradient` returns, for every learner: ``grads, metrics = ...``.

    grads: a dict with the keys of θ: the gradient of the batch's mean meta-loss (for Reptile
        the pseudo-gradient), detached.
    metrics: per-task values, each of shape [tasks]: ``"loss"`` (the query loss after
        adaptation) always, ``"accuracy"`` for classification, and the learner's own diagnostics
        (iMAML's ``"cg_residual"``, ...). Tensors on the device: reading them is a host sync.
    """

    grads: Params
    metrics: dict[str, torch.Tensor]

    def means(self) -> dict[str, torch.Tensor]:
        """The batch means of the metrics (device tensors), as ``step`` returns them."""
        return {k: (v if v.is_floating_point() else v.float()).mean() for k, v in self.metrics.items()}


class Learner(ABC):
    """The interface; see the module docstring. Subclasses set ``loss_kind`` ("mse" or
    "cross_entropy", or the learner's own name of its objective)."""

    loss_kind: str

    @abstractmethod
    def init_params(self, device=None, dtype=None) -> Params:
        """θ: every meta-parameter as a flat dict of leaf tensors that require grad, on ``device``
        (default :func:`mlcourse.runtime.device`)."""

    @abstractmethod
    def adapt(self, theta: Params, batch: TaskBatch, steps: int | None = None) -> Any:
        """φ_i = Alg(θ, D_i^tr) for every task of ``batch``, stacked along a leading task dimension.
        ``steps`` overrides the number of adaptation steps where the learner has them."""

    @abstractmethod
    def meta_gradient(self, theta: Params, batch: TaskBatch) -> MetaGradient:
        """∇θ of the meta-objective on ``batch`` and per-task diagnostics."""

    @abstractmethod
    def evaluate(self, theta: Params, batch: TaskBatch, steps: int | None = None) -> dict[str, torch.Tensor]:
        """Per-task query metrics (each [tasks]) after adapting θ on each task's D^tr with the
        learner's test-time procedure (``steps`` overrides its number of steps). No graph."""

    def step(self, theta: Params, optimizer: torch.optim.Optimizer, batch: TaskBatch) -> dict[str, torch.Tensor]:
        """One meta-update: θ ← optimizer(θ, ∇θ meta-loss). Returns the batch means of the metrics.

        Under ``torch.distributed`` each process passes its own share of the meta-batch; the
        gradients and metrics are averaged over processes before the update, which is then the
        update of one process holding the whole meta-batch.
        """
        from .. import distributed

        result = self.meta_gradient(theta, batch)
        grads, metrics = distributed.average((result.grads, result.means()))
        apply_gradients(theta, grads)
        optimizer.step()
        return metrics


class GradientLearner(Learner):
    """A learner whose adaptation is a sequence of steps: it can report every step's quality."""

    @abstractmethod
    def adaptation_curve(self, theta: Params, batch: TaskBatch, steps: int) -> dict[str, torch.Tensor]:
        """Query metrics after 0, 1, ..., ``steps`` adaptation steps: tensors [tasks, steps + 1]."""


class NetworkLearner(Learner):
    """What the learners built on one network ``net`` with a task loss share: θ is the network's
    parameters (plus whatever :meth:`init_params` of a subclass adds), and task batches are
    checked against θ and the network once, with errors that say what is wrong."""

    def __init__(self, net: nn.Module, loss: str, execution: str = "auto"):
        from .functional import choose_execution, task_loss

        check_functional(net)
        self.net = net
        self.loss_kind = loss
        self.loss = task_loss(net, loss)
        choose_execution(execution, net, torch.device("cpu"))  # validates the name now
        self.execution = execution
        self._checked: set = set()

    def init_params(self, device=None, dtype=None) -> Params:
        """θ, initialised as the network's own initialisation (leaf tensors that require grad)."""
        from .. import runtime

        device = runtime.device() if device is None else runtime.check_device(device)
        return init_params(self.net, device, runtime.check_dtype(dtype))

    def meta_loss(self, theta: Params, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(1/n) Σ_i of each task's query loss (:meth:`_task`), differentiable in θ, and the per-task
        metrics (detached). Keeps every task's graph until the caller's backward, so
        :meth:`meta_gradient` is cheaper; this is for objectives built on top of it."""
        from .functional import map_tasks

        self.check_batch(theta, batch)
        per_task = map_tasks(self._task, self._execution(batch), (theta,),
                             (batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts))
        return per_task["loss"].mean(), {k: v.detach() for k, v in per_task.items()}

    def _task(self, theta: Params, x_tr, y_tr, x_ts, y_ts) -> dict[str, torch.Tensor]:
        """One task's term of the meta-objective: {"loss": ..., and other metrics} on D^ts."""
        raise NotImplementedError(f"{type(self).__name__} defines no per-task objective")

    def _execution(self, batch: TaskBatch) -> str:
        """How a batch's tasks run (vmap, loop or batched): the network, the device and the examples
        per task decide (:func:`mlcourse.meta.functional.choose_execution`)."""
        from .functional import choose_execution

        return choose_execution(self.execution, self.net, batch.device, batch.shots + batch.queries)

    def check_batch(self, params: Params, batch: TaskBatch) -> None:
        """A clear error when a task batch cannot meet the network's parameters."""
        if not isinstance(batch, TaskBatch):
            raise TypeError(f"expected a TaskBatch, got {type(batch).__name__}.")
        self._check_pair(params, batch.x_tr, batch.y_tr, batch.device, "task batch")

    def check_task(self, params: Params, task: Task) -> None:
        if not isinstance(task, Task):
            raise TypeError(f"expected a Task, got {type(task).__name__}.")
        self._check_pair(params, task.x_tr.unsqueeze(0), task.y_tr.unsqueeze(0), task.x_tr.device, "task")

    # Examples of D^tr in the trial forward pass of the checks (a prototype learner needs two).
    trial_examples = 1

    def _check_pair(self, params: Params, x: torch.Tensor, y: torch.Tensor, device, what: str) -> None:
        """θ against one set's inputs x and labels y [tasks, examples, ...]: not empty, the same device
        and dtype, and, once per new input shape, a small forward pass whose output
        :meth:`_check_output` checks against the labels (torch's own shape errors name no set)."""
        if not params:
            raise ValueError("θ is empty: it must hold the network's parameters (see init_params).")
        p = next(iter(params.values()))
        if device != p.device:
            raise ValueError(f"the {what} is on {device} but θ is on {p.device}; move one with .to().")
        if x.is_floating_point() and x.dtype != p.dtype:
            raise ValueError(f"the {what} holds {x.dtype} inputs but θ is {p.dtype}; "
                             "use batch.to(device, dtype=...) to match.")
        key = (tuple(x.shape[2:]), y.dim(), tuple(y.shape[2:]), y.dtype, p.dtype, p.device)
        if key in self._checked:
            return
        with torch.no_grad():
            try:
                out = forward(self.net, {k: v.detach() for k, v in params.items()}, x[0, :self.trial_examples])
            except RuntimeError as err:
                raise ValueError(f"{type(self.net).__name__} cannot read inputs of shape {tuple(x.shape[2:])} "
                                 f"(the {what}'s D^tr x is {tuple(x.shape)}, [tasks, examples, ...]): {err}") from None
        self._check_output(out, x, y, what)
        self._checked.add(key)

    def _check_output(self, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor, what: str) -> None:
        """The trial output against the labels, as the loss needs them."""
        if self.loss_kind == "mse" and out.shape[1:] != y.shape[2:]:
            raise ValueError(f"the network predicts {tuple(out.shape[1:])} per example but the {what}'s targets "
                             f"are {tuple(y.shape[2:])} (y {tuple(y.shape)}); they must agree for the squared error.")
        if self.loss_kind == "cross_entropy":
            if y.is_floating_point() or y.dim() != 2:
                raise ValueError(f"classification labels must be integer class indices [tasks, examples], "
                                 f"got {y.dtype} {tuple(y.shape)}.")
            if y.device.type == "cpu" and y.numel() and (int(y.min()) < 0 or int(y.max()) >= out.shape[-1]):
                raise ValueError(f"labels must lie in 0..{out.shape[-1] - 1} (the network has {out.shape[-1]} "
                                 f"outputs), got {int(y.min())}..{int(y.max())}.")


def apply_gradients(theta: Params, grads: Params) -> None:
    """Store ``grads`` as the ``.grad`` of each entry of θ, for a torch optimiser to use.

    The existing ``.grad`` tensors are overwritten in place, so their addresses stay fixed
    (a step replayed as a CUDA graph keeps reading the same memory).
    """
    missing = set(theta) ^ set(grads)
    if missing:
        raise KeyError(f"the gradient and θ disagree on entries {sorted(missing)[:4]}.")
    with torch.no_grad():
        for k, p in theta.items():
            g = grads[k]
            if p.grad is None or p.grad.shape != p.shape:
                p.grad = g.detach().clone()
            else:
                p.grad.copy_(g)
