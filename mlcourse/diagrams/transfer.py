"""Diagram of transfer learning by fine-tuning: pretrain on the source, replace the head, adapt
to the target's D^tr with the design choices of the chapter, judge on its D^ts."""

from __future__ import annotations

from . import COLORS, arrow, box, canvas


def pipeline():
    """Source → pretraining → θ_pretrained; target: new head, fine-tuning on D^tr (Algorithm 3.1 of
    the chapter, group g at rate α·m_g) → φ → D^ts."""
    fig, ax = canvas(7.0, 3.4)
    ax.text(0.1, 3.1, "source", fontsize=10, color=COLORS["neutral"], weight="bold")
    ax.text(0.1, 1.45, "target", fontsize=10, color=COLORS["neutral"], weight="bold")
    source = box(ax, 0.85, 2.45, "many labelled\nsource classes", "data", width=1.4, height=0.75, fontsize=9)
    pretrain = box(ax, 2.95, 2.45, "pretrain trunk\n+ source head", "theta", width=1.6, height=0.75, fontsize=9)
    theta = box(ax, 5.35, 2.45, r"$\theta_{\text{pretrained}}$" + "\n(trunk, source head)", "theta", width=1.8,
                height=0.75, fontsize=9, filled=True)
    arrow(ax, source, pretrain)
    arrow(ax, pretrain, theta)
    start = box(ax, 1.0, 0.8, "pretrained trunk\n+ new N-way head", "phi", width=1.75, height=0.75, fontsize=9)
    tune = box(ax, 3.45, 0.8, r"fine-tune on $\mathcal{D}^{tr}$" + "\n" + r"$\phi_{k+1} = \phi_k - \alpha m_g \nabla \hat{\mathcal{L}}$",
               "phi", width=2.15, height=0.75, fontsize=9)
    judge = box(ax, 5.95, 0.8, r"$\mathcal{L}(\phi, \mathcal{D}^{ts})$" + "\ntarget accuracy", "loss",
                width=1.75, height=0.75, fontsize=9)
    arrow(ax, (5.35, 2.07), (1.2, 1.18), kind="theta")
    ax.text(4.75, 1.4, "keep the trunk, drop the source head", ha="center", fontsize=9, color=COLORS["theta"])
    arrow(ax, start, tune)
    arrow(ax, tune, judge)
    ax.text(3.5, 0.05, r"choices: $\alpha$, per-group multipliers $m_g$, frozen or gradually unfrozen layers, "
            "zero or random head", ha="center", fontsize=9, color=COLORS["neutral"])
    return fig
