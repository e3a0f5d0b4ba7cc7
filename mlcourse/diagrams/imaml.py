"""Two ways to differentiate through adaptation: MAML unrolls the inner steps and back-propagates
through every one of them; iMAML differentiates the optimality condition at the solution alone."""

from __future__ import annotations

from . import COLORS, arrow, box, canvas


def unrolled_vs_implicit():
    """Top: MAML's graph θ → φ^(1) → … → φ^(k) → L^ts, every step kept for the backward pass
    (dashed). Bottom: iMAML's inner solver (no graph) gives φ*; the meta-gradient is the solution
    of (I + H/λ) g = ∇L^ts, found by conjugate gradient with Hessian-vector products at φ*."""
    fig, ax = canvas(7.0, 4.1)
    # --- MAML, unrolled ----------------------------------------------------------------------
    ax.text(0.1, 3.85, "MAML: differentiate through the unrolled steps", fontsize=10, weight="bold",
            color=COLORS["neutral"])
    y = 3.1
    theta = box(ax, 0.55, y, "$\\theta$", "theta", width=0.6)
    steps = [box(ax, 1.75, y, "$\\phi^{(1)}$", "phi", width=0.7, filled=True),
             box(ax, 2.95, y, "$\\phi^{(2)}$", "phi", width=0.7, filled=True)]
    ax.text(3.85, y, "$\\cdots$", fontsize=14, ha="center", va="center")
    steps.append(box(ax, 4.75, y, "$\\phi^{(k)}$", "phi", width=0.7, filled=True))
    loss = box(ax, 6.25, y, "$\\mathcal{L}(\\phi^{(k)}, \\mathcal{D}^{ts})$", "loss", width=1.3)
    chain = [theta, *steps]
    for a, b in zip(chain[:2], chain[1:3]):
        arrow(ax, a, b)
        arrow(ax, b, a, kind="grad", dashed=True, curve=0.45)
    arrow(ax, (3.33, y), (3.62, y))
    arrow(ax, (4.08, y), (4.37, y))
    arrow(ax, steps[2], loss)
    arrow(ax, loss, steps[2], kind="grad", dashed=True, curve=0.45)
    ax.text(3.5, y - 0.78, "every step $\\phi^{(j+1)} = \\phi^{(j)} - \\alpha\\nabla\\mathcal{L}(\\phi^{(j)}, "
            "\\mathcal{D}^{tr})$ is kept for the backward pass (dashed):\nmemory and backward time grow with $k$",
            fontsize=9, ha="center", color=COLORS["neutral"])
    # --- iMAML, implicit ---------------------------------------------------------------------
    ax.text(0.1, 1.95, "iMAML: differentiate the solution's optimality condition", fontsize=10, weight="bold",
            color=COLORS["neutral"])
    y = 1.2
    theta2 = box(ax, 0.55, y, "$\\theta$", "theta", width=0.6)
    solver = box(ax, 2.35, y, "any solver, no graph:\n$\\arg\\min_\\phi \\mathcal{L}(\\phi, \\mathcal{D}^{tr})"
                 " + \\frac{\\lambda}{2}\\|\\phi-\\theta\\|^2$", "data", width=2.5, height=0.7, fontsize=9)
    star = box(ax, 4.2, y, "$\\phi^\\star$", "phi", width=0.6, filled=True)
    loss2 = box(ax, 6.25, y, "$\\mathcal{L}(\\phi^\\star, \\mathcal{D}^{ts})$", "loss", width=1.3)
    arrow(ax, theta2, solver)
    arrow(ax, solver, star)
    arrow(ax, star, loss2)
    cg = box(ax, 4.2, 0.3, "CG: $(I + H/\\lambda)\\, g = \\nabla_\\phi\\mathcal{L}^{ts}$", "grad", width=2.6,
             height=0.42, fontsize=9)
    arrow(ax, loss2, cg, kind="grad", dashed=True, curve=-0.25)
    arrow(ax, cg, theta2, kind="grad", dashed=True, curve=-0.2)
    ax.text(0.1, 0.15, "$g$: the meta-gradient", fontsize=9, color=COLORS["grad"])
    ax.text(6.95, 0.12, "only $\\phi^\\star$ is kept:\nmemory flat in $k$", fontsize=9, ha="right",
            color=COLORS["neutral"])
    return fig
