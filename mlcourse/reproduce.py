"""Reproduce a paper's experiment at its own scale and record the result with its provenance.

    python -m mlcourse.reproduce --list
    python -m mlcourse.reproduce maml-sinusoid                 # the paper's scale (use a GPU)
    python -m mlcourse.reproduce maml-sinusoid --scale quick   # a smoke test of the same code

Each experiment lives in a module of :mod:`mlcourse.experiments` and registers itself with
:func:`experiment`. Its function takes ``(scale, device)`` and returns a dict with ``metrics``
(name -> {"value", "ci95", "paper", "unit"}), ``settings`` and ``notes``; this module adds the
provenance (device, torch version, wall time, commit, date) and writes
``book/results/<name>.json`` atomically. The Results page of the book renders those files.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import pkgutil
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

SCALES = ("paper", "book", "quick")
RESULTS = Path(__file__).resolve().parents[1] / "book" / "results"


@dataclass
class Experiment:
    name: str
    run: Callable[[str, torch.device], dict]
    title: str
    paper: str          # citation key of the paper whose number is reproduced
    gpu_minutes: float  # expected wall time at the paper's scale on one modern GPU


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(name: str, title: str, paper: str, gpu_minutes: float):
    """Register ``fn(scale, device) -> dict`` as a reproducible experiment called ``name``."""

    def register(fn):
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is registered twice.")
        EXPERIMENTS[name] = Experiment(name, fn, title, paper, gpu_minutes)
        return fn

    return register


def discover() -> dict[str, Experiment]:
    """Import every module of mlcourse.experiments so that their experiments register."""
    from . import experiments

    for module in pkgutil.iter_modules(experiments.__path__):
        importlib.import_module(f"{experiments.__name__}.{module.name}")
    return EXPERIMENTS


def _commit() -> str:
    """The checkout's commit (``MLCOURSE_COMMIT`` overrides it, for copies without .git)."""
    if os.environ.get("MLCOURSE_COMMIT"):
        return os.environ["MLCOURSE_COMMIT"]
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+local changes" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run(name: str, scale: str = "paper", device=None, out: Path | None = None, iterations: int | None = None) -> dict:
    """Run one experiment and write its record; returns the record. ``iterations`` shortens (or
    lengthens) meta-training at the scale's other settings, for a run that must fit a time
    budget; the record's scale then says so."""
    from . import runtime

    experiments = discover()
    if name not in experiments:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(sorted(experiments))}.")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}.")
    exp = experiments[name]
    device = runtime.device() if device is None else torch.device(device)
    runtime.seed(0)
    began = time.perf_counter()
    result = exp.run(scale, device) if iterations is None else exp.run(scale, device, iterations=iterations)
    label = scale if iterations is None else f"{scale} settings, {iterations:,} meta-iterations"
    record = {
        "name": name, "title": exp.title, "paper": exp.paper, "scale": label, **result,
        "provenance": {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
            "torch": torch.__version__, "python": platform.python_version(),
            "wall_seconds": round(time.perf_counter() - began, 1), "commit": _commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": f"python -m mlcourse.reproduce {name} --scale {scale}"
                       + ("" if iterations is None else f" --iterations {iterations}"),
        },
    }
    out = RESULTS if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out, suffix=".tmp", delete=False) as f:
        json.dump(record, f, indent=2)
    os.replace(f.name, out / f"{name}.json")
    return record


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlcourse.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="experiments to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the experiments")
    parser.add_argument("--scale", default="paper", choices=SCALES)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: mlcourse.runtime.device())")
    parser.add_argument("--out", default=None, help=f"folder for the records (default {RESULTS})")
    parser.add_argument("--iterations", type=int, default=None,
                        help="meta-iterations instead of the scale's own (to fit a time budget)")
    args = parser.parse_args(argv)
    experiments = discover()
    if args.list or not args.names:
        for exp in sorted(experiments.values(), key=lambda e: e.name):
            print(f"{exp.name:28s} ~{exp.gpu_minutes:g} GPU-min  {exp.title}")
        return
    for name in args.names:
        record = run(name, args.scale, args.device, args.out, args.iterations)
        metrics = ", ".join(f"{k} {m['value']:.4g}" + (f" ± {m['ci95']:.2g}" if m.get("ci95") is not None else "")
                            for k, m in record.get("metrics", {}).items())
        print(f"{name}: {metrics} ({record['provenance']['wall_seconds']} s on {record['provenance']['device']})")


if __name__ == "__main__":
    # Run the imported module's main: experiments register in mlcourse.reproduce, not in __main__.
    from mlcourse import reproduce

    reproduce.main()
