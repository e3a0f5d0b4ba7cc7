"""The bulk grader on a small honest class, built from ``assign`` output as students would: correct,
partial, empty, an answer cell that raises after its definition, one whose definition is followed
by a loop that never ends, and a file that is not a notebook. The attacks are in
test_grade_hostile.py."""

import csv

import nbformat
import pytest

from mlcourse.assign import student_notebook
from mlcourse.grading import assignment
from mlcourse.grading.grader import feedback_name, grade_folder
from mlcourse.grading.sandbox import choose_mode

SOLUTIONS = {
    "reptile.step": ("def reptile_step(theta, phis, beta):\n"
                     "    return {k: theta[k] + beta * (phis[k] - theta[k]).mean(0) for k in theta}\n"),
    "tasks.sample_sinusoids": ("def sample_sinusoids(n, k):\n"
                               "    amplitude = 0.1 + 4.9 * torch.rand(n, 1, 1)\n"
                               "    phase = math.pi * torch.rand(n, 1, 1)\n"
                               "    x = -5 + 10 * torch.rand(n, k, 1)\n"
                               "    return x, amplitude * torch.sin(x - phase)\n"),
}
FUNCTIONS = {"reptile.step": "reptile_step", "tasks.sample_sinusoids": "sample_sinusoids"}


def chapter_like():
    """A small chapter: an import cell, then per exercise a solution cell and its check cell."""
    cells = [nbformat.v4.new_code_cell("import math\nimport torch\nfrom mlcourse import exercises")]
    for exercise_id, source in SOLUTIONS.items():
        solution = nbformat.v4.new_code_cell(source)
        solution.metadata["tags"] = ["solution", "hide-cell"]
        cells += [solution, nbformat.v4.new_code_cell(f'exercises.check("{exercise_id}", {FUNCTIONS[exercise_id]});')]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def answered(answers: dict[str, str]):
    """The student notebook with some stubs replaced by the student's answers."""
    nb = student_notebook(chapter_like())
    for cell in nb.cells:
        for function, source in answers.items():
            if "student-answer" in cell.metadata.get("tags", []) and f"def {function}(" in cell.source:
                cell.source = source
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    both = {FUNCTIONS[e]: s for e, s in SOLUTIONS.items()}
    class_ = {
        "alice": answered(both),
        "bob": answered({"reptile_step": SOLUTIONS["reptile.step"]}),
        "carol": answered({}),
        "dave": answered({**both,
                          "reptile_step": SOLUTIONS["reptile.step"] + "raise RuntimeError('my code is broken')\n"}),
        "erin": answered({**both, "sample_sinusoids": SOLUTIONS["tasks.sample_sinusoids"] + "while True:\n    pass\n"}),
    }
    for name, nb in class_.items():
        (folder / name).mkdir()
        nbformat.write(nb, folder / name / "07_reptile.ipynb")
    (folder / "frank").mkdir()
    (folder / "frank" / "07_reptile.ipynb").write_text("{this is not json")
    plan = folder.parent / f"{folder.name}-assignment.json"
    assignment.save(plan, {"07_reptile": {"exercises": sorted(SOLUTIONS), "answer_cells": []}})
    out = folder / "scores.csv"
    results = grade_folder(folder, out, cell_timeout=4, timeout=120, feedback=folder / "feedback", jobs=2,
                           assignment=plan)
    with open(out) as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    return results, rows, folder


def test_scores_of_correct_partial_and_empty(graded):
    _, rows, _ = graded
    assert rows["alice"]["score"] == "1.00" and rows["alice"]["status"] == "graded"
    assert rows["bob"]["reptile.step"] == "1.00" and rows["bob"]["tasks.sample_sinusoids"] == "0.00"
    assert rows["bob"]["score"] == "0.50"
    assert rows["carol"]["score"] == "0.00" and rows["carol"]["reptile.step"] == "0.00"


def test_a_cell_that_raises_after_its_definition_still_counts(graded):
    _, rows, _ = graded
    assert rows["dave"]["score"] == "1.00"
    assert "raised RuntimeError: my code is broken" in rows["dave"]["notes"]


