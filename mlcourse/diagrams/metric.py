"""Diagrams of metric-based meta-learning: a prototypical network embeds the support set, averages
each class into a prototype and classifies a query by its distances to the prototypes. Solid
arrows compute; nothing in the adaptation is a gradient step."""

from __future__ import annotations

import numpy as np
from matplotlib.patches import Rectangle

from . import COLORS, arrow, box, canvas

# One colour per class of the drawn episode (matplotlib's first three cycle colours).
CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c")


def prototypical(ways: int = 3, shots: int = 3, seed: int = 0):
    """The prototypical network of Snell et al. (2017) on one N-way K-shot episode: the support
    images (left) are embedded by f_θ, each class's embeddings averaged into c_k (stars), and the
    query f_θ(x) (cross) is classified by a softmax over its negative distances to the c_k. The
    shaded regions are the classes' decision regions; with squared-Euclidean distance their borders
    are straight lines (a linear classifier in the embedding)."""
    if not 2 <= ways <= len(CLASS_COLORS):
        raise ValueError(f"ways must be between 2 and {len(CLASS_COLORS)} to draw, got {ways}.")
    if not 1 <= shots <= 5:
        raise ValueError(f"shots must be between 1 and 5 to draw, got {shots}.")
    fig, ax = canvas(7.0, 3.2)
    ax.text(0.95, 3.0, r"$\mathcal{D}^{tr}$: $K$ images per class", ha="center", fontsize=9,
            color=COLORS["neutral"])
    rows = [2.45 - 0.8 * k for k in range(ways)]
    for k, y in enumerate(rows):
        for j in range(shots):
            ax.add_patch(Rectangle((0.25 + 0.45 * j, y - 0.18), 0.36, 0.36, facecolor=CLASS_COLORS[k] + "33",
                                   edgecolor=CLASS_COLORS[k], linewidth=1.2))
        ax.text(0.25 + 0.45 * shots + 0.02, y, rf"$y = {k}$", va="center", fontsize=9, color=CLASS_COLORS[k])
    query = box(ax, 0.95, 0.25, r"query $x$", "data", width=1.1, height=0.38, fontsize=9)
    embed = box(ax, 2.9, 1.65, r"$f_\theta$", "theta", width=0.7, height=0.5, fontsize=11)
    arrow(ax, (2.1, 1.65), (2.5, 1.65))
    arrow(ax, (1.55, 0.3), (2.75, 1.36))

    # The embedding space: a square panel on the right, in the axis's own (inch) units.
    left, bottom, size = 3.55, 0.15, 2.85
    ax.add_patch(Rectangle((left, bottom), size, size, fill=False, edgecolor="0.6", linewidth=1.0))
    ax.text(left + size / 2, bottom + size + 0.05, "embedding space", ha="center", fontsize=9,
            color=COLORS["neutral"])
    arrow(ax, (3.3, 1.65), (left - 0.05, 1.65))
    rng = np.random.default_rng(seed)
    centres = np.array([[0.8, 2.1], [2.1, 2.2], [1.5, 0.75]])[:ways] + [left, bottom]
    protos = []
    for k in range(ways):
        z = centres[k] + 0.28 * rng.standard_normal((shots, 2))
        c = z.mean(0)
        protos.append(c)
        ax.scatter(z[:, 0], z[:, 1], s=28, color=CLASS_COLORS[k], zorder=3)
        for point in z:
            ax.plot([point[0], c[0]], [point[1], c[1]], color=CLASS_COLORS[k], linewidth=0.6, alpha=0.6)
        ax.scatter([c[0]], [c[1]], marker="*", s=190, color=CLASS_COLORS[k], edgecolor="black",
                   linewidth=0.6, zorder=4)
        ax.text(c[0] + 0.12, c[1] + 0.1, rf"$c_{k}$", fontsize=10, color=CLASS_COLORS[k], zorder=5)
    protos = np.array(protos)
    # Decision regions of the nearest prototype (squared Euclidean: borders are straight lines).
    gx, gy = np.meshgrid(np.linspace(left, left + size, 200), np.linspace(bottom, bottom + size, 200))
    d = ((np.stack([gx, gy], -1)[:, :, None, :] - protos) ** 2).sum(-1)
    nearest = d.argmin(-1)
    ax.contourf(gx, gy, nearest, levels=np.arange(ways + 1) - 0.5, colors=[c + "18" for c in CLASS_COLORS[:ways]],
                zorder=0)
    ax.contour(gx, gy, nearest, levels=np.arange(ways) + 0.5, colors="0.5", linewidths=0.8, zorder=1)
    zq = protos[0] * 0.55 + protos[-1] * 0.25 + np.array([0.55, 0.15]) * 0.6
    for k, c in enumerate(protos):
        ax.plot([zq[0], c[0]], [zq[1], c[1]], linestyle="--", color=COLORS["loss"], linewidth=1.0, zorder=2)
    ax.scatter([zq[0]], [zq[1]], marker="X", s=110, color=COLORS["neutral"], zorder=5)
    ax.text(zq[0] + 0.1, zq[1] - 0.3, r"$f_\theta(x)$", fontsize=10, color=COLORS["neutral"], zorder=5)
    ax.text(left + size / 2, -0.25,
            r"$p(y = k \mid x) \propto \exp(-\Vert f_\theta(x) - c_k \Vert^2)$, prototype $c_k$ = mean of class $k$",
            ha="center", fontsize=9, color=COLORS["loss"])
    ax.set_ylim(-0.4, 3.2)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1)
    return fig


def linear_view():
    """Why squared-Euclidean prototypes are a linear classifier: −‖z − c_k‖² = 2 c_kᵀz − ‖c_k‖² − ‖z‖²,
    and the last term is the same for every class, so the logits are those of a linear layer with
    w_k = 2c_k and b_k = −‖c_k‖² whose weights Alg writes from D^tr."""
    fig, ax = canvas(7.0, 2.0)
    z = box(ax, 0.8, 1.0, r"$z = f_\theta(x)$", "theta", width=1.3)
    layer = box(ax, 3.3, 1.0, r"$w_k^\top z + b_k$", "phi", width=1.6)
    out = box(ax, 5.9, 1.0, r"softmax over $k$", "loss", width=1.6)
    arrow(ax, z, layer)
    arrow(ax, layer, out)
    ax.text(3.3, 1.55, r"$w_k = 2 c_k, \quad b_k = -\Vert c_k \Vert^2$ (written by Alg from $\mathcal{D}^{tr}$)",
            ha="center", fontsize=9, color=COLORS["phi"])
    ax.text(3.5, 0.2, r"$-\Vert z - c_k \Vert^2 = 2 c_k^\top z - \Vert c_k \Vert^2 - \Vert z \Vert^2$: "
            r"the last term is the same for every class", ha="center", fontsize=9, color=COLORS["neutral"])
    return fig


__all__ = ["prototypical", "linear_view"]
