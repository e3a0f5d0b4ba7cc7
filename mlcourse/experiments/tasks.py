"""The settings of the chapter on tasks: how many samples its measurements average.

No paper runs these experiments (they illustrate the definitions of the chapter), so the
defaults are the book's scale, and the paper's scale is the same as the book's. Nothing here is
registered with :mod:`mlcourse.reproduce`: no paper's number is reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings


@dataclass(frozen=True)
class TasksSettings(Settings):
    """The chapter's sample sizes and the two constants of its least-squares learner."""

    repeats: int = 2_000        # K-shot data sets (or tasks) averaged at every K of the loss figures
    mc_points: int = 20_000     # fresh points in the Monte Carlo estimate of the fixed predictor's true loss
    grid_points: int = 2_000    # an even grid of [−5, 5] for the true loss of fitted predictors (quadrature)
    noise: float = 1.0          # σ of the label noise in the fitted-predictor experiment (E[A²]/2 ≈ 4.2)
    ridge: float = 1e-3         # keeps the K < p systems solvable; negligible once K ≥ p
    fixed_shots: tuple = (1, 2, 5, 10, 20, 50, 100)          # K of the fixed-predictor experiment
    fit_shots: tuple = (2, 3, 5, 7, 10, 20, 50, 100)         # K of the fitted-predictor experiment
    episodes: int = 2_000       # episodes per setting of the 1-nearest-neighbour baseline
    # (N, K, Q) of the baseline: the four Omniglot benchmarks. A 20-way episode with Q = 1 has as
    # many queries as a 5-way one with Q = 4; the mean accuracy does not depend on Q, the cost does.
    baselines: tuple = ((5, 1, 5), (5, 5, 5), (20, 1, 1), (20, 5, 1))
    queries: int = 5            # Q of the one-alphabet episodes

    SCALES = {"book": {}, "quick": {"repeats": 200, "mc_points": 2_000, "episodes": 200}}
