"""Schematic diagrams of the lecture's methods, drawn with matplotlib so that they are tested,
versioned and restyled together. One module per topic; every public function returns a Figure.

The helpers below keep every diagram in one visual language: rounded boxes for quantities
(θ, φ_i, D^tr), plain arrows for computation, dashed arrows for gradients.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# One palette for every diagram: meta-parameters, task parameters, data, losses, gradients.
COLORS = {"theta": "#1f77b4", "phi": "#2ca02c", "data": "#7f7f7f", "loss": "#d62728", "grad": "#9467bd",
          "neutral": "#333333"}


def canvas(width: float = 7.0, height: float = 3.0):
    """A figure with one axis in data units equal to inches (0..width, 0..height), no frame."""
    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def box(ax, x: float, y: float, text: str, kind: str = "neutral", width: float = 1.2, height: float = 0.5,
        fontsize: float = 10, filled: bool = False):
    """A rounded box centred at (x, y) with ``text``; returns the patch (for arrows)."""
    color = COLORS[kind]
    patch = FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.04,rounding_size=0.1",
                           linewidth=1.5, edgecolor=color, facecolor=color + "22" if filled else "white")
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, color=COLORS["neutral"])
    return patch


def arrow(ax, start, end, text: str = "", kind: str = "neutral", dashed: bool = False, fontsize: float = 9,
          curve: float = 0.0, offset=(0.0, 0.12)):
    """An arrow from ``start`` to ``end`` (points or box patches), labelled at its middle."""
    style = dict(arrowstyle="-|>", mutation_scale=12, linewidth=1.3, color=COLORS[kind],
                 linestyle="--" if dashed else "-", connectionstyle=f"arc3,rad={curve}")
    if hasattr(start, "get_bbox") and hasattr(end, "get_bbox"):
        a = FancyArrowPatch(posA=_centre(start), posB=_centre(end), patchA=start, patchB=end, **style)
        mid = _middle(_centre(start), _centre(end))
    else:
        a = FancyArrowPatch(posA=_point(start), posB=_point(end), **style)
        mid = _middle(_point(start), _point(end))
    ax.add_patch(a)
    if text:
        ax.text(mid[0] + offset[0], mid[1] + offset[1], text, ha="center", va="bottom", fontsize=fontsize,
                color=COLORS[kind])
    return a


def _centre(patch):
    b = patch.get_bbox()
    return ((b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2)


def _point(p):
    return _centre(p) if hasattr(p, "get_bbox") else (float(p[0]), float(p[1]))


def _middle(a, b):
    return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
