"""Diagrams of multi-task learning: hard parameter sharing (a shared trunk, one head per task)
and the three ways to share that the chapter compares."""

from __future__ import annotations

from . import COLORS, arrow, box, canvas


def hard_sharing(tasks: int = 3):
    """x → shared trunk g_θsh → head h_θi of each task → L_i, summed with weights w_i. Dashed:
    the gradient of L_i reaches head i and the trunk, never another task's head."""
    fig, ax = canvas(7.0, 3.4)
    y0 = 1.7
    image = box(ax, 0.35, y0, r"$x$", "data", width=0.45)
    trunk = box(ax, 1.65, y0, "shared trunk\n" + r"$g_{\theta_{sh}}$", "theta", width=1.4, height=0.9,
                filled=True)
    arrow(ax, image, trunk)
    names = [str(i) for i in range(1, tasks)] + ["M"]
    ys = [2.85 - 2.3 * j / max(1, tasks - 1) for j in range(tasks)]
    total = box(ax, 6.35, y0, r"$\sum_i w_i \mathcal{L}_i$", "loss", width=1.1, filled=True)
    for name, y in zip(names, ys):
        head = box(ax, 3.55, y, rf"head $h_{{\theta_{name}}}$", "phi", width=1.25, height=0.42, fontsize=9)
        loss = box(ax, 5.0, y, rf"$\mathcal{{L}}_{name}(\mathcal{{D}}_{name})$", "loss", width=1.15, height=0.42,
                   fontsize=9)
        arrow(ax, trunk, head)
        arrow(ax, head, loss)
        arrow(ax, loss, total)
    if tasks > 3:
        ax.text(3.55, (ys[-2] + ys[-1]) / 2, r"$\vdots$", ha="center", va="center", fontsize=11)
    ax.text(1.65, 0.45, "features that every\ntask uses", ha="center", va="center", fontsize=9,
            color=COLORS["theta"])
    ax.text(3.5, -0.02, r"the gradient of $\mathcal{L}_i$ reaches head $i$ and the trunk, never another task's head",
            ha="center", fontsize=9, color=COLORS["grad"])
    return fig


def _panel_title(ax, x, text):
    ax.text(x, 3.05, text, ha="center", fontsize=10, color=COLORS["neutral"], weight="bold")


def sharing_variants():
    """Three multi-task models side by side: one network for all tasks, hard sharing, and a
    network conditioned on the task's code z_i."""
    fig, ax = canvas(7.0, 3.3)
    # one network: f_θ(x), the same for every task
    _panel_title(ax, 1.1, "one network")
    x1 = box(ax, 1.1, 2.45, r"$x$", "data", width=0.45)
    net1 = box(ax, 1.1, 1.55, r"$f_\theta$", "theta", width=0.9, filled=True)
    out1 = box(ax, 1.1, 0.65, r"$\hat y$ (any task)", "neutral", width=1.3, fontsize=9)
    arrow(ax, x1, net1)
    arrow(ax, net1, out1)
    # hard sharing: g_θsh, then head i
    _panel_title(ax, 3.5, "hard sharing")
    x2 = box(ax, 3.5, 2.45, r"$x$", "data", width=0.45)
    trunk = box(ax, 3.5, 1.55, r"$g_{\theta_{sh}}$", "theta", width=0.9, filled=True)
    heads = [box(ax, 2.85 + 0.65 * j, 0.65, rf"$h_{{\theta_{n}}}$", "phi", width=0.55, fontsize=9)
             for j, n in enumerate(["1", "2", "M"])]
    arrow(ax, x2, trunk)
    for head in heads:
        arrow(ax, trunk, head)
    # task-conditioned: f_θ(x, z_i)
    _panel_title(ax, 5.9, "task-conditioned")
    x3 = box(ax, 5.45, 2.45, r"$x$", "data", width=0.45)
    code = box(ax, 6.35, 2.45, r"$z_i$", "phi", width=0.45)
    net3 = box(ax, 5.9, 1.55, r"$f_\theta(x, z_i)$", "theta", width=1.2, filled=True)
    out3 = box(ax, 5.9, 0.65, r"$\hat y$ of task $i$", "neutral", width=1.3, fontsize=9)
    arrow(ax, x3, net3)
    arrow(ax, code, net3)
    arrow(ax, net3, out3)
    ax.text(3.5, 0.02, "blue: shared by all tasks;  green: one per task", ha="center", fontsize=9,
            color=COLORS["neutral"])
    return fig
