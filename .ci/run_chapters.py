"""Execute chapter notebooks as "Run all" does, a few at a time, and keep the executed copies.

    python .ci/run_chapters.py --out DIR [--jobs 2] [--cwd DIR] [--colab-install REQ] [--stall S] chapters/*.ipynb

Each notebook runs top to bottom in a fresh kernel of the Python that runs this script; the first
error stops that notebook, and the run fails with the chapter, the cell and the traceback. The
executed notebook is written to DIR/<name>.ipynb (the sources are never written), with the
mlcourse modules the chapter loaded in its metadata (`executed_modules`). Only nbclient
and nbformat are needed, so the same script runs in the book's environment and in the Colab-like
one (.ci/colab-constraints.txt).

--cwd: the folder a notebook runs in (default: the notebook's own folder, as Jupyter Book does).
    With --cwd, every notebook gets its own empty folder under it, as on Colab where no
    repository files lie beside the notebook.
--stall: a kernel that uses no CPU for this many seconds while a cell runs is stopped and the
    chapter run again (see STALL_SECONDS).
--colab-install: run the Colab set-up cell as on Colab: `google.colab` is made importable for
    the kernel and the cell's `git+<repository>@<tag>` is replaced by REQ (a built wheel), so the
    cell's own `pip install` line is what installs the package.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

# The longest chapters start first, so that two workers finish together; durations of the last run
# are kept beside the outputs.
DURATIONS = "durations.json"
# Runs of a chapter before a cell's timeout counts as its failure (see run()).
ATTEMPTS = 3
# Run after the last cell: which mlcourse modules the chapter loaded (.ci/book_cache.py keys the
# execution cache on their source).
PROBE = ('import json as _json, sys as _sys\n'
         'print(_json.dumps(sorted(m for m in _sys.modules if m.split(".")[0] == "mlcourse")))')
FAKE_COLAB = ('import sys, types  # added by .ci/run_chapters.py: the kernel believes it runs on Colab\n'
              'sys.modules.setdefault("google.colab", types.ModuleType("google.colab"))\n')


# A kernel that has used no CPU for this long while a cell runs has stopped reading its shell
# socket (seen here under load, with ipykernel 6 and 7: it no longer answers even kernel_info).
STALL_SECONDS = 180
POLL_SECONDS = 10


class ChapterFailed(Exception):
    pass


def _cpu_seconds(root: int) -> float | None:
    """CPU time of a process and all its descendants (Linux /proc), None where unreadable."""
    try:
        stats = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    text = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                fields = text[text.rindex(")") + 2:].split()
                stats[int(entry)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    except OSError:
        return None
    if root not in stats:
        return None
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in stats.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(stats[pid][1] for pid in tree) / os.sysconf("SC_CLK_TCK")


class StallWatch(threading.Thread):
    """Kills the kernel of ``client`` when its process tree uses no CPU for STALL_SECONDS, so that
    nbclient reports a dead kernel at once instead of waiting for the cell's timeout."""

    def __init__(self, client, limit: float):
        super().__init__(daemon=True)
        self.client, self.limit, self.fired, self.done = client, limit, False, threading.Event()

    def _pid(self):
        provisioner = getattr(getattr(self.client, "km", None), "provisioner", None)
        return getattr(provisioner, "pid", None)

    def run(self):
        last_cpu, last_change = None, time.monotonic()
        while not self.done.wait(POLL_SECONDS):
            pid = self._pid()
            cpu = None if pid is None else _cpu_seconds(pid)
            if cpu is None:
                last_cpu, last_change = None, time.monotonic()
                continue
            if last_cpu is None or cpu - last_cpu > 0.5:
                last_cpu, last_change = cpu, time.monotonic()
            elif time.monotonic() - last_change > self.limit:
                self.fired = True
                os.kill(pid, signal.SIGKILL)
                return


def colab_setup(source: str, requirement: str) -> str:
    """The set-up cell as it runs on Colab, installing `requirement` instead of the release tag."""
    if not re.search(r'RELEASE = "git\+\S+"', source):
        raise ChapterFailed(f"the set-up cell names no RELEASE = \"git+...\" to install:\n{source}")
    return FAKE_COLAB + re.sub(r'RELEASE = "git\+\S+"', f'RELEASE = "{requirement}"', source)


