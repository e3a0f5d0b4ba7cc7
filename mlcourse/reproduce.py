"""Reproduce a paper's experiment at its own scale and record the result with its provenance.

    python -m mlcourse.reproduce --list
    python -m mlcourse.reproduce maml-sinusoid                 # the paper's scale (use a GPU)
    python -m mlcourse.reproduce maml-sinusoid --scale quick   # a smoke test of the same code

Each experiment lives in a module of :mod:`mlcourse.experiments` and is registered with its
settings dataclass. This module picks the settings of the scale asked for, runs the experiment,
adds the settings and the provenance (device, torch version, wall time, commit, date) and writes
``<out>/<name>.json`` atomically (default: :func:`mlcourse.records.results_dir`). The Results page
of the book renders those files.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from .experiments import EXPERIMENTS, Experiment
from .settings import SCALES, Settings


def discover() -> dict[str, Experiment]:
    """The registered experiments (they register when :mod:`mlcourse.experiments` is imported)."""
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


def settings_for(name: str, scale: str = "paper", iterations: int | None = None) -> Settings:
    """The settings experiment ``name`` runs with at ``scale``, with ``iterations`` replacing the
    scale's number of meta-iterations (to fit a time budget). Checks everything before any run."""
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(sorted(EXPERIMENTS))}.")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}.")
    settings = EXPERIMENTS[name].settings.at(scale)
    if iterations is not None:
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be an int >= 1, got {iterations!r}.")
        if not hasattr(settings, "iterations"):
            raise ValueError(f"experiment {name!r} counts its training in other units than meta-iterations; "
                             f"its settings are {sorted(settings.record())}.")
        settings = settings.replace(iterations=iterations)
    return settings


def scale_label(settings: Settings) -> str:
    """What a record's scale is, in words: "paper", or "paper settings, 34,000 of 60,000 iterations"."""
    preset = type(settings).at(settings.scale)
    changed = {k: v for k, v in settings.record().items() if v != preset.record()[k]}
    if not changed:
        return settings.scale
    if set(changed) == {"iterations"}:
        return f"{settings.scale} settings, {settings.iterations:,} of {preset.iterations:,} iterations"
    return f"{settings.scale} settings with " + ", ".join(f"{k} = {v}" for k, v in changed.items())


def run(name: str, scale: str = "paper", device=None, out: Path | None = None, iterations: int | None = None) -> dict:
    """Run one experiment and write its record; returns the record."""
    from . import records, runtime

    settings = settings_for(name, scale, iterations)
    device = runtime.device() if device is None else runtime.check_device(device)
    exp = EXPERIMENTS[name]
    runtime.seed(0)
    began = time.perf_counter()
    result = exp.run(settings, device)
    command = f"python -m mlcourse.reproduce {name} --scale {scale}" + (
        "" if iterations is None else f" --iterations {iterations}")
    record = {
        "name": name, "title": exp.title, "paper": exp.paper, "scale": scale_label(settings), **result,
        "settings": settings.record(),
        "provenance": {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
            "torch": torch.__version__, "python": platform.python_version(),
            "wall_seconds": round(time.perf_counter() - began, 1), "commit": _commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command,
        },
    }
    out = records.results_dir() if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out, suffix=".tmp", delete=False) as f:
        json.dump(record, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, out / f"{name}.json")
    return record


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlcourse.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="experiments to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the experiments")
    parser.add_argument("--scale", default="paper", choices=SCALES)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: mlcourse.runtime.device())")
    parser.add_argument("--out", default=None, help="folder for the records (default: mlcourse.records.results_dir())")
    parser.add_argument("--iterations", type=int, default=None,
                        help="meta-iterations instead of the scale's own (to fit a time budget)")
    args = parser.parse_args(argv)
    if args.list or not args.names:
        for exp in sorted(EXPERIMENTS.values(), key=lambda e: e.name):
            print(f"{exp.name:28s} ~{exp.gpu_minutes:g} GPU-min  {exp.title}")
        return
    # Everything is checked before anything runs: a typo in the second name must not wait for the first run.
    from . import runtime

    try:
        for name in args.names:
            settings_for(name, args.scale, args.iterations)
        if args.device is not None:
            runtime.check_device(args.device)
        if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
            raise ValueError(f"--out {args.out} is a file; it must name a folder for the records.")
    except (KeyError, ValueError, RuntimeError) as err:
        parser.error(str(err.args[0]) if err.args else str(err))
    for name in args.names:
        record = run(name, args.scale, args.device, args.out, args.iterations)
        metrics = ", ".join(f"{k} {m['value']:.4g}" + (f" ± {m['ci95']:.2g}" if m.get("ci95") is not None else "")
                            for k, m in record.get("metrics", {}).items())
        print(f"{name}: {metrics} ({record['provenance']['wall_seconds']} s on {record['provenance']['device']})")


if __name__ == "__main__":
    # Run the imported module's main, not a second copy of this file as __main__.
    from mlcourse import reproduce

    reproduce.main()
