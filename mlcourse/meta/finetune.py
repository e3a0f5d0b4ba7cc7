"""Transfer learning by fine-tuning: start from pretrained parameters and take gradient steps on
the target task's training set,

    φ_0 = θ_pretrained,        φ_{k+1} = φ_k − α_l ∇_φ L(φ_k, D^tr),

where α_l is the learning rate of the layer group l the parameter belongs to. Every design choice
of the lecture is an option of the one function :func:`finetune` (listed in :data:`OPTIONS`):

- ``lr``: α (a smaller one keeps φ near θ_pretrained); ``steps``: how many steps;
- ``layer_lr``: per-layer rates, a decay factor d (group l of G gets α·d^(G−1−l), as in ULMFiT's
  discriminative fine-tuning) or a dict {group: multiplier};
- ``freeze``: groups kept at θ_pretrained; ``unfreeze_every``: gradual unfreezing (only the head
  trains at first, and one more group from the top every n steps);
- ``head``: ``"random"`` or ``"zero"`` re-initialises the last group for the N target classes,
  ``"keep"`` keeps it (possible only when its output size is already N);
- ``init``: ``"pretrained"``, or ``"scratch"`` for the baseline that trains from a fresh initialisation;
- ``select``: hyper-parameters chosen by cross-validation on D^tr alone, e.g.
  ``{"lr": [0.01, 0.1], "steps": [10, 30]}`` (``folds`` class-balanced folds; D^ts is never read).

Layer groups are name prefixes of parameters, from input to output (see
:func:`mlcourse.meta.finetune_options.layer_groups`). Many target tasks are fine-tuned as one
batched computation by :func:`evaluate` (vmap over episodes, or a loop where that is faster).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad

from ..checks import check_count
from ..nets import Params, forward
from ..tasks import TaskBatch
from .finetune_options import OPTIONS, Options, layer_groups, options, plan  # noqa: F401
from .functional import choose_execution, map_tasks, task_loss, task_metrics


# --- heads and initialisations ------------------------------------------------------------------
def head_names(params: Params, groups=None) -> list[str]:
    return layer_groups(params, groups)[-1][1]


def new_head(params: Params, ways: int, how: str = "random", groups=None, generator=None,
             tasks: int | None = None) -> Params:
    """Fresh head parameters for ``ways`` classes, shaped like the old head but with ``ways``
    outputs: ``"random"`` draws U(±1/√fan_in) as nn.Linear does, ``"zero"`` gives zeros.
    ``tasks=T`` gives T independent draws stacked in front."""
    check_count("ways (N)", ways)
    if how not in ("random", "zero"):
        raise ValueError(f"a new head is 'random' or 'zero', got {how!r}.")
    names = head_names(params, groups)
    weight = next((params[n] for n in names if params[n].dim() >= 2), None)
    if weight is None:
        raise ValueError(f"the last group {names} has no weight matrix to re-initialise.")
    bound = 1 / math.sqrt(weight[0].numel())
    lead = () if tasks is None else (check_count("tasks", tasks),)
    out = {}
    for n in names:
        shape = (*lead, ways, *params[n].shape[1:])
        if how == "zero":
            out[n] = torch.zeros(shape, device=weight.device, dtype=weight.dtype)
        else:
            u = torch.rand(shape, generator=generator, device="cpu", dtype=weight.dtype)
            out[n] = ((2 * u - 1) * bound).to(weight.device)
    return out


def scratch_params(net: nn.Module, like: Params, tasks: int | None = None, seed: int = 0) -> Params:
    """The network's own initialisation (its reset_parameters), ``tasks`` draws stacked in front."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        draws = []
        for _ in range(tasks or 1):
            for m in net.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
            p = dict(net.named_parameters())
            draws.append({k: p[k].detach().to(like[k]).clone() for k in like})
    if tasks is None:
        return draws[0]
    return {k: torch.stack([d[k] for d in draws]) for k in like}


