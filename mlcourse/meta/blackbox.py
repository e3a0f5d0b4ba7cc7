"""Black-box adaptation: a network reads a task's training set and outputs its parameters.

    φ_i = f_θ(D_i^tr),        ŷ^ts = g_{φ_i}(x^ts),        min_θ Σ_i L(g_{f_θ(D_i^tr)}, D_i^ts).

Adaptation is a forward pass; θ is trained with the ordinary gradient of the query loss. Three
choices of f and g for regression, all batched over tasks ([tasks, points, dim] tensors):

- :class:`CNP`: a set encoder h_θ maps each pair (x, y) of D^tr to a vector, the mean of those
  vectors is φ_i (a summary that ignores the order of D^tr), and a decoder g_θ(x, φ_i) predicts y
  (the conditional neural process of Garnelo et al. 2018, here with a mean output and MSE).
- :class:`HyperNetwork` with ``generate="all"``: the summary is mapped to *every* weight of a
  target network (φ_i is a full parameter vector) that then predicts y^ts.
- :class:`HyperNetwork` with ``generate="last"``: a shared trunk (part of θ) computes features,
  and the summary gives only the last layer's weights: φ_i is tiny.

:class:`BlackBox` makes any of them a :class:`~mlcourse.meta.learner.Learner` (``init_params``,
``adapt``, ``meta_gradient``, ``step``, ``evaluate``), so they are trained and evaluated exactly as
MAML is. A regression task batch is the usual TaskBatch: D^tr [tasks, K, x_dim] read as a set,
D^ts [tasks, Q, x_dim] predicted from φ_i.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call, vmap

from ..checks import check_count
from ..nets import MLP, Params, check_functional, init_params
from ..tasks import TaskBatch
from .learner import Learner, MetaGradient


def _check_sets(x_tr, y_tr, x_ts, x_dim: int, y_dim: int) -> None:
    for name, t, dim in (("x_tr", x_tr, x_dim), ("y_tr", y_tr, y_dim), ("x_ts", x_ts, x_dim)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[-1] != dim:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape [tasks, points, {dim}], got {got}.")
    if x_tr.shape[:2] != y_tr.shape[:2] or x_tr.shape[0] != x_ts.shape[0]:
        raise ValueError(f"D^tr and D^ts disagree: x_tr {tuple(x_tr.shape)}, y_tr {tuple(y_tr.shape)}, "
                         f"x_ts {tuple(x_ts.shape)} (same tasks, same points in x_tr and y_tr).")
    if x_tr.shape[1] == 0:
        raise ValueError("D^tr is empty (K = 0): a black-box learner needs at least one example to summarise.")


class SetEncoder(nn.Module):
    """mean_k h_θ(x_k, y_k): [tasks, K, in_dim] -> [tasks, out_dim], invariant to the order of D^tr."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, layers: int = 3):
        super().__init__()
        check_count("layers", layers, minimum=2)
        self.net = MLP((in_dim, *[hidden] * (layers - 1), out_dim))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.net(pairs).mean(dim=1)


class CNP(nn.Module):
    """Set encoder + decoder: ``forward(x_tr, y_tr, x_ts)`` -> ŷ^ts [tasks, Q, y_dim]."""

    def __init__(self, x_dim: int = 1, y_dim: int = 1, r_dim: int = 128, hidden: int = 128, layers: int = 3):
        super().__init__()
        self.x_dim, self.y_dim = check_count("x_dim", x_dim), check_count("y_dim", y_dim)
        self.encoder = SetEncoder(x_dim + y_dim, check_count("r_dim", r_dim), hidden, layers)
        self.decoder = MLP((x_dim + r_dim, *[hidden] * (layers - 1), y_dim))

    def adapt(self, x_tr: torch.Tensor, y_tr: torch.Tensor) -> torch.Tensor:
        """φ_i = f_θ(D_i^tr): the summary vector of each task, [tasks, r_dim]."""
        return self.encoder(torch.cat([x_tr, y_tr], -1))

    def forward(self, x_tr, y_tr, x_ts, phi_only: bool = False):
        _check_sets(x_tr, y_tr, x_ts, self.x_dim, self.y_dim)
        phi = self.adapt(x_tr, y_tr)
        if phi_only:
            return phi
        return self.decoder(torch.cat([x_ts, phi.unsqueeze(1).expand(-1, x_ts.shape[1], -1)], -1))


