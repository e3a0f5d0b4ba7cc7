"""Write student notebooks (solutions removed) and answer keys from the chapters.

    python -m mlcourse.assign chapters/05_maml.ipynb --out students/
    python -m mlcourse.assign --all --out students/ --answer-key answer-key/ [--chapters DIR] [--force]

In a chapter, every cell tagged ``solution`` is a solution. In the student notebook:

- a solution cell that defines functions becomes a stub: the same signatures, whose bodies raise
  ``NotImplementedError`` with the exercise's hint (taken from the exercise's check);
- any other solution cell (an experiment's code, a concept's answer) becomes an empty cell that
  invites the answer;
- every output is cleared, and the check cells stay, so students see their verdicts.

The answer key is the chapter with outputs cleared and its solutions unfolded. The assignment
(``assignment.json``, beside the answer key, else beside the student notebooks) lists each
chapter's checked exercises and the ids of its answer cells: ``mlcourse.grade --assignment`` reads
it, never the submitted notebooks' metadata (which students can edit).

``assign`` refuses to write into the book's own sources (``chapters/``, ``book/``, the package,
...), or the answer key into the students' folder, and replaces no file without ``--force``.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
from pathlib import Path

import nbformat

from .exercises import EXERCISES, load_all
from .grading import assignment

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(__file__).resolve().parent
# Folders of a checkout of the book that hold its sources: nothing is ever written into them.
SOURCES = ("chapters", "book", "mlcourse", "tests", "benchmarks", ".git", ".github", ".ci", ".venv")
CHECK_CALL = re.compile(r"""exercises\.check\(\s*["']([\w.]+)["']\s*,\s*(\w+)""")


def is_solution(cell) -> bool:
    return "solution" in cell.get("metadata", {}).get("tags", [])


def checked_exercises(nb) -> dict[str, str]:
    """{function name: exercise id} for every ``exercises.check(id, function)`` call in the notebook."""
    found = {}
    for cell in nb.cells:
        if cell.cell_type == "code":
            for exercise_id, function in CHECK_CALL.findall(cell.source):
                found[function] = exercise_id
    return found


def stub_source(source: str, hints: dict[str, str]) -> str:
    """The functions defined in ``source`` with bodies that raise NotImplementedError (docstrings
    kept); everything else in the cell is dropped, since it belongs to the solution."""
    tree = ast.parse(source)
    stubs = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node)
            stub = copy.deepcopy(node)
            stub.decorator_list = []
            hint = ast.Constant(hints.get(node.name, "write this function"))
            stub.body = ([ast.Expr(ast.Constant(docstring))] if docstring else []) + [
                ast.Raise(ast.Call(ast.Name("NotImplementedError", ast.Load()), [hint], []), None)]
            stubs.append(ast.unparse(ast.fix_missing_locations(stub)))
    return "\n\n\n".join(stubs)


def student_notebook(nb):
    """The student version of a chapter notebook (a new notebook; the input is not changed)."""
    load_all()
    nb = copy.deepcopy(nb)
    functions = checked_exercises(nb)
    hints = {name: EXERCISES[eid].hint for name, eid in functions.items() if eid in EXERCISES}
    cells = [nbformat.v4.new_markdown_cell(
        "**Student version.** The solutions of the exercises at the end are replaced by stubs or empty cells. "
        "Write your answers there and run the check cell after each coding exercise: it prints what passes "
        "and, for what does not, the input, the expected and the given output. Keep each answer in its marked "
        "cell (imports included): those cells are what the grader runs.")]
    for cell in nb.cells:
        if not is_solution(cell):
            cells.append(cell)
            continue
        defines = cell.cell_type == "code" and any(
            isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.parse(cell.source).body)
        if defines:
            new = nbformat.v4.new_code_cell(stub_source(cell.source, hints))
        elif cell.cell_type == "code":
            new = nbformat.v4.new_code_cell("# Your code for this exercise.\n")
        else:
            new = nbformat.v4.new_markdown_cell("*Your answer here.*")
        new.metadata["tags"] = ["student-answer"]
        cells.append(new)
    nb.cells = cells
    _clear(nb)
    nb.metadata["mlcourse"] = {"kind": "student", "exercises": sorted(set(functions.values()))}
    return nb


def answer_key(nb):
    """The chapter with outputs cleared and solutions unfolded, marked as the teacher's copy."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if is_solution(cell):
            cell.metadata["tags"] = [t for t in cell.metadata.get("tags", []) if t != "hide-cell"]
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(
        "**Answer key, for teachers.** The chapter with every solution visible. Do not hand it out."))
    _clear(nb)
    nb.metadata["mlcourse"] = {"kind": "answer-key", "exercises": sorted(set(checked_exercises(nb).values()))}
    return nb


def _clear(nb) -> None:
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None


def answer_cell_ids(nb) -> list[str]:
    return [c.get("id") for c in nb.cells if "student-answer" in c.metadata.get("tags", []) and c.get("id")]


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def refuse_target(folder: Path, what: str, inputs: list[Path]) -> str | None:
    """Why ``folder`` must not receive generated notebooks (the book's own sources, the package,
    the folder of a chapter being converted), or None."""
    folder = folder.resolve()
    if _inside(folder, PACKAGE):
        return f"{what} {folder} is inside the package mlcourse/: choose a folder outside it, e.g. students/"
    if (ROOT / "chapters").is_dir() and (ROOT / "mlcourse").is_dir():   # a checkout of the book
        if folder == ROOT:
            return f"{what} {folder} is the book's repository itself: choose a folder such as students/"
        for name in SOURCES:
            source = (ROOT / name).resolve()
            if _inside(folder, source):
                return (f"{what} {folder} is {'inside ' if folder != source else ''}the book's {name}/ folder, "
                        "one of its sources: choose a folder outside them, e.g. students/")
    for path in inputs:
        if path.resolve().parent == folder:
            return f"{what} {folder} holds the chapter {path.name} itself: writing there would replace it"
    return None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlcourse.assign", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="chapter notebooks")
    parser.add_argument("--all", action="store_true", help="every chapter of the book (see --chapters)")
    parser.add_argument("--chapters", type=Path, default=None,
                        help="the folder of the book's chapter notebooks, for --all (default: a checkout's chapters/)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the student notebooks")
    parser.add_argument("--answer-key", type=Path, default=None, help="folder for the answer keys")
    parser.add_argument("--force", action="store_true", help="replace notebooks that are already there")
    args = parser.parse_args(argv)
    if args.all and args.notebooks:
        parser.error("either name chapter notebooks or use --all, not both")
    if args.chapters is not None and not args.all:
        parser.error("--chapters goes with --all")
    if args.all:
        # A checkout's chapters/, else the copy a built package carries (see setup.py).
        chapters = args.chapters or next((c for c in (ROOT / "chapters", PACKAGE / "chapters") if c.is_dir()),
                                         ROOT / "chapters")
        if not chapters.is_dir():
            parser.error("--all reads the book's chapter notebooks, and this mlcourse was installed without them "
                         f"({chapters} does not exist): pass --chapters DIR, the chapters/ folder of a clone or "
                         "download of the book's repository, or name the notebooks")
        paths = sorted(chapters.glob("*.ipynb"))
        if not paths:
            parser.error(f"--all: {chapters} holds no chapter notebook (*.ipynb)")
    else:
        paths = args.notebooks
    if not paths:
        parser.error("name chapter notebooks, or use --all")
    for path in paths:
        if not path.is_file():
            parser.error(f"{path} does not exist")
    for folder, what in ((args.out, "--out"), (args.answer_key, "--answer-key")):
        if folder is not None and (problem := refuse_target(folder, what, paths)):
            parser.error(problem)
        if folder is not None and folder.exists() and not folder.is_dir():
            parser.error(f"{what} {folder} is a file, not a folder")
    if args.answer_key is not None:
        out, key = args.out.resolve(), args.answer_key.resolve()
        if _inside(key, out) or _inside(out, key):
            parser.error(f"--answer-key {args.answer_key} and --out {args.out} must be separate folders: the "
                         "answer key must never travel with the student notebooks")
    targets = [folder / p.name for p in paths for folder in (args.out, args.answer_key) if folder is not None]
    existing = [t for t in targets if t.exists()]
    if existing and not args.force:
        parser.error(f"{len(existing)} notebook(s) would be replaced, e.g. {existing[0]}: pass --force to replace them")
    manifest = {}
    for path in paths:
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as err:
            parser.error(f"{path} is not a notebook: {err}")
        nb.metadata.setdefault("mlcourse", {})
        student = student_notebook(nb)
        student.metadata["mlcourse"]["chapter"] = path.stem
        manifest[path.stem] = {"exercises": student.metadata["mlcourse"]["exercises"],
                               "answer_cells": answer_cell_ids(student)}
        print(f"{path.name}: student notebook {write(student, args.out, path.name)}"
              f" ({len(student.metadata['mlcourse']['exercises'])} checked exercises)")
        if args.answer_key:
            key = answer_key(nb)
            key.metadata["mlcourse"]["chapter"] = path.stem
            print(f"{path.name}: answer key {write(key, args.answer_key, path.name)}")
    plan = (args.answer_key or args.out) / assignment.NAME
    assignment.save(plan, manifest)
    print(f"the assignment: {plan} (grade with: python -m mlcourse.grade SUBMISSIONS --assignment {plan})")


def write(nb, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    main()
