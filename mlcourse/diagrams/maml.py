"""Diagrams of MAML and first-order MAML (chapters 5 and 6).

- :func:`geometry`: θ on its meta-learning path and one gradient step from it toward each task's
  optimum φ_i* (after Finn et al. 2017, Figure 1);
- :func:`bilevel_loop`: the inner loop (adaptation on D_i^tr, per task) inside the outer loop
  (the meta-update of θ on the D_i^ts losses);
- :func:`meta_gradient_graph`: the computation graph of k inner steps, with the path of the
  meta-gradient through each step: the identity and the second-order term −αH^(j), which
  first-order MAML cuts.
"""

from __future__ import annotations

import numpy as np
from matplotlib.patches import Ellipse

from . import COLORS, arrow, box, canvas


def geometry(tasks: int = 3):
    """θ, the path meta-training takes, and the adaptation step to each task's optimum φ_i*."""
    if not 1 <= tasks <= 5:
        raise ValueError(f"tasks must be 1..5 (the picture has room for five), got {tasks}.")
    fig, ax = canvas(7.0, 3.6)
    # The meta-learning path: a smooth curve ending at θ.
    t = np.linspace(0, 1, 50)
    path_x, path_y = 0.7 + 2.3 * t, 0.7 + 1.3 * np.sin(1.4 * t) + 0.25 * t
    ax.plot(path_x, path_y, color=COLORS["theta"], linewidth=3, solid_capstyle="round")
    theta = (path_x[-1], path_y[-1])
    ax.plot(*theta, "o", color=COLORS["theta"], markersize=9)
    ax.text(theta[0] - 0.1, theta[1] + 0.22, r"$\theta$", fontsize=14, color=COLORS["theta"], ha="right")
    ax.text(1.1, 0.45, "meta-learning", fontsize=10, color=COLORS["theta"])
    # The tasks' optima, each inside level sets of its own loss; one gradient step toward each.
    angles = np.linspace(0.75, -0.75, tasks) if tasks > 1 else np.array([0.0])
    for i, angle in enumerate(angles, start=1):
        optimum = (theta[0] + 2.7 * np.cos(angle), theta[1] + 1.35 * np.sin(angle))
        for scale, alpha in ((1.0, 0.25), (0.55, 0.45)):
            ax.add_patch(Ellipse(optimum, 1.1 * scale, 0.55 * scale, angle=np.degrees(angle) + 30, fill=False,
                                 edgecolor=COLORS["phi"], alpha=alpha, linewidth=1))
        ax.plot(*optimum, "*", color=COLORS["phi"], markersize=12)
        ax.text(optimum[0] + 0.55, optimum[1] - 0.05, rf"$\phi_{i}^*$", fontsize=13, color=COLORS["phi"],
                va="center")
        step = (theta[0] + 0.62 * (optimum[0] - theta[0]), theta[1] + 0.62 * (optimum[1] - theta[1]))
        arrow(ax, theta, step, kind="grad", dashed=True)
        ax.text(step[0] - 0.15, step[1] + (0.12 if angle >= 0 else -0.3),
                rf"$-\nabla \mathcal{{L}}_{i}$", fontsize=11, color=COLORS["grad"], ha="right")
    ax.text(6.95, 0.1, r"adaptation: a step of size $\alpha$ from $\theta$", fontsize=10, ha="right",
            color=COLORS["grad"])
    return fig


def bilevel_loop():
    """The inner loop (per task, adaptation) inside the outer loop (the meta-update)."""
    fig, ax = canvas(7.0, 3.6)
    # The inner loop, one task at a time (in code: all tasks at once, with vmap).
    ax.add_patch(_panel((2.15, 0.2), 4.75, 2.2))
    ax.text(6.8, 2.3, r"inner loop, for each task $\mathcal{T}_i$", fontsize=10, ha="right", va="top",
            color=COLORS["phi"])
    theta = box(ax, 0.8, 1.65, r"$\theta$", kind="theta", width=0.9, height=0.5, fontsize=13, filled=True)
    tasks = box(ax, 3.9, 3.05, r"sample tasks $\mathcal{T}_i \sim p(\mathcal{T})$", kind="data", width=2.6)
    d_tr = box(ax, 2.85, 1.65, r"$\mathcal{D}_i^{tr}$", kind="data", width=0.8)
    phi = box(ax, 5.15, 1.65, r"$\phi_i = \theta - \alpha \nabla_\theta \mathcal{L}(\theta, \mathcal{D}_i^{tr})$",
              kind="phi", width=2.9, fontsize=10, filled=True)
    d_ts = box(ax, 2.85, 0.65, r"$\mathcal{D}_i^{ts}$", kind="data", width=0.8)
    loss = box(ax, 5.15, 0.65, r"$\mathcal{L}(\phi_i, \mathcal{D}_i^{ts})$", kind="loss", width=1.8)
    arrow(ax, theta, phi, curve=-0.3)
    arrow(ax, tasks, (3.9, 2.42))
    arrow(ax, d_tr, phi)
    arrow(ax, phi, loss)
    arrow(ax, d_ts, loss)
    # The outer loop: the meta-gradient of the query losses back to θ.
    arrow(ax, (4.25, 0.45), (0.8, 1.38), kind="grad", dashed=True, curve=-0.35)
    ax.text(0.1, 3.3, "outer loop:", fontsize=10, color=COLORS["grad"], va="top")
    ax.text(0.1, 2.95, r"$\theta \leftarrow \theta - \beta\, \nabla_\theta \sum_i \mathcal{L}(\phi_i, "
            r"\mathcal{D}_i^{ts})$", fontsize=10, color=COLORS["grad"], va="top")
    ax.text(1.05, 0.15, "meta-gradient", fontsize=9, color=COLORS["grad"])
    return fig