def start_params(net, theta: Params, ways: int, o: Options, generator=None) -> Params:
    """φ_0 for one task: θ (or a fresh initialisation) with the head the options ask for."""
    phi = {k: v.detach() for k, v in theta.items()}
    if o.init == "scratch":
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        phi = scratch_params(net, phi, seed=seed)
    if o.head == "keep":
        out = [phi[n].shape[0] for n in head_names(phi, o.groups)]
        if any(n != ways for n in out):
            raise ValueError(f"head='keep' needs a head with {ways} outputs, this one has {out[0]}; "
                             "use head='random' or 'zero' to re-initialise it for the target classes.")
        return phi
    return {**phi, **new_head(phi, ways, o.head, o.groups, generator)}


# --- the descent ---------------------------------------------------------------------------------


def descend(net, phi: Params, x, y, lr, schedule, scale, record=None):
    """φ_{k+1} = φ_k − α·scale ∇φ L(φ_k, (x, y)) over the trainable names of each step. Works inside
    vmap. ``record(k, φ_k)`` is called after every step (for cross-validation)."""
    loss = task_loss(net, "cross_entropy")
    for k, trainable in enumerate(schedule):
        if trainable:
            names = sorted(trainable)
            fixed = {n: v for n, v in phi.items() if n not in trainable}
            g = grad(lambda t: loss({**fixed, **t}, x, y))({n: phi[n] for n in names})
            phi = {**phi, **{n: phi[n] - lr * scale[n] * g[n] for n in names}}
        if record is not None:
            record(k + 1, phi)
    return phi


def _folds(y: torch.Tensor, ways: int, shots: int, folds: int):
    """Class-balanced folds of D^tr: fold j holds out the shots of rank j, j + folds, ... of every
    class. Sizes are fixed by (ways, shots, folds), so this works inside vmap."""
    n = y.shape[0]
    position = torch.arange(n, device=y.device)
    rank = ((y[None, :] == y[:, None]) & (position[None, :] < position[:, None])).sum(1)
    for j in range(folds):
        held = len(range(j, shots, folds)) * ways
        order = torch.argsort((rank % folds == j).to(torch.int64), stable=True)
        yield order[: n - held], order[n - held:]


