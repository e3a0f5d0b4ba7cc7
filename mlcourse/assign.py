"""Write student notebooks (solutions removed) and answer keys from the chapters.

    python -m mlcourse.assign chapters/05_maml.ipynb --out students/
    python -m mlcourse.assign --all --out students/ --answer-key answer-key/

In a chapter, every cell tagged ``solution`` is a solution. In the student notebook:

- a solution cell that defines functions becomes a stub: the same signatures, whose bodies raise
  ``NotImplementedError`` with the exercise's hint (taken from the exercise's check);
- any other solution cell (an experiment's code, a concept's answer) becomes an empty cell that
  invites the answer;
- every output is cleared, and the check cells stay, so students see their verdicts.

The answer key is the chapter with outputs cleared and its solutions unfolded. Both carry
``metadata["mlcourse"]`` with the chapter and its checked exercises, which the grader reads.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
from pathlib import Path

import nbformat

from .exercises import EXERCISES, load_all

ROOT = Path(__file__).resolve().parents[1]
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
            stub.body = ([ast.Expr(ast.Constant(docstring))] if docstring else []) + [ast.Raise(
                ast.Call(ast.Name("NotImplementedError", ast.Load()), [ast.Constant(hints.get(node.name, "write this function"))],
                         []), None)]
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
        "and, for what does not, the input, the expected and the given output.")]
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


def write(nb, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    nbformat.write(nb, path)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlcourse.assign", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="chapter notebooks")
    parser.add_argument("--all", action="store_true", help="every chapter in chapters/")
    parser.add_argument("--out", type=Path, required=True, help="folder for the student notebooks")
    parser.add_argument("--answer-key", type=Path, default=None, help="folder for the answer keys")
    args = parser.parse_args(argv)
    paths = sorted((ROOT / "chapters").glob("*.ipynb")) if args.all else args.notebooks
    if not paths:
        parser.error("name chapter notebooks, or use --all")
    for path in paths:
        if not path.exists():
            parser.error(f"{path} does not exist")
        nb = nbformat.read(path, as_version=4)
        nb.metadata.setdefault("mlcourse", {})
        student = student_notebook(nb)
        student.metadata["mlcourse"]["chapter"] = path.stem
        print(f"{path.name}: student notebook {write(student, args.out, path.name)}"
              f" ({len(student.metadata['mlcourse']['exercises'])} checked exercises)")
        if args.answer_key:
            key = answer_key(nb)
            key.metadata["mlcourse"]["chapter"] = path.stem
            print(f"{path.name}: answer key {write(key, args.answer_key, path.name)}")


if __name__ == "__main__":
    main()
