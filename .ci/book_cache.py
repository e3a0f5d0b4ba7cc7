"""Keep Jupyter Book's execution cache (jupyter-cache) true to the code the pages import.

jupyter-cache keys a notebook on its code cells only, so an edit of `mlcourse/` would leave the
book showing outputs of the old code. This script keys every executed page also on the source of
the `mlcourse` modules it imports, compared as syntax trees (comments do not count), and on the
result records it reads (book/results/*.json), and drops exactly the cache records whose key
changed. The modules are those the page loaded when it ran (recorded by .ci/run_chapters.py);
for a page executed by the book build itself, those its code imports, followed statically.

    python .ci/book_cache.py invalidate CACHE    drop records whose key changed; print the stale pages
    python .ci/book_cache.py stale CACHE         print the notebooks the cache does not hold
    python .ci/book_cache.py store CACHE DIR     put notebooks executed elsewhere (DIR/<name>.ipynb)
                                                 into the cache, for the chapters they were run from

CACHE is the jupyter-cache folder of a build: _build/.jupyter_cache for `make book`.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "mlcourse"
KEYS = "mlcourse-keys.json"
RECORDS = "book/results/*.json"
# A page that names the results folder in its code reads the stored records.
READS_RECORDS = re.compile(r"[\"'/]results[\"'/]")
IMPORT_LINE = re.compile(r"^\s*(?:from\s+(\S+)\s+import\s+(.+)|import\s+(.+))$", re.M)


def pages() -> list[Path]:
    """The executed pages of the book: every notebook and MyST notebook that _toc.yml lists."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part.get("chapters", [])]
    found = []
    for name in files:
        for suffix in (".ipynb", ".md"):
            path = ROOT / f"{name}{suffix}"
            if path.exists() and (suffix == ".ipynb" or path.read_text().startswith("---\njupytext:")):
                found.append(path)
    return found


def read(path: Path):
    import nbformat

    if path.suffix == ".ipynb":
        return nbformat.read(path, as_version=4)
    from myst_nb.core.read import read_myst_markdown_notebook

    return read_myst_markdown_notebook(path.read_text())


def code_of(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def _module_file(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(names: set[str]) -> set[str]:
    """Each module together with the packages above it (importing a.b runs a/__init__.py)."""
    out = set()
    for name in names:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {n for n in out if n.split(".")[0] == PACKAGE and _module_file(n)}


def _imports_of_code(code: str) -> set[str]:
    """mlcourse modules named by the import lines of notebook code (which may hold IPython syntax)."""
    names = set()
    for source, targets, plain in IMPORT_LINE.findall(code):
        if plain:
            names.update(t.split(" as ")[0].strip() for t in plain.split(","))
        else:
            names.add(source)
            names.update(f"{source}.{t.split(' as ')[0].strip(' ()')}" for t in targets.split(","))
    return _imported(names)


def _imports_of_module(name: str) -> set[str]:
    path = _module_file(name)
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):  # imports inside functions count too: they run when called
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Attribute) and node.attr == "import_module":
            # importlib.import_module(f"{__name__}..."): the whole package may be loaded
            folder = path.parent
            names.update(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                         for p in folder.rglob("*.py"))
    return _imported(names)


def modules_of(nb) -> set[str]:
    """Every mlcourse module the page's code imports, directly or through other modules."""
    todo, seen = list(_imports_of_code(code_of(nb))), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += _imports_of_module(name)
    return seen


def key(path: Path, modules: list[str] | None = None) -> str:
    """The page's key: its modules' syntax trees and the records it reads. A module that no longer
    exists changes the key (its name is hashed with an empty tree)."""
    nb = read(path)
    modules = sorted(modules_of(nb)) if modules is None else sorted(modules)
    digest = hashlib.sha256()
    for name in modules:
        file = _module_file(name)
        tree = ast.dump(ast.parse(file.read_text())) if file else ""
        digest.update(f"{name}\n{tree}\n".encode())
    if READS_RECORDS.search(code_of(nb)) or f"{PACKAGE}.reproduce" in modules:
        for record in sorted(ROOT.glob(RECORDS)):
            digest.update(record.name.encode() + record.read_bytes())
    return digest.hexdigest()


