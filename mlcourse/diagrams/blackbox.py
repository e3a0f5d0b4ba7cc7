"""Diagrams of chapter 4: the black-box computation graph, the MANN's memory, the transformer's mask."""

from __future__ import annotations

import numpy as np
from matplotlib.patches import Rectangle

from . import COLORS, arrow, box, canvas


def computation_graph():
    """φ_i = f_θ(D_i^tr), ŷ = g_{φ_i}(x^ts), L(ŷ, y^ts); the gradient of L reaches θ through φ_i."""
    fig, ax = canvas(7.0, 3.0)
    y = 1.45
    d_tr = box(ax, 0.6, y, r"$\mathcal{D}_i^{tr}$", "data", width=0.9)
    f = box(ax, 2.0, y, r"$f_\theta$", "theta", width=0.9, filled=True)
    phi = box(ax, 3.4, y, r"$\phi_i$", "phi", width=0.8)
    g = box(ax, 4.75, y, r"$g_{\phi_i}$", "phi", width=0.9, filled=True)
    loss = box(ax, 6.25, y, r"$\mathcal{L}$", "loss", width=0.9)
    theta = box(ax, 2.0, 2.55, r"$\theta$", "theta", width=0.7)
    x_ts = box(ax, 4.75, 0.35, r"$x^{ts}$", "data", width=0.8)
    y_ts = box(ax, 6.25, 0.35, r"$y^{ts}$", "data", width=0.8)
    arrow(ax, d_tr, f)
    arrow(ax, f, phi, "one pass", offset=(0, 0.3))
    arrow(ax, phi, g)
    arrow(ax, g, loss, r"$\hat y$", offset=(0, 0.3))
    arrow(ax, theta, f)
    arrow(ax, x_ts, g)
    arrow(ax, y_ts, loss)
    arrow(ax, loss, theta, r"$\nabla_\theta \mathcal{L}$ through $\phi_i$", kind="grad", dashed=True, curve=0.3,
          offset=(0, 0.1))
    ax.text(0.1, 0.05, "adapting is a forward pass;\nmeta-training is back-propagation", fontsize=9,
            color=COLORS["neutral"])
    return fig


def mann_memory():
    """One step of the MANN: the controller's key is written (LRUA), then read by content."""
    fig, ax = canvas(7.0, 3.8)
    x = box(ax, 0.75, 3.25, r"$x_t,\ y_{t-1},\ r_{t-1}$", "data", width=1.3)
    ctrl = box(ax, 0.75, 2.15, "LSTM\ncontroller", "theta", width=1.3, height=0.7, filled=True)
    head = box(ax, 0.75, 0.95, r"$k_t,\ g_t,\ \beta_t$", "theta", width=1.3)
    arrow(ax, x, ctrl)
    arrow(ax, ctrl, head)
    left, bottom, width, row = 2.75, 1.0, 1.35, 0.22
    weights = np.array([0.02, 0.03, 0.05, 0.02, 0.3, 0.04, 0.06, 0.02, 0.4, 0.06])
    for i in range(10):
        y = bottom + i * row
        shade = "#bcd7ee" if i == 6 else "#dddddd"
        ax.add_patch(Rectangle((left, y), width, row * 0.85, facecolor=shade, edgecolor="#999999", lw=0.6))
        ax.add_patch(Rectangle((left + width + 0.08, y), 1.6 * weights[i], row * 0.85, facecolor=COLORS["phi"],
                               edgecolor="none"))
    ax.add_patch(Rectangle((left, bottom + 2 * row), width, row * 0.85, facecolor="none",
                           edgecolor=COLORS["loss"], lw=1.8))
    top = bottom + 10 * row
    ax.text(left + width / 2, top + 0.08, r"memory $M_t$", ha="center", fontsize=9)
    ax.text(left + width + 0.4, top + 0.08, r"$w^r_t$", ha="center", fontsize=9, color=COLORS["phi"])
    ax.text(left - 0.08, bottom + 1.2 * row, "least used", ha="right", va="top", fontsize=9,
            color=COLORS["loss"])
    ax.text(left - 0.08, bottom + 6 * row + 0.09, r"read at $t-1$", ha="right", va="center", fontsize=9,
            color=COLORS["theta"])
    arrow(ax, head, (left, bottom + 2.4 * row), "1. write", kind="loss", offset=(-0.1, 0.05))
    ax.text(left + width / 2 + 0.2, 0.6, r"$w^w_t = \sigma(g_t)\,w^r_{t-1} + (1-\sigma(g_t))\,w^{lu}_{t-1}$",
            ha="center", fontsize=9, color=COLORS["loss"])
    ax.text(left + width / 2 + 0.2, 0.25, r"$M_t = M_{t-1} + w^w_t\,k_t^\top$ (least-used row zeroed first)",
            ha="center", fontsize=9, color=COLORS["loss"])
    read = box(ax, 6.1, 2.25, r"$r_t = \sum_i w^r_t(i) M_t(i)$", "phi", width=1.7, height=0.55, fontsize=9)
    arrow(ax, (left + width + 0.75, 2.25), (6.1 - 0.9, 2.25), "2. read", kind="phi", offset=(0.0, 0.06))
    ax.text(5.85, 3.0, r"$w^r_t = \mathrm{softmax}(\beta_t \cos(k_t, M_t))$", ha="center", fontsize=9,
            color=COLORS["phi"])
    out = box(ax, 6.05, 1.25, r"$\hat y_t$ from $[h_t, r_t]$", "loss", width=1.75, height=0.5, fontsize=9)
    arrow(ax, read, out)
    return fig


