"""Diagrams of MAML for reinforcement learning (chapter 9).

- :func:`meta_rl_loop`: one meta-iteration of MAML-TRPO: sample MDPs M_i ~ p(M), roll out π_θ on
  each (D_i^tr), adapt φ_i = θ + α∇V̂ by one policy-gradient step, roll out π_φi (D_i^ts), and take
  the TRPO meta-update of θ on the returns of the adapted policies, within a KL bound δ between the
  adapted policies before and after the update. A note at θ marks what the supervised loop does
  not have: the data are sampled by the policy, so they depend on θ too.
"""

from __future__ import annotations

from matplotlib.patches import FancyBboxPatch

from . import COLORS, arrow, box, canvas


def meta_rl_loop(first_order: bool = False):
    """Sample tasks, roll out, adapt, roll out again, meta-update: one meta-iteration of MAML-RL.

    With ``first_order=True`` the caption line of the meta-update says that the gradient is taken
    at φ_i (dφ_i/dθ dropped), as first-order MAML does."""
    fig, ax = canvas(7.0, 3.8)
    # The inner loop, per task (in code: every task and trajectory at once, batched).
    ax.add_patch(FancyBboxPatch((1.55, 0.75), 5.35, 2.35, boxstyle="round,pad=0.02,rounding_size=0.15",
                                facecolor=COLORS["phi"] + "10", edgecolor=COLORS["phi"], linestyle=":",
                                linewidth=1))
    ax.text(6.85, 3.0, r"for each task $\mathcal{M}_i$", fontsize=10, ha="right", va="top",
            color=COLORS["phi"])
    tasks = box(ax, 3.2, 3.5, r"1. sample tasks $\mathcal{M}_i \sim p(\mathcal{M})$", kind="data", width=2.9,
                height=0.42)
    theta = box(ax, 0.65, 2.05, r"$\pi_\theta$", kind="theta", width=0.8, height=0.5, fontsize=13, filled=True)
    roll_in = box(ax, 2.75, 2.35, "2. roll out $\\pi_\\theta$:\n$N$ trajectories $\\mathcal{D}_i^{tr}$",
                  kind="data", width=1.85, height=0.7)
    adapt = box(ax, 5.4, 2.35, "3. adapt:\n$\\phi_i = \\theta + \\alpha \\hat\\nabla_\\theta V(\\theta, "
                "\\mathcal{D}_i^{tr})$", kind="phi", width=2.55, height=0.7, filled=True)
    roll_out = box(ax, 5.4, 1.25, "4. roll out $\\pi_{\\phi_i}$:\n$N$ trajectories $\\mathcal{D}_i^{ts}$",
                   kind="data", width=1.95, height=0.7)
    value = box(ax, 2.75, 1.25, r"$\hat V(\phi_i(\theta), \mathcal{D}_i^{ts})$", kind="loss", width=1.85,
                height=0.5)
    arrow(ax, tasks, (3.2, 3.12))
    arrow(ax, theta, roll_in)
    arrow(ax, roll_in, adapt)
    arrow(ax, adapt, roll_out)
    arrow(ax, roll_out, value)
    # The data depend on θ: D^tr is sampled by π_θ, so its distribution moves with θ (DiCE
    # differentiates that dependence; the plain surrogate does not).
    ax.text(0.65, 2.75, "samples\ndepend on θ", fontsize=9, color=COLORS["grad"], ha="center", va="center")
    # The outer loop: the TRPO meta-update from the adapted policies' returns back to θ.
    arrow(ax, (1.8, 1.05), (0.65, 1.78), kind="grad", dashed=True, curve=-0.3)
    how = (r"gradient taken at $\phi_i$ (first order)" if first_order
           else r"through $\phi_i(\theta)$, second order (DiCE)")
    ax.text(0.05, 0.42, r"5. meta-update (TRPO): $\theta \leftarrow \arg\max_{\theta'} \sum_i \hat V(\phi_i(\theta'),"
            r" \mathcal{D}_i^{ts})$ s.t. $\overline{\mathrm{KL}}(\pi_{\phi_i^{old}} \,\|\, \pi_{\phi_i(\theta')})"
            r" \leq \delta$", fontsize=9.5, color=COLORS["grad"], va="center")
    ax.text(0.05, 0.1, how + r"; then repeat from 1", fontsize=9, color=COLORS["grad"], va="center")
    return fig