def _relative(uri: str) -> str | None:
    """A cache record's page relative to the book's root, wherever the checkout lay."""
    parts = Path(uri).parts
    for i in range(len(parts)):
        if (ROOT / Path(*parts[i:])).exists() and parts[i] in ("chapters", "book"):
            return Path(*parts[i:]).as_posix()
    return None


def invalidate(cache_dir: Path) -> list[Path]:
    from jupyter_cache import get_cache

    cache = get_cache(cache_dir)
    stored = _load_keys(cache_dir)
    current = {}
    for path in pages():
        name = path.relative_to(ROOT).as_posix()
        modules = stored.get(name, {}).get("modules")
        current[name] = {"modules": modules, "key": key(path, modules)}
    changed = {name for name, entry in current.items() if stored.get(name, {}).get("key") != entry["key"]}
    for record in cache.list_cache_records():
        if _relative(record.uri) in changed or _relative(record.uri) is None:
            cache.remove_cache(record.pk)
    for name in changed:  # Sphinx re-reads a page only when its source is newer than its last read
        os.utime(ROOT / name)
    _save_keys(cache_dir, current)
    return [ROOT / n for n in sorted(changed)]


def _load_keys(cache_dir: Path) -> dict:
    path = cache_dir / KEYS
    return json.loads(path.read_text()) if path.exists() else {}


def _save_keys(cache_dir: Path, keys: dict) -> None:
    (cache_dir / KEYS).write_text(json.dumps(keys, indent=1, sort_keys=True) + "\n")


def stale(cache_dir: Path) -> list[Path]:
    from jupyter_cache import get_cache

    cache = get_cache(cache_dir)
    missing = []
    for path in pages():
        if path.suffix != ".ipynb":  # MyST pages are short: the book build executes them
            continue
        try:
            cache.match_cache_notebook(read(path))
        except KeyError:
            missing.append(path)
    return missing


def store(cache_dir: Path, executed: Path) -> list[Path]:
    """Cache each chapter with the outputs of its executed copy, if the code cells still agree."""
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(cache_dir)
    keys = _load_keys(cache_dir)
    stored = []
    for path in pages():
        done = executed / path.name
        if path.suffix != ".ipynb" or not done.exists():
            continue
        source, run = read(path), nbformat.read(done, as_version=4)
        code = [c for c in source.cells if c.cell_type == "code"]
        outputs = [c for c in run.cells if c.cell_type == "code"]
        if [c.source for c in code] != [c.source for c in outputs]:
            print(f"{path.name} changed since it ran: the book build will execute it", file=sys.stderr)
            continue
        for cell, ran in zip(code, outputs):
            cell.outputs, cell.execution_count = ran.outputs, ran.execution_count
        for meta in ("language_info", "widgets"):
            if meta in run.metadata:
                source.metadata[meta] = run.metadata[meta]
        for record in cache.list_cache_records():
            if _relative(record.uri) == path.relative_to(ROOT).as_posix():
                cache.remove_cache(record.pk)
        cache.cache_notebook_bundle(CacheBundleIn(source, str(path)), check_validity=False, overwrite=True)
        modules = run.metadata.get("executed_modules")
        keys[path.relative_to(ROOT).as_posix()] = {"modules": modules, "key": key(path, modules)}
        os.utime(path)
        stored.append(path)
    _save_keys(cache_dir, keys)
    return stored


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["invalidate", "stale", "store"])
    parser.add_argument("cache", type=Path, help="the jupyter-cache folder")
    parser.add_argument("executed", type=Path, nargs="?", help="store: the folder of executed notebooks")
    args = parser.parse_args(argv)
    if args.command == "store" and args.executed is None:
        parser.error("store needs the folder of executed notebooks")
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.command == "invalidate":
        result = invalidate(args.cache)
    elif args.command == "stale":
        result = stale(args.cache)
    else:
        result = store(args.cache, args.executed)
    print(" ".join(str(p.relative_to(ROOT)) for p in result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
