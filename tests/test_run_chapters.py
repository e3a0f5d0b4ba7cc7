"""The chapter runner (.ci/run_chapters.py): a chapter that runs, one that fails, and a kernel
that stops using the CPU mid-cell, which the runner must stop and report instead of waiting for
the cell's timeout."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def runner(monkeypatch):
    spec = importlib.util.spec_from_file_location("run_chapters", ROOT / ".ci" / "run_chapters.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "POLL_SECONDS", 1)
    return module


def notebook(tmp_path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the stall watch reads /proc")
def test_a_chapter_runs_and_its_outputs_are_kept(runner, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    runner.run(notebook(tmp_path, "print(6 * 7)", "sum(range(10**6))"), out, None, None, timeout=60)
    cells = nbformat.read(out / "chapter.ipynb", as_version=4).cells
    assert cells[0].outputs[0]["text"] == "42\n"
    assert len(cells) == 2  # the module probe is removed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the stall watch reads /proc")
def test_a_failing_cell_names_the_chapter_and_the_cell(runner, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(runner.ChapterFailed, match=r"(?s)chapter.ipynb: cell 1 .*ZeroDivisionError"):
        runner.run(notebook(tmp_path, "x = 1", "1 / 0"), out, None, None, timeout=60)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the stall watch reads /proc")
def test_a_stalled_kernel_is_stopped_and_the_chapter_run_again(runner, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "ATTEMPTS", 2)
    out = tmp_path / "out"
    out.mkdir()
    began = time.monotonic()
    # The cell uses no CPU for far longer than the stall limit; the cell's own timeout is 600 s.
    with pytest.raises(runner.ChapterFailed, match="stalled 2 times"):
        runner.run(notebook(tmp_path, "import time; time.sleep(120)"), out, None, None, timeout=600, stall=5)
    assert time.monotonic() - began < 60
    assert "running the chapter again" in capsys.readouterr().out