class HyperNetwork(nn.Module):
    """A set encoder whose summary is turned into the weights φ_i of a target MLP.

    sizes: the target MLP (default 1-40-40-1). generate: ``"all"`` (every weight of the MLP) or
    ``"last"`` (only its last layer; the other layers are a trunk shared by all tasks, part of θ,
    and the encoder reads (trunk(x), y) pairs). The generator's bias starts at the MLP's own
    initialisation, so at the start every task gets a sensible network.
    """

    def __init__(self, sizes=(1, 40, 40, 1), generate: str = "all", r_dim: int = 64, hidden: int = 128):
        super().__init__()
        if generate not in ("all", "last"):
            raise ValueError(f"generate must be 'all' or 'last', got {generate!r}.")
        target = MLP(sizes)
        self.generate, self.x_dim, self.y_dim = generate, sizes[0], sizes[-1]
        if generate == "last":
            self.trunk = nn.Sequential(*list(target.layers)[:-1])  # ends with a ReLU
            head = list(target.layers)[-1]
            self.target = None
            start = {"weight": head.weight, "bias": head.bias}
            enc_in = sizes[-2] + sizes[-1]
        else:
            self.trunk = None
            self.target = (target,)  # a tuple: its parameters belong to no θ, they are generated
            start = dict(target.named_parameters())
            enc_in = sizes[0] + sizes[-1]
        self.shapes = {k: tuple(v.shape) for k, v in start.items()}
        self.phi_size = sum(math.prod(s) for s in self.shapes.values())
        self.encoder = SetEncoder(enc_in, check_count("r_dim", r_dim), hidden)
        self.generator = nn.Linear(r_dim, self.phi_size)
        with torch.no_grad():
            self.generator.weight.mul_(0.1)
            self.generator.bias.copy_(torch.cat([v.detach().flatten() for v in start.values()]))

    def adapt(self, x_tr: torch.Tensor, y_tr: torch.Tensor) -> Params:
        """φ_i = f_θ(D_i^tr) as a parameter dict with a leading task dimension."""
        inputs = x_tr if self.trunk is None else self.trunk(x_tr)
        flat = self.generator(self.encoder(torch.cat([inputs, y_tr], -1)))  # [tasks, |φ|]
        phi, start = {}, 0
        for name, shape in self.shapes.items():
            size = math.prod(shape)
            phi[name] = flat[:, start:start + size].reshape(-1, *shape)
            start += size
        return phi

    def forward(self, x_tr, y_tr, x_ts, phi_only: bool = False):
        _check_sets(x_tr, y_tr, x_ts, self.x_dim, self.y_dim)
        phi = self.adapt(x_tr, y_tr)
        if phi_only:
            return phi
        if self.trunk is None:  # every task runs the target MLP with its own φ_i, batched with vmap
            target = self.target[0]
            return vmap(lambda p, x: functional_call(target, p, (x,)))(phi, x_ts)
        features = self.trunk(x_ts)  # [tasks, Q, F]
        return features @ phi["weight"].transpose(-1, -2) + phi["bias"].unsqueeze(1)


