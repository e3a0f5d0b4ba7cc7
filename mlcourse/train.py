"""The one meta-training loop of the course: progress bar, history, divergence check, checkpoints.

Every chapter trains the same way::

    history = train.fit(lambda it: maml.step(theta, optimizer, family.sample(25, 10)),
                        iterations=10_000, evaluate=..., checkpoint="checkpoints/maml.pt",
                        state={"theta": theta, "optimizer": optimizer})

``step(it)`` does one meta-update and returns its metrics as tensors. The loop adds them up on the
device and reads them (one host sync) only every ``log_every`` iterations, so logging never slows
training down. A non-finite metric stops training with the iteration where it first appeared.

Checkpoints hold everything a run needs to continue exactly as if it had never stopped: the
entries of ``state`` (θ dicts, optimisers, schedulers, ``torch.Generator`` objects and anything
with ``state_dict()``), the iteration, the history and the partial sums of the current logging
interval, every random state (Python, numpy, torch CPU and CUDA, of every process), the elapsed
time and what the run is (``identity``: an experiment's name and settings). They are written
atomically (a temporary file, fsync, rename), read back with ``torch.load(weights_only=True)``
and checked entry by entry (keys, shapes, dtypes) before anything is loaded, so a truncated,
foreign or booby-trapped file is refused with an error that names it.

``python -m mlcourse.reproduce`` runs an experiment under a :class:`Checkpointing` policy
(:func:`checkpointing`): every ``fit`` of the experiment then checkpoints to its own file of the
run's folder every N iterations or M minutes, resumes from it, and stops cleanly at a checkpoint
when a time budget is spent (:class:`BudgetSpent`). An experiment only passes ``state=`` (or
wraps a loop that calls ``fit`` in :func:`options`).

``graph=True`` replays the step as a CUDA graph on a GPU (:class:`mlcourse.graphs.GraphedStep`:
the same number of real steps as an eager run) and runs it eagerly elsewhere. Under
``torch.distributed`` (see :mod:`mlcourse.distributed`) every process runs ``fit``; rank 0 writes
the checkpoints (with every process's random state) and shows the progress bar, and all resume.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import os
import pickle
import random
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed
from .checks import check_count

FORMAT = "mlcourse-checkpoint"
VERSION = 1


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss."""


class CheckpointError(ValueError):
    """A checkpoint cannot be used: unreadable, foreign, unsafe, or of another run."""


class BudgetSpent(Exception):
    """Training stopped at a checkpoint because the time budget was spent (resume to continue)."""

    def __init__(self, path, iteration: int, iterations: int):
        super().__init__(f"time budget spent: stopped at iteration {iteration:,} of {iterations:,}, "
                         f"checkpoint {path}")
        self.path, self.iteration, self.iterations = path, iteration, iterations


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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "History":
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


