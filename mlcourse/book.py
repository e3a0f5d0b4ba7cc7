"""The book's glue: myst-nb's ``glue`` where the book is built, the cell's own output elsewhere.

A chapter inserts what it computes into its prose with myst-nb's ``glue`` and the ``{glue:...}``
roles, so that the text is right at every scale. Where myst-nb is not installed (Colab, a plain
Jupyter) there is no book page to insert into: figures and Markdown tables are shown in the cell's
output instead, so that a reader sees every result, and other values are shown only when asked
(``display=True``).
"""

from __future__ import annotations

from functools import cache


@cache
def _myst_glue():
    try:
        from myst_nb import glue
    except ImportError:
        return None
    return glue


def _is_table(value) -> bool:
    return isinstance(value, str) and value.lstrip().startswith("|")   # glued for {glue:md}


def _shown_without_the_book(value) -> bool:
    from IPython.display import Markdown

    if isinstance(value, Markdown):
        return True
    if isinstance(value, str):
        return _is_table(value)
    return type(value).__module__.startswith("matplotlib") and hasattr(value, "savefig")


class _Table:
    """A Markdown table glued as Markdown (for ``{glue:md}``) and as its plain text (for
    ``{glue:text}``): a bare string would be glued as plain text only."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return repr(self.text)

    def _repr_markdown_(self) -> str:
        return self.text


def glue(name: str, value, display: bool = True) -> None:
    """``myst_nb.glue(name, value, display)`` when myst-nb is installed (a string holding a Markdown
    table is glued as Markdown too); otherwise show ``value`` in the cell's output if it is a figure
    or a Markdown table, or if ``display`` is true."""
    myst = _myst_glue()
    if myst is not None:
        myst(name, _Table(value) if _is_table(value) else value, display=display)
        return
    if display or _shown_without_the_book(value):
        from IPython.display import Markdown
        from IPython.display import display as show

        show(Markdown(value) if isinstance(value, str) else value)
