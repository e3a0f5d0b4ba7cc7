"""The one meta-training loop of the course: progress bar, history, divergence check, checkpoints.

Every chapter trains the same way::

    history = train.fit(lambda it: maml.step(theta, optimizer, family.sample(25, 10)),
                        iterations=10_000, evaluate=..., checkpoint="checkpoints/maml.pt",
                        state={"theta": theta, "optimizer": optimizer})

``step(it)`` does one meta-update and returns its metrics as tensors. The loop adds them up on the
device and reads them (one host sync) only every ``log_every`` iterations, so logging never slows
training down. A non-finite metric stops training with the iteration where it first appeared.
Checkpoints are written atomically (a temporary file, then a rename), so an interrupted run
never leaves a broken file, and ``fit`` resumes from one when it exists.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .checks import check_count


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss."""


@dataclass
class History:
    """Metrics logged during training: ``train`` and ``eval`` are lists of dicts, each with an
    ``iteration`` key. ``curve(name)`` gives (iterations, values) arrays for plotting."""

    train: list[dict] = field(default_factory=list)
    eval: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    selected: dict = field(default_factory=dict)  # with ``select``: the evaluation row of the θ kept

    def curve(self, name: str, which: str = "train"):
        rows = [r for r in getattr(self, which) if name in r]
        if not rows:
            raise KeyError(f"no {which} metric {name!r}; logged: {sorted({k for r in getattr(self, which) for k in r})}")
        return np.array([r["iteration"] for r in rows]), np.array([r[name] for r in rows])

    def last(self, which: str = "eval") -> dict:
        rows = getattr(self, which)
        return rows[-1] if rows else {}


def save_atomically(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside ``path``, then rename: the old file survives a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


def _state_dict(state: dict):
    out = {}
    for name, obj in state.items():
        if isinstance(obj, dict):  # a parameter dict such as θ
            out[name] = {k: v.detach().clone() for k, v in obj.items()}
        elif hasattr(obj, "state_dict"):
            out[name] = obj.state_dict()
        else:
            raise TypeError(f"cannot checkpoint {name!r} of type {type(obj).__name__}; give a dict of tensors "
                            "or an object with state_dict().")
    return out


def _load_state(state: dict, saved: dict) -> None:
    for name, obj in state.items():
        if name not in saved:
            raise KeyError(f"checkpoint has no {name!r}; it holds {sorted(saved)}.")
        if isinstance(obj, dict):
            missing = set(obj) ^ set(saved[name])
            if missing:
                raise KeyError(f"checkpoint's {name!r} differs in entries {sorted(missing)[:4]}.")
            with torch.no_grad():
                for k, v in obj.items():
                    v.copy_(saved[name][k])
        else:
            obj.load_state_dict(saved[name])


def _keep_best(select, history: History, state: dict | None, best: dict) -> None:
    """Remember the parameters of the best evaluation so far (model selection)."""
    if select is None:
        return
    metric, mode = select
    row = history.eval[-1]
    if metric not in row:
        returned = sorted(k for k in row if k != "iteration")
        raise KeyError(f"select names {metric!r} but the evaluation returned {returned}.")
    value = row[metric]
    better = not best or (value > best["row"][metric] if mode == "max" else value < best["row"][metric])
    if better:
        best["row"] = dict(row)
        best["state"] = {name: {k: v.detach().clone() for k, v in obj.items()}
                         for name, obj in state.items() if isinstance(obj, dict)}


def fit(step: Callable[[int], dict], iterations: int, *, log_every: int = 100,
        evaluate: Callable[[int], dict] | None = None, eval_every: int | None = None,
        checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 1000, state: dict | None = None,
        desc: str = "meta-training", progress: bool = True, hint: str = "",
        select: tuple[str, str] | None = None) -> History:
    """Run ``step(it)`` for it = 0 .. iterations−1 and return the :class:`History`.

    evaluate(it): returns a dict of numbers; called every ``eval_every`` iterations and at the end.
    select: (metric, "max" or "min"), model selection on the evaluations (which must come from
        meta-validation tasks, never meta-test): the θ of the best evaluation is kept — the
        entries of ``state`` that are parameter dicts are restored to it at the end — and
        ``history.selected`` is its evaluation row (with its ``iteration``).
    checkpoint, state: where to save and what (names → θ dicts or objects with state_dict); a run
        resumes from an existing checkpoint.
    hint: appended to the divergence error (e.g. "try a smaller inner learning rate α").
    """
    check_count("iterations", iterations, minimum=0)
    check_count("log_every", log_every)
    if checkpoint is not None and not state:
        raise ValueError("a checkpoint needs state={...}: the parameters and optimizers to save.")
    if select is not None:
        if evaluate is None or not state or not any(isinstance(v, dict) for v in state.values()):
            raise ValueError("select=(metric, 'max'/'min') needs evaluate=... and state={...} with the parameters "
                             "to keep.")
        if not (isinstance(select, tuple) and len(select) == 2 and select[1] in ("max", "min")):
            raise ValueError(f"select must be (metric name, 'max' or 'min'), got {select!r}.")
    best: dict = {}
    history, start = History(), 0
    if checkpoint is not None and Path(checkpoint).exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        _load_state(state, saved["state"])
        history, start = saved["history"], saved["iteration"]

    sums: dict[str, torch.Tensor] = {}
    first_bad = None  # device tensor: first iteration with a non-finite metric, −1 if none
    count, began, seconds_before = 0, time.perf_counter(), history.seconds
    bar = tqdm(total=iterations, initial=start, desc=desc, disable=not progress, dynamic_ncols=True)

    def log(it: int) -> None:
        nonlocal sums, count
        if first_bad is not None and int(first_bad) >= 0:
            bad = int(first_bad)
            raise DivergenceError(f"the loss became non-finite (nan or inf) at iteration {bad}. {hint}".strip())
        row = {"iteration": it, **{k: float(v) / count for k, v in sums.items()}}
        history.train.append(row)
        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "iteration"}, refresh=False)
        sums, count = {}, 0

    def save(it: int) -> None:
        history.seconds = seconds_before + time.perf_counter() - began
        save_atomically({"iteration": it, "state": _state_dict(state), "history": history}, checkpoint)

    for it in range(start, iterations):
        metrics = step(it)
        for k, v in metrics.items():
            v = v.detach()
            sums[k] = sums[k] + v if k in sums else v.clone()
            bad_now = torch.where(torch.isfinite(v), -1, it)
            first_bad = bad_now if first_bad is None else torch.where(first_bad >= 0, first_bad, bad_now)
        count += 1
        bar.update(1)
        done = it + 1
        if done % log_every == 0 or done == iterations:
            log(done)
        if evaluate is not None and eval_every and done % eval_every == 0 and done != iterations:
            history.eval.append({"iteration": done, **evaluate(done)})
            _keep_best(select, history, state, best)
        if checkpoint is not None and (done % checkpoint_every == 0):
            save(done)
    if evaluate is not None and (not history.eval or history.eval[-1]["iteration"] != iterations):
        history.eval.append({"iteration": iterations, **evaluate(iterations)})
        _keep_best(select, history, state, best)
    if select is not None and best:
        with torch.no_grad():
            for name, params in best["state"].items():
                for k, v in params.items():
                    state[name][k].copy_(v)
        history.selected = best["row"]
    bar.close()
    history.seconds = seconds_before + time.perf_counter() - began
    if checkpoint is not None:
        save(iterations)
    for row in history.train[-1:]:
        if any(not math.isfinite(v) for v in row.values()):
            raise DivergenceError(f"non-finite metrics at the end of training: {row}. {hint}".strip())
    return history