# --- atomic files --------------------------------------------------------------------------------
def save_atomically(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside ``path``, fsync, then rename: the old file survives a
    crash at any moment, and the new one is complete once it is there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as f:
        try:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            f.close()
            os.unlink(f.name)
            raise
    os.replace(f.name, path)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    try:  # the rename itself survives a power cut once the folder is synced (POSIX)
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_safely(path: str | os.PathLike, what: str = "checkpoint") -> dict:
    """``torch.load(path, weights_only=True)`` with errors that name the file: a file whose
    unpickling would build other objects than tensors and plain data (and so could run code) is
    refused, as is a truncated or non-torch file."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"refused to load {path}: it holds objects other than tensors and plain data, which "
                              f"could run code when unpickled; only files written by mlcourse are loaded "
                              f"({str(err).splitlines()[0]}).") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path} is not a readable {what} (truncated, or not a file written by torch.save): "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__}.") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not an mlcourse {what}: it holds a {type(data).__name__}, not a dict.")
    return data


# --- random states ---------------------------------------------------------------------------------
def random_state() -> dict:
    """Every random state of this process, as tensors and plain data."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    np_state = np.random.get_state(legacy=False)
    state["numpy"] = {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                      "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                      "gauss": float(np_state["gauss"])}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_random_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": saved["key"].numpy().astype(np.uint32), "pos": saved["pos"]},
                         "has_gauss": saved["has_gauss"], "gauss": saved["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


def _check_random_state(state, path, where: str) -> None:
    ok = (isinstance(state, dict) and {"python", "torch", "numpy"} <= set(state)
          and isinstance(state["torch"], torch.Tensor) and state["torch"].dtype == torch.uint8
          and state["torch"].shape == torch.get_rng_state().shape
          and isinstance(state["python"], (tuple, list)) and len(state["python"]) == 3
          and len(state["python"][1]) == len(random.getstate()[1])
          and isinstance(state["numpy"], dict) and isinstance(state["numpy"].get("key"), torch.Tensor)
          and state["numpy"]["key"].shape == (624,))
    if not ok:
        raise CheckpointError(f"{path}: the random state {where} is malformed (expected Python, numpy and torch "
                              "generator states).")


# --- what a checkpoint holds ---------------------------------------------------------------------------
def _kind(obj) -> str:
    if isinstance(obj, dict):
        return "params"
    if isinstance(obj, torch.Generator):
        return "generator"
    if isinstance(obj, torch.optim.Optimizer):
        return "optimizer"
    if hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
        return "object"
    raise TypeError(f"of type {type(obj).__name__}; give a dict of tensors, a torch.Generator, or an object "
                    "with state_dict() and load_state_dict().")


def _state_dict(state: dict) -> dict:
    out = {}
    for name, obj in state.items():
        try:
            kind = _kind(obj)
        except TypeError as err:
            raise TypeError(f"cannot checkpoint {name!r} {err}") from None
        if kind == "params":
            value = {k: v.detach().cpu().clone() for k, v in obj.items()}
        elif kind == "generator":
            value = obj.get_state()
        else:
            value = _to_cpu(obj.state_dict())
        out[name] = {"kind": kind, "value": value}
    return out


def _to_cpu(tree):
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().clone()
    if isinstance(tree, dict):
        return {k: _to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_cpu(v) for v in tree)
    return tree


def _plain(tree):
    """Logged values as plain Python numbers (numpy scalars would not load with weights_only)."""
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_plain(v) for v in tree)
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def _describe(t: torch.Tensor) -> str:
    return f"{t.dtype} {tuple(t.shape)}"


def _check_state(state: dict, saved, path) -> None:
    """Every entry of ``state`` is in the checkpoint with the same structure, before anything loads."""
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: the saved state is not a dict.")
    missing = sorted(set(state) - set(saved))
    if missing:
        raise CheckpointError(f"{path} holds no {missing} (it holds {sorted(saved)}); was it written by another run?")
    for name, obj in state.items():
        entry = saved[name]
        kind = _kind(obj)
        if not isinstance(entry, dict) or entry.get("kind") != kind:
            got = entry.get("kind") if isinstance(entry, dict) else type(entry).__name__
            raise CheckpointError(f"{path}: {name!r} was saved as {got!r}, this run has a {kind}.")
        value = entry["value"]
        if kind == "params":
            if not isinstance(value, dict):
                raise CheckpointError(f"{path}: {name!r} is not a dict of tensors.")
            differ = sorted(set(obj) ^ set(value))
            if differ:
                raise CheckpointError(f"{path}: {name!r} differs in entries {differ[:4]} from this run's.")
            for k, v in obj.items():
                s = value[k]
                if not isinstance(s, torch.Tensor) or s.shape != v.shape or s.dtype != v.dtype:
                    got = _describe(s) if isinstance(s, torch.Tensor) else type(s).__name__
                    raise CheckpointError(f"{path}: {name}[{k!r}] is {got} in the checkpoint, {_describe(v)} here.")
        elif kind == "generator":
            now = obj.get_state()
            if not isinstance(value, torch.Tensor) or value.shape != now.shape or value.dtype != now.dtype:
                raise CheckpointError(f"{path}: the generator {name!r} has a malformed state.")
        elif kind == "optimizer":
            _check_optimizer(obj, value, path, name)
        elif not isinstance(value, dict):
            raise CheckpointError(f"{path}: {name!r} has a malformed state_dict ({type(value).__name__}).")


def _check_optimizer(opt: torch.optim.Optimizer, saved, path, name) -> None:
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list) or \
            not isinstance(saved.get("state"), dict):
        raise CheckpointError(f"{path}: the optimiser {name!r} has a malformed state_dict.")
    groups = opt.param_groups
    sizes = [len(g["params"]) for g in groups]
    saved_sizes = [len(g.get("params", [])) for g in saved["param_groups"]]
    if sizes != saved_sizes:
        raise CheckpointError(f"{path}: the optimiser {name!r} has parameter groups of sizes {saved_sizes} in the "
                              f"checkpoint, {sizes} here.")
    params = [p for g in groups for p in g["params"]]
    index = {i: p for g, sg in zip(groups, saved["param_groups"]) for i, p in zip(sg["params"], g["params"])}
    for i, entry in saved["state"].items():
        if i not in index or not isinstance(entry, dict):
            raise CheckpointError(f"{path}: the optimiser {name!r} has state for parameter {i!r}, which this run "
                                  f"does not have ({len(params)} parameters).")
        p = index[i]
        for key, t in entry.items():
            if isinstance(t, torch.Tensor) and t.dim() > 0 and (t.shape != p.shape or t.dtype != p.dtype):
                raise CheckpointError(f"{path}: the optimiser {name!r} state {key!r} of a parameter is {_describe(t)}, "
                                      f"the parameter here is {_describe(p)}.")