def test_a_cell_that_loops_is_killed_and_its_definitions_still_graded(graded):
    _, rows, _ = graded
    assert "answer cell" in rows["erin"]["notes"] and "longer than 4 s and was killed" in rows["erin"]["notes"]
    assert "its functions were defined without the rest of the cell" in rows["erin"]["notes"]
    assert rows["erin"]["reptile.step"] == "1.00" and rows["erin"]["tasks.sample_sinusoids"] == "1.00"


def test_an_invalid_notebook_gets_a_row_and_nothing_else_is_lost(graded):
    results, rows, _ = graded
    assert set(rows) == {"alice", "bob", "carol", "dave", "erin", "frank"}
    assert rows["frank"]["status"] == "invalid notebook" and rows["frank"]["score"] == "0.00"
    assert "could not read it" in rows["frank"]["notes"]


def test_every_row_records_its_sandbox_mode_and_the_file_it_graded(graded):
    _, rows, _ = graded
    mode = choose_mode().name
    assert {rows[s]["sandbox"] for s in rows if s != "frank"} == {mode}
    assert all(len(rows[s]["sha256"]) == 64 for s in rows)


def test_feedback_files_hold_the_verdicts(graded):
    _, rows, folder = graded
    text = (folder / "feedback" / rows["bob"]["feedback"]).read_text()
    assert "Exercise reptile.step" in text and "not attempted" in text and "Hint:" in text
    assert "3 of 3 checks passed" in text
    assert rows["bob"]["feedback"] == feedback_name(b"bob/07_reptile.ipynb")


def test_feedback_names_never_collide():
    names = {feedback_name(p) for p in (b"a/b_c.ipynb", b"a_b/c.ipynb", b"a__b/c.ipynb", b"a/_b/c.ipynb",
                                        b"caf\xe9/x.ipynb", b"caf\\xe9/x.ipynb")}
    assert len(names) == 6


def _from_chapter(chapter: str, change=lambda source: source):
    """The student notebook of a real chapter, answered with the chapter's own solutions."""
    from pathlib import Path

    from mlcourse.assign import is_solution

    nb = nbformat.read(Path(__file__).resolve().parents[1] / "chapters" / f"{chapter}.ipynb", as_version=4)
    solutions = [c.source for c in nb.cells if is_solution(c) and c.cell_type == "code" and "def " in c.source]
    student = student_notebook(nb)
    for cell in student.cells:
        if "student-answer" in cell.metadata.get("tags", []):
            for source in solutions:
                names = [line.split("(")[0][4:] for line in source.splitlines() if line.startswith("def ")]
                if any(f"def {name}(" in cell.source for name in names):
                    cell.source = change(source)
    return student


def test_gradients_derivatives_and_rebuilt_callables_go_through_the_sandbox(tmp_path):
    """maml.adapt gets its loss rebuilt from a recipe and is judged on gradients with respect to θ
    and to per-parameter rates; imaml.cg gets a rebuilt operator; maml_rl.dice is judged on its
    first and second derivatives. A detached inner gradient passes the values and fails the
    gradients."""
    class_ = {"ann/05_maml": _from_chapter("05_maml"), "ann/08_imaml": _from_chapter("08_imaml"),
              "ann/09_maml_rl": _from_chapter("09_maml_rl"),
              "ben/05_maml": _from_chapter("05_maml", lambda s: s.replace("* g[k]", "* g[k].detach()"))}
    for name, nb in class_.items():
        (tmp_path / "subs" / name).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, tmp_path / "subs" / f"{name}.ipynb")
    results = {(r.student, r.chapter): r for r in grade_folder(tmp_path / "subs", tmp_path / "scores.csv",
                                                                 cell_timeout=120, timeout=300, jobs=2)}
    for chapter, exercise in (("05_maml", "maml.adapt"), ("08_imaml", "imaml.cg"), ("09_maml_rl", "maml_rl.dice")):
        ann = results["ann", chapter]
        assert ann.scores == {exercise: 1.0}, (ann.status, ann.notes, ann.feedback)
    ben = results["ben", "05_maml"]
    assert ben.scores["maml.adapt"] == 0.0 and "gradients differ" in "\n".join(ben.feedback)
    assert "shapes, values and gradients match" not in "\n".join(ben.feedback)
