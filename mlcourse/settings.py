"""An experiment's settings, stated once.

Each experiment has one frozen dataclass whose field defaults are the paper's values, with a
docstring or comment per field; ``SCALES`` names what the book's scale and the quick (test) scale
change. The training code reads the object, the chapters read (and may show) it, and the saved
record is written from it, so a number is never typed twice::

    @dataclass(frozen=True)
    class SinusoidSettings(Settings):
        tasks: int = 25          # meta-batch
        iterations: int = 70_000
        SCALES = {"book": {"iterations": 10_000}, "quick": {"iterations": 200}}

    settings = SinusoidSettings.at()            # the scale MLCOURSE_QUICK asks for (book or quick)
    settings = SinusoidSettings.at("paper")     # the paper's values
    settings.iterations
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

SCALES = ("paper", "book", "quick")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base class: subclasses add fields (paper values as defaults) and a ``SCALES`` dict."""

    scale: str = "paper"
    SCALES: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}.")

    @classmethod
    def at(cls, scale: str | None = None, **changes):
        """The settings at ``scale`` ("paper", "book" or "quick"; default: quick under
        ``MLCOURSE_QUICK=1``, else the book's), with ``changes`` applied on top."""
        from . import runtime

        scale = ("quick" if runtime.quick() else "book") if scale is None else scale
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}.")
        names = {f.name for f in dataclasses.fields(cls)}
        preset = {} if scale == "paper" else cls.SCALES.get(scale, {})
        unknown = sorted((set(preset) | set(changes)) - names)
        if unknown:
            raise TypeError(f"{cls.__name__} has no setting(s) {unknown}; "
                            f"its settings are {sorted(names - {'scale'})}.")
        return dataclasses.replace(cls(), scale=scale, **{**preset, **changes})

    def replace(self, **changes):
        """A copy with ``changes`` (checked names), at the same scale."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no setting(s) {unknown}; "
                            f"its settings are {sorted(names - {'scale'})}.")
        return dataclasses.replace(self, **changes)

    def paper(self):
        """The paper's values of the same experiment (to compare, or to label a record)."""
        return type(self)()

    def record(self) -> dict[str, Any]:
        """The settings as plain data, for the saved record."""
        return dataclasses.asdict(self)

    def changed_from_paper(self) -> dict[str, tuple[Any, Any]]:
        """{name: (this value, the paper's)} for every setting that differs from the paper's."""
        paper = self.paper()
        return {f.name: (getattr(self, f.name), getattr(paper, f.name)) for f in dataclasses.fields(self)
                if f.name != "scale" and getattr(self, f.name) != getattr(paper, f.name)}

    def table(self) -> str:
        """A Markdown table of the settings beside the paper's, for a chapter to show."""
        paper = self.paper()
        rows = ["| setting | this run | paper |", "| --- | --- | --- |"]
        for f in dataclasses.fields(self):
            if f.name != "scale":
                rows.append(f"| {f.name} | {_show(getattr(self, f.name))} | {_show(getattr(paper, f.name))} |")
        return "\n".join(rows)


def _show(value) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
