"""Grade a folder of submitted notebooks with the exercises' checks, into one CSV.

    python -m mlcourse.grade submissions/ --out scores.csv [--cell-timeout 120] [--timeout 900]

Every ``*.ipynb`` below the folder is one submission; the student is the file's folder name when
submissions are kept one folder per student (``submissions/alice/05_maml.ipynb``), else the file
name. Each notebook runs in its own kernel, at quick scale unless ``--full`` is given, cell by cell:
a cell that raises does not stop the rest (later checks still count), a cell that runs longer than
``--cell-timeout`` is interrupted, and a notebook that runs longer than ``--timeout`` in all is
stopped where it is. The CSV has one row per submission: one column per exercise with the
fraction of its checks that passed, the mean over the exercises the notebook was assigned, a
status, and a note saying what went wrong. A notebook that is not valid JSON gets a row saying
so. Rows are written as they are graded, and the CSV is complete only at the end (written atomically).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .exercises import EXERCISES, MARKER, load_all


@dataclass
class Result:
    student: str
    notebook: str
    status: str = "graded"
    scores: dict[str, float] = field(default_factory=dict)
    expected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    feedback: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        names = self.expected or sorted(self.scores)
        return sum(self.scores.get(n, 0.0) for n in names) / len(names) if names else 0.0


def _verdicts(nb) -> tuple[dict[str, float], list[str]]:
    """Scores from the checks' machine-readable lines in the executed notebook, and their text."""
    scores, text = {}, []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") != "stream":
                continue
            for line in output.get("text", "").splitlines():
                if line.startswith(MARKER):
                    record = json.loads(line[len(MARKER):])
                    scores[record["exercise"]] = record["passed"] / max(1, record["total"])
                else:
                    text.append(line)
    return scores, text


def grade_notebook(path: Path, student: str, cell_timeout: float, timeout: float, quick: bool = True) -> Result:
    """Execute one submission and collect its checks' scores; never raises for a bad notebook."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    result = Result(student=student, notebook=str(path))
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # not JSON, not a notebook: say so and move on
        result.status = "invalid notebook"
        result.notes.append(f"could not read it: {type(err).__name__}: {str(err)[:200]}")
        return result
    info = nb.metadata.get("mlcourse", {})
    result.expected = [e for e in info.get("exercises", []) if e in EXERCISES] or sorted(
        e.id for e in EXERCISES.values() if e.chapter == info.get("chapter", path.stem))
    env = dict(os.environ, MLCOURSE_QUICK="1" if quick else "0")
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(path.parent)}})
    began = time.monotonic()
    try:
        with client.setup_kernel(env=env):
            for index, cell in enumerate(nb.cells):
                if time.monotonic() - began > timeout:
                    result.status = "timed out"
                    result.notes.append(f"stopped at cell {index} after {timeout:.0f} s in all")
                    break
                if cell.cell_type != "code":
                    continue
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError:
                    result.notes.append(f"cell {index} ran longer than {cell_timeout:.0f} s and was interrupted")
                except CellExecutionError as err:  # only when allow_errors is off; kept for safety
                    result.notes.append(f"cell {index} raised: {str(err)[:200]}")
                errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
                if errors:
                    result.notes.append(f"cell {index} raised {errors[0].get('ename')}: {errors[0].get('evalue', '')[:120]}")
    except DeadKernelError as err:
        result.status = "kernel died"
        result.notes.append(str(err)[:200])
    except Exception as err:  # a kernel that would not start, and the like
        result.status = "error"
        result.notes.append(f"{type(err).__name__}: {str(err)[:200]}")
    result.scores, result.feedback = _verdicts(nb)
    return result


def _student_and_name(path: Path, folder: Path) -> str:
    relative = path.relative_to(folder)
    return relative.parts[0] if len(relative.parts) > 1 else path.stem


def write_csv(results: list[Result], out: Path) -> None:
    exercises = sorted({e for r in results for e in (r.expected or r.scores)})
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out.parent, suffix=".csv.tmp", delete=False, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "notebook", "status", *exercises, "score", "notes"])
        for r in results:
            writer.writerow([r.student, r.notebook, r.status,
                             *(f"{r.scores[e]:.2f}" if e in r.scores else ("0.00" if e in r.expected else "")
                               for e in exercises),
                             f"{r.total:.2f}", "; ".join(r.notes)])
    os.replace(f.name, out)


def grade_folder(folder: Path, out: Path, cell_timeout: float = 120, timeout: float = 900, quick: bool = True,
                 feedback: Path | None = None) -> list[Result]:
    load_all()
    results = []
    for path in sorted(folder.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        result = grade_notebook(path, _student_and_name(path, folder), cell_timeout, timeout, quick)
        results.append(result)
        print(f"{result.student:20s} {path.name:28s} {result.status:16s} score {result.total:.2f}"
              + (f"  ({result.notes[0]})" if result.notes else ""), flush=True)
        write_csv(results, out)  # complete so far: a crash later loses nothing already graded
        if feedback is not None:
            feedback.mkdir(parents=True, exist_ok=True)
            (feedback / f"{result.student}_{path.stem}.txt").write_text(
                "\n".join([*result.feedback, "", *result.notes]) + "\n")
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlcourse.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, default=Path("scores.csv"))
    parser.add_argument("--cell-timeout", type=float, default=300, help="seconds a cell may run")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a whole notebook may run")
    parser.add_argument("--full", action="store_true", help="run at the book's scale rather than quick scale")
    parser.add_argument("--feedback", type=Path, default=None, help="folder for each submission's check output")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    results = grade_folder(args.folder, args.out, args.cell_timeout, args.timeout, not args.full, args.feedback)
    print(f"{len(results)} submissions graded into {args.out}")


if __name__ == "__main__":
    main()
