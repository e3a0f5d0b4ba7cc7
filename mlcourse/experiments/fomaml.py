"""The experiments of chapter 6, first-order MAML, at three scales.

- :class:`DirectionSettings` / :func:`direction_sweep`: how far the first-order meta-gradient is
  from MAML's on the same task batch, over inner rates α and inner steps, at any θ;
- :func:`train_sinusoid_same_batch`: the control run of first-order MAML whose query set is its
  support set, which removes the gradient-alignment term (Nichol et al. 2018);
- :class:`CostSettings` / :func:`cost_curves`: time and memory of one meta-gradient of MAML,
  first-order MAML and Reptile against the number of inner steps.

The main meta-training runs are those of chapter 5 (:mod:`mlcourse.experiments.maml`), with its
settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import profile, train
from ..meta.maml import MAML
from ..nets import MLP, Params
from ..settings import Settings
from ..tasks import SinusoidFamily, TaskBatch
from .maml import SinusoidSettings


def _flat(grads: Params) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads.values()])


@dataclass(frozen=True)
class DirectionSettings(Settings):
    """The first-order and the exact meta-gradient on the same sinusoid task batches (the setting
    of Finn et al. 2017, §5.1: MLP 1-40-40-1, K = 10, meta-batch 25). The paper trains with the one
    inner rate α = 0.01; the grid of α around it and the inner steps are the book's, chosen to
    bracket that value by a factor of 30 each way and to show what more steps do."""

    tasks: int = 25                                        # meta-batch
    shots: int = 10                                        # K
    alphas: tuple = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)   # α, the book's grid around the paper's 0.01
    steps: tuple = (1, 5)                                  # inner steps
    batches: int = 4                                       # task batches averaged per point
    SCALES = {"book": {}, "quick": {"alphas": (0.001, 0.01, 0.1), "batches": 1}}


def meta_gradients(theta: Params, batch, alpha: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(MAML's, first-order MAML's) meta-gradient on ``batch``, each flattened to one vector."""
    net = MLP()
    full = MAML(net, "mse", inner_lr=alpha, inner_steps=steps).meta_gradient(theta, batch).grads
    first = MAML(net, "mse", inner_lr=alpha, inner_steps=steps, first_order=True).meta_gradient(theta, batch).grads
    return _flat(full), _flat(first)


def direction_sweep(settings: DirectionSettings, thetas: dict[str, Params], device, seed: int = 0) -> list[dict]:
    """For each θ of ``thetas`` ({label: θ}), inner step count and α of the grid: the cosine between
    the two meta-gradients and the relative difference ‖g − g_FO‖ / ‖g_FO‖, averaged over
    ``batches`` task batches (the same batches for every θ, α and step count). A non-finite
    value (an inner loop that diverges) is kept as nan."""
    s = settings
    generator = torch.Generator().manual_seed(seed)
    batches = [SinusoidFamily().sample(s.tasks, s.shots, device=device, generator=generator) for _ in range(s.batches)]
    rows = []
    for label, theta in thetas.items():
        theta = {k: v.detach().clone().requires_grad_(True) for k, v in theta.items()}
        for steps in s.steps:
            for alpha in s.alphas:
                cosines, relatives = [], []
                for batch in batches:
                    full, first = meta_gradients(theta, batch, alpha, steps)
                    cosines.append(float(full @ first / (full.norm() * first.norm())))
                    relatives.append(float((full - first).norm() / first.norm()))
                rows.append({"theta": label, "steps": steps, "alpha": alpha,
                             "cosine": sum(cosines) / len(cosines), "relative": sum(relatives) / len(relatives)})
    return rows


def train_sinusoid_same_batch(settings: SinusoidSettings, device, seed: int = 0, progress: bool = True):
    """First-order MAML on sinusoids whose every task has 2K points used as both D^tr and D^ts:
    as many points per task as the usual K support and K query points, but the query gradient is
    taken on the very points of the inner step. Everything else is chapter 5's run
    (:func:`mlcourse.experiments.maml.train_sinusoid`). Returns (learner, θ, history)."""
    if not isinstance(settings, SinusoidSettings):
        raise TypeError(f"settings must be SinusoidSettings (e.g. SinusoidSettings.at()), got {settings!r}.")
    s = settings
    torch.manual_seed(seed)
    family = SinusoidFamily()
    learner = MAML(MLP(), "mse", inner_lr=s.inner_lr, inner_steps=s.inner_steps, first_order=True,
                   test_steps=s.test_steps)
    theta = learner.init_params(device)
    optimizer = torch.optim.Adam(theta.values(), lr=s.outer_lr)

    def step(iteration):
        points = family.sample(s.tasks, 2 * s.shots, device=device)
        batch = TaskBatch(points.x_tr, points.y_tr, points.x_tr, points.y_tr)
        return learner.step(theta, optimizer, batch)

    history = train.fit(step, s.iterations, log_every=max(1, s.iterations // 50), progress=progress,
                        desc="first-order MAML, query = support", hint=learner.divergence_hint(),
                        state={"theta": theta, "optimizer": optimizer})
    return learner, theta, history


@dataclass(frozen=True)
class CostSettings(Settings):
    """Time and peak memory of one meta-gradient against the number of inner steps, with
    :func:`mlcourse.profile.meta_iteration_cost`: the sinusoid MLP with the paper's meta-batch 25,
    and Conv4 on 5-way 1-shot episodes (random images: the cost does not depend on the pixels)
    with a meta-batch of 4, Finn et al.'s for MiniImagenet 1-shot, small enough for ten inner steps
    of second-order MAML to fit a laptop's memory."""

    steps: tuple = tuple(range(1, 11))   # inner steps; Finn et al. use 1 (Omniglot) to 5 (MiniImagenet)
    sinusoid_tasks: int = 25
    omniglot_tasks: int = 4
    repeats: int = 3
    methods: tuple = ("maml", "fomaml", "reptile")
    SCALES = {"book": {"steps": (1, 2, 4, 6, 8, 10)}, "quick": {"steps": (1, 3), "repeats": 1}}


def cost_curves(settings: CostSettings, device) -> dict[tuple[str, str], list[tuple[int, float, int | None]]]:
    """{(setting, method): [(steps, seconds, peak bytes or None), ...]}."""
    s = settings
    out = {}
    for setting, tasks in [("sinusoid", s.sinusoid_tasks), ("omniglot", s.omniglot_tasks)]:
        for method in s.methods:
            out[setting, method] = [(k, *profile.meta_iteration_cost(method, setting, k, device, tasks=tasks,
                                                                    repeats=s.repeats)) for k in s.steps]
    return out
