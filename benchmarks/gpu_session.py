"""One GPU session's work, in about ten minutes: checks, speed figures, then the unreproduced paper
runs continued in resumable chunks, with everything needed to continue packed for the next session.

    python benchmarks/gpu_session.py --prepare            # here, before a session: fills .gpu/
    bash benchmarks/gpu_session.sh                        # there (the device tool, carry [".gpu"])
    python benchmarks/gpu_session.py --unpack FILES_AT    # here, after it: checkpoints and records back
    python benchmarks/gpu_session.py --cpu-smoke --out /tmp/x --state /tmp/s   # the same, tiny, on a CPU

The session: (1) the CUDA correctness checks of ``gpu_check.py`` and of ``gpu_steps.py`` (captured
steps against eager ones), (2) the speed figures of the captured steps, (3) the paper runs of
``RUNS`` in order, each continued from its checkpoints in ``<state>/checkpoints`` with
``python -m mlcourse.reproduce NAME --resume --budget-minutes ...`` until the budget is spent;
a finished run writes its record and trained θ. (4) For every run touched, ``<out>/NAME.tar``
holds its checkpoints, its ``run.json`` and, once finished, its record and θ; ``<out>/session.log``
holds the output. A session touches only the runs it reaches (rarely more than two), so what
comes back stays within the device tool's 8 files of at most 16 MiB each.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The headline results not yet reproduced at the paper's scale, cheapest first (GPU minutes estimated
# from the eager H200 measurements; the captured steps should cut the first four several-fold).
RUNS = ["maml-omniglot-5w5s", "reptile-omniglot-5w1s", "reptile-omniglot-5w5s", "mann-omniglot",
        "imaml-omniglot-5w1s",
        # Reproduced before trained θ was stored: run again so that their θ sits beside their records.
        "maml-sinusoid", "maml-omniglot-5w1s", "fomaml-omniglot-5w1s"]
SMOKE_RUNS = ["maml-sinusoid"]
TAR_LIMIT = 16 * 2**20


class Log:
    def __init__(self, path: Path):
        self.file = open(path, "a")

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.file.write(text + "\n")
        self.file.flush()


def checks(log: Log, smoke: bool) -> None:
    """The correctness checks and the speed figures, in this process; a failure is logged, not fatal."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import contextlib

    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            import gpu_steps

            if smoke:
                gpu_steps.main(["--cpu-smoke"])
            else:
                import gpu_check
                import torch

                gpu_check.correctness()  # MAML's CUDA paths and the captured steps against eager ones
                gpu_steps.speed(torch.device("cuda"), small=False)
    except Exception as err:  # keep going: the paper runs still need the time
        out.write(f"[checks failed] {type(err).__name__}: {err}\n")
    log(out.getvalue().rstrip())


def finished(name: str, state: Path) -> bool:
    manifest = state / "checkpoints" / name / "run.json"
    if not manifest.exists():
        return False
    chunks = json.loads(manifest.read_text()).get("chunks", [])
    return bool(chunks) and chunks[-1].get("status") == "finished" and (state / "results" / f"{name}.json").exists()


def continue_run(name: str, state: Path, minutes: float, smoke: bool, log: Log) -> str:
    """One chunk of run ``name``: 'finished', 'budget spent' or 'failed'."""
    command = [sys.executable, "-m", "mlcourse.reproduce", name, "--resume",
               "--checkpoint-dir", str(state / "checkpoints"), "--out", str(state / "results"),
               "--budget-minutes", f"{minutes:.2f}", "--checkpoint-minutes", "2"]
    if smoke:
        command += ["--scale", "quick", "--device", "cpu", "--checkpoint-every", "10"]
    log(f"$ {' '.join(command[1:])}")
    # Loading the data and the final evaluation come on top of the training budget.
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60 * minutes + 240)
    except subprocess.TimeoutExpired:
        log(f"{name}: stopped by the session's clock (its last checkpoint is kept)")
        return "failed"
    log((done.stdout + done.stderr[-3000:]).rstrip())
    if done.returncode == 0:
        return "finished"
    return "budget spent" if done.returncode == 75 else "failed"


