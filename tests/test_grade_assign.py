"""``assign`` refuses what would damage the book or leak the answer key, and writes the assignment
that the grader reads; ``--all`` works without a checkout when given the chapters."""

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from mlcourse import assign
from mlcourse.grading import assignment
from mlcourse.exercises import load_all

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "chapters" / "07_reptile.ipynb"


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        assign.main([str(a) for a in argv])
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("target", ["chapters", "chapters/students", "book", "mlcourse", "tests", "."])
def test_refuses_the_books_own_sources(capsys, target):
    before = CHAPTER.read_bytes()
    err = run(capsys, CHAPTER, "--out", ROOT / target)
    assert "--out" in err and ("sources" in err or "repository itself" in err or "package" in err)
    assert CHAPTER.read_bytes() == before


def test_refuses_the_answer_key_beside_the_students(capsys, tmp_path):
    for key in (tmp_path / "s", tmp_path / "s" / "key"):
        err = run(capsys, CHAPTER, "--out", tmp_path / "s", "--answer-key", key)
        assert "must be separate folders" in err
    assert not (tmp_path / "s").exists()


def test_refuses_the_folder_of_the_chapter_it_converts(capsys, tmp_path):
    shutil.copy(CHAPTER, tmp_path / CHAPTER.name)
    err = run(capsys, tmp_path / CHAPTER.name, "--out", tmp_path)
    assert "would replace it" in err


def test_never_replaces_without_force(capsys, tmp_path):
    assign.main([str(CHAPTER), "--out", str(tmp_path / "s"), "--answer-key", str(tmp_path / "k")])
    (tmp_path / "s" / CHAPTER.name).write_text("the student's copy, edited")
    err = run(capsys, CHAPTER, "--out", tmp_path / "s", "--answer-key", tmp_path / "k")
    assert "pass --force" in err and (tmp_path / "s" / CHAPTER.name).read_text() == "the student's copy, edited"
    assign.main([str(CHAPTER), "--out", str(tmp_path / "s"), "--answer-key", str(tmp_path / "k"), "--force"])
    assert nbformat.read(tmp_path / "s" / CHAPTER.name, as_version=4).metadata["mlcourse"]["kind"] == "student"


def test_writes_the_assignment_beside_the_answer_key(tmp_path):
    assign.main([str(CHAPTER), "--out", str(tmp_path / "s"), "--answer-key", str(tmp_path / "k")])
    assign.main([str(ROOT / "chapters" / "05_maml.ipynb"), "--out", str(tmp_path / "s"),
                 "--answer-key", str(tmp_path / "k")])
    plan = assignment.load(tmp_path / "k" / "assignment.json", load_all())
    assert plan["07_reptile"]["exercises"] == ["reptile.step", "reptile.toy_distance"] and plan["05_maml"]["exercises"] == ["maml.adapt"]
    student = nbformat.read(tmp_path / "s" / CHAPTER.name, as_version=4)
    marked = [c.id for c in student.cells if "student-answer" in c.metadata.get("tags", [])]
    assert plan["07_reptile"]["answer_cells"] == marked and marked
    assert not (tmp_path / "s" / "assignment.json").exists()


def test_a_malformed_assignment_is_refused_with_its_reason(tmp_path):
    path = tmp_path / "assignment.json"
    path.write_text(json.dumps({"format": "mlcourse-assignment", "chapters": {"07_reptile": {"exercises": 3}}}))
    with pytest.raises(ValueError, match="needs a list of exercise ids"):
        assignment.load(path, load_all())
    path.write_text(json.dumps({"format": "mlcourse-assignment", "chapters": {"07_reptile": {
        "exercises": ["reptile.nope"], "answer_cells": []}}}))
    with pytest.raises(ValueError, match="does not know: reptile.nope"):
        assignment.load(path, load_all())


def test_all_from_an_install_without_the_chapters(capsys, tmp_path, monkeypatch):
    """A pip install has no chapters/ beside the package: --all says what to do, --chapters works."""
    monkeypatch.setattr(assign, "ROOT", tmp_path / "site-packages")
    err = run(capsys, "--all", "--out", tmp_path / "s")
    assert "--chapters DIR" in err
    chapters = tmp_path / "downloaded"
    chapters.mkdir()
    shutil.copy(CHAPTER, chapters)
    assign.main(["--all", "--chapters", str(chapters), "--out", str(tmp_path / "s")])
    assert (tmp_path / "s" / CHAPTER.name).exists() and (tmp_path / "s" / "assignment.json").exists()