def _load_state(state: dict, saved: dict, path="checkpoint") -> None:
    """Load every entry of ``state`` from ``saved`` in place (tensors keep their addresses, so a
    step captured as a CUDA graph keeps working)."""
    _check_state(state, saved, path)
    for name, obj in state.items():
        value = saved[name]["value"]
        kind = _kind(obj)
        if kind == "params":
            with torch.no_grad():
                for k, v in obj.items():
                    v.copy_(value[k])
        elif kind == "generator":
            obj.set_state(value)
        elif kind == "optimizer":
            _load_optimizer(obj, value)
        else:
            obj.load_state_dict(value)


def _load_optimizer(opt: torch.optim.Optimizer, saved: dict) -> None:
    params = [p for g in opt.param_groups for p in g["params"]]
    ids = [i for g in saved["param_groups"] for i in g["params"]]
    same = all(
        p in opt.state and set(opt.state[p]) == set(saved["state"].get(i, {})) and all(
            not isinstance(t, torch.Tensor) or (isinstance(opt.state[p][k], torch.Tensor)
                                                and opt.state[p][k].shape == t.shape)
            for k, t in saved["state"].get(i, {}).items())
        for p, i in zip(params, ids) if i in saved["state"]) and len(opt.state) == len(saved["state"])
    if not opt.state or not same:
        opt.load_state_dict(saved)
        return
    # The optimiser already has state of the same layout: copy in place (CUDA-graph replays read it).
    with torch.no_grad():
        for p, i in zip(params, ids):
            for k, t in saved["state"].get(i, {}).items():
                if isinstance(t, torch.Tensor):
                    opt.state[p][k].copy_(t)
                else:
                    opt.state[p][k] = t
        for group, sg in zip(opt.param_groups, saved["param_groups"]):
            for k, v in sg.items():
                if k == "params":
                    continue
                if isinstance(group.get(k), torch.Tensor):
                    group[k].fill_(v if not isinstance(v, torch.Tensor) else v.item())
                else:
                    group[k] = v


# --- the checkpointing policy of a reproduction --------------------------------------------------------
@dataclass
class Checkpointing:
    """How the ``fit`` calls inside :func:`checkpointing` save and resume (set by ``reproduce``).

    folder: the run's folder; the k-th ``fit`` of the run (its stage k) uses ``stage{k}.pt``.
    every, minutes: save every ``every`` iterations and at least every ``minutes`` minutes.
    deadline: a ``time.monotonic()`` time after which training stops at a checkpoint (BudgetSpent).
    resume: continue from the stage files found (else an existing file is an error).
    identity: what the run is (experiment, settings); a checkpoint of another run is refused.
    """

    folder: Path
    every: int = 1000
    minutes: float = 10.0
    deadline: float | None = None
    resume: bool = False
    identity: dict = field(default_factory=dict)
    stages: list = field(default_factory=list)  # filled by fit: per stage, desc, iterations and final θ

    def path(self, stage: int) -> Path:
        return Path(self.folder) / f"stage{stage}.pt"


