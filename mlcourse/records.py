"""Where the records of reproduced experiments and their trained θ live, and how a chapter reads them.

``python -m mlcourse.reproduce`` writes ``<name>.json`` (the record) and ``<name>.theta.pt`` (the
trained θ of every training stage of the run) into :func:`results_dir`: ``$MLCOURSE_RESULTS``
when set; in a checkout of the book's repository, its ``book/results`` folder (the records the
book is built with); otherwise (a pip install, e.g. on Colab) a ``mlcourse-results`` folder in
the working directory, never the installed package. :func:`load` and :func:`load_theta` find a
record in the same places, then among the records installed with the package
(``mlcourse/stored_results``, the copy of ``book/results`` that a wheel carries), so that a
chapter shows the stored paper-scale results and models wherever it runs::

    record = records.load("maml-omniglot-5w1s")          # dict, or None if never stored
    theta = records.load_theta("maml-omniglot-5w1s")      # {name: tensor}, or None

A θ file is a plain dict of tensors written by ``torch.save`` and read with
``torch.load(weights_only=True)``; its entries are checked against the shapes the caller
expects (:func:`load_theta`'s ``like``) before a chapter uses them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = Path(__file__).resolve().parent / "stored_results"
THETA_FORMAT = "mlcourse-theta"


def _checkout_results() -> Path | None:
    folder = ROOT / "book" / "results"
    return folder if (ROOT / "_toc.yml").is_file() and folder.is_dir() else None


def results_dir() -> Path:
    """The folder new records are written to (see the module docstring)."""
    if os.environ.get("MLCOURSE_RESULTS"):
        return Path(os.environ["MLCOURSE_RESULTS"]).expanduser()
    return _checkout_results() or Path.cwd() / "mlcourse-results"


def checkpoints_dir() -> Path:
    """Where reproductions keep their checkpoints: ``$MLCOURSE_CHECKPOINTS``, else ``checkpoints``
    in the working directory (ignored by git)."""
    if os.environ.get("MLCOURSE_CHECKPOINTS"):
        return Path(os.environ["MLCOURSE_CHECKPOINTS"]).expanduser()
    return Path.cwd() / "checkpoints"


def search_path() -> list[Path]:
    """The folders :func:`load` looks in, in order."""
    folders = [results_dir(), _checkout_results(), PACKAGED]
    unique = []
    for f in folders:
        if f is not None and f not in unique:
            unique.append(f)
    return unique


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"a record's name is an experiment name such as 'maml-omniglot-5w1s', got {name!r}.")


def find(name: str, suffix: str = ".json") -> Path | None:
    """The path of record ``name`` (without .json), or None if no folder of the search path has it."""
    _check_name(name)
    for folder in search_path():
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    return None


def load(name: str) -> dict | None:
    """The record of experiment ``name`` as a dict, or None when it was never stored."""
    path = find(name)
    return None if path is None else json.loads(path.read_text())


def load_all() -> list[dict]:
    """Every record of the first folder of the search path that holds any, sorted by name."""
    for folder in search_path():
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if files:
            return [json.loads(p.read_text()) for p in files]
    return []


def write_json(data: dict, path: Path) -> None:
    """Write ``data`` as JSON atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


# --- trained θ --------------------------------------------------------------------------------------
def save_theta(path: Path, experiment: str, stages: list[dict]) -> Path:
    """Write the trained θ of a run: ``stages`` is a list of {"desc": str, "params": {state name:
    {entry: tensor}}}, one per training stage (a run that trains a model and a baseline has two)."""
    from .train import save_atomically

    data = {"format": THETA_FORMAT, "experiment": experiment,
            "stages": [{"desc": s["desc"], "params": {n: {k: v.detach().cpu().contiguous() for k, v in p.items()}
                                                      for n, p in s["params"].items()}} for s in stages]}
    save_atomically(data, path)
    return Path(path)


def theta_stages(name: str) -> list[str]:
    """The descriptions of the training stages whose θ the stored file of ``name`` holds."""
    path = find(name, ".theta.pt")
    return [] if path is None else [s["desc"] for s in _read_theta(path)["stages"]]


def load_theta(name: str, stage: int | str | None = None, like: dict | None = None,
               part: str = "theta", device=None) -> dict[str, torch.Tensor] | None:
    """The trained θ of experiment ``name``'s stored run, or None when no θ file was stored.

    stage: the training stage (index, or its description such as "mann"); needed when the run
        trained several models (:func:`theta_stages` lists them).
    like: a θ of the same model (e.g. ``learner.init_params()``); the stored entries must have
        its keys, shapes and dtypes, and are returned on its device.
    part: which parameter dict of the stage (the ``state`` name in training; "theta" by default).
    """
    path = find(name, ".theta.pt")
    if path is None:
        return None
    stages = _read_theta(path)["stages"]
    if stage is None:
        if len(stages) != 1:
            raise ValueError(f"{path} holds {len(stages)} trained models ({[s['desc'] for s in stages]}); "
                             "choose one with stage=index or its description.")
        chosen = stages[0]
    elif isinstance(stage, int) and not isinstance(stage, bool):
        if not 0 <= stage < len(stages):
            raise ValueError(f"{path} holds stages 0..{len(stages) - 1}, got stage={stage}.")
        chosen = stages[stage]
    else:
        matches = [s for s in stages if s["desc"] == stage]
        if len(matches) != 1:
            raise ValueError(f"{path} holds stages {[s['desc'] for s in stages]}; {stage!r} names "
                             f"{len(matches)} of them.")
        chosen = matches[0]
    if part not in chosen["params"]:
        raise ValueError(f"{path}: stage {chosen['desc']!r} holds {sorted(chosen['params'])}, not {part!r}.")
    theta = chosen["params"][part]
    if like is not None:
        differ = sorted(set(like) ^ set(theta))
        if differ:
            raise ValueError(f"{path}: the stored θ differs from the model's in entries {differ[:4]}.")
        for k, v in like.items():
            if theta[k].shape != v.shape or theta[k].dtype != v.dtype:
                raise ValueError(f"{path}: θ[{k!r}] is {theta[k].dtype} {tuple(theta[k].shape)}, the model's is "
                                 f"{v.dtype} {tuple(v.shape)}.")
        device = v.device if device is None else device
    return {k: v.to(device) if device is not None else v for k, v in theta.items()}


def _read_theta(path: Path) -> dict:
    from .train import CheckpointError, load_safely

    data = load_safely(path, what="θ file")
    stages = data.get("stages")
    ok = data.get("format") == THETA_FORMAT and isinstance(stages, list) and all(
        isinstance(s, dict) and isinstance(s.get("desc"), str) and isinstance(s.get("params"), dict)
        and all(isinstance(p, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in p.items())
                for p in s["params"].values())
        for s in stages)
    if not ok:
        raise CheckpointError(f"{path} is not a θ file written by mlcourse.records.save_theta.")
    return data


def stored_weights_bytes(folder: Path | None = None) -> int:
    """The total size of the θ files stored in ``folder`` (default: the checkout's book/results)."""
    folder = _checkout_results() if folder is None else Path(folder)
    return 0 if folder is None else sum(p.stat().st_size for p in folder.glob("*.theta.pt"))
