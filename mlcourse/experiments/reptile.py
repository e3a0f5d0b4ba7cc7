"""Reptile's Omniglot experiments (Nichol et al. 2018), at three scales."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import distributed, train
from ..evaluation import evaluate
from ..graphs import GraphedStep, NoUpdate
from ..meta.reptile import Reptile
from ..nets import Conv4
from ..settings import Settings
from ..stats import mean_ci95
from ..tasks import load_omniglot
from . import experiment
from .maml import PAPER_ACCURACY, omniglot_samplers


@dataclass(frozen=True)
class ReptileOmniglotSettings(Settings):
    """Nichol et al. 2018, Omniglot (their code's settings): 5 inner steps of Adam (β1 = 0,
    lr 0.001) on minibatches of 10 from 10 training shots per class, meta-batch 5, outer step 1.0
    linearly annealed to 0, 100,000 meta-iterations; evaluated with 50 steps on minibatches of 5."""

    ways: int = 5
    shots: int = 1             # K at test time
    train_shots: int = 10      # examples per class in meta-training episodes
    inner_steps: int = 5
    inner_batch: int = 10
    inner_lr: float = 1e-3     # Adam's step size (β1 = 0)
    tasks: int = 5             # meta-batch
    outer_lr: float = 1.0      # linearly annealed to 0
    iterations: int = 100_000
    test_steps: int = 50
    test_batch: int = 5
    test_episodes: int = 600
    rotations: str = "as_classes"  # the Reptile code makes each rotation of a character a character

    SCALES = {"book": {"iterations": 800, "test_episodes": 300}, "quick": {"iterations": 3, "test_episodes": 20}}


@dataclass(frozen=True)
class Reptile5ShotSettings(ReptileOmniglotSettings):
    shots: int = 5


def reptile_learner(settings: ReptileOmniglotSettings) -> Reptile:
    s = settings
    return Reptile(Conv4(s.ways, downsample="stride"), "cross_entropy", inner_lr=s.inner_lr,
                   inner_steps=s.inner_steps, inner_batch=s.inner_batch, inner_optimizer="adam",
                   test_steps=s.test_steps, test_batch=s.test_batch)


def train_omniglot_reptile(settings: ReptileOmniglotSettings, device, seed: int = 0, progress: bool = True,
                           omniglot=None):
    """Reptile on N-way Omniglot; the outer step size is annealed linearly from ``outer_lr`` to 0."""
    s = settings
    torch.manual_seed(seed)
    sampler = omniglot_samplers(s.ways, s.train_shots, 1, device, omniglot=omniglot, rotations=s.rotations)[0]
    learner = reptile_learner(s)
    theta = learner.init_params(device)
    optimizer = torch.optim.SGD(theta.values(), lr=s.outer_lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1 - it / s.iterations)

    # The meta-gradient in a CUDA graph on a GPU; SGD under the annealing schedule steps eagerly after it.
    meta_gradient = GraphedStep(lambda: learner.step(theta, NoUpdate(), sampler.sample(distributed.share(s.tasks))),
                                torch.device(device))

    def step(it):
        metrics = meta_gradient()
        optimizer.step()
        schedule.step()
        return metrics

    history = train.fit(step, s.iterations, log_every=max(1, min(100, s.iterations // 20)), progress=progress,
                        desc=f"Reptile {s.shots}-shot Omniglot",
                        state={"theta": theta, "optimizer": optimizer, "schedule": schedule})
    return learner, theta, history


def _record(settings: ReptileOmniglotSettings, device) -> dict:
    device = torch.device(device)
    s = settings
    omniglot = load_omniglot(device=device)
    learner, theta, _ = train_omniglot_reptile(s, device, progress=s.scale != "quick", omniglot=omniglot)
    test = omniglot_samplers(s.ways, s.shots, 1, device, omniglot=omniglot, rotations=s.rotations)[1]
    mean, half = mean_ci95(evaluate(learner, theta, test, s.test_episodes)["accuracy"])
    return {"metrics": {"accuracy": {"value": 100 * float(mean), "ci95": 100 * float(half),
                                     "paper": PAPER_ACCURACY.get(("reptile", s.shots)), "unit": "%"}},
            "test_tasks": s.test_episodes,
            "notes": "Meta-test characters are disjoint from meta-training ones (split of the MAML code). Batch "
                     "norm uses batch statistics, so evaluation is transductive; the paper value is Nichol et al.'s "
                     "transductive one. Reptile's inner Adam state starts fresh for every task."}


# Estimates from the eager meta-iteration on an H200 (benchmarks/maml_memory.py: ~30 ms, 5 steps) × 100,000.
for _shots, _settings in [(1, ReptileOmniglotSettings), (5, Reptile5ShotSettings)]:
    experiment(f"reptile-omniglot-5w{_shots}s", title=f"Reptile, Omniglot 5-way {_shots}-shot",
               paper="nichol2018reptile", gpu_minutes=45, settings=_settings)(_record)