def cross_validate(net, phi0: Params, x, y, ways: int, shots: int, o: Options):
    """Chosen (α, steps) by ``o.folds``-fold cross-validation on D^tr = (x, y) alone: for each
    candidate α, fine-tune on the other folds and score held-out accuracy (ties broken by loss)
    after each candidate number of steps. Returns (α, steps) as 0-d tensors."""
    if shots < 2:
        raise ValueError(f"cross-validation on D^tr needs at least 2 shots per class, got K={shots}.")
    folds = min(o.folds, shots)
    lrs = list(o.select.get("lr", [o.lr]))
    checkpoints = sorted(o.select.get("steps", [o.steps]))
    longest = replace(o, steps=checkpoints[-1])
    schedule, scale = plan(phi0, longest)
    scores: dict[tuple[int, int], torch.Tensor] = {}  # summed over folds; no in-place writes (vmap)
    for train_idx, held_idx in _folds(y, ways, shots, folds):
        for i, lr in enumerate(lrs):
            def record(k, phi, i=i):
                if k in checkpoints:
                    out = forward(net, phi, x[held_idx])
                    acc = (out.argmax(-1) == y[held_idx]).float().mean()
                    score = acc - 1e-3 * F.cross_entropy(out, y[held_idx])
                    key = (i, checkpoints.index(k))
                    scores[key] = scores[key] + score if key in scores else score
            descend(net, phi0, x[train_idx], y[train_idx], lr, schedule, scale, record)
    table = torch.stack([scores[(i, j)] for i in range(len(lrs)) for j in range(len(checkpoints))])
    best = table.argmax()
    lr_grid = torch.tensor(lrs, device=x.device, dtype=x.dtype)
    step_grid = torch.tensor(checkpoints, device=x.device)
    return lr_grid[best // len(checkpoints)], step_grid[best % len(checkpoints)]


def _adapt(net, phi0: Params, x, y, ways: int, shots: int, o: Options):
    """(φ, chosen hyper-parameters or {}) for one task, from φ_0 and D^tr = (x, y)."""
    if o.select is None:
        schedule, scale = plan(phi0, o)
        return descend(net, phi0, x, y, o.lr, schedule, scale), {}
    lr, steps = cross_validate(net, phi0, x, y, ways, shots, o)
    schedule, scale = plan(phi0, replace(o, steps=max(o.select.get("steps", [o.steps]))))
    kept = dict(phi0)

    def record(k, phi):  # keep φ_k for the chosen k; a select, not a branch, so vmap can run it
        nonlocal kept
        kept = {n: torch.where(steps == k, phi[n], kept[n]) for n in phi}

    descend(net, phi0, x, y, lr, schedule, scale, record)
    return kept, {"lr": lr, "steps": steps}


def _shots(y: torch.Tensor, ways: int) -> int:
    counts = torch.bincount(y.flatten(), minlength=ways)
    if len(counts) != ways or not (counts == counts[0]).all():
        raise ValueError(f"D^tr must hold the same number of examples of each of the {ways} classes, got counts "
                         f"{counts.tolist()}.")
    return int(counts[0])


def finetune(net: nn.Module, theta: Params, x_tr: torch.Tensor, y_tr: torch.Tensor, ways: int | None = None,
             generator: torch.Generator | None = None, **opts) -> Params:
    """φ for one target task: fine-tuning from θ on D^tr = (x_tr, y_tr) with the given options
    (see the module docstring and :data:`OPTIONS`). ``ways`` (N) defaults to max(y_tr) + 1;
    ``generator`` draws a re-initialised head."""
    o = options(**opts)
    ways = int(y_tr.max()) + 1 if ways is None else check_count("ways (N)", ways)
    shots = _shots(y_tr, ways) if o.select is not None else 0
    phi0 = start_params(net, theta, ways, o, generator)
    return _adapt(net, phi0, x_tr, y_tr, ways, shots, o)[0]


def _execution(execution: str, net: nn.Module, episodes: TaskBatch) -> str:
    """vmap or loop over episodes, by the measured rule of :func:`choose_execution` (fine-tuning
    touches the support set at every step, so its size decides)."""
    return choose_execution(execution, net, episodes.device, episodes.shots)


def evaluate(net: nn.Module, theta: Params, episodes: TaskBatch, seed: int = 0, execution: str = "auto",
             **opts) -> dict[str, torch.Tensor]:
    """Fine-tune on every episode's D^tr and measure on its D^ts: ``loss`` and ``accuracy`` of
    shape [tasks] (and the ``lr`` and ``steps`` chosen by cross-validation when ``select`` is
    given). Each task gets its own head draw (and, for ``init="scratch"``, its own initialisation),
    seeded by ``seed``. The query set is read only after fine-tuning."""
    o = options(**opts)
    if not isinstance(episodes, TaskBatch):
        raise TypeError(f"episodes must be a TaskBatch, got {type(episodes).__name__}.")
    ways = int(episodes.y_tr.max()) + 1
    shots = _shots(episodes.y_tr[0], ways)
    tasks = episodes.num_tasks
    base = {k: v.detach() for k, v in theta.items()}
    generator = torch.Generator().manual_seed(seed)
    per_task: dict[str, torch.Tensor] = {}
    if o.init == "scratch":
        per_task.update(scratch_params(net, base, tasks=tasks, seed=seed))
    if o.head == "keep":
        start_params(net, base, ways, o)  # checks the head's size
    else:
        per_task.update(new_head(base, ways, o.head, o.groups, generator, tasks=tasks))
    shared = {k: v for k, v in base.items() if k not in per_task}

    def task(shared, mine, x_tr, y_tr, x_ts, y_ts):
        phi0 = {k: mine[k] if k in mine else shared[k] for k in base}  # θ's order: input to output
        phi, chosen = _adapt(net, phi0, x_tr, y_tr, ways, shots, o)
        return {**task_metrics(net, "cross_entropy", phi, x_ts, y_ts), **chosen}

    mode = _execution(execution, net, episodes)
    return map_tasks(task, mode, (shared,), (per_task, episodes.x_tr, episodes.y_tr, episodes.x_ts, episodes.y_ts))