class BlackBox(Learner):
    """Meta-training of a black-box learner ``model(x_tr, y_tr, x_ts)`` on task batches.

    >>> learner = BlackBox(CNP())
    >>> theta = learner.init_params()
    >>> optimizer = torch.optim.Adam(theta.values(), lr=1e-3)
    >>> metrics = learner.step(theta, optimizer, family.sample(25, shots=10))
    """

    def __init__(self, model: nn.Module, loss: str = "mse"):
        if loss != "mse":
            raise ValueError(f"BlackBox supports loss='mse' (regression), got {loss!r}.")
        check_functional(model)
        self.model, self.loss_kind = model, loss

    def __repr__(self) -> str:
        return f"BlackBox({type(self.model).__name__}, loss={self.loss_kind})"

    def init_params(self, device=None, dtype=None) -> Params:
        """θ: every parameter of the encoder, decoder or generator (leaf tensors that require grad)."""
        from .. import runtime

        return init_params(self.model, runtime.device() if device is None else device, dtype)

    def predict(self, theta: Params, x_tr, y_tr, x_ts) -> torch.Tensor:
        """ŷ^ts = g_{φ_i}(x^ts) with φ_i = f_θ(D_i^tr), for every task of the batch at once."""
        return functional_call(self.model, theta, (x_tr, y_tr, x_ts))

    def _check(self, theta: Params, batch: TaskBatch) -> None:
        if not isinstance(batch, TaskBatch):
            raise TypeError(f"expected a TaskBatch, got {type(batch).__name__}.")
        if not theta:
            raise ValueError("θ is empty: it must hold the model's parameters (see init_params).")
        p = next(iter(theta.values()))
        if batch.device != p.device or batch.x_tr.dtype != p.dtype:
            raise ValueError(f"the task batch holds {batch.x_tr.dtype} on {batch.device} but θ is {p.dtype} on "
                             f"{p.device}; use batch.to(device, dtype=...) to match.")

    def adapt(self, theta: Params, batch: TaskBatch, steps: int | None = None):
        """φ_i = f_θ(D_i^tr) for every task: the CNP's summary [tasks, r_dim], or the hypernetwork's
        generated weights (a dict with a leading task dimension). One forward pass: ``steps`` must be None."""
        if steps is not None:
            raise ValueError(f"a black-box learner adapts in one forward pass; steps must be None, got {steps!r}.")
        self._check(theta, batch)
        return functional_call(self.model, theta, (batch.x_tr, batch.y_tr, batch.x_ts), {"phi_only": True})

    def task_metrics(self, theta: Params, batch: TaskBatch) -> dict[str, torch.Tensor]:
        """Per-task query loss L(φ_i, D_i^ts), shape [tasks]; differentiable in θ."""
        self._check(theta, batch)
        prediction = self.predict(theta, batch.x_tr, batch.y_tr, batch.x_ts)
        return {"loss": (prediction - batch.y_ts).pow(2).mean(dim=(1, 2))}

    def meta_loss(self, theta: Params, batch: TaskBatch):
        """(1/n) Σ_i L(f_θ(D_i^tr), D_i^ts) and the batch means of the metrics (detached)."""
        per_task = self.task_metrics(theta, batch)
        means = {k: v.mean() for k, v in per_task.items()}
        return means["loss"], {k: v.detach() for k, v in means.items()}

    def meta_gradient(self, theta: Params, batch: TaskBatch) -> MetaGradient:
        """∇θ (1/n) Σ_i L(f_θ(D_i^tr), D_i^ts): the ordinary gradient through one forward pass."""
        per_task = self.task_metrics(theta, batch)
        grads = torch.autograd.grad(per_task["loss"].mean(), list(theta.values()))
        return MetaGradient(dict(zip(theta, grads)), {k: v.detach() for k, v in per_task.items()})

    @torch.no_grad()
    def evaluate(self, theta: Params, batch: TaskBatch, steps: int | None = None) -> dict[str, torch.Tensor]:
        """Per-task query loss after one forward pass, [tasks], without a graph."""
        if steps is not None:
            raise ValueError(f"a black-box learner adapts in one forward pass; steps must be None, got {steps!r}.")
        return self.task_metrics(theta, batch)