def attention_mask(steps: int = 5, queries: int = 2):
    """Who attends to whom in the in-context transformer: pair tokens (x_s, y_s), the online query of
    each step, and the queries of D^ts."""
    fig, ax = canvas(7.0, 4.3)
    rows = [f"$(x_{s + 1}, y_{s + 1})$" for s in range(steps)] + [f"$x_{t + 1}$ ?" for t in range(steps)] \
        + [f"query {q + 1}" for q in range(queries)]
    cols = [f"{s + 1}" for s in range(steps)] + ["self"]
    cell, left, top = 0.27, 1.3, 3.75
    for i, name in enumerate(rows):
        y = top - (i + 1) * cell
        ax.text(left - 0.08, y + cell / 2, name, ha="right", va="center", fontsize=9)
        for j in range(steps + 1):
            if i < steps:            # pair s sees pairs s' <= s (itself among them)
                on = j < steps and j <= i
            elif i < 2 * steps:      # online query t sees pairs s < t and itself
                t = i - steps
                on = (j < steps and j < t) or j == steps
            else:                    # a query of D^ts sees every pair and itself
                on = True
            color = COLORS["theta"] if i < steps else COLORS["phi"] if i < 2 * steps else COLORS["loss"]
            ax.add_patch(Rectangle((left + j * cell, y), cell * 0.92, cell * 0.92,
                                   facecolor=color if on else "#f2f2f2", edgecolor="white", alpha=0.85 if on else 1))
    for j, name in enumerate(cols):
        ax.text(left + j * cell + cell / 2, top + 0.04, name, ha="center", va="bottom", fontsize=9)
    ax.text(left + steps * cell / 2, top + 0.3, "pair tokens $s$", ha="center", fontsize=9)
    x_text = left + (steps + 1) * cell + 0.35
    notes = [("pair tokens: the prompt, read causally", COLORS["theta"], top - steps * cell / 2),
             ("online queries: step t sees the pairs\nbefore it, never its own label", COLORS["phi"],
              top - 1.5 * steps * cell),
             ("queries of $D^{ts}$: all of $D^{tr}$,\nno other query", COLORS["loss"],
              top - (2 * steps + queries / 2) * cell)]
    for text, color, y in notes:
        ax.text(x_text, y, text, va="center", fontsize=9, color=color)
    ax.text(left - 1.2, 0.1, "each row (a token) attends to the coloured columns", fontsize=9,
            color=COLORS["neutral"])
    return fig