def meta_gradient_graph(steps: int = 3, first_order: bool = False):
    """φ^(0) = θ → φ^(1) → ... → φ^(k) → L(φ^(k), D^ts), and the meta-gradient's way back.

    Each inner step is φ^(j+1) = φ^(j) − α g^(j) with g^(j) = ∇L(φ^(j), D^tr). Backpropagating
    through it multiplies by (I − αH^(j)): the identity path (the skip arrow) and the second-order
    path through g^(j). With ``first_order=True`` the second-order paths are drawn cut, as
    first-order MAML cuts them: only the identity path carries the gradient back to θ.
    """
    if not 1 <= steps <= 4:
        raise ValueError(f"steps must be 1..4 (the page has room for four), got {steps}.")
    fig, ax = canvas(7.0, 3.3)
    gap = 5.6 / (steps + 1)
    xs = [0.45 + gap * j * 0.93 for j in range(steps + 1)]
    y_phi, y_g, y_data = 1.05, 2.0, 2.9
    names = [r"$\theta$"] + [rf"$\phi^{{({j})}}$" for j in range(1, steps + 1)]
    phis = [box(ax, x, y_phi, name, kind="theta" if j == 0 else "phi", width=0.62, height=0.46, fontsize=12,
                filled=True) for j, (x, name) in enumerate(zip(xs, names))]
    loss = box(ax, 6.3, y_phi, rf"$\mathcal{{L}}(\phi^{{({steps})}}, \mathcal{{D}}^{{ts}})$", kind="loss",
               width=1.2, height=0.5, fontsize=10)
    d_tr = box(ax, (xs[0] + xs[-1]) / 2, y_data, r"$\mathcal{D}^{tr}$ (every inner step)", kind="data",
               width=max(2.4, xs[-1] - xs[0]), height=0.4, fontsize=10)
    for j in range(steps):
        mid = (xs[j] + xs[j + 1]) / 2
        g = box(ax, mid, y_g, rf"$g^{{({j})}}$", kind="neutral", width=0.55, height=0.4, fontsize=11)
        # Forward: φ^(j) → g^(j) → φ^(j+1), and the identity skip φ^(j) → φ^(j+1).
        arrow(ax, phis[j], phis[j + 1])
        arrow(ax, phis[j], g)
        arrow(ax, g, phis[j + 1])
        arrow(ax, (mid, y_data - 0.2), (mid, y_g + 0.2), kind="data")
        # Backward: the second-order path through g^(j) (−αH^(j)); first-order MAML cuts it.
        if first_order:
            cx, cy = (xs[j] + mid) / 2 + 0.08, (y_g + y_phi) / 2
            ax.plot([cx - 0.1, cx + 0.1], [cy - 0.1, cy + 0.1], color=COLORS["loss"], linewidth=2.5)
            ax.plot([cx - 0.1, cx + 0.1], [cy + 0.1, cy - 0.1], color=COLORS["loss"], linewidth=2.5)
        else:
            ax.text(mid, (y_g + y_phi) / 2 - 0.05, rf"$-\alpha H^{{({j})}}$", fontsize=9, ha="center",
                    va="center", color=COLORS["grad"])
    arrow(ax, phis[-1], loss)
    # The meta-gradient flows right to left along the φ chain (the identity paths).
    arrow(ax, (6.3, y_phi - 0.3), (xs[0], y_phi - 0.3), kind="grad", dashed=True, curve=-0.12)
    label = (rf"first-order: $\nabla_\phi \mathcal{{L}}(\phi^{{({steps})}}, \mathcal{{D}}^{{ts}})$ used as "
             r"$\nabla_\theta$"
             if first_order else
             rf"$\nabla_\theta \mathcal{{L}} = (I - \alpha H^{{(0)}}) \cdots (I - \alpha H^{{({steps - 1})}})\, "
             rf"\nabla_\phi \mathcal{{L}}(\phi^{{({steps})}}, \mathcal{{D}}^{{ts}})$")
    ax.text(3.5, 0.02, label, fontsize=10, ha="center", color=COLORS["grad"])
    return fig


def _panel(corner, width, height):
    from matplotlib.patches import FancyBboxPatch

    return FancyBboxPatch(corner, width, height, boxstyle="round,pad=0.02,rounding_size=0.15",
                          facecolor=COLORS["phi"] + "10", edgecolor=COLORS["phi"], linestyle=":", linewidth=1)
