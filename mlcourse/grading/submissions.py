"""Finding and reading submitted notebooks, which are untrusted files.

Every file is read once, before any answer runs, so that nothing an answer does to the files of the
class (in the fallback mode, where it can reach them) changes what is graded. Nothing in a
notebook's metadata decides anything: the grader takes from it only the answer cells (the cells
``mlcourse.assign`` tagged ``student-answer``, or whose ids the assignment lists) and the import
statements that those cells rely on.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

ANSWER_TAG = "student-answer"
MAX_NOTEBOOK_BYTES = 64 << 20
MAX_ANSWER_CHARS = 2_000_000
# What an answer may use without importing it, where the notebook does not import it itself (the
# chapters import these at the top).
DEFAULT_IMPORTS = ("import math", "import torch", "from torch import nn", "import torch.nn.functional as F")


def shown(path: str) -> str:
    """A file name for people and CSV files: undecodable bytes written as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass
class AnswerCell:
    index: int                 # the cell's position in the notebook (-1: the notebook's imports)
    source: str
    definitions: bool = False  # only the cell's definitions, its other statements left out

    @property
    def name(self) -> str:
        if self.index < 0:
            return "the notebook's imports"
        return f"answer cell {self.index}" + (" (its definitions only)" if self.definitions else "")


@dataclass
class Submission:
    path: Path
    relative: str               # the path below the submissions folder, as shown
    student: str
    sha256: str = ""
    error: str = ""             # why it cannot be graded; empty when it can
    status: str = ""            # the row's status when it cannot be graded
    cells: list[AnswerCell] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)     # every import statement of the notebook's code cells
    notes: list[str] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return self.path.name[:-len(".ipynb")] if self.path.name.endswith(".ipynb") else self.path.stem


def find(folder: Path) -> list[Submission]:
    """Every ``*.ipynb`` below ``folder`` (checkpoints and hidden folders skipped), sorted. The
    student is the first folder below ``folder``, or the file's name for files at the top.
    Symbolic links are listed as not graded (one could point at another student's work)."""
    found = []
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in sorted(files):
            if not name.endswith(".ipynb"):
                continue
            path = Path(top, name)
            relative = path.relative_to(folder)
            student = relative.parts[0] if len(relative.parts) > 1 else name[:-len(".ipynb")]
            sub = Submission(path, shown(str(relative)), shown(student))
            if path.is_symlink():
                sub.status, sub.error = "not graded", "the file is a symbolic link; hand in the notebook itself"
            found.append(sub)
    return found


def read(sub: Submission, answer_ids: set[str] = frozenset()) -> Submission:
    """Fill in the answer cells of ``sub`` (or its error). Never raises for a bad file."""
    if sub.error:
        return sub
    try:
        fd = os.open(sub.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                return _bad(sub, "not graded", "not a regular file")
            if info.st_size > MAX_NOTEBOOK_BYTES:
                return _bad(sub, "invalid notebook", f"the file has {info.st_size:,} bytes, more than the "
                                                     f"{MAX_NOTEBOOK_BYTES >> 20} MiB allowed (clear its outputs)")
            data = f.read(MAX_NOTEBOOK_BYTES + 1)
    except OSError as err:
        return _bad(sub, "invalid notebook", f"could not read it: {err.strerror or err}")
    sub.sha256 = hashlib.sha256(data).hexdigest()
    try:
        nb = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        return _bad(sub, "invalid notebook", f"could not read it: not a JSON notebook ({type(err).__name__}: "
                                             f"{str(err)[:120]})")
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return _bad(sub, "invalid notebook", "could not read it: a notebook is a JSON object with a list of cells")
    total = 0
    for index, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = _source(cell.get("source"))
        if source is None:
            sub.notes.append(f"cell {index} has a malformed source and was skipped")
            continue
        metadata = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
        tags = metadata.get("tags") if isinstance(metadata.get("tags"), list) else []
        ids = {i for i in (cell.get("id"), metadata.get("id")) if isinstance(i, str)}
        if ANSWER_TAG in tags or ids & answer_ids:
            total += len(source)
            if total > MAX_ANSWER_CHARS:
                return _bad(sub, "invalid notebook", f"the answer cells hold more than {MAX_ANSWER_CHARS:,} characters")
            sub.cells.append(AnswerCell(index, source))
        else:
            sub.imports += import_statements(source)
    if not sub.cells:
        sub.notes.append(f"no answer cells were found (the cells tagged {ANSWER_TAG!r}): was the notebook made by "
                         "mlcourse.assign, and are the answers in its marked cells?")
    return sub


def _bad(sub: Submission, status: str, error: str) -> Submission:
    sub.status, sub.error = status, error
    return sub


def _source(value) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        return "".join(value)
    return None


def parse(source: str) -> ast.Module | None:
    """The syntax tree of a cell, IPython magics skipped; None when it is not Python."""
    from .worker import without_magics

    try:
        return ast.parse(without_magics(source))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def defines(cell: AnswerCell, names: set[str]) -> bool:
    """Whether a cell defines a function or class, or binds one of ``names`` (the functions the
    checks call): the cells worth running. A cell that does not parse is run too, so that its
    SyntaxError reaches the feedback."""
    tree = parse(cell.source)
    if tree is None or any(isinstance(n, DEFINITIONS[2:]) for n in tree.body):
        return True
    bound = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= bound_names(ast.unparse(node))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return bool(bound & names)


def definitions_only(cell: AnswerCell) -> AnswerCell | None:
    """The cell's imports, functions and classes without the rest (the fallback for a cell whose
    definition is followed by code that runs too long); None when that is the whole cell."""
    tree = parse(cell.source)
    if tree is None:
        return None
    kept = [n for n in tree.body if isinstance(n, DEFINITIONS)]
    if len(kept) == len(tree.body) or not any(isinstance(n, DEFINITIONS[2:]) for n in kept):
        return None
    return AnswerCell(cell.index, "\n\n".join(ast.unparse(n) for n in kept), definitions=True)


def imports_torch(cells: list[AnswerCell]) -> bool:
    """Whether the cells import torch (or the package, which does): then the sandbox imports it
    before its first cell, under the start-up limit rather than a cell's timeout."""
    for cell in cells:
        tree = parse(cell.source)
        for node in ast.walk(tree) if tree else []:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] in ("torch", "mlcourse") for n in names):
                return True
    return False


def import_statements(source: str) -> list[str]:
    tree = parse(source)
    if tree is None:
        return []
    return [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
            and not (isinstance(node, ast.ImportFrom) and node.level)]


def bound_names(statement: str) -> set[str]:
    node = ast.parse(statement).body[0]
    return {(alias.asname or alias.name).split(".")[0] for alias in node.names}


def needed_imports(sub: Submission) -> list[str]:
    """The notebook's import statements (outside the answer cells) that bind a name the answers
    use without defining it: what the answers relied on from the chapter's first cells (and the
    usual ``math``, ``torch``, ``nn``, ``F`` where the notebook lacks them)."""
    used, defined = set(), set()
    for cell in sub.cells:
        tree = parse(cell.source)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                (used if isinstance(node.ctx, ast.Load) else defined).add(node.id)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                defined |= bound_names(ast.unparse(node))
    missing = used - defined
    chosen = []
    for statement in [*dict.fromkeys(sub.imports), *DEFAULT_IMPORTS]:
        if "*" not in statement and bound_names(statement) & missing:
            chosen.append(statement)
            missing -= bound_names(statement)
    return chosen