_POLICY: contextvars.ContextVar[Checkpointing | None] = contextvars.ContextVar("mlcourse_checkpointing", default=None)
_OPTIONS: contextvars.ContextVar[dict] = contextvars.ContextVar("mlcourse_fit_options", default={})


@contextlib.contextmanager
def checkpointing(policy: Checkpointing):
    """Every :func:`fit` inside the block checkpoints and resumes by ``policy``."""
    token = _POLICY.set(policy)
    try:
        yield policy
    finally:
        _POLICY.reset(token)


@contextlib.contextmanager
def options(state: dict | None = None, graph: bool | None = None):
    """Defaults for the :func:`fit` calls inside the block that do not set them: what to
    checkpoint (for a loop written elsewhere that calls ``fit`` without ``state``) and whether to
    capture the step as a CUDA graph."""
    given = {k: v for k, v in (("state", state), ("graph", graph)) if v is not None}
    token = _OPTIONS.set({**_OPTIONS.get(), **given})
    try:
        yield
    finally:
        _OPTIONS.reset(token)


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


def _device_of(state: dict | None) -> torch.device:
    for obj in (state or {}).values():
        if isinstance(obj, dict):
            for v in obj.values():
                if isinstance(v, torch.Tensor):
                    return v.device
    return torch.device("cpu")