def pack(name: str, state: Path, out: Path, log: Log) -> None:
    """<out>/NAME.tar: the run's checkpoint folder and, if present, its record and θ."""
    path = out / f"{name}.tar"
    with tarfile.open(path, "w") as tar:
        folder = state / "checkpoints" / name
        if folder.is_dir():
            tar.add(folder, arcname=f"checkpoints/{name}")
        for suffix in (".json", ".theta.pt"):
            f = state / "results" / f"{name}{suffix}"
            if f.exists():
                tar.add(f, arcname=f"results/{name}{suffix}")
    size = path.stat().st_size
    log(f"packed {path.name}: {size / 2**20:.1f} MiB" + ("  TOO LARGE for the device tool" if size > TAR_LIMIT else ""))


def session(args) -> None:
    began = time.monotonic()
    left = lambda: args.budget - (time.monotonic() - began)  # noqa: E731
    out, state = Path(args.out), Path(args.state)
    out.mkdir(parents=True, exist_ok=True)
    (state / "checkpoints").mkdir(parents=True, exist_ok=True)
    (state / "results").mkdir(parents=True, exist_ok=True)
    log = Log(out / "session.log")
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    log(f"{device} | torch {torch.__version__} | budget {args.budget:.0f} s | runs {', '.join(args.runs)}")
    if not args.skip_checks:
        checks(log, args.cpu_smoke)
        log(f"checks done at {args.budget - left():.0f} s")
    touched = []
    for name in args.runs:
        if finished(name, state):
            log(f"{name}: already finished")
            continue
        minutes = (left() - args.reserve) / 60
        if minutes < 0.5:
            log(f"{name}: no time left in this session")
            break
        touched.append(name)
        status = continue_run(name, state, minutes, args.cpu_smoke, log)
        log(f"{name}: {status} at {args.budget - left():.0f} s")
        if status != "finished":
            break  # the budget is spent (or the run broke: its log says why)
    for name in touched:
        pack(name, state, out, log)
    log(f"session done in {time.monotonic() - began:.0f} s")


def prepare(args) -> None:
    """Fill <state> (default .gpu, ignored by git) with what the GPU machine needs: the Omniglot
    zips and the commit; earlier sessions' checkpoints go there with --unpack."""
    from mlcourse import runtime

    state = Path(args.state)
    data = state / "data" / "omniglot"
    data.mkdir(parents=True, exist_ok=True)
    source = runtime.data_dir() / "omniglot"
    for zip_name in ("images_background.zip", "images_evaluation.zip"):
        if not (data / zip_name).exists():
            shutil.copy(source / zip_name, data / zip_name)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    (state / "commit").write_text(commit or "unknown")
    size = sum(p.stat().st_size for p in state.rglob("*") if p.is_file())
    print(f"{state}: {size / 2**20:.1f} MiB to carry (the device tool takes 64 MiB with the working tree)")


def unpack(args) -> None:
    """Put the tars a session brought back into <state> (to continue there) and the finished
    records and θ into book/results (to commit)."""
    state, results = Path(args.state), Path(args.records)
    for tar_path in sorted(Path(args.unpack).glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and not m.name.startswith("/") and ".." not in m.name]
            tar.extractall(state, members=members, filter="data")
        name = tar_path.stem
        if finished(name, state):
            for suffix in (".json", ".theta.pt"):
                shutil.copy(state / "results" / f"{name}{suffix}", results / f"{name}{suffix}")
            print(f"{name}: finished; record and θ copied to {results}")
        else:
            print(f"{name}: checkpoints kept in {state / 'checkpoints' / name} for the next session")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_out"), help="what comes back ($OUT)")
    parser.add_argument("--state", default=str(ROOT / ".gpu"), help="the carried folder: data, checkpoints")
    parser.add_argument("--budget", type=float, default=540, help="seconds for the whole session")
    parser.add_argument("--reserve", type=float, default=60, help="seconds kept for evaluation and packing")
    parser.add_argument("--runs", nargs="*", default=None)
    parser.add_argument("--skip-checks", action="store_true")
    parser.add_argument("--cpu-smoke", action="store_true", help="quick scale on the CPU, to test this script")
    parser.add_argument("--prepare", action="store_true")
    parser.add_argument("--unpack", metavar="FOLDER", help="the folder of the tars a session brought back")
    parser.add_argument("--records", default=str(ROOT / "book" / "results"),
                        help="where --unpack puts finished records and θ (default: book/results)")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = SMOKE_RUNS if args.cpu_smoke else RUNS
    if args.prepare:
        return prepare(args)
    if args.unpack:
        return unpack(args)
    session(args)


if __name__ == "__main__":
    main()
