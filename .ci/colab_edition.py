"""The Colab edition of chapter notebooks: the book's MyST markup turned into plain Markdown.

Colab renders Markdown but not MyST, so in the chapters as committed it would show `{cite}` and
`{doc}` roles and `{note}` fences raw. This writes copies in which
  {cite}`finn2017maml`            -> [Finn et al. (2017)](<book>/book/references.html)
  {doc}`05_maml`                  -> [MAML](<book>/chapters/05_maml.html)   (the page's title)
  ```{note} ... ```, :::{tip}     -> a blockquote headed by the admonition's title
  {glue:}`name`, ```{glue:figure} -> "(see the book)": the number is in the hosted book; a figure
                                     is drawn in the output of its code cell (mlcourse.book.glue)
  (label)= targets, {numref}/{ref} -> removed / their text
and puts a line on top that links the chapter's page in the hosted book. Code cells are untouched.

    python .ci/colab_edition.py --out DIR [--student] NOTEBOOK...
    python .ci/colab_edition.py --readme     the README of the branch that holds the editions
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPOSITORY = CONFIG["repository"]["url"].rstrip("/")
BRANCH = "colab"


def book_address(repository: str = REPOSITORY) -> str:
    """GitHub Pages' address of the book built from `repository` (https://github.com/OWNER/NAME)."""
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?", repository)
    if not match:
        raise ValueError(f"repository.url in _config.yml must be https://github.com/OWNER/NAME, got {repository!r}")
    owner, name = match.groups()
    return f"https://{owner.lower()}.github.io/{name}/"


def colab_address(path: str, repository: str = REPOSITORY) -> str:
    """Colab's address of a notebook of the editions branch, e.g. path='chapters/01_tasks.ipynb'."""
    return f"https://colab.research.google.com/github/{repository.removeprefix('https://github.com/')}/blob/{BRANCH}/{path}"


BOOK = book_address()
ADMONITIONS = {"note": "Note", "tip": "Tip", "warning": "Warning", "important": "Important", "hint": "Hint",
               "caution": "Caution", "attention": "Attention", "danger": "Danger", "error": "Error",
               "seealso": "See also", "admonition": ""}
FENCE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}[ \t]*(?P<arg>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$",
                   re.M | re.S)
ROLE = re.compile(r"\{(?P<role>[\w:-]+)\}`(?P<text>[^`]*)`")


def _authors(entry) -> str:
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    last = [" ".join(p.prelast_names + p.last_names) for p in people]
    last = [re.sub(r"[{}]", "", n) for n in last]
    if not last:
        return re.sub(r"[{}]", "", entry.fields.get("title", "Anonymous"))
    if len(last) == 1:
        return last[0]
    if len(last) == 2:
        return f"{last[0]} and {last[1]}"
    return f"{last[0]} et al."


def load_citations(bib: Path = ROOT / "book" / "references.bib") -> dict[str, str]:
    from pybtex.database import parse_file

    return {key: f"{_authors(e)} ({e.fields.get('year', 'n.d.')})" for key, e in parse_file(str(bib)).entries.items()}


def _titles() -> dict[str, str]:
    """Each page's title (its first heading), by its path without suffix, e.g. 'chapters/05_maml'."""
    titles = {}
    for path in list((ROOT / "chapters").glob("*.ipynb")) + list((ROOT / "book").glob("*.md")):
        if path.suffix == ".ipynb":
            text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
        else:
            text = path.read_text()
        heading = re.search(r"^# (.+)$", text, re.M)
        titles[path.relative_to(ROOT).with_suffix("").as_posix()] = heading.group(1).strip() if heading else path.stem
    return titles


