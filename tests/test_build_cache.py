"""The execution cache follows the code: a page runs again exactly when its code cells, the
mlcourse modules it loads (transitively) or the result records it reads change (.ci/book_cache.py)."""

import importlib
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".ci"))


@pytest.fixture
def book(tmp_path, monkeypatch):
    """A tiny book: chapter x imports mlcourse.a (which imports b), chapter y imports mlcourse.c."""
    import book_cache

    importlib.reload(book_cache)
    package = tmp_path / "mlcourse"
    package.mkdir()
    (package / "__init__.py").write_text('"""The package."""\n')
    (package / "a.py").write_text("from . import b\n\ndef f():\n    return b.g()\n")
    (package / "b.py").write_text("def g():\n    return 1\n")
    (package / "c.py").write_text("import importlib\n\ndef h():\n    return 2\n")
    (tmp_path / "chapters").mkdir()
    for name, module in (("x", "a"), ("y", "c")):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"from mlcourse import {module}\n{module}")])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / "chapters" / f"{name}.ipynb")
    (tmp_path / "_toc.yml").write_text("root: chapters/x\nparts:\n  - chapters:\n      - file: chapters/y\n")
    monkeypatch.setattr(book_cache, "ROOT", tmp_path)
    return book_cache, tmp_path


def test_modules_are_followed_transitively(book):
    book_cache, root = book
    x = book_cache.read(root / "chapters" / "x.ipynb")
    assert book_cache.modules_of(x) == {"mlcourse", "mlcourse.a", "mlcourse.b"}


def test_key_changes_with_an_imported_module_only(book):
    book_cache, root = book
    x, y = root / "chapters" / "x.ipynb", root / "chapters" / "y.ipynb"
    before = book_cache.key(x), book_cache.key(y)
    (root / "mlcourse" / "b.py").write_text("def g():\n    return 3\n")
    after = book_cache.key(x), book_cache.key(y)
    assert after[0] != before[0] and after[1] == before[1]


def test_comments_do_not_change_the_key(book):
    book_cache, root = book
    x = root / "chapters" / "x.ipynb"
    before = book_cache.key(x)
    (root / "mlcourse" / "b.py").write_text("# why g is one\ndef g():  # always\n    return 1\n")
    assert book_cache.key(x) == before


def test_recorded_modules_replace_the_static_guess(book):
    book_cache, root = book
    x = root / "chapters" / "x.ipynb"
    before = book_cache.key(x, ["mlcourse", "mlcourse.c"])
    (root / "mlcourse" / "b.py").write_text("def g():\n    return 3\n")
    assert book_cache.key(x, ["mlcourse", "mlcourse.c"]) == before
    (root / "mlcourse" / "c.py").unlink()
    assert book_cache.key(x, ["mlcourse", "mlcourse.c"]) != before, "a module that is gone must change the key"


def test_invalidate_drops_exactly_the_stale_records(book):
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    book_cache, root = book
    cache_dir = root / "_build" / ".jupyter_cache"
    cache_dir.mkdir(parents=True)
    cache = get_cache(cache_dir)
    for name in ("x", "y"):
        path = root / "chapters" / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nb.cells[0].outputs = [nbformat.v4.new_output("stream", text=name)]
        cache.cache_notebook_bundle(CacheBundleIn(nb, str(path)), check_validity=False)
    assert book_cache.invalidate(cache_dir) == [root / "chapters/x.ipynb", root / "chapters/y.ipynb"]
    # The first call only learns the keys (it cannot know what the cached runs imported): run both again.
    for name in ("x", "y"):
        path = root / "chapters" / f"{name}.ipynb"
        cache.cache_notebook_bundle(CacheBundleIn(nbformat.read(path, as_version=4), str(path)), check_validity=False)
    assert book_cache.invalidate(cache_dir) == []
    assert book_cache.stale(cache_dir) == []
    (root / "mlcourse" / "c.py").write_text("def h():\n    return 5\n")
    assert book_cache.invalidate(cache_dir) == [root / "chapters/y.ipynb"]
    assert book_cache.stale(cache_dir) == [root / "chapters/y.ipynb"]


def test_store_takes_outputs_only_for_unchanged_code(book, tmp_path):
    book_cache, root = book
    executed = tmp_path / "executed"
    executed.mkdir()
    for name in ("x", "y"):
        nb = nbformat.read(root / "chapters" / f"{name}.ipynb", as_version=4)
        nb.cells[0].outputs = [nbformat.v4.new_output("stream", text=f"ran {name}")]
        nb.metadata["executed_modules"] = ["mlcourse", "mlcourse.a", "mlcourse.b"] if name == "x" else ["mlcourse"]
        if name == "y":
            nb.cells[0].source += "\n# edited after the run"
        nbformat.write(nb, executed / f"{name}.ipynb")
    cache_dir = root / "cache"
    cache_dir.mkdir()
    assert book_cache.store(cache_dir, executed) == [root / "chapters" / "x.ipynb"]
    assert book_cache.stale(cache_dir) == [root / "chapters" / "y.ipynb"]
    keys = book_cache._load_keys(cache_dir)
    assert keys["chapters/x.ipynb"]["modules"] == ["mlcourse", "mlcourse.a", "mlcourse.b"]


def test_the_book_uses_the_cache():
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "cache"
