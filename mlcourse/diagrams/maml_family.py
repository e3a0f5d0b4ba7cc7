"""Diagrams of the MAML family: what each method learns in the outer loop and what it adapts in
the inner loop. Solid arrows compute, dashed arrows carry the meta-gradient."""

from __future__ import annotations

from . import COLORS, arrow, box, canvas


def meta_sgd():
    """Meta-SGD: θ and the rates α are both meta-parameters; the inner step is θ − α ⊙ ∇L."""
    fig, ax = canvas(7.0, 3.0)
    theta = box(ax, 1.0, 1.95, r"$\theta$", "theta", width=1.1)
    alpha = box(ax, 1.15, 0.95, r"$\alpha$, one per entry of $\theta$", "theta", width=2.1, fontsize=9)
    data = box(ax, 3.75, 2.45, r"$\mathcal{D}_i^{tr}$", "data", width=0.9)
    phi = box(ax, 3.75, 1.45, r"$\phi_i = \theta - \alpha \odot \nabla_\theta \mathcal{L}(\theta, \mathcal{D}_i^{tr})$",
              "phi", width=2.9, fontsize=9)
    query = box(ax, 6.2, 1.45, r"$\mathcal{L}(\phi_i, \mathcal{D}_i^{ts})$", "loss", width=1.4)
    arrow(ax, theta, phi)
    arrow(ax, alpha, phi)
    arrow(ax, data, phi)
    arrow(ax, phi, query)
    arrow(ax, (6.2, 1.75), (1.0, 2.25), kind="grad", dashed=True, curve=0.3)
    arrow(ax, (6.2, 1.15), (1.6, 0.65), kind="grad", dashed=True, curve=-0.25)
    ax.text(5.55, 2.55, r"$\nabla_\theta$", fontsize=10, color=COLORS["grad"])
    ax.text(5.75, 0.55, r"$\nabla_\alpha$", fontsize=10, color=COLORS["grad"])
    ax.text(3.5, 0.05, "the outer loop learns where to start and how far to step, per parameter",
            ha="center", fontsize=9, color=COLORS["neutral"])
    return fig


def cavia():
    """CAVIA: the shared θ stays fixed within a task; only the context c_i, fed to the network,
    adapts from zero."""
    fig, ax = canvas(7.0, 3.0)
    theta = box(ax, 0.95, 2.35, r"$\theta$ (shared)", "theta", width=1.4)
    context = box(ax, 0.95, 0.75, r"$c_i$, from $c = 0$", "phi", width=1.5)
    net = box(ax, 3.3, 1.55, r"$f_\theta(x, c_i)$", "neutral", width=1.4)
    query = box(ax, 5.9, 2.35, r"$\mathcal{L}(\theta, c_i, \mathcal{D}_i^{ts})$", "loss", width=1.9, fontsize=9)
    support = box(ax, 5.9, 0.75, r"$\mathcal{L}(\theta, c_i, \mathcal{D}_i^{tr})$", "loss", width=1.9, fontsize=9)
    arrow(ax, theta, net)
    arrow(ax, context, net)
    arrow(ax, net, query)
    arrow(ax, net, support)
    arrow(ax, (4.95, 0.62), (1.7, 0.62), kind="phi")
    ax.text(3.3, 0.3, r"inner loop: $c_i \leftarrow c_i - \alpha \nabla_c \mathcal{L}$", ha="center", fontsize=9,
            color=COLORS["phi"])
    arrow(ax, (4.95, 2.48), (1.65, 2.48), kind="grad", dashed=True)
    ax.text(3.3, 2.6, r"outer loop: $\nabla_\theta$, through $c_i(\theta)$", ha="center", fontsize=9,
            color=COLORS["grad"])
    return fig


def mamlpp(steps: int = 3):
    """MAML++: the unrolled inner loop with per-step rates and batch-norm parameters, and the
    multi-step loss that scores every step."""
    fig, ax = canvas(7.0, 3.0)
    xs = [0.5 + 1.45 * j for j in range(steps + 1)]
    nodes = [box(ax, xs[0], 2.1, r"$\theta$", "theta", width=0.7)]
    for j in range(1, steps + 1):
        nodes.append(box(ax, xs[j], 2.1, rf"$\phi_{j}$", "phi", width=0.7))
        arrow(ax, nodes[j - 1], nodes[j], rf"$\alpha_{{{j - 1}}}$, BN$_{{{j - 1}}}$", fontsize=9, offset=(0.0, 0.1))
    losses = [box(ax, xs[j], 1.05, rf"$w_{j}\,\mathcal{{L}}(\phi_{j})$", "loss", width=1.1, fontsize=9)
              for j in range(1, steps + 1)]
    for j, loss in enumerate(losses, start=1):
        arrow(ax, nodes[j], loss)
    total = box(ax, 6.35, 1.05, r"$\sum_j w_j \mathcal{L}_j$", "loss", width=1.0, fontsize=9)
    arrow(ax, losses[-1], total)
    arrow(ax, (6.35, 0.78), (0.5, 1.83), kind="grad", dashed=True, curve=-0.3)
    ax.text(3.4, 0.12, "the meta-gradient receives every step's query loss", ha="center", fontsize=9,
            color=COLORS["grad"])
    ax.text(3.5, 2.7, r"rates $\alpha_{j}$ and batch-norm weights BN$_{j}$: one set per step, meta-learned",
            ha="center", fontsize=9, color=COLORS["neutral"])
    return fig


def anil():
    """ANIL: the inner loop adapts the head only; the outer loop trains trunk and head."""
    fig, ax = canvas(7.0, 3.0)
    y = 1.6
    image = box(ax, 0.45, y, r"$x$", "data", width=0.5)
    trunk = box(ax, 1.95, y, r"trunk $\theta_{trunk}$" + "\n(frozen in the inner loop)", "theta", width=2.0,
                height=0.8, fontsize=9)
    head = box(ax, 4.6, y, r"head $\phi_{i,head}$", "phi", width=1.4)
    out = box(ax, 6.4, y, r"$\mathcal{L}(\phi_i, \mathcal{D}_i)$", "loss", width=1.1, fontsize=9)
    arrow(ax, image, trunk)
    arrow(ax, trunk, head)
    ax.text(3.42, y + 0.1, "features", ha="center", fontsize=9, color=COLORS["neutral"])
    arrow(ax, head, out)
    arrow(ax, (6.4, y + 0.28), (4.7, y + 0.28), kind="phi", curve=0.5)
    ax.text(5.5, y + 0.92, r"inner: $\nabla_{head}$ on $\mathcal{D}_i^{tr}$", ha="center", fontsize=9,
            color=COLORS["phi"])
    arrow(ax, (6.4, y - 0.28), (1.95, y - 0.42), kind="grad", dashed=True, curve=-0.3)
    ax.text(4.2, 0.28, r"outer: $\nabla_\theta$ on $\mathcal{D}_i^{ts}$ (trunk and head)", ha="center",
            fontsize=9, color=COLORS["grad"])
    ax.text(3.5, 0.0, "MAML's trunk barely changes when it adapts: ANIL stops adapting it",
            ha="center", fontsize=9, color=COLORS["neutral"])
    return fig
