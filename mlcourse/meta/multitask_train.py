"""Training a :class:`~mlcourse.meta.multitask.MultiTask` model: Adam on Σ_i w_i L_i(θ, D_i^tr),
with per-task curves, several runs as one batched computation, and the Omniglot alphabet tasks.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

import torch
from torch.func import vmap

from ..checks import check_count, check_positive
from ..nets import Params
from ..tasks import TaskBatch
from ..train import History, fit
from .multitask import MultiTask


def alphabet_tasks(images: torch.Tensor, alphabet: torch.Tensor, alphabets: Sequence[int], characters: int,
                   train_drawers: Sequence[Sequence[int]], test_drawers: Sequence[int]) -> TaskBatch:
    """One classification task per alphabet: its first ``characters`` characters are the classes
    0..C−1. Task i trains on the drawers ``train_drawers[i]`` (a list per task; repeating a short
    list gives a data-poor task the same number of slots as the others, with the same loss) and is
    tested on ``test_drawers``. Returns a TaskBatch with ``x [M, C·drawers, 1, H, W]`` in [0, 1]."""
    if len(train_drawers) != len(alphabets):
        raise ValueError(f"train_drawers needs one list per alphabet ({len(alphabets)}), got {len(train_drawers)}.")
    if len({len(d) for d in train_drawers}) != 1:
        raise ValueError("every task needs the same number of training slots; repeat a short drawer list to fill it.")
    check_count("characters", characters)
    classes = []
    for a in alphabets:
        members = torch.nonzero(alphabet == a).flatten()
        if len(members) < characters:
            raise ValueError(f"alphabet {a} has {len(members)} characters, fewer than the {characters} asked for.")
        classes.append(members[:characters])
    chars = images[torch.stack(classes)]  # [M, C, drawers, H, W]

    def part(drawers):
        d = torch.as_tensor(drawers, device=images.device)
        x = chars[torch.arange(len(alphabets), device=images.device)[:, None], :, d]  # [M, n, C, H, W]
        x = x.transpose(1, 2).flatten(1, 2).unsqueeze(2).float().div_(255)
        y = torch.arange(characters, device=images.device).repeat_interleave(d.shape[-1])
        return x, y.expand(len(alphabets), -1)

    x_ts, y_ts = part([list(test_drawers)] * len(alphabets))
    return TaskBatch(*part([list(d) for d in train_drawers]), x_ts, y_ts)


def _minibatch(x: torch.Tensor, y: torch.Tensor, size: int | None, lead: int):
    """``size`` random examples of every task (dimension ``lead`` indexes examples)."""
    n = x.shape[lead]
    if size is None or size >= n:
        return x, y
    index = torch.rand(*x.shape[:lead + 1], device=x.device).argsort(-1)[..., :size]
    pick = lambda t: torch.take_along_dim(t, index.view(*index.shape, *([1] * (t.dim() - lead - 1))), dim=lead)
    return pick(x), pick(y)


def stack_runs(batches: Sequence[TaskBatch]) -> SimpleNamespace:
    """The data of R runs (each a TaskBatch of the same M tasks' shapes) with a leading run dimension,
    for :func:`train` with ``runs=True``."""
    if not batches:
        raise ValueError("stack_runs needs at least one TaskBatch.")
    return SimpleNamespace(**{k: torch.stack([getattr(b, k) for b in batches]) for k in ("x_tr", "y_tr", "x_ts", "y_ts")})


def train(model: MultiTask, params: Params, data, steps: int, lr: float = 1e-3, batch_size: int | None = None,
          eval_every: int | None = None, runs: bool = False, weights: torch.Tensor | None = None,
          callback=None, progress: bool = True, desc: str = "multi-task training") -> History:
    """Adam on Σ_i w_i L_i(θ, D_i^tr); returns the :class:`~mlcourse.train.History`.

    data: a TaskBatch with task i's D_i^tr and D_i^ts in slot i (``[M, n, ...]``), or with
        ``runs=True`` the output of :func:`stack_runs`.
    batch_size: examples per task in each step (None: all of D_i^tr).
    runs: params and data carry a leading run dimension R (from ``init_params(runs=R)``): R
        independent runs trained as one batched computation (their losses are summed, so
        Adam's element-wise updates keep the runs independent).
    weights: fixed w_i overriding the model's weighting, ``[M]`` or with runs ``[R, M]``; a task
        of weight 0 takes no part in training, so runs with different sets of tasks can share
        one batched computation.
    callback(it, params): called at every evaluation (e.g. to keep snapshots for an animation).
    Each evaluation row of the history holds arrays of per-task ``train_loss``, ``test_loss`` (and
    ``test_accuracy``), of shape [M] (or [R, M]).
    """
    check_count("steps", steps, minimum=0)
    check_positive("lr", lr)
    # foreach: one fused update over all tensors, which the CPU does not choose by default.
    optimizer = torch.optim.Adam(params.values(), lr=lr, foreach=True)
    lead = 2 if runs else 1
    if weights is not None:
        weights = torch.as_tensor(weights, device=data.x_tr.device)
        want = tuple(data.x_tr.shape[:lead])
        if tuple(weights.shape) != want:
            raise ValueError(f"weights must have shape {list(want)} ([runs, M] or [M]), got {list(weights.shape)}.")
    batched = vmap(model.loss) if runs else model.loss
    metrics = vmap(model.task_metrics) if runs else model.task_metrics

    def step(it):
        x, y = _minibatch(data.x_tr, data.y_tr, batch_size, lead)
        optimizer.zero_grad(set_to_none=True)
        loss = (batched(params, x, y) if weights is None else batched(params, x, y, weights)).sum()
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}

    def evaluate(it):
        with torch.no_grad():
            tr, ts = metrics(params, data.x_tr, data.y_tr), metrics(params, data.x_ts, data.y_ts)
            if callback is not None:
                callback(it, params)
        row = {"train_loss": tr["loss"].cpu().numpy(), "test_loss": ts["loss"].cpu().numpy()}
        if "accuracy" in ts:
            row["test_accuracy"] = ts["accuracy"].cpu().numpy()
        return row

    return fit(step, steps, log_every=max(1, min(100, steps)), evaluate=evaluate,
               eval_every=eval_every or max(1, steps // 20), desc=desc, progress=progress)
