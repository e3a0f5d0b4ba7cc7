"""Multi-task learning: M tasks solved at once, with more or less of the parameters shared.

The lecture's objective is min_θ Σ_i w_i L_i(θ, D_i). What θ is decides how much is shared:

- ``"shared"``: one network f_θ for every task (the vanilla objective, everything shared);
- ``"hard"``: hard parameter sharing, f_i(x) = h_{θ_i}(g_{θ_sh}(x)): a shared trunk g and one
  head h per task, min over (θ_sh, θ_1, ..., θ_M);
- ``"conditioned"``: one network told which task it solves, f(x, i) = h_θ([g_θ(x), z_i]), where
  z_i is the one-hot code of task i or a learned task embedding;
- ``"independent"``: M separate networks (nothing shared), the single-task baseline.

Every model is a pure function of a parameter dict. Data come as a :class:`~mlcourse.tasks.TaskBatch`
whose task dimension is the task index: ``x [M, n, ...]`` holds task i's examples in slot i. The
per-task computation is mapped over tasks with ``torch.func.vmap`` (shared tensors are passed
once, per-task heads are stacked with a leading M dimension), not a Python loop over tasks.

Where no layer mixes the examples of a batch (no batch normalisation: MLPs, linear heads), the
same function also runs *batched*: shared layers on all M·n examples at once, per-task linear
layers as one batched matrix product (:meth:`mlcourse.nets.MLP.forward_tasks`). On the CPU that
avoids vmap's per-operation overhead, which dominates networks this small; ``execution="auto"``
picks it there. The tests hold every path to the per-task loop.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..checks import check_count
from ..nets import MLP, Params, check_functional, forward
from .functional import choose_execution, map_tasks

KINDS = ("shared", "hard", "conditioned", "independent")
EXECUTIONS = ("auto", "vmap", "loop", "batched")
# Layers that compute each example on its own: a batch of M·n examples through them is M batches
# of n. Batch normalisation (batch statistics) is not among them.
PER_EXAMPLE = (MLP, nn.Sequential, nn.Linear, nn.Identity, nn.Flatten, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU,
               nn.LeakyReLU, nn.ELU)
PER_TASK = ("heads.", "nets.")  # prefixes of parameters with a leading task dimension
WEIGHTINGS = ("equal", "uncertainty")


def _fresh(module: nn.Module) -> dict[str, torch.Tensor]:
    """A new draw of the module's own initialisation (its reset_parameters), detached."""
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _strip(params: Params, prefix: str) -> Params:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


