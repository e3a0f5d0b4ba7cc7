"""mlcourse.book.glue: myst-nb's glue where it is installed; without it the same record, and the
figures and tables shown in the cell's output unless the outputs are made for the book."""

import sys

import matplotlib

matplotlib.use("Agg")
import IPython.core.formatters  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from IPython.display import Markdown  # noqa: E402

from mlcourse import book  # noqa: E402

TABLE = "| a | b |\n| --- | --- |\n| 1 | 2 |"


@pytest.fixture
def shown(monkeypatch):
    seen = []
    monkeypatch.setattr("IPython.display.display", lambda value, **kwargs: seen.append((value, kwargs)))
    return seen


@pytest.fixture
def without_myst(monkeypatch):
    monkeypatch.setitem(sys.modules, "myst_nb", None)   # import myst_nb raises ImportError
    book._myst_glue.cache_clear()
    yield
    book._myst_glue.cache_clear()


def _records(shown):
    return {kw["metadata"]["scrapbook"]["name"]: value for value, kw in shown if kw.get("raw")}


def test_without_myst_nb_the_record_is_myst_nbs_and_figures_and_tables_are_shown(without_myst, shown, monkeypatch):
    monkeypatch.delenv("MLCOURSE_BOOK_OUTPUTS", raising=False)
    fig, _ = plt.subplots()
    book.glue("fig", fig, display=False)
    book.glue("table", TABLE, display=False)
    book.glue("number", 0.25, display=False)
    plt.close(fig)
    records = _records(shown)
    assert set(records) == {"fig", "table", "number"}
    assert all(key.startswith(book.GLUE_PREFIX) for value in records.values() for key in value)
    assert records["table"][book.GLUE_PREFIX + "text/markdown"] == TABLE
    assert records["number"][book.GLUE_PREFIX + "text/plain"] == "0.25"
    visible = [value for value, kw in shown if not kw.get("raw")]
    assert visible[0] is fig and isinstance(visible[1], Markdown) and visible[1].data == TABLE
    assert len(visible) == 2


def test_outputs_made_for_the_book_show_nothing_twice(without_myst, shown, monkeypatch):
    monkeypatch.setenv("MLCOURSE_BOOK_OUTPUTS", "1")
    fig, _ = plt.subplots()
    book.glue("fig", fig, display=False)
    plt.close(fig)
    assert [kw.get("raw") for _, kw in shown] == [True]
    assert not plt.fignum_exists(fig.number)   # glued figures are closed, so the cell does not show them again


def test_the_record_matches_myst_nbs_own():
    myst_nb = pytest.importorskip("myst_nb")
    from myst_nb.ext.glue import GLUE_PREFIX

    assert GLUE_PREFIX == book.GLUE_PREFIX
    assert myst_nb.glue is not None


def test_with_myst_nb_the_value_goes_to_its_glue(monkeypatch, shown):
    calls = []
    fake = type(sys)("myst_nb")
    fake.glue = lambda name, value, display=True: calls.append((name, value, display))
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    book._myst_glue.cache_clear()
    try:
        book.glue("ch00-x", 1.5, display=False)
    finally:
        book._myst_glue.cache_clear()
    assert calls == [("ch00-x", 1.5, False)] and not shown


def test_a_markdown_table_is_glued_as_markdown_and_as_text():
    """{glue:md} needs text/markdown, {glue:text} text/plain: a table string gets both."""
    bundle, _ = IPython.core.formatters.format_display_data(book._Table(TABLE))
    assert bundle["text/markdown"] == TABLE and bundle["text/plain"] == repr(TABLE)
    plain, _ = IPython.core.formatters.format_display_data("far below")
    assert "text/markdown" not in plain
    assert book._is_table(TABLE) and book._is_table(f"```{{table}} A caption.\n:name: t\n\n{TABLE}\n```")
    assert not book._is_table("far below") and not book._is_table(0.5)


def test_a_glued_string_reads_without_quotes(without_myst, shown):
    """{glue:} shows a value's text/plain: for a string that must be the string, not its repr."""
    book.glue("ch00-s", "3 of the 4", display=False)
    (bundle, kwargs), = shown
    assert bundle[book.GLUE_PREFIX + "text/plain"] == "3 of the 4"
    book.glue("ch00-t", "it's 'quoted'", display=False)
    assert shown[-1][0][book.GLUE_PREFIX + "text/plain"] == "it's 'quoted'"
