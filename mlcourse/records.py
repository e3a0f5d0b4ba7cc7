"""Where the records of reproduced experiments live, and how a chapter reads them.

``python -m mlcourse.reproduce`` writes ``<name>.json`` into :func:`results_dir`:
``$MLCOURSE_RESULTS`` when set; in a checkout of the book's repository, its ``book/results``
folder (the records the book is built with); otherwise (a pip install, e.g. on Colab) a
``mlcourse-results`` folder in the working directory, never the installed package.
:func:`load` finds a record in the same places, then among the records installed with the
package, so that a chapter shows the stored paper-scale results wherever it runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = Path(__file__).resolve().parent / "stored_results"


def _checkout_results() -> Path | None:
    folder = ROOT / "book" / "results"
    return folder if (ROOT / "_toc.yml").is_file() and folder.is_dir() else None


def results_dir() -> Path:
    """The folder new records are written to (see the module docstring)."""
    if os.environ.get("MLCOURSE_RESULTS"):
        return Path(os.environ["MLCOURSE_RESULTS"]).expanduser()
    return _checkout_results() or Path.cwd() / "mlcourse-results"


def search_path() -> list[Path]:
    """The folders :func:`load` looks in, in order."""
    folders = [results_dir(), _checkout_results(), PACKAGED]
    unique = []
    for f in folders:
        if f is not None and f not in unique:
            unique.append(f)
    return unique


def find(name: str) -> Path | None:
    """The path of record ``name`` (without .json), or None if no folder of the search path has it."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"a record's name is an experiment name such as 'maml-omniglot-5w1s', got {name!r}.")
    for folder in search_path():
        if (folder / f"{name}.json").is_file():
            return folder / f"{name}.json"
    return None


def load(name: str) -> dict | None:
    """The record of experiment ``name`` as a dict, or None when it was never stored."""
    path = find(name)
    return None if path is None else json.loads(path.read_text())


def load_all() -> list[dict]:
    """Every record of the first folder of the search path that holds any, sorted by name."""
    for folder in search_path():
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if files:
            return [json.loads(p.read_text()) for p in files]
    return []