def run(path: Path, out: Path, cwd_root: Path | None, requirement: str | None, timeout: int,
        stall: int | None = None) -> float:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    stall = stall or STALL_SECONDS
    nb = nbformat.read(path, as_version=4)
    if requirement:
        first = nb.cells[0]
        first.source = colab_setup(first.source, requirement)
    if cwd_root is None:
        cwd = str(path.resolve().parent)
    else:
        cwd = tempfile.mkdtemp(prefix=f"{path.stem}-", dir=cwd_root)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    def execute():
        """Run the notebook; True when it ran, False when its kernel stalled and was stopped."""
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": cwd}},
                                record_timing=False)
        watch = StallWatch(client, stall)
        if sys.platform.startswith("linux"):
            watch.start()
        try:
            client.execute()
            return True
        except DeadKernelError:
            if watch.fired:
                return False
            raise
        finally:
            watch.done.set()

    began = time.perf_counter()
    try:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                if execute():
                    break
                # The kernel stopped answering with a cell done (see STALL_SECONDS): run again.
                if attempt == ATTEMPTS:
                    raise ChapterFailed(f"{path.name}: its kernel stalled {ATTEMPTS} times (no CPU used for "
                                        f"{stall} s while a cell ran)")
                print(f"{path.name}: its kernel stalled; running the chapter again in a new kernel", flush=True)
            except CellTimeoutError:
                # A kernel can also go idle with its cell done while the client is never told: start
                # again in a fresh kernel; a cell that is really too slow times out every time and fails.
                if attempt == ATTEMPTS:
                    raise
                print(f"{path.name}: a cell ran past {timeout} s; running the chapter again in a new kernel",
                      flush=True)
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
        failed = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and
                  any(o.get("output_type") == "error" for o in c.get("outputs", []))]
        where = f"cell {failed[0]} (id {nb.cells[failed[0]].get('id')})" if failed else "a cell"
        raise ChapterFailed(f"{path.name}: {where} failed after {time.perf_counter() - began:.0f} s, "
                            f"in {cwd}:\n{err}") from None
    seconds = time.perf_counter() - began
    probe = nb.cells.pop()
    nb.metadata["executed_modules"] = json.loads("".join(o.get("text", "") for o in probe.outputs))
    if requirement:  # the executed copy keeps the chapter's own set-up cell
        nb.cells[0].source = nbformat.read(path, as_version=4).cells[0].source
    nbformat.write(nb, out / path.name)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the executed notebooks")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cwd", type=Path, default=None, help="run each notebook in a new folder under this one")
    parser.add_argument("--colab-install", default=None, metavar="REQ",
                        help="run the set-up cell as on Colab, installing REQ")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed for one cell")
    parser.add_argument("--stall", type=int, default=STALL_SECONDS,
                        help="seconds without CPU use in a running cell after which its kernel is restarted")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cwd is not None:
        args.cwd.mkdir(parents=True, exist_ok=True)
    # The kernels' `!pip` is this environment's pip, as on Colab; the workers share the cores.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    workers = min(args.jobs, len(args.notebooks))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    os.environ.setdefault("MLCOURSE_BOOK_OUTPUTS", "1")  # mlcourse.book.glue: record for the book, show nothing twice
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # the kernel's debugger, quiet about frozen modules
    record = args.out / DURATIONS
    durations = json.loads(record.read_text()) if record.exists() else {}
    order = sorted(args.notebooks, key=lambda p: -durations.get(p.name, p.stat().st_size / 1e4))

    began = time.perf_counter()
    failures = []
    # At most `workers` notebooks in flight, so that nothing new starts after the first failure.
    queue = list(order)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        running = {}
        while queue or running:
            while queue and len(running) < workers and not failures:
                path = queue.pop(0)
                running[pool.submit(run, path, args.out, args.cwd, args.colab_install, args.timeout,
                                     args.stall)] = path
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                path = running.pop(future)
                try:
                    durations[path.name] = round(future.result(), 1)
                    print(f"ran {path.name} in {durations[path.name]:.0f} s", flush=True)
                except ChapterFailed as err:
                    failures.append(str(err))
                    print(f"FAILED {err}", flush=True)
    record.write_text(json.dumps(durations, indent=1, sort_keys=True) + "\n")
    done = sum(p.name in durations and (args.out / p.name).exists() for p in order)
    print(f"{done} of {len(order)} notebooks ran in {time.perf_counter() - began:.0f} s with {workers} jobs"
          + (", the others were not started after the first failure" if queue else ""), flush=True)
    if failures:
        print(f"{len(failures)} failed:\n" + "\n".join(f.splitlines()[0] for f in failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
