"""The settings and the small experiment helpers of the chapter on transfer learning.

No single paper runs this chapter's fine-tuning experiments, so their defaults are the book's
scale: the design choices are the lecture's, the rates are chosen by the validation sweeps of
:func:`sweep` on episodes of held-out *validation* alphabets (never on the test alphabets). The
short MAML run at the end is Finn et al.'s (2017) Omniglot setting, whose values are the
defaults of its fields (one inner step of α = 0.4, a meta-batch of 32 tasks, 60,000
meta-iterations, three steps at test time); the book's scale shortens it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..settings import Settings
from ..stats import format_ci, mean_ci95


@dataclass(frozen=True)
class TransferSettings(Settings):
    """Sizes, grids and seeds of the chapter's pretraining, fine-tuning and MAML experiments."""

    # Target episodes: N-way K-shot with Q queries per class (Omniglot has 20 images a class).
    ways: int = 5                   # N
    queries: int = 5                # Q
    shots: tuple = (1, 5, 15)       # K of the test episodes (K + Q <= 20)
    # Pretraining on the 964 background characters.
    pretrain_steps: int = 600       # Adam steps
    pretrain_batch: int = 128       # source images per step
    pretrain_lr: float = 1e-3       # Adam's default rate
    pretrain_evals: int = 5         # evaluations on the held-out drawers during pretraining
    # Fine-tuning.
    steps: int = 20                 # gradient steps on D^tr
    tasks: int = 16                 # test episodes per K (each with its own head draw)
    val_tasks: int = 16             # validation episodes of the sweeps (validation alphabets)
    val_shots: int = 5              # K of the validation episodes
    alphas: tuple = (0.01, 0.03, 0.1, 0.3, 1.0)                 # α grid of the sweeps
    trunk_multipliers: tuple = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)  # trunk rate / head rate (0: frozen)
    decays: tuple = (0.03, 0.1, 0.385, 1.0)  # d of layer-wise rates α d^(G-1-l); 0.385 = 1/2.6, ULMFiT's
    unfreeze_fraction: float = 0.2  # gradual unfreezing: one more group every 20% of the steps
    cv_folds: int = 2               # class-balanced folds of cross-validation on D^tr
    # MAML on source episodes (Finn et al. 2017, Omniglot 5-way 1-shot).
    maml_inner_lr: float = 0.4      # α
    maml_outer_lr: float = 1e-3     # β (Adam)
    maml_batch: int = 32            # tasks per meta-batch
    maml_iterations: int = 60_000   # meta-iterations
    maml_test_steps: int = 3        # steps of α at test time
    maml_curve_steps: int = 10      # the adaptation curve goes this far

    SCALES = {"book": {"maml_batch": 4, "maml_iterations": 300},
              "quick": {"shots": (1, 5), "pretrain_steps": 20, "pretrain_batch": 32, "pretrain_evals": 2,
                        "steps": 4, "tasks": 2, "val_tasks": 2, "alphas": (0.03, 0.3),
                        "trunk_multipliers": (0.0, 1.0), "decays": (0.385,), "maml_batch": 2,
                        "maml_iterations": 4}}

    @property
    def pretrain_eval_every(self) -> int:
        """Adam steps between two evaluations on the held-out drawers."""
        return max(1, self.pretrain_steps // self.pretrain_evals)

    @property
    def unfreeze_every(self) -> int:
        """Steps between two groups of gradual unfreezing."""
        return max(1, round(self.steps * self.unfreeze_fraction))


def sweep(evaluate_one, grid) -> dict:
    """{value: accuracies [tasks]} of ``evaluate_one(value)`` (which returns ``evaluate``'s dict)
    for every value of ``grid``, on the CPU."""
    return {value: evaluate_one(value)["accuracy"].detach().cpu() for value in grid}


def best(results: dict):
    """The grid value of highest mean accuracy (the first of equals: grids go from small to large,
    so a tie keeps the more conservative value)."""
    means = {value: float(acc.mean()) for value, acc in results.items()}
    top = max(means.values())
    return next(value for value, m in means.items() if m >= top - 1e-12)


def summary(results: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(means, 95% half-widths) of a sweep's values, in grid order."""
    stats = [mean_ci95(acc) for acc in results.values()]
    return torch.stack([m for m, _ in stats]), torch.stack([h for _, h in stats])


def table(results: dict, rows, shots, missing: str = "n/a") -> str:
    """A Markdown table: one row per name, one column per K, cells 'mean ± 95% half-width' in %;
    ``results[(name, K)]`` holds the accuracies of the episodes."""
    head = "| | " + " | ".join(f"$K = {k}$" for k in shots) + " |"
    lines = [head, "| --- |" + " ---: |" * len(shots)]
    for name in rows:
        cells = [format_ci(*mean_ci95(results[name, k]), scale=100, digits=1) if (name, k) in results else missing
                 for k in shots]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_accuracy(results: dict, name: str, k: int) -> float:
    return float(results[name, k].mean())