class Converter:
    def __init__(self, chapter: Path):
        self.folder = "chapters"  # the chapters' {doc} targets are relative to chapters/
        self.citations = load_citations()
        self.titles = _titles()
        self.chapter = chapter

    def _target(self, target: str) -> str:
        path = (Path(self.folder) / target).as_posix() if not target.startswith("/") else target.lstrip("/")
        parts = []
        for part in path.split("/"):
            if part == "..":
                parts.pop()
            elif part not in ("", "."):
                parts.append(part)
        return "/".join(parts)

    def role(self, match: re.Match) -> str:
        role, text = match.group("role"), match.group("text")
        if role.startswith("cite"):
            keys = [k.strip() for k in text.split(",") if k.strip()]
            unknown = [k for k in keys if k not in self.citations]
            if unknown:
                raise KeyError(f"{self.chapter.name}: citation keys not in book/references.bib: {unknown}")
            return "; ".join(f"[{self.citations[k]}]({BOOK}book/references.html)" for k in keys)
        if role == "doc":
            explicit = re.fullmatch(r"(?P<label>.+?)\s*<(?P<target>[^>]+)>", text, re.S)
            target = self._target(explicit.group("target") if explicit else text)
            label = explicit.group("label") if explicit else self.titles.get(target, target)
            return f"[{label}]({BOOK}{target}.html)"
        if role.startswith("glue"):
            return "(see the book)"
        if role in ("ref", "numref", "eq", "term", "download"):
            explicit = re.fullmatch(r"(?P<label>.+?)\s*<[^>]+>", text, re.S)
            return explicit.group("label") if explicit else ("(see the book)" if role in ("numref", "eq") else text)
        if role == "math":
            return f"${text}$"
        return text  # e.g. {sub}, {sup}, {kbd}, {abbr}: the text reads on its own

    def fence(self, match: re.Match) -> str:
        name, arg, body = match.group("name"), match.group("arg").strip(), match.group("body")
        lines = [ln for ln in body.splitlines() if not re.match(r"^:[\w-]+:", ln)]  # directive options
        body = self.markdown("\n".join(lines)).strip("\n")
        if name in ADMONITIONS:
            title = arg if name == "admonition" else ADMONITIONS[name] + (f": {arg}" if arg else "")
            quoted = "\n".join(f"> {ln}" if ln else ">" for ln in body.splitlines())
            return f"> **{title}**\n>\n{quoted}" if title else quoted
        if name.startswith("glue"):
            return f"> *A figure of the chapter: the code cell above draws it (see the book for its number).* {body}".rstrip()
        if name == "math":
            return f"$$\n{body}\n$$"
        if name in ("code", "code-block", "code-cell"):
            return f"```{arg}\n{body}\n```"
        if name in ("figure", "image"):
            return f"![{body.strip()}]({arg})"
        return body

    def markdown(self, text: str) -> str:
        text = FENCE.sub(self.fence, text)
        text = re.sub(r"^\([\w:.-]+\)=[ \t]*\n", "", text, flags=re.M)  # MyST targets
        return ROLE.sub(self.role, text)


def edition(path: Path, out: Path, student: bool) -> Path:
    nb = nbformat.read(path, as_version=4)
    converter = Converter(path)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = converter.markdown(cell.source)
    page = f"{BOOK}chapters/{path.stem}.html"
    kind = "student edition: the solutions are removed" if student else "Colab edition"
    banner = (f"*This is the {kind} of a chapter of [Meta-Learning: a course companion]({page}); the book shows "
              "its figures, cross-references and numbers. Run the first cell to install `mlcourse`.*")
    nb.cells.insert(1 if nb.cells and nb.cells[0].cell_type == "code" else 0, nbformat.v4.new_markdown_cell(banner))
    nb.metadata.setdefault("colab", {})["name"] = path.name
    out.mkdir(parents=True, exist_ok=True)
    target = out / path.name
    nbformat.write(nb, target)
    return target


def readme() -> str:
    return (f"# Colab and student editions\n\nThis branch is written by the book's deployment from a release tag: "
            f"`chapters/` holds the chapters with plain Markdown for Colab, `students/` the student edition "
            f"(solutions removed). Read the book at <{BOOK}>; its source is <{REPOSITORY}>.\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--student", action="store_true", help="the notebooks are student notebooks")
    parser.add_argument("--readme", action="store_true", help="print the branch's README")
    args = parser.parse_args(argv)
    if args.readme:
        print(readme(), end="")
        return 0
    if not args.notebooks or args.out is None:
        parser.error("give --out DIR and the notebooks to convert")
    for path in args.notebooks:
        print(edition(path, args.out, args.student))
    return 0


if __name__ == "__main__":
    sys.exit(main())
