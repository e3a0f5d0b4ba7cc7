"""Reptile's geometry: from θ, a few SGD steps on each task reach φ_i near that task's solutions;
θ moves a fraction β of the way toward the mean of the φ_i."""

from __future__ import annotations

import numpy as np

from . import COLORS, canvas


def reptile_update(beta: float = 0.7):
    """θ, three tasks' solution sets (curves), k SGD steps from θ toward each (dotted, ending at
    φ_i), the directions φ_i − θ, and the update θ + β·mean_i(φ_i − θ)."""
    fig, ax = canvas(7.0, 3.6)
    theta = np.array([1.0, 0.9])
    t = np.linspace(0.0, 1.0, 50)[:, None]
    # Three solution sets W_i, gently curved: (start, end, bulge) of each.
    sets = [((2.1, 3.45), (4.3, 3.05), 0.1), ((4.2, 0.3), (4.4, 2.5), -0.1), ((1.5, 3.3), (0.3, 2.3), 0.1)]
    phis = []
    for i, (a, b, bulge) in enumerate(sets):
        a, b = np.array(a), np.array(b)
        normal = np.array([-(b - a)[1], (b - a)[0]]) / np.linalg.norm(b - a)
        points = a + t * (b - a) + bulge * 4 * t * (1 - t) * normal
        ax.plot(points[:, 0], points[:, 1], color=COLORS["data"], lw=3, alpha=0.6, solid_capstyle="round")
        ax.text(*((a if i == 2 else b) + np.array([0.08, 0.0])), f"$\\mathcal{{W}}_{i + 1}$", fontsize=11, color=COLORS["data"],
                va="center")
        # k SGD steps from θ toward the nearest point of W_i, each shorter than the last, not quite arriving.
        target = points[np.argmin(((points - theta) ** 2).sum(1))]
        side = np.array([-(target - theta)[1], (target - theta)[0]]) / np.linalg.norm(target - theta)
        path = [theta]
        for j in range(4):
            path.append(path[-1] + 0.5 * (target - path[-1]) + 0.06 * side * (-1) ** j)
        path = np.array(path)
        ax.plot(path[:, 0], path[:, 1], ":", color=COLORS["phi"], lw=1.5)
        ax.scatter(path[1:-1, 0], path[1:-1, 1], s=10, color=COLORS["phi"], zorder=3)
        ax.scatter(*path[-1], s=45, color=COLORS["phi"], zorder=4)
        label_at = path[-1] + np.array([(0.1, -0.25), (-0.05, 0.15), (0.1, -0.22)][i])
        ax.text(*label_at, f"$\\phi_{i + 1}$", fontsize=11, color=COLORS["phi"])
        phis.append(path[-1])
        ax.annotate("", xy=path[-1], xytext=theta,
                    arrowprops=dict(arrowstyle="-|>", color=COLORS["phi"], lw=0.8, alpha=0.5, shrinkA=4, shrinkB=4))
    mean = np.mean(phis, axis=0)
    new = theta + beta * (mean - theta)
    ax.scatter(*mean, s=45, facecolor="white", edgecolor=COLORS["theta"], zorder=4)
    ax.plot([new[0], mean[0]], [new[1], mean[1]], "--", color=COLORS["theta"], lw=1)
    ax.annotate("", xy=new, xytext=theta, arrowprops=dict(arrowstyle="-|>", color=COLORS["theta"], lw=2.5,
                                                          shrinkA=4, shrinkB=0))
    ax.scatter(*theta, s=70, color=COLORS["theta"], zorder=5)
    ax.text(*(theta + np.array([-0.3, -0.1])), "$\\theta$", fontsize=13, color=COLORS["theta"])
    ax.text(1.55, 1.2, "$\\theta + \\beta\\,\\frac{1}{n}\\sum_i(\\phi_i - \\theta)$", fontsize=10,
            color=COLORS["theta"])
    # The key, on the right.
    ax.text(4.95, 3.3, "one meta-iteration", fontsize=10, weight="bold", color=COLORS["neutral"])
    key = [(COLORS["data"], "-", "$\\mathcal{W}_i$: solutions of task $i$"),
           (COLORS["phi"], ":", "$k$ SGD steps on $\\mathcal{D}_i^{tr}$"),
           (COLORS["phi"], "-", "direction $\\phi_i - \\theta$"),
           (COLORS["theta"], "-", "the update of $\\theta$")]
    for j, (color, style, text) in enumerate(key):
        y = 2.85 - 0.42 * j
        ax.plot([4.95, 5.25], [y, y], style, color=color, lw=2.5 if j in (0, 3) else 1.5)
        ax.text(5.33, y, text, fontsize=9, va="center", color=COLORS["neutral"])
    return fig