def _same_identity(saved: dict, identity: dict, path) -> None:
    if not identity:
        return
    mine, theirs = identity, saved.get("identity") or {}
    if mine.get("experiment") != theirs.get("experiment"):
        raise CheckpointError(f"{path} is a checkpoint of {theirs.get('experiment')!r}, not of "
                              f"{mine.get('experiment')!r}.")
    a, b = mine.get("settings", {}), theirs.get("settings", {})
    differ = {k: (b.get(k), a.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
    if differ:
        text = ", ".join(f"{k}: {old!r} in the checkpoint, {new!r} now" for k, (old, new) in differ.items())
        raise CheckpointError(f"{path} was written with other settings ({text}); resume with the same settings, "
                              "or start a fresh run.")


def fit(step: Callable[[int], dict], iterations: int, *, log_every: int = 100,
        evaluate: Callable[[int], dict] | None = None, eval_every: int | None = None,
        checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 1000, state: dict | None = None,
        desc: str = "meta-training", progress: bool = True, hint: str = "",
        select: tuple[str, str] | None = None, graph: bool | None = None, identity: dict | None = None) -> History:
    """Run ``step(it)`` for it = 0 .. iterations−1 and return the :class:`History`.

    evaluate(it): returns a dict of numbers; called every ``eval_every`` iterations and at the end.
    select: (metric, "max" or "min"), model selection on the evaluations (which must come from
        meta-validation tasks, never meta-test): the θ of the best evaluation is kept — the
        entries of ``state`` that are parameter dicts are restored to it at the end — and
        ``history.selected`` is its evaluation row (with its ``iteration``).
    checkpoint, state: where to save and what (names → θ dicts, optimisers, schedulers,
        generators, objects with state_dict); a run resumes from an existing checkpoint, which
        must be of the same run (``identity``) and of no more than ``iterations`` iterations.
    graph: replay the step as a CUDA graph when θ is on a GPU (each call still one real step; the
        step must then ignore ``it``); eager elsewhere.
    hint: appended to the divergence error (e.g. "try a smaller inner learning rate α").
    """
    check_count("iterations", iterations, minimum=0)
    check_count("log_every", log_every)
    check_count("checkpoint_every", checkpoint_every)
    defaults = _OPTIONS.get()
    state = state if state is not None else defaults.get("state")
    graph = graph if graph is not None else defaults.get("graph", False)
    policy = _POLICY.get()
    stage = None
    every, minutes, deadline = checkpoint_every, None, None
    if policy is not None and not state:
        # A loop that does not say what to save cannot resume: it still runs, and says so.
        warnings.warn(f"train.fit ({desc!r}) runs under reproduce's checkpointing but was given no state=...: this "
                      "stage is not checkpointed and a resumed run trains it again from the start (pass the "
                      "parameters and optimisers, or wrap the loop in train.options(state=...)).", RuntimeWarning,
                      stacklevel=2)
        policy.stages.append({"desc": desc, "iterations": iterations, "checkpointed": False})
        policy = None
    if policy is not None:
        stage = len(policy.stages)
        policy.stages.append({"desc": desc, "iterations": iterations})
        checkpoint = policy.path(stage) if checkpoint is None else checkpoint
        every, minutes, deadline = policy.every, policy.minutes, policy.deadline
        identity = {**policy.identity, "stage": stage} if identity is None else identity
    if checkpoint is not None and not state:
        raise ValueError("a checkpoint needs state={...}: the parameters and optimizers to save.")
    if select is not None:
        if evaluate is None or not state or not any(isinstance(v, dict) for v in state.values()):
            raise ValueError("select=(metric, 'max'/'min') needs evaluate=... and state={...} with the parameters "
                             "to keep.")
        if not (isinstance(select, tuple) and len(select) == 2 and select[1] in ("max", "min")):
            raise ValueError(f"select must be (metric name, 'max' or 'min'), got {select!r}.")
    if distributed.launched():
        distributed.setup(_device_of(state).type)
    main = distributed.is_main()
    identity = identity or {}

    best: dict = {}
    history, start = History(), 0
    sums: dict[str, torch.Tensor] = {}
    count = 0
    first_bad = None  # device tensor: first iteration with a non-finite metric, −1 if none
    # Rank 0 decides (another process could look while rank 0 is still writing the file).
    resumed = checkpoint is not None and distributed.from_main(Path(checkpoint).exists())
    if resumed and policy is not None and not policy.resume:
        raise CheckpointError(f"{checkpoint} exists: resume it (--resume) or start over (--restart).")
    if resumed:
        saved = load_safely(checkpoint)
        if saved.get("format") != FORMAT:
            raise CheckpointError(f"{checkpoint} is not an mlcourse checkpoint (no format {FORMAT!r}; keys "
                                  f"{sorted(saved)[:6]}).")
        if saved.get("version") != VERSION:
            raise CheckpointError(f"{checkpoint} is a checkpoint of format version {saved.get('version')!r}; this "
                                  f"mlcourse reads version {VERSION}.")
        _same_identity(saved, identity, checkpoint)
        done = saved.get("iteration")
        if not isinstance(done, int) or done < 0:
            raise CheckpointError(f"{checkpoint}: malformed iteration {done!r}.")
        if done > iterations:
            raise CheckpointError(f"{checkpoint} has done {done:,} iterations, more than the {iterations:,} asked "
                                  "for now; ask for at least as many to resume it.")
        if saved.get("world_size", 1) != distributed.world_size():
            raise CheckpointError(f"{checkpoint} was written by {saved.get('world_size')} process(es), this run has "
                                  f"{distributed.world_size()}; resume with as many (each holds its own random "
                                  "stream).")
        rng = saved.get("random")
        if not isinstance(rng, list) or len(rng) != distributed.world_size():
            raise CheckpointError(f"{checkpoint}: expected one random state per process.")
        _check_random_state(rng[distributed.rank()], checkpoint, f"of process {distributed.rank()}")
        _load_state(state, saved.get("state"), checkpoint)
        try:
            history = History.from_dict(saved["history"])
            log = saved["log"]
            sums, count, first_bad = dict(log["sums"]), int(log["count"]), log["first_bad"]
            best = saved.get("best") or {}
        except (KeyError, TypeError) as err:
            raise CheckpointError(f"{checkpoint}: malformed history or log ({err}).") from None
        device = _device_of(state)
        sums = {k: v.to(device) for k, v in sums.items()}
        first_bad = None if first_bad is None else first_bad.to(device)
        set_random_state(rng[distributed.rank()])
        start = done
    else:
        for obj in (state or {}).values():
            if isinstance(obj, dict):
                distributed.broadcast_(obj)
        distributed.fork_random_streams()

    began, seconds_before = time.perf_counter(), history.seconds
    last_save = time.monotonic()
    bar = tqdm(total=iterations, initial=start, desc=desc, disable=not (progress and main), dynamic_ncols=True)
    runner_it = [start]
    runner = (step if not graph else _graphed(lambda: step(runner_it[0]), _device_of(state)))

    def log(it: int) -> None:
        nonlocal sums, count
        if first_bad is not None and int(first_bad) >= 0:
            bad = int(first_bad)
            raise DivergenceError(f"the loss became non-finite (nan or inf) at iteration {bad}. {hint}".strip())
        row = {"iteration": it, **{k: float(v) / count for k, v in sums.items()}}
        history.train.append(row)
        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "iteration"}, refresh=False)
        sums, count = {}, 0
        if state and not all(distributed.same_everywhere(o) for o in state.values() if isinstance(o, dict)):
            raise RuntimeError("θ differs between the processes: the step does not average its gradients across "
                               "processes (use Learner.step, or mlcourse.distributed.average before the update).")

    def save(it: int) -> None:
        nonlocal last_save
        history.seconds = seconds_before + time.perf_counter() - began
        states = distributed.gather(random_state())
        if main:
            save_atomically({
                "format": FORMAT, "version": VERSION, "identity": identity, "desc": desc, "iteration": it,
                "iterations": iterations, "state": _state_dict(state), "history": _plain(history.to_dict()),
                "log": {"sums": {k: v.detach().cpu() for k, v in sums.items()}, "count": count,
                        "first_bad": None if first_bad is None else first_bad.detach().cpu()},
                "best": _to_cpu(_plain(best)), "random": states, "world_size": distributed.world_size(),
                "seconds": history.seconds}, checkpoint)
        last_save = time.monotonic()

    def over_budget(it: int) -> bool:
        if deadline is None:
            return False
        if distributed.active() and it % 10:  # processes decide together, every 10 iterations
            return False
        return distributed.agree(time.monotonic() >= deadline)

    for it in range(start, iterations):
        if checkpoint is not None and over_budget(it):
            save(it)
            bar.close()
            raise BudgetSpent(checkpoint, it, iterations)
        runner_it[0] = it
        metrics = runner(it) if not graph else runner()
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
            history.eval.append({"iteration": done, **distributed.from_main(evaluate(done))})
            _keep_best(select, history, state, best)
        if checkpoint is not None and done < iterations:
            timed = minutes is not None and (not distributed.active() or done % 10 == 0) and \
                distributed.agree(time.monotonic() - last_save >= 60 * minutes)
            if done % every == 0 or timed:
                save(done)
    if evaluate is not None and (not history.eval or history.eval[-1]["iteration"] != iterations):
        history.eval.append({"iteration": iterations, **distributed.from_main(evaluate(iterations))})
        _keep_best(select, history, state, best)
    if select is not None and best:
        with torch.no_grad():
            for name, params in best["state"].items():
                for k, v in params.items():
                    state[name][k].copy_(v)
        history.selected = best["row"]
    bar.close()
    history.seconds = seconds_before + time.perf_counter() - began
    if checkpoint is not None and not (resumed and start == iterations):
        save(iterations)
    for row in history.train[-1:]:
        if any(not math.isfinite(v) for v in row.values()):
            raise DivergenceError(f"non-finite metrics at the end of training: {row}. {hint}".strip())
    if policy is not None:
        policy.stages[stage].update(
            seconds=history.seconds, resumed_at=start if resumed else None,
            params={name: {k: v.detach().cpu().clone() for k, v in obj.items()}
                    for name, obj in state.items() if isinstance(obj, dict)})
    return history


def _graphed(step, device: torch.device):
    from . import graphs

    return graphs.GraphedStep(step, device, recorder=_RECORDER)


_RECORDER = None  # tests set a recorder that emulates a capture on the CPU
