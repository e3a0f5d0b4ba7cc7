"""The Colab and student editions read cleanly without MyST, and the chapters run on Colab
(the Colab-like run itself is `make chapters`; these are its static and unit checks)."""

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".ci"))
import colab_edition  # noqa: E402
from colab_edition import BOOK, Converter, colab_address  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
MYST = re.compile(r"\{[\w:-]+\}`|^(`{3,}|:{3,})\{", re.M)


def _convert(text):
    return Converter(CHAPTERS[0]).markdown(text)


def test_citations_become_author_year_links():
    key = next(iter(colab_edition.load_citations()))
    out = _convert(f"as shown by {{cite}}`{key}`.")
    assert re.fullmatch(rf"as shown by \[[^\]]+ \(\d{{4}}\)\]\({re.escape(BOOK)}book/references\.html\)\.", out), out


def test_unknown_citation_is_an_error():
    with pytest.raises(KeyError, match="nosuchkey2099"):
        _convert("{cite}`nosuchkey2099`")


def test_doc_roles_link_the_hosted_pages_by_title():
    out = _convert("see {doc}`../book/results` and {doc}`the MAML chapter <05_maml>`")
    assert out == (f"see [Reproduced results]({BOOK}book/results.html) and "
                   f"[the MAML chapter]({BOOK}chapters/05_maml.html)")


def test_admonitions_glue_and_targets():
    text = "(sec-x)=\n## A\n\n```{note}\nBatch norm keeps no\nrunning averages.\n```\n\nerror {glue:}`err`."
    out = _convert(text)
    assert out == ("## A\n\n> **Note**\n>\n> Batch norm keeps no\n> running averages.\n\n"
                   "error (see the book).")
    assert _convert(":::{tip} Speed\n:class: dropdown\nUse a GPU.\n:::") == "> **Tip: Speed**\n>\n> Use a GPU."
    assert "see the book" in _convert("```{glue:figure} fig_loss\n:figwidth: 80%\nThe loss.\n```")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_colab_edition_has_no_myst_left(path, tmp_path):
    out = colab_edition.edition(path, tmp_path, student=False)
    nb = nbformat.read(out, as_version=4)
    source = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert not MYST.search(text), f"{path.name}: MyST markup left: {MYST.search(text).group(0)}"
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code == [c.source for c in source.cells if c.cell_type == "code"], "code cells must not change"
    assert f"{BOOK}chapters/{path.stem}.html" in nb.cells[1].source


def test_teachers_guide_links_every_student_edition():
    guide = (ROOT / "book" / "teachers_guide.md").read_text()
    for path in CHAPTERS:
        assert colab_address(f"students/{path.name}") in guide, f"the teacher's guide has no link for {path.name}"


def test_half_cheetah_missing_is_a_message(monkeypatch):
    from mlcourse.rl import cheetah

    monkeypatch.setitem(sys.modules, "mujoco", None)
    message = cheetah.missing_dependencies()
    assert message and "mlcourse[rl]" in message
    with pytest.raises(ImportError, match="gymnasium with MuJoCo"):
        cheetah.HalfCheetahTasks("velocity")


def test_colab_constraints_pin_colabs_widgets_and_allow_mlcourse():
    constraints = (ROOT / ".ci" / "colab-constraints.txt").read_text()
    pins = dict(re.findall(r"^([\w.-]+)==(\S+)$", constraints, re.M))
    assert pins["ipywidgets"].startswith("7."), "Colab ships ipywidgets 7"
    stack = re.search(r"^# colab-stack: (.+)$", constraints, re.M).group(1).split()
    assert {"numpy", "matplotlib", "ipywidgets", "ipykernel", "tqdm"} <= set(stack)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"ipywidgets>=7\.\d+"', pyproject), "mlcourse must accept Colab's ipywidgets 7"
