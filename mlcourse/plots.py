"""Figures that several chapters draw: curves with confidence bands, image grids, episodes."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import torch

from .stats import mean_ci95

# The player of matplotlib's HTML animations loads Font Awesome 4 from a CDN for its button icons.
# The book works offline, and Unicode's media symbols are missing from common fonts (DejaVu,
# Liberation), so the link is dropped and each icon is drawn as a small inline SVG (16 × 16 units,
# in the text colour).
_ICON_PATHS = {  # Font Awesome class: (the Unicode symbol the icon stands for, the SVG path)
    "fa-minus": ("−", "M2 7h12v2H2z"),
    "fa-fast-backward": ("⏮", "M15 2 9 8l6 6zM9 2 3 8l6 6zM1 2h2v12H1z"),
    "fa-step-backward": ("⏴", "M14 2 6 8l8 6zM2 2h3v12H2z"),
    "fa-play fa-flip-horizontal": ("◀", "M12 2 2 8l10 6z"),
    "fa-pause": ("⏸", "M3 2h4v12H3zM9 2h4v12H9z"),
    "fa-play": ("▶", "M4 2l10 6-10 6z"),
    "fa-step-forward": ("⏵", "M2 2l8 6-8 6zM11 2h3v12h-3z"),
    "fa-fast-forward": ("⏭", "M1 2l6 6-6 6zM7 2l6 6-6 6zM13 2h2v12h-2z"),
    "fa-plus": ("+", "M7 2h2v5h5v2H9v5H7V9H2V7h5z"),
}
# The symbol rides along as data-symbol, so that text-based checks can tell the icons apart.
_ICONS = {name: (f'<svg class="mlcourse-icon" data-symbol="{symbol}" viewBox="0 0 16 16" width="1em" height="1em" '
                 f'aria-hidden="true" style="vertical-align:-0.125em"><path fill="currentColor" d="{path}"/></svg>')
          for name, (symbol, path) in _ICON_PATHS.items()}


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def animation(anim):
    """A matplotlib animation as HTML that plays in the notebook and in the static book, offline.
    (Close the animation's figure first, so that it is not also drawn as a still image.)"""
    from IPython.display import HTML

    html = anim.to_jshtml()
    html = re.sub(r'<link rel="stylesheet"\s+href="https://[^"]*font-awesome[^"]*">', "", html)
    for name, icon in _ICONS.items():
        html = html.replace(f'<i class="fa {name}"></i>', icon)
    if '<i class="fa' in html:
        raise RuntimeError("matplotlib's animation player has an icon that mlcourse.plots does not draw: "
                           + re.search(r'<i class="fa[^"]*">', html).group(0))
    return HTML(html)


def band(ax, x, values: torch.Tensor, label: str | None = None, dim: int = 0, **kwargs):
    """Plot the mean of ``values`` over ``dim`` against x, with its 95% interval shaded."""
    mean, half = mean_ci95(values, dim)
    x, mean, half = _numpy(x), _numpy(mean), _numpy(half)
    (line,) = ax.plot(x, mean, label=label, **kwargs)
    ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def image_grid(images: torch.Tensor, titles=None, ncols: int = 10, size: float = 1.0, cmap: str = "gray_r",
               suptitle: str | None = None):
    """A grid of single-channel images ([n, H, W] or [n, 1, H, W]); returns the figure."""
    images = _numpy(images)
    if images.ndim == 4:
        images = images[:, 0]
    n = len(images)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * (1.25 if titles else 1.0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap=cmap, vmin=0, vmax=images.max() or 1)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_episode(batch, index: int = 0, size: float = 1.0):
    """One N-way K-shot episode of a TaskBatch: D^tr in the top rows, D^ts below, titled by label."""
    task = batch[index]
    ways = int(task.y_tr.max()) + 1
    shots, queries = len(task.y_tr) // ways, len(task.y_ts) // ways
    # Columns are classes; D^tr's K rows first, then D^ts's Q rows (at most 3 shown).
    shown_q = min(queries, 3)
    rows = shots + shown_q
    fig, axes = plt.subplots(rows, ways, figsize=(size * ways, size * rows * 1.1), squeeze=False)
    x_tr, x_ts = _numpy(task.x_tr)[:, 0], _numpy(task.x_ts)[:, 0]
    for c in range(ways):
        for r in range(rows):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if r < shots:
                ax.imshow(x_tr[c * shots + r], cmap="gray_r", vmin=0, vmax=1)
                if r == 0:
                    ax.set_title(f"label {c}", fontsize=9)
            else:
                ax.imshow(x_ts[c * queries + r - shots], cmap="Blues", vmin=0, vmax=1)
            if c == 0:
                ax.set_ylabel("$D^{tr}$" if r < shots else "$D^{ts}$", fontsize=9)
    fig.tight_layout()
    return fig
