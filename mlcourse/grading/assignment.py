"""The assignment: which exercises of which chapters a class was given (the teacher's file).

``mlcourse.assign`` writes it (``assignment.json``) beside the answer key; ``mlcourse.grade
--assignment`` reads it. Without it the grader takes every checked exercise of the submission's
chapter from the package's own registry. The submitted notebooks' metadata is never read for
this: a student could edit it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

FORMAT = "mlcourse-assignment"
NAME = "assignment.json"


def load(path: Path, catalogue: dict) -> dict[str, dict]:
    """{chapter: {"exercises": [...], "answer_cells": [...]}} from an assignment file, checked
    against the exercises the package knows."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"the assignment {path} could not be read: {err}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or not isinstance(
            document.get("chapters"), dict):
        raise ValueError(f"{path} is not an assignment written by mlcourse.assign "
                         f"(expected {{'format': {FORMAT!r}, 'chapters': {{...}}}})")
    chapters = {}
    for chapter, entry in document["chapters"].items():
        exercises = entry.get("exercises") if isinstance(entry, dict) else None
        cells = entry.get("answer_cells", []) if isinstance(entry, dict) else None
        if not (isinstance(exercises, list) and all(isinstance(e, str) for e in exercises)
                and isinstance(cells, list) and all(isinstance(c, str) for c in cells)):
            raise ValueError(f"{path}: chapter {chapter!r} needs a list of exercise ids and of answer cell ids")
        unknown = [e for e in exercises if e not in catalogue]
        if unknown:
            raise ValueError(f"{path}: chapter {chapter!r} lists exercises this mlcourse does not know: "
                             f"{', '.join(unknown)} (known: {', '.join(sorted(catalogue))})")
        chapters[chapter] = {"exercises": list(dict.fromkeys(exercises)), "answer_cells": cells}
    return chapters


def save(path: Path, chapters: dict[str, dict]) -> None:
    """Write (or update, chapter by chapter) an assignment file, atomically."""
    path = Path(path)
    document = {"format": FORMAT, "chapters": {}}
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(old, dict) and old.get("format") == FORMAT and isinstance(old.get("chapters"), dict):
                document["chapters"].update(old["chapters"])
        except (OSError, ValueError):
            pass
    document["chapters"].update(chapters)
    document["chapters"] = dict(sorted(document["chapters"].items()))
    write_atomically(path, json.dumps(document, indent=1, ensure_ascii=False) + "\n")


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by a complete new file (never half-written; a symbolic link at ``path``
    is replaced, not followed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
