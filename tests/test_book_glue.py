"""mlcourse.book.glue: myst-nb's glue in the book, the cell's output where myst-nb is missing."""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from IPython.display import Markdown  # noqa: E402

from mlcourse import book  # noqa: E402


@pytest.fixture
def shown(monkeypatch):
    seen = []
    monkeypatch.setattr("IPython.display.display", lambda value: seen.append(value))
    return seen


def test_without_myst_nb_figures_and_tables_are_shown_and_numbers_are_not(monkeypatch, shown):
    monkeypatch.setitem(sys.modules, "myst_nb", None)   # import myst_nb raises ImportError
    book._myst_glue.cache_clear()
    try:
        fig, _ = plt.subplots()
        book.glue("fig", fig, display=False)
        book.glue("table", "| a | b |\n| --- | --- |\n| 1 | 2 |", display=False)
        book.glue("number", 0.25, display=False)
        book.glue("sentence", "far below", display=False)
        book.glue("asked", 3, display=True)
        plt.close(fig)
    finally:
        book._myst_glue.cache_clear()
    assert shown[0] is fig
    assert isinstance(shown[1], Markdown) and shown[1].data.startswith("| a | b |")
    assert shown[2:] == [3]


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
    import IPython.core.formatters

    import mlcourse.book as module

    table = "| a | b |\n| --- | --- |\n| 1 | 2 |"
    bundle, _ = IPython.core.formatters.format_display_data(module._Table(table))
    assert bundle["text/markdown"] == table and bundle["text/plain"] == repr(table)
    plain, _ = IPython.core.formatters.format_display_data("far below")
    assert "text/markdown" not in plain
