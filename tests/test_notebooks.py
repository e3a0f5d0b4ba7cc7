"""Static checks of the chapter notebooks (running them is `make chapters`' job)."""

import json
import re
from pathlib import Path

import pytest
import yaml

import mlcourse

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
REPOSITORY = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def _cells(path):
    return json.loads(path.read_text())["cells"]


def test_there_are_chapters():
    assert CHAPTERS


def _setup_install(path):
    """The set-up cell's pip requirement, e.g. ('mlcourse[rl]', 'git+https://...@v0.2.0')."""
    source = "".join(_cells(path)[0]["source"])
    release = re.findall(r'^RELEASE = "(git\+\S+)"$', source, re.M)
    requirement = re.findall(r'!pip install -q "(mlcourse(?:\[\w+\])?) @ \{RELEASE\}"', source)
    assert len(release) == 1 and len(requirement) == 1, f"{path.name}: unexpected set-up cell:\n{source}"
    return requirement[0], release[0]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_setup_cell_installs_the_release_of_this_book(path):
    first = _cells(path)[0]
    source = "".join(first["source"])
    assert "remove-cell" in first["metadata"].get("tags", []), "the Colab set-up cell must be hidden in the book"
    assert '"google.colab" in sys.modules' in source, "the set-up cell must run on Colab only"
    _, release = _setup_install(path)
    assert release == f"git+{REPOSITORY}@v{mlcourse.__version__}", (
        f"{path.name} installs {release}; the book is mlcourse {mlcourse.__version__} from {REPOSITORY}")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_setup_cell_installs_the_extras_the_chapter_imports(path):
    code = "".join("".join(c["source"]) for c in _cells(path)[1:] if c["cell_type"] == "code")
    requirement, _ = _setup_install(path)
    needs_rl = "mlcourse.rl.cheetah" in code or "import gymnasium" in code
    assert (requirement == "mlcourse[rl]") == needs_rl, f"{path.name} installs {requirement}, uses MuJoCo: {needs_rl}"


def test_the_version_is_written_once():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'attr = "mlcourse.__version__"' in pyproject
    assert re.fullmatch(r"\d+\.\d+\.\d+", mlcourse.__version__)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    for cell in _cells(path):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_is_in_the_table_of_contents(path):
    toc = (ROOT / "_toc.yml").read_text()
    assert f"chapters/{path.stem}" in toc


def test_readme_names_the_repository():
    assert REPOSITORY in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_ends_with_exercises(path):
    markdown = "".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "markdown")
    assert "## Exercises" in markdown
    assert len(re.findall(r"\*\*Exercise \d", markdown)) >= 3
