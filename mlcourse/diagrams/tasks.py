"""Diagrams of the chapter on tasks: the structure of a meta-learning problem (tasks drawn from
p(T), each with its D^tr and D^ts, meta-training tasks and a new task) and of one N-way K-shot
episode."""

from __future__ import annotations

from matplotlib.patches import Rectangle

from . import COLORS, arrow, box, canvas


def meta_learning_tasks(shown: int = 3):
    """Tasks T_1..T_n drawn from p(T) train θ; a new task from the same p(T) is adapted on its
    D^tr and judged on its D^ts."""
    fig, ax = canvas(7.0, 3.6)
    source = box(ax, 0.55, 1.7, r"$p(\mathcal{T})$", "data", width=0.9)
    ys = [2.6 - 0.8 * j for j in range(shown - 1)] + [0.55]
    labels = [str(j + 1) for j in range(shown - 1)] + ["n"]
    tasks = []
    for y, i in zip(ys, labels):
        tasks.append(box(ax, 2.3, y, rf"$\mathcal{{T}}_{i}$: $\mathcal{{D}}_{i}^{{tr}}$, $\mathcal{{D}}_{i}^{{ts}}$",
                         "data", width=1.85, fontsize=10))
    ax.text(2.3, (ys[-2] + ys[-1]) / 2, r"$\vdots$", ha="center", va="center", fontsize=11)
    ax.text(2.3, 3.35, "meta-training tasks", ha="center", fontsize=9, color=COLORS["neutral"])
    for t in tasks:
        arrow(ax, source, t)
    theta = box(ax, 4.15, 1.7, r"$\theta$", "theta", width=0.7, filled=True)
    for t in tasks:
        arrow(ax, t, theta, kind="theta")
    ax.text(4.15, 1.05, "learn θ so that\nlearning is quick", ha="center", va="top", fontsize=9,
            color=COLORS["theta"])
    ax.text(5.9, 3.35, "a new task (meta-test)", ha="center", fontsize=9, color=COLORS["neutral"])
    support = box(ax, 5.9, 2.6, r"$\mathcal{D}^{tr}$: adapt on it", "data", width=1.75, fontsize=9)
    phi = box(ax, 5.9, 1.7, r"$\phi = \mathrm{Alg}(\theta, \mathcal{D}^{tr})$", "phi", width=1.75, fontsize=9)
    judged = box(ax, 5.9, 0.8, r"$\mathcal{L}(\phi, \mathcal{D}^{ts})$: judge", "loss", width=1.75, fontsize=9)
    arrow(ax, theta, phi, kind="theta")
    arrow(ax, support, phi)
    arrow(ax, phi, judged)
    arrow(ax, (0.45, 1.98), (5.0, 2.95), curve=-0.3, kind="data")
    ax.text(3.5, -0.05, r"every task, old or new, has two disjoint samples: $\mathcal{D}^{tr}$ to adapt, "
            r"$\mathcal{D}^{ts}$ to judge", ha="center", fontsize=9, color=COLORS["neutral"])
    return fig


def episode(ways: int = 5, shots: int = 2, queries: int = 2):
    """How an N-way K-shot episode is made: N characters of the meta-test pool, labels shuffled,
    K support and Q query images of each."""
    fig, ax = canvas(7.0, 3.2)
    pool = box(ax, 0.8, 1.75, "meta-test\ncharacters\n(disjoint from\nmeta-training)", "data", width=1.45,
               height=1.25, fontsize=9)
    pick = box(ax, 2.5, 1.75, f"pick N = {ways}\ncharacters;\nlabels 0..{ways - 1}\nin random order",
               "neutral", width=1.55, height=1.25, fontsize=9)
    arrow(ax, pool, pick)
    size, gap, left = 0.36, 0.08, 3.75
    top = 2.75
    for c in range(ways):
        x = left + c * (size + gap)
        ax.text(x + size / 2, top + 0.12, str(c), ha="center", fontsize=9, color=COLORS["neutral"])
        for r in range(shots + queries):
            kind = "phi" if r < shots else "loss"
            y = top - (r + 1) * (size + gap) - (0.12 if r >= shots else 0.0)
            ax.add_patch(Rectangle((x, y), size, size, linewidth=1.3, edgecolor=COLORS[kind],
                                   facecolor=COLORS[kind] + "22"))
    right = left + ways * (size + gap)
    y_tr = top - shots * (size + gap) / 2 - size / 2 + 0.1
    y_ts = top - shots * (size + gap) - 0.12 - queries * (size + gap) / 2 - size / 2 + 0.1
    ax.text(right + 0.05, y_tr, rf"$\mathcal{{D}}^{{tr}}$: K = {shots} per class", fontsize=9,
            color=COLORS["phi"], va="center")
    ax.text(right + 0.05, y_ts, rf"$\mathcal{{D}}^{{ts}}$: Q = {queries} per class", fontsize=9,
            color=COLORS["loss"], va="center")
    arrow(ax, (3.3, 1.75), (left - 0.1, 1.75))
    ax.text(left + ways * (size + gap) / 2, top + 0.38, "label", ha="center", fontsize=9, color=COLORS["neutral"])
    ax.text(3.5, 0.1, "a label names a class only within its episode: the next episode shuffles again",
            ha="center", fontsize=9, color=COLORS["neutral"])
    return fig
