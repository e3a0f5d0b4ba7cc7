"""The grader's command line: every flag validated with a clear error, a real chapter graded end to
end from ``assign`` output, and an interrupted run resumed without grading anything twice."""

import csv
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mlcourse import grade
from mlcourse.assign import is_solution

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "subs" / "alice").mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "subs" / "alice" / "07_reptile.ipynb")
    return tmp_path


def refused(capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        grade.main([str(a) for a in argv])
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("flag, value, message", [
    ("--timeout", "-5", "--timeout: must be a number of seconds more than 0, got '-5'"),
    ("--timeout", "nan", "--timeout: must be a number of seconds more than 0, got 'nan'"),
    ("--cell-timeout", "0", "--cell-timeout: must be a number of seconds more than 0, got '0'"),
    ("--cell-timeout", "-1", "--cell-timeout: must be a number of seconds more than 0, got '-1'"),
    ("--cell-timeout", "inf", "--cell-timeout: must be a number of seconds more than 0, got 'inf'"),
    ("--cell-timeout", "soon", "--cell-timeout: must be a number of seconds, got 'soon'"),
    ("--jobs", "0", "--jobs: must be a whole number of parallel sandboxes more than 0, got '0'"),
    ("--jobs", "1.5", "--jobs: must be a whole number of parallel sandboxes, got '1.5'"),
    ("--memory", "100", "--memory: must be a number of MiB at least 512, got '100'"),
    ("--sandbox", "docker", "--sandbox: invalid choice: 'docker'"),
])
def test_bad_flags_are_refused_with_what_was_given(capsys, folder, flag, value, message):
    assert message in refused(capsys, folder / "subs", "--out", folder / "s.csv", flag, value)
    assert not (folder / "s.csv").exists()


def test_bad_paths_are_refused(capsys, folder):
    (folder / "empty").mkdir()
    assert "no submissions" in refused(capsys, folder / "empty", "--out", folder / "s.csv")
    assert "is not a folder" in refused(capsys, folder / "missing", "--out", folder / "s.csv")
    assert "--out must name a CSV file" in refused(capsys, folder / "subs", "--out", folder)
    assert "does not exist" in refused(capsys, folder / "subs", "--out", folder / "no" / "s.csv")
    (folder / "f.txt").write_text("")
    assert "--feedback must name a folder" in refused(capsys, folder / "subs", "--out", folder / "s.csv",
                                                      "--feedback", folder / "f.txt")
    assert "is not a file" in refused(capsys, folder / "subs", "--out", folder / "s.csv",
                                      "--assignment", folder / "nowhere.json")
    assert "unknown chapter '99_x'" in refused(capsys, folder / "subs", "--out", folder / "s.csv", "--chapter", "99_x")
    (folder / "s.csv").write_text("student\n")
    assert "--resume continues" in refused(capsys, folder / "subs", "--out", folder / "s.csv")
    assert "choose one" in refused(capsys, folder / "subs", "--out", folder / "s.csv", "--resume", "--force")


def test_a_real_chapter_from_assign_to_scores_and_resumed(tmp_path):
    """Chapter 7 through assign, answered with the chapter's own solution by one student and left
    as it came by another; graded by the command line, then resumed with one more submission."""
    python = [sys.executable, "-m"]
    subprocess.run([*python, "mlcourse.assign", str(ROOT / "chapters" / "07_reptile.ipynb"), "--out",
                    str(tmp_path / "students"), "--answer-key", str(tmp_path / "key")], check=True, capture_output=True)
    chapter = nbformat.read(ROOT / "chapters" / "07_reptile.ipynb", as_version=4)
    solution = next(c.source for c in chapter.cells if is_solution(c) and "def reptile_step(" in c.source)
    handed_out = tmp_path / "students" / "07_reptile.ipynb"
    for student, answer in (("ann", solution), ("ben", None)):
        nb = nbformat.read(handed_out, as_version=4)
        for cell in nb.cells:
            if answer and "student-answer" in cell.metadata.get("tags", []) and "def reptile_step(" in cell.source:
                cell.source = answer
        (tmp_path / "subs" / student).mkdir(parents=True)
        nbformat.write(nb, tmp_path / "subs" / student / "07_reptile.ipynb")
    command = [*python, "mlcourse.grade", str(tmp_path / "subs"), "--out", str(tmp_path / "scores.csv"),
               "--feedback", str(tmp_path / "feedback"), "--assignment", str(tmp_path / "key" / "assignment.json"),
               "--jobs", "2", "--cell-timeout", "60", "--timeout", "300"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "2 submissions graded into" in done.stdout and "sandbox: " in done.stdout
    with open(tmp_path / "scores.csv") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert rows["ann"]["reptile.step"] == "1.00" and rows["ben"]["reptile.step"] == "0.00"
    assert rows["ann"]["score"] == "0.50"   # one of the chapter's two exercises answered
    assert "not attempted" in (tmp_path / "feedback" / rows["ben"]["feedback"]).read_text()

    (tmp_path / "subs" / "cid").mkdir()   # a late submission; the two graded ones are kept as they are
    nbformat.write(nbformat.read(tmp_path / "subs" / "ann" / "07_reptile.ipynb", as_version=4),
                   tmp_path / "subs" / "cid" / "07_reptile.ipynb")
    again = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resuming: 2 of 3 submissions already graded" in again.stdout
    with open(tmp_path / "scores.csv") as f:
        resumed = {row["student"]: row for row in csv.DictReader(f)}
    assert resumed["ann"] == rows["ann"] and resumed["ben"] == rows["ben"] and resumed["cid"]["score"] == rows["ann"]["score"]
