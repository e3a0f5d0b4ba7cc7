"""The book's glue: myst-nb's ``glue`` where it is installed, the same record written here where it
is not, and on Colab the figures shown in the cell's output.

A chapter inserts what it computes into its prose with ``glue`` and the ``{glue:...}`` roles, so
that the text is right at every scale. Without myst-nb (Colab, a plain Jupyter, the Colab-like test
environment) this module writes the record myst-nb would (hidden outputs whose MIME types carry
myst-nb's prefix, named in the output's ``scrapbook`` metadata), so executed notebooks still build
the book. A reader there has no book page, so figures and Markdown tables are also shown in the
cell's output, except where the outputs are made for the book (``MLCOURSE_BOOK_OUTPUTS=1``, set
by the chapter runner), which would show them twice.
"""

from __future__ import annotations

import os
from functools import cache

# myst-nb's prefix for the MIME types of a hidden glued output (myst_nb.ext.glue.GLUE_PREFIX).
GLUE_PREFIX = "application/papermill.record/"


@cache
def _myst_glue():
    try:
        from myst_nb import glue
    except ImportError:
        return None
    return glue


def _record(name: str, value, display: bool = True) -> None:
    """The output myst-nb's glue writes: the value's MIME bundle (prefixed when hidden) with the
    name in the output's ``scrapbook`` metadata."""
    from IPython.core.formatters import format_display_data
    from IPython.display import display as show

    bundle, metadata = format_display_data(value)
    prefix = "" if display else GLUE_PREFIX
    metadata["scrapbook"] = {"name": name, "mime_prefix": prefix}
    show({prefix + k: v for k, v in bundle.items()}, raw=True, metadata=metadata)


def _is_table(value) -> bool:
    """A Markdown table, or one inside a MyST table directive (numbered, with a caption): what the
    chapters glue for ``{glue:md}``."""
    return isinstance(value, str) and value.lstrip().startswith(("|", "```{table}", ":::{table}"))


def _shown_without_the_book(value) -> bool:
    from IPython.display import Markdown

    return isinstance(value, (Markdown, _Table)) or _is_figure(value)


def _is_figure(value) -> bool:
    return type(value).__module__.startswith("matplotlib") and hasattr(value, "savefig")


class _Table:
    """A table glued as Markdown (for ``{glue:md}``) and as its plain text (for
    ``{glue:text}``): a bare string would be glued as plain text only."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return repr(self.text)

    def _repr_markdown_(self) -> str:
        return self.text


class _Text(str):
    """A string glued for ``{glue:}`` and ``{glue:text}``: its plain-text form is the string itself,
    where a bare ``str`` would be glued as its ``repr``, and the book would show the quotes."""

    def __repr__(self) -> str:
        return str(self)


def glue(name: str, value, display: bool = True) -> None:
    """Glue ``value`` under ``name`` for the book (a string holding a Markdown table is glued as
    Markdown too); without myst-nb, also show a hidden figure or table in the cell's output unless
    the outputs are made for the book."""
    if isinstance(value, str) and not isinstance(value, _Text):
        value = _Table(value) if _is_table(value) else _Text(value)
    myst = _myst_glue()
    (myst or _record)(name, value, display=display)
    if (myst is None and not display and os.environ.get("MLCOURSE_BOOK_OUTPUTS") != "1"
            and _shown_without_the_book(value)):
        from IPython.display import Markdown
        from IPython.display import display as show

        show(Markdown(value.text) if isinstance(value, _Table) else value)
    if _is_figure(value):   # shown by the book (or above); left open, the cell would show it again
        import matplotlib.pyplot as plt

        plt.close(value)