class MultiTask:
    """M tasks sharing parameters as ``kind`` says (see the module docstring).

    Args:
        kind: ``"shared"``, ``"hard"``, ``"conditioned"`` or ``"independent"``.
        num_tasks: M.
        net: the whole network (``shared`` and ``independent``).
        trunk, head: g and h (``hard`` and ``conditioned``; for ``conditioned`` the head's input
            is the trunk's output with the task code appended on the last dimension).
        embedding: ``conditioned`` only: None for a fixed one-hot code of size M, or the size of a
            learned task embedding z_i.
        loss: ``"mse"`` or ``"cross_entropy"``.
        weighting: the w_i of Σ_i w_i L_i: ``"equal"`` (w_i = 1/M, so the step size does not grow
            with M), a sequence of M fixed weights, or ``"uncertainty"`` (Kendall et al. 2018:
            Σ_i ½ exp(−s_i) L_i + ½ s_i with learned s_i = log σ_i², averaged over tasks).
        execution: ``"vmap"``, ``"loop"``, ``"batched"`` or ``"auto"``. ``"batched"`` needs layers that
            compute each example on its own (:data:`PER_EXAMPLE`) and per-task parts that are MLPs or
            linear layers; ``"auto"`` takes it on the CPU where it applies, and otherwise vmap (for
            independent per-task networks, :func:`mlcourse.meta.functional.choose_execution` decides by
            device and examples per task).
    """

    def __init__(self, kind: str, num_tasks: int, *, net: nn.Module | None = None, trunk: nn.Module | None = None,
                 head: nn.Module | None = None, embedding: int | None = None, loss: str = "mse",
                 weighting: str | Sequence[float] = "equal", execution: str = "auto"):
        if kind not in KINDS:
            raise ValueError(f"unknown multi-task model {kind!r}; allowed: {', '.join(map(repr, KINDS))}.")
        self.kind, self.num_tasks = kind, check_count("num_tasks (M)", num_tasks)
        needs = ("net",) if kind in ("shared", "independent") else ("trunk", "head")
        given = {"net": net, "trunk": trunk, "head": head}
        for name in needs:
            if given[name] is None:
                raise ValueError(f"a {kind!r} model needs {name}=...; it takes {' and '.join(needs)}.")
        extra = [n for n in given if given[n] is not None and n not in needs]
        if extra:
            raise ValueError(f"a {kind!r} model takes {' and '.join(needs)}, not {', '.join(extra)}.")
        if embedding is not None and kind != "conditioned":
            raise ValueError(f"embedding= is for the 'conditioned' model, not {kind!r}.")
        self.net, self.trunk, self.head = net, trunk, head
        for module in (net, trunk, head):
            if module is not None:
                check_functional(module)
        self.embedding = None if embedding is None else check_count("embedding", embedding)
        if loss not in ("mse", "cross_entropy"):
            raise ValueError(f"unknown loss {loss!r}; allowed: 'mse' or 'cross_entropy'.")
        self.loss_kind = loss
        self.weighting = self._check_weighting(weighting)
        if execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {', '.join(map(repr, EXECUTIONS))}, got {execution!r}.")
        if execution == "batched" and not self.can_batch():
            raise ValueError(f"execution='batched' needs layers that compute each example on their own (no batch "
                             f"normalisation) and MLP or linear per-task parts; this {kind!r} model has "
                             f"{', '.join(type(m).__name__ for m in (net, trunk, head) if m is not None)}.")
        self.execution = execution

    def _check_weighting(self, weighting):
        if isinstance(weighting, str):
            if weighting not in WEIGHTINGS:
                raise ValueError(f"unknown weighting {weighting!r}; allowed: 'equal', 'uncertainty' or M weights.")
            return weighting
        weights = torch.as_tensor(weighting, dtype=torch.float64).flatten()
        if len(weights) != self.num_tasks or not torch.isfinite(weights).all() or (weights < 0).any():
            raise ValueError(f"weighting needs {self.num_tasks} finite non-negative weights, got {list(weighting)}.")
        return weights

    def __repr__(self) -> str:
        return f"MultiTask({self.kind!r}, M={self.num_tasks}, loss={self.loss_kind}, weighting={self.weighting!r})"

    # --- parameters ---------------------------------------------------------------------------
    def init_params(self, device=None, dtype=None, runs: int | None = None) -> Params:
        """Fresh parameters (leaf tensors that require grad). Per-task entries ("heads.*", "nets.*",
        "embedding", "log_var") carry a leading M dimension. ``runs=R`` stacks R independent
        initialisations in front, to train R runs as one batched computation
        (:func:`mlcourse.meta.multitask_train.train`)."""
        if runs is not None:
            stacked = [self.init_params(device, dtype) for _ in range(check_count("runs", runs))]
            return {k: torch.stack([s[k].detach() for s in stacked]).requires_grad_(True) for k in stacked[0]}
        m = self.num_tasks
        params: dict[str, torch.Tensor] = {}
        if self.kind == "shared":
            params.update({"net." + k: v for k, v in _fresh(self.net).items()})
        elif self.kind == "independent":
            copies = [_fresh(self.net) for _ in range(m)]
            params.update({"nets." + k: torch.stack([c[k] for c in copies]) for k in copies[0]})
        else:
            params.update({"trunk." + k: v for k, v in _fresh(self.trunk).items()})
            if self.kind == "hard":
                copies = [_fresh(self.head) for _ in range(m)]
                params.update({"heads." + k: torch.stack([c[k] for c in copies]) for k in copies[0]})
            else:
                params.update({"head." + k: v for k, v in _fresh(self.head).items()})
                if self.embedding is not None:
                    params["embedding"] = torch.randn(m, self.embedding)
        if isinstance(self.weighting, str) and self.weighting == "uncertainty":
            params["log_var"] = torch.zeros(m)  # s_i = log σ_i², starting at σ_i = 1
        return {k: v.to(device=device, dtype=dtype).requires_grad_(True) for k, v in params.items()}

    def _split(self, params: Params):
        """(shared, per-task) parameter dicts; per-task tensors have the leading M dimension."""
        shared, per_task = {}, {}
        for k, v in params.items():
            if k == "log_var":
                continue
            (per_task if k.startswith(PER_TASK) or k == "embedding" else shared)[k] = v
        if self.kind == "conditioned" and self.embedding is None:
            ref = next(iter(params.values()))
            per_task["embedding"] = torch.eye(self.num_tasks, device=ref.device, dtype=ref.dtype)
        return shared, per_task

    # --- the model ----------------------------------------------------------------------------
    def _one(self, shared: Params, task: Params, x: torch.Tensor) -> torch.Tensor:
        """f_i(x) for one task i, given the shared and that task's parameters."""
        if self.kind == "shared":
            return forward(self.net, _strip(shared, "net."), x)
        if self.kind == "independent":
            return forward(self.net, _strip(task, "nets."), x)
        features = forward(self.trunk, _strip(shared, "trunk."), x)
        if self.kind == "hard":
            return forward(self.head, _strip(task, "heads."), features)
        code = task["embedding"].expand(*features.shape[:-1], -1)
        return forward(self.head, _strip(shared, "head."), torch.cat([features, code], dim=-1))

    def can_batch(self) -> bool:
        """Whether the model can run ``"batched"``: every shared layer computes each example on its
        own, and every per-task part is an MLP (or a linear layer, for a hard-sharing head)."""
        def per_example(module):
            return all(isinstance(m, PER_EXAMPLE) for m in module.modules())

        if self.kind == "shared":
            return per_example(self.net)
        if self.kind == "independent":
            return isinstance(self.net, MLP)
        if self.kind == "hard":
            return per_example(self.trunk) and isinstance(self.head, (MLP, nn.Linear))
        return per_example(self.trunk) and per_example(self.head)

    def _execution(self, x: torch.Tensor) -> str:
        """"batched" on the CPU where the layers allow it; else vmap, except where
        :func:`choose_execution`'s measurements favour a loop: per-task convolutions
        (independent networks) on the CPU with large batches."""
        if self.execution == "auto" and x.device.type == "cpu" and self.can_batch():
            return "batched"
        if self.execution == "batched":
            return "batched"
        if self.kind != "independent":
            return "vmap" if self.execution == "auto" else self.execution
        return choose_execution(self.execution, self.net, x.device, x.shape[1])

    def _batched(self, shared: Params, per_task: Params, x: torch.Tensor) -> torch.Tensor:
        """Every task's predictions without vmap: shared layers on all M·n examples at once,
        per-task layers as batched matrix products."""
        m, n = x.shape[:2]
        flat = x.reshape(m * n, *x.shape[2:])
        if self.kind == "shared":
            return forward(self.net, _strip(shared, "net."), flat).reshape(m, n, -1)
        if self.kind == "independent":
            return self.net.forward_tasks(_strip(per_task, "nets."), x)
        features = forward(self.trunk, _strip(shared, "trunk."), flat).reshape(m, n, -1)
        if self.kind == "hard":
            heads = _strip(per_task, "heads.")
            if isinstance(self.head, nn.Linear):
                return torch.baddbmm(heads["bias"].unsqueeze(1), features, heads["weight"].transpose(1, 2))
            return self.head.forward_tasks(heads, features)
        code = per_task["embedding"].unsqueeze(1).expand(m, n, -1)
        inputs = torch.cat([features, code], dim=-1).reshape(m * n, -1)
        return forward(self.head, _strip(shared, "head."), inputs).reshape(m, n, -1)

    def outputs(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Every task's predictions on its own inputs: x ``[M, n, ...]`` → ``[M, n, outputs]``."""
        if x.dim() < 2 or x.shape[0] != self.num_tasks:
            raise ValueError(f"x must have shape [M={self.num_tasks}, examples, ...], got {tuple(x.shape)}.")
        shared, per_task = self._split(params)
        mode = self._execution(x)
        if mode == "batched":
            return self._batched(shared, per_task, x)
        return map_tasks(self._one, mode, (shared,), (per_task, x))

    def task_metrics(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """L_i(θ, D_i) for every task (and accuracy for classification), each of shape [M]."""
        out = self.outputs(params, x)
        if self.loss_kind == "mse":
            return {"loss": (out - y).pow(2).flatten(1).mean(1)}
        losses = nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none")
        return {"loss": losses.view(y.shape).mean(1), "accuracy": (out.argmax(-1) == y).float().mean(1)}

    def task_losses(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.task_metrics(params, x, y)["loss"]

    def combine(self, params: Params, losses: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Σ_i w_i L_i for the model's weighting (see the class docstring), or for the given
        ``weights`` (a tensor of M fixed weights that overrides it)."""
        if weights is not None:
            return (weights.to(losses) * losses).sum()
        if isinstance(self.weighting, torch.Tensor):
            return (self.weighting.to(losses) * losses).sum()
        if self.weighting == "equal":
            return losses.mean()
        s = params["log_var"]
        return (0.5 * torch.exp(-s) * losses + 0.5 * s).mean()

    def loss(self, params: Params, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The multi-task objective Σ_i w_i L_i(θ, D_i) on the data of every task at once."""
        return self.combine(params, self.task_losses(params, x, y), weights)

    def loop_losses(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The same per-task losses computed task by task (a reference for tests, not for training)."""
        shared, per_task = self._split(params)
        out = []
        for i in range(self.num_tasks):
            pred = self._one(shared, {k: v[i] for k, v in per_task.items()}, x[i])
            if self.loss_kind == "mse":
                out.append((pred - y[i]).pow(2).mean())
            else:
                out.append(nn.functional.cross_entropy(pred, y[i]))
        return torch.stack(out)
