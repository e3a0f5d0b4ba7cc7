"""Integrity flags: an answer that calls the package's own implementation of its exercise.

This is a matter for the teacher, not for the score: the grader reports it in the feedback and
the CSV and leaves the score as the checks gave it. The scan reads the answer cells' syntax and
resolves the names they use through the notebook's import statements, so ``sgd_steps(...)``
after ``from mlcourse.meta.functional import sgd_steps`` is found, as are ``F.sgd_steps`` after
``import mlcourse.meta.functional as F`` and strings naming a reference. It is a heuristic: code
that builds the name at run time is not found.
"""

from __future__ import annotations

import ast

from .submissions import Submission, parse


def _aliases(statements: list[str]) -> dict[str, str]:
    """{name bound in the notebook: the qualified name it stands for}."""
    aliases = {}
    for statement in statements:
        tree = parse(statement)
        for node in tree.body if tree else []:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".")[0]
                        aliases[top] = top
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _qualified(node, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    return ".".join([aliases[node.id], *reversed(parts)])


def _matches(name: str, reference: str) -> bool:
    """The same object: the qualified name, or a re-export of it from elsewhere in the package."""
    last = reference.rsplit(".", 1)[-1]
    return name == reference or (name.startswith("mlcourse.") and name.rsplit(".", 1)[-1] == last)


def flags(sub: Submission, exercises) -> list[str]:
    """One sentence per exercise whose answer uses one of the exercise's references."""
    statements = list(sub.imports)
    trees = [t for t in (parse(c.source) for c in sub.cells) if t is not None]
    for tree in trees:
        statements += [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    aliases = _aliases(statements)
    used, strings = set(), []
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.Name, ast.Attribute)):
                name = _qualified(node, aliases)
                if name:
                    used.add(name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                used |= {q for q in _aliases([ast.unparse(node)]).values()}
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.append(node.value)
    found = []
    for ex in exercises:
        hits = sorted({ref for ref in ex.references for name in used if _matches(name, ref)}
                      | {ref for ref in ex.references for text in strings if ref in text
                         or (len(ref.rsplit(".", 1)[-1]) >= 8 and ref.rsplit(".", 1)[-1] in text)})
        if hits:
            found.append(f"{ex.id}: the answer uses the package's own implementation ({', '.join(hits)}); "
                         "the score stands as checked, review it by hand")
    return found
