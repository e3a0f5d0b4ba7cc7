"""The bulk grader on a folder of small submissions: correct, partial, empty, one that raises, one
that loops, and one that is not a notebook at all."""

import csv

import nbformat
import pytest

from mlcourse.assign import student_notebook
from mlcourse.grade import grade_folder

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


def chapter_like(extra_first_cell: str | None = None):
    """A small chapter: an import cell, then per exercise a solution cell and its check cell."""
    cells = [nbformat.v4.new_code_cell("import math\nimport torch\nfrom mlcourse import exercises")]
    if extra_first_cell:
        cells.append(nbformat.v4.new_code_cell(extra_first_cell))
    for exercise_id, source in SOLUTIONS.items():
        solution = nbformat.v4.new_code_cell(source)
        solution.metadata["tags"] = ["solution", "hide-cell"]
        cells += [solution, nbformat.v4.new_code_cell(f'exercises.check("{exercise_id}", {FUNCTIONS[exercise_id]});')]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["mlcourse"] = {"kind": "student", "exercises": sorted(SOLUTIONS)}
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    correct = chapter_like()
    empty = student_notebook(correct)
    partial = student_notebook(correct)
    for cell in partial.cells:   # the student solved the Reptile exercise only
        if "def reptile_step" in cell.source:
            cell.source = SOLUTIONS["reptile.step"]
    for name, nb in [("alice", correct), ("bob", partial), ("carol", empty),
                     ("dave", chapter_like("raise RuntimeError('my code is broken')")),
                     ("erin", chapter_like("while True:\n    pass"))]:
        (folder / name).mkdir()
        nbformat.write(nb, folder / name / "07_reptile.ipynb")
    (folder / "frank").mkdir()
    (folder / "frank" / "07_reptile.ipynb").write_text("{this is not json")
    out = folder / "scores.csv"
    results = grade_folder(folder, out, cell_timeout=10, timeout=120, feedback=folder / "feedback")
    with open(out) as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    return results, rows, folder


def test_scores_of_correct_partial_and_empty(graded):
    _, rows, _ = graded
    assert rows["alice"]["score"] == "1.00" and rows["alice"]["status"] == "graded"
    assert rows["bob"]["reptile.step"] == "1.00" and rows["bob"]["tasks.sample_sinusoids"] == "0.00"
    assert rows["bob"]["score"] == "0.50"
    assert rows["carol"]["score"] == "0.00" and rows["carol"]["reptile.step"] == "0.00"


def test_a_cell_that_raises_does_not_stop_the_checks(graded):
    _, rows, _ = graded
    assert rows["dave"]["score"] == "1.00"
    assert "raised RuntimeError: my code is broken" in rows["dave"]["notes"]


def test_a_cell_that_loops_is_interrupted_and_the_rest_still_graded(graded):
    _, rows, _ = graded
    assert "longer than 10 s" in rows["erin"]["notes"] or "KeyboardInterrupt" in rows["erin"]["notes"]
    assert rows["erin"]["score"] == "1.00"


def test_an_invalid_notebook_gets_a_row_and_nothing_else_is_lost(graded):
    results, rows, _ = graded
    assert set(rows) == {"alice", "bob", "carol", "dave", "erin", "frank"}
    assert rows["frank"]["status"] == "invalid notebook" and rows["frank"]["score"] == "0.00"
    assert "could not read it" in rows["frank"]["notes"]


def test_feedback_files_hold_the_verdicts(graded):
    _, _, folder = graded
    text = (folder / "feedback" / "bob_07_reptile.txt").read_text()
    assert "Exercise reptile.step" in text and "not attempted" in text and "Hint:" in text
