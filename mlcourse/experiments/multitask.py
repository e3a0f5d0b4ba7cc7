"""The settings of the chapter on multi-task learning.

The sinusoid tasks are the family of Finn et al. (2017), the network the paper's 1-40-40-1 MLP;
the multi-task experiments themselves are the book's (no paper runs them), so the defaults are
the book's scale and the paper's scale is the same. The uncertainty weighting is Kendall et al.'s
(2018); their experiments (scene understanding) are far from this chapter's, and no number of
theirs is reproduced, so nothing here is registered with :mod:`mlcourse.reproduce`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings


@dataclass(frozen=True)
class MultitaskSettings(Settings):
    """Sizes, seeds and optimiser settings of the chapter's sinusoid and Omniglot experiments."""

    # Sinusoids: every model is trained full-batch with Adam.
    tasks: int = 10                 # M in the first experiment
    points: int = 10                # K, training points per task (the paper's K = 10)
    test_points: int = 100          # fresh test points per task
    steps: int = 1_500              # Adam steps of every sinusoid training
    lr: float = 3e-3                # Adam's rate: 3x its default 1e-3, so full-batch fits finish within `steps`
    trunk_width: int = 4            # features of the hard-sharing trunk: a sinusoid needs 2 (sin x, cos x)
    runs: int = 6                   # independent runs (seeds) per setting of the sweeps
    m_values: tuple = (1, 2, 5, 10, 20)         # M of the "more tasks" sweep
    k_values: tuple = (5, 10, 20, 40)           # K of the "more data" sweep
    companions: tuple = (0, 1, 3, 9)            # companion tasks of the negative-transfer experiment
    # Loss weighting: six tasks, the last three with noisy training labels.
    noise: tuple = (0.0, 0.0, 0.0, 3.0, 3.0, 3.0)   # σ_i of each task's label noise
    noise_points: int = 20                          # training points per task
    floors: tuple = (0.01, 0.1, 1.0, 10.0)          # σ_0² of the inverse-variance weights 1/(σ_i² + σ_0²)
    # Omniglot alphabets as tasks.
    alphabets: int = 10             # M (half data-poor, half data-rich)
    characters: int = 14            # classes per alphabet (the smallest background alphabet has 14)
    poor_drawers: int = 3           # training drawers per character of a data-poor alphabet
    rich_drawers: int = 15          # ... of a data-rich one; drawers 16-20 are every task's test set
    omniglot_steps: int = 300       # Adam steps (batches of `batch` images per alphabet)
    omniglot_lr: float = 1e-3       # Adam's default rate
    batch: int = 14                 # images per alphabet and step: one per character on average
    channels: int = 32              # Conv4 width (the MAML code's Omniglot Conv4 has 64)

    SCALES = {"book": {},
              "quick": {"tasks": 4, "steps": 150, "runs": 2, "m_values": (1, 4), "k_values": (5, 20),
                        "companions": (0, 3), "floors": (0.1, 10.0), "alphabets": 4, "omniglot_steps": 30}}
