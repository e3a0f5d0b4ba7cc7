"""Reproduce a paper's experiment at its own scale and record the result with its provenance.

    python -m mlcourse.reproduce --list
    python -m mlcourse.reproduce maml-sinusoid                 # the paper's scale (use a GPU)
    python -m mlcourse.reproduce maml-sinusoid --scale quick   # a smoke test of the same code

Each experiment lives in a module of :mod:`mlcourse.experiments` and is registered with its
settings dataclass. This module picks the settings of the scale asked for, runs the experiment,
adds the settings and the provenance (devices, torch version, wall time, commit, date, the chunks
it ran in) and writes ``<out>/<name>.json`` and the trained θ ``<out>/<name>.theta.pt``
atomically (default: :func:`mlcourse.records.results_dir`). The Results page of the book
renders those files.

A long run goes in chunks, across any number of sessions and machines::

    python -m mlcourse.reproduce imaml-omniglot-5w1s --budget-minutes 9            # exit status 75: not done
    python -m mlcourse.reproduce imaml-omniglot-5w1s --budget-minutes 9 --resume   # ... until it finishes

Every ``train.fit`` of the experiment checkpoints into ``<checkpoint dir>/<name>/stage<k>.pt``
(every ``--checkpoint-every`` iterations and ``--checkpoint-minutes`` minutes, and where the
budget stops it), with ``run.json`` beside them listing the chunks. On a CPU a resumed run ends
with exactly the θ of an uninterrupted one. Under ``torchrun --nproc-per-node P`` the meta-batch
is split over P processes (see :mod:`mlcourse.distributed`); rank 0 writes every file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
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


RESUMABLE_COUNTS = ("iterations", "episodes")  # may grow between chunks; everything else must match
EXIT_BUDGET_SPENT = 75  # the exit status when --budget-minutes stopped a run at a checkpoint (EX_TEMPFAIL)


def identity(name: str, settings: Settings) -> dict:
    """What a run is, for checking that a checkpoint belongs to it: the experiment and its settings
    (except the length of training, which a later chunk may extend)."""
    return {"experiment": name,
            "settings": {k: v for k, v in settings.record().items() if k not in RESUMABLE_COUNTS}}


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def run_folder(name: str, checkpoint_dir: Path | None = None) -> Path:
    from . import records

    return (records.checkpoints_dir() if checkpoint_dir is None else Path(checkpoint_dir)) / name


def check_resume(name: str, settings: Settings, resume: bool, restart: bool, checkpoint_dir=None) -> None:
    """Refuse, before anything runs, to overwrite a run's checkpoints silently or to resume a
    run of other settings; ``restart`` removes the old checkpoints."""
    folder = run_folder(name, checkpoint_dir)
    manifest = folder / "run.json"
    stages = sorted(folder.glob("stage*.pt")) if folder.is_dir() else []
    if restart:
        for p in stages + ([manifest] if manifest.exists() else []):
            p.unlink()
        return
    if stages and not resume:
        raise ValueError(f"{folder} holds checkpoints of an earlier run of {name}: continue it with --resume, or "
                         "start over with --restart.")
    if resume and manifest.exists():
        try:
            saved = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{manifest} is not readable ({err}); start over with --restart.") from None
        from .train import CheckpointError, _same_identity

        try:
            _same_identity(saved, identity(name, settings), manifest)
        except CheckpointError as err:
            raise ValueError(str(err)) from None


def run(name: str, scale: str = "paper", device=None, out: Path | None = None, iterations: int | None = None, *,
        resume: bool = False, restart: bool = False, checkpoint_dir: Path | None = None, checkpoint_every: int = 1000,
        checkpoint_minutes: float = 10.0, budget_minutes: float | None = None) -> dict:
    """Run one experiment and write its record and trained θ; returns the record.

    Every ``train.fit`` of the experiment checkpoints into ``<checkpoint_dir>/<name>/`` every
    ``checkpoint_every`` iterations and every ``checkpoint_minutes`` minutes; ``resume``
    continues from those checkpoints; ``budget_minutes`` stops training at a checkpoint once that
    much time has passed (raising :class:`mlcourse.train.BudgetSpent`; run again with ``resume``).
    Under torchrun, every process runs this and rank 0 writes the files.
    """
    from . import distributed, records, runtime, train

    settings = settings_for(name, scale, iterations)
    launched = distributed.setup(None if device is None else torch.device(device).type)
    if launched is not None and device is None:
        device = launched
    device = runtime.device() if device is None else runtime.check_device(device)
    exp = EXPERIMENTS[name]
    began, clock = time.perf_counter(), time.monotonic()
    folder = run_folder(name, checkpoint_dir)
    if distributed.is_main():
        check_resume(name, settings, resume, restart, checkpoint_dir)
    manifest_path = folder / "run.json"
    manifest = {"identity": identity(name, settings), "chunks": []}
    if resume and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
    chunk = {"chunk": len(manifest["chunks"]) + 1, "device": _device_name(device),
             "processes": distributed.world_size(), "started": _now(), "status": "interrupted", "seconds": 0.0,
             "stages": []}
    manifest["chunks"].append(chunk)
    manifest["identity"] = identity(name, settings)

    def write_manifest(policy):
        chunk["seconds"] = round(time.perf_counter() - began, 1)
        chunk["stages"] = [{"stage": i, "desc": s["desc"], "from": s.get("resumed_at") or 0,
                            "to": s.get("stopped_at", s["iterations"])} for i, s in enumerate(policy.stages)]
        if distributed.is_main():
            records.write_json(manifest, manifest_path)

    policy = train.Checkpointing(folder, every=checkpoint_every, minutes=checkpoint_minutes, resume=resume,
                                 deadline=None if budget_minutes is None else clock + 60 * budget_minutes,
                                 identity=identity(name, settings))
    if distributed.is_main():
        write_manifest(policy)
    runtime.seed(0)
    try:
        with train.checkpointing(policy):
            result = exp.run(settings, device)
    except train.BudgetSpent as stop:
        policy.stages[-1]["stopped_at"] = stop.iteration
        chunk["status"] = "budget spent"
        write_manifest(policy)
        raise
    chunk["status"] = "finished"
    write_manifest(policy)
    command = f"python -m mlcourse.reproduce {name} --scale {scale}" + (
        "" if iterations is None else f" --iterations {iterations}")
    chunks = manifest["chunks"]
    record = {
        "name": name, "title": exp.title, "paper": exp.paper, "scale": scale_label(settings), **result,
        "settings": settings.record(),
        "provenance": {
            "device": _device_name(device), "processes": distributed.world_size(),
            "torch": torch.__version__, "python": platform.python_version(),
            "wall_seconds": round(sum(c["seconds"] for c in chunks), 1), "commit": _commit(),
            "date": _now(), "command": command,
            "chunks": len(chunks),
            "devices": sorted({f"{c['device']} × {c['processes']}" if c["processes"] > 1 else c["device"]
                               for c in chunks}),
            "chunk_log": [{k: c[k] for k in ("chunk", "device", "processes", "started", "status", "seconds", "stages")}
                          for c in chunks],
        },
    }
    out = records.results_dir() if out is None else Path(out)
    if distributed.is_main():
        stages = [{"desc": s["desc"], "params": s["params"]} for s in policy.stages if s.get("params")]
        if stages:
            path = records.save_theta(out / f"{name}.theta.pt", name, stages)
            record["theta"] = {"file": path.name, "bytes": path.stat().st_size,
                               "stages": [s["desc"] for s in stages]}
        records.write_json(record, out / f"{name}.json")
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
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument("--restart", action="store_true", help="delete the run's checkpoints and start over")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="folder of the runs' checkpoints (default: mlcourse.records.checkpoints_dir())")
    parser.add_argument("--checkpoint-every", type=int, default=1000, metavar="N",
                        help="save a checkpoint every N iterations (default 1000)")
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0, metavar="M",
                        help="and at least every M minutes (default 10)")
    parser.add_argument("--budget-minutes", type=float, default=None, metavar="M",
                        help="stop at a checkpoint after M minutes; --resume continues (exit status 75)")
    args = parser.parse_args(argv)
    if args.list or not args.names:
        for exp in sorted(EXPERIMENTS.values(), key=lambda e: e.name):
            print(f"{exp.name:28s} ~{exp.gpu_minutes:g} GPU-min  {exp.title}")
        return
    # Everything is checked before anything runs: a typo in the second name must not wait for the first run.
    from . import distributed, runtime, train

    try:
        if args.resume and args.restart:
            raise ValueError("--resume and --restart exclude each other.")
        if args.checkpoint_every < 1:
            raise ValueError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}.")
        for flag, value in (("--checkpoint-minutes", args.checkpoint_minutes),
                            ("--budget-minutes", args.budget_minutes)):
            if value is not None and not value > 0:
                raise ValueError(f"{flag} must be a positive number of minutes, got {value}.")
        for name in args.names:
            settings = settings_for(name, args.scale, args.iterations)
            if not args.restart:
                check_resume(name, settings, args.resume, False, args.checkpoint_dir)
        if args.device is not None:
            runtime.check_device(args.device)
        if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
            raise ValueError(f"--out {args.out} is a file; it must name a folder for the records.")
    except (KeyError, ValueError, RuntimeError) as err:
        parser.error(str(err.args[0]) if err.args else str(err))
    began = time.monotonic()
    for name in args.names:
        budget = None if args.budget_minutes is None else args.budget_minutes - (time.monotonic() - began) / 60
        try:
            record = run(name, args.scale, args.device, args.out, args.iterations, resume=args.resume,
                         restart=args.restart, checkpoint_dir=args.checkpoint_dir,
                         checkpoint_every=args.checkpoint_every, checkpoint_minutes=args.checkpoint_minutes,
                         budget_minutes=None if budget is None else max(budget, 1e-3))
        except train.BudgetSpent as stop:
            if distributed.is_main():
                print(f"{name}: {stop}; continue with --resume", flush=True)
            raise SystemExit(EXIT_BUDGET_SPENT) from None
        except train.CheckpointError as err:
            raise SystemExit(f"{name}: {err}") from None
        if distributed.is_main():
            metrics = ", ".join(f"{k} {m['value']:.4g}" + (f" ± {m['ci95']:.2g}" if m.get("ci95") is not None else "")
                                for k, m in record.get("metrics", {}).items())
            p = record["provenance"]
            print(f"{name}: {metrics} ({p['wall_seconds']} s in {p['chunks']} chunk(s) on {', '.join(p['devices'])})",
                  flush=True)


if __name__ == "__main__":
    # Run the imported module's main, not a second copy of this file as __main__.
    from mlcourse import reproduce

    reproduce.main()
