"""Reptile's experiments (Nichol et al. 2018), at three scales: the sine-wave toy of the authors'
demonstration and 5-way Omniglot with the settings of their code."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .. import distributed, train
from ..evaluation import evaluate
from ..graphs import GraphedStep, NoUpdate
from ..meta.reptile import Reptile
from ..nets import MLP, Conv4
from ..settings import Settings
from ..stats import mean_ci95
from ..tasks import EpisodeSampler, SinusoidFamily, TaskBatch, load_omniglot
from . import experiment
from .maml import PAPER_ACCURACY

# --- the two-dimensional toy -------------------------------------------------------------------


@dataclass(frozen=True)
class ToySettings(Settings):
    """The chapter's picture of the update: θ ∈ R², three tasks whose solution sets are the sides
    of a triangle around the origin (lines a_iᵀθ = 1 tangent to the unit circle), the first ten
    times steeper than the others, taken in turn, one per meta-iteration. Not from the paper.

    α = 0.05 makes one SGD step land exactly on the steep task's line (its loss 10·(aᵀθ − 1)² has
    curvature 20 along a, and 1 − 20α = 0), the largest step that never overshoots it; the
    shallow tasks (curvature 2) close 10% of the distance per step, so 30 steps nearly reach their
    lines (0.9³⁰ ≈ 4% of it is left). β = 0.2 moves θ a fifth of the way each time: small enough that θ averages the three
    tasks instead of following the last one, large enough to settle within the iterations. θ
    starts at (1.6, 1.4), outside the triangle and away from both fixed points, so that the paths
    show."""

    inner_lr: float = 0.05         # α
    outer_lr: float = 0.2          # β
    steepness: float = 10.0        # curvature of the first task over the others'
    start: tuple = (1.6, 1.4)
    many_steps: int = 30           # "many" inner steps
    iterations: int = 300

    SCALES = {"quick": {"iterations": 90}}


def toy_tasks(settings: ToySettings) -> tuple[TaskBatch, torch.Tensor, torch.Tensor]:
    """The three tasks (one example each: x = √s_i a_i, y = √s_i, so that the squared error is
    s_i (a_iᵀθ − 1)²), their unit normals a_i and curvatures s_i."""
    angles = torch.tensor([math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3])
    normals = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    curvature = torch.tensor([settings.steepness, 1.0, 1.0])
    x = (curvature.sqrt()[:, None] * normals).view(3, 1, 2)
    y = curvature.sqrt().view(3, 1, 1)
    return TaskBatch(x, y, x, y), normals, curvature


def run_toy(settings: ToySettings, k: int, iterations: int | None = None):
    """Reptile with k inner steps on the toy, the tasks in turn: θ after every meta-iteration
    [iterations + 1, 2] and each meta-iteration's φ_i [iterations, 2]."""
    s = settings
    tasks, _, _ = toy_tasks(s)
    learner = Reptile(nn.Sequential(nn.Linear(2, 1, bias=False)), "mse", inner_lr=s.inner_lr, inner_steps=k)
    theta = {"0.weight": torch.tensor([list(s.start)], requires_grad=True)}
    optimizer = torch.optim.SGD(theta.values(), lr=s.outer_lr)
    path, solutions = [theta["0.weight"].detach().clone()[0]], []
    for it in range(s.iterations if iterations is None else iterations):
        learner.step(theta, optimizer, tasks[[it % 3]])
        # The step left the pseudo-gradient θ − φ_i in .grad: φ_i is the point θ moved toward.
        solutions.append(path[-1] - theta["0.weight"].grad[0].detach().clone())
        path.append(theta["0.weight"].detach().clone()[0])
    return torch.stack(path), torch.stack(solutions)


# --- sinusoid regression -----------------------------------------------------------------------


@dataclass(frozen=True)
class SinusoidSettings(Settings):
    """Reptile on the sinusoid family, after the sine-wave demonstration that accompanies the paper
    (Nichol & Schulman's code: 50 points per task, one pass of SGD over them in minibatches of 10
    at step 0.02, outer step 0.1 annealed linearly to 0, one task per meta-iteration for 30,000).
    So that the minibatches differ, meta-training tasks have ``train_points`` points; new tasks are
    adapted on K = ``shots`` points, as for MAML, by full-batch SGD at the same step α."""

    tasks: int = 1             # meta-batch (the demonstration: one task per meta-iteration)
    train_points: int = 50     # points of D^tr in meta-training
    inner_batch: int = 10      # points per inner step
    inner_steps: int = 5       # one pass over the 50 points
    inner_lr: float = 0.02     # α, in training and at test time
    outer_lr: float = 0.1      # β, annealed linearly to 0
    iterations: int = 30_000
    shots: int = 10            # K at test time
    test_steps: int = 10

    # The book batches 25 tasks (MAML's meta-batch, one vectorised computation) and runs fewer
    # meta-iterations: 25 × 2,000 tasks, more than the demonstration's 30,000.
    SCALES = {"book": {"tasks": 25, "iterations": 2_000}, "quick": {"tasks": 25, "iterations": 60}}


def sinusoid_learner(settings: SinusoidSettings, inner_batch: int | None | str = "settings") -> Reptile:
    s = settings
    return Reptile(MLP(), "mse", inner_lr=s.inner_lr, inner_steps=s.inner_steps,
                   inner_batch=s.inner_batch if inner_batch == "settings" else inner_batch)


def train_sinusoid(settings: SinusoidSettings, device, seed: int = 0, progress: bool = True,
                   train_points: int | None = None, inner_batch: int | None | str = "settings"):
    """Reptile on sinusoids; returns (learner, θ, history). ``train_points`` and ``inner_batch``
    override the settings (e.g. 10 points, full batch: the inner steps then see one batch)."""
    s = settings
    torch.manual_seed(seed)
    family = SinusoidFamily()
    points = s.train_points if train_points is None else train_points
    learner = sinusoid_learner(s, inner_batch)
    theta = learner.init_params(device)
    optimizer = torch.optim.SGD(theta.values(), lr=s.outer_lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1 - it / s.iterations)

    def step(it):
        metrics = learner.step(theta, optimizer, family.sample(distributed.share(s.tasks), points, device=device))
        schedule.step()
        return metrics

    history = train.fit(step, s.iterations, log_every=max(1, s.iterations // 50), progress=progress,
                        desc="Reptile on sinusoids", state={"theta": theta, "optimizer": optimizer, "schedule": schedule})
    return learner, theta, history


# --- Omniglot ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReptileOmniglotSettings(Settings):
    """Nichol et al. 2018, 5-way Omniglot, with the settings of their code: 10 training shots per
    class (D^tr of 50 images), 5 inner steps of Adam (β1 = 0, step 0.001) on minibatches of 10,
    its moments kept across tasks, meta-batch 5, outer step 1.0 linearly annealed to 0, 100,000
    meta-iterations; evaluated by 50 steps on minibatches of 5 from the K-shot D^tr, on characters
    never seen in meta-training and not rotated. Their 1-shot and 5-shot runs train identically
    (only ``shots`` at test time differs)."""

    ways: int = 5
    shots: int = 1             # K at test time
    train_shots: int = 10      # examples per class in meta-training episodes
    inner_steps: int = 5
    inner_batch: int = 10
    inner_lr: float = 1e-3     # Adam's step size (β1 = 0)
    keep_adam_state: bool = True   # one Adam for the whole run, as in the reference code
    tasks: int = 5             # meta-batch
    outer_lr: float = 1.0      # linearly annealed to 0
    iterations: int = 100_000
    test_steps: int = 50
    test_batch: int = 5
    test_episodes: int = 10_000    # the reference code's evaluation samples
    val_every: int = 0         # meta-validation every this many iterations (0: none, as the reference code)
    val_episodes: int = 100
    rotations: str = "as_classes"  # meta-training: each rotation of a character is a character
    test_rotations: bool = False   # meta-test characters are not rotated in the reference code

    SCALES = {"book": {"iterations": 600, "test_episodes": 200, "val_every": 150, "val_episodes": 60},
              "quick": {"iterations": 3, "test_episodes": 10, "val_every": 3, "val_episodes": 5, "test_steps": 10}}


@dataclass(frozen=True)
class Reptile5ShotSettings(ReptileOmniglotSettings):
    shots: int = 5


def reptile_learner(settings: ReptileOmniglotSettings) -> Reptile:
    s = settings
    return Reptile(Conv4(s.ways, downsample="stride"), "cross_entropy", inner_lr=s.inner_lr,
                   inner_steps=s.inner_steps, inner_batch=s.inner_batch, inner_optimizer="adam",
                   test_steps=s.test_steps, test_batch=s.test_batch, keep_adam_state=s.keep_adam_state)


def omniglot_samplers(settings: ReptileOmniglotSettings, device, omniglot=None, shots: int | None = None):
    """{"train", "val", "test"} episode samplers on the disjoint character splits of the MAML code
    (1,100 / 100 / 423 characters): meta-training episodes with ``train_shots`` per class and
    rotations as classes; validation and test episodes with ``shots`` (default: the settings')
    per class and one query each, rotated or not by ``test_rotations``."""
    s = settings
    omniglot = load_omniglot(device=device) if omniglot is None else omniglot
    split = omniglot.split("maml")
    shots = s.shots if shots is None else shots
    return {"train": EpisodeSampler(omniglot.images[split["train"]], s.ways, s.train_shots, 1, rotations=s.rotations,
                                    device=device),
            **{part: EpisodeSampler(omniglot.images[split[part]], s.ways, shots, 1, rotations=s.test_rotations,
                                    device=device) for part in ("val", "test")}}


def train_omniglot_reptile(settings: ReptileOmniglotSettings, device, seed: int = 0, progress: bool = True,
                           omniglot=None):
    """Reptile on N-way Omniglot; the outer step size is annealed linearly from ``outer_lr`` to 0.
    With ``val_every``, θ is evaluated on ``val_episodes`` meta-validation episodes (the paper's
    test procedure, transductive) along the way, and the best θ is kept (``history.selected``
    says which iteration). Returns (learner, θ, history)."""
    s = settings
    torch.manual_seed(seed)
    samplers = omniglot_samplers(s, device, omniglot)
    learner = reptile_learner(s)
    theta = learner.init_params(device)
    optimizer = torch.optim.SGD(theta.values(), lr=s.outer_lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1 - it / s.iterations)

    # The meta-gradient in a CUDA graph on a GPU; SGD under the annealing schedule steps eagerly after it.
    meta_gradient = GraphedStep(lambda: learner.step(theta, NoUpdate(), samplers["train"].sample(
        distributed.share(s.tasks))), torch.device(device))

    def step(it):
        metrics = meta_gradient()
        optimizer.step()
        schedule.step()
        return metrics

    def validate(it):
        return {"accuracy": float(evaluate(learner, theta, samplers["val"], s.val_episodes)["accuracy"].mean())}

    checked = {"evaluate": validate, "eval_every": s.val_every, "select": ("accuracy", "max")} if s.val_every else {}
    history = train.fit(step, s.iterations, log_every=max(1, min(100, s.iterations // 20)), progress=progress,
                        desc=f"Reptile {s.ways}-way Omniglot",
                        state={"theta": theta, "optimizer": optimizer, "schedule": schedule, "reptile": learner},
                        **checked)
    return learner, theta, history


def evaluate_omniglot(learner: Reptile, theta, settings: ReptileOmniglotSettings, device, omniglot=None,
                      shots: int | None = None) -> dict[str, torch.Tensor]:
    """Per-episode meta-test accuracy (on the CPU) with ``shots`` per class, transductive
    (``"accuracy"``) and one query at a time (``"accuracy_non_transductive"``), from one adaptation."""
    test = omniglot_samplers(settings, device, omniglot, shots)["test"]
    return evaluate(learner, theta, test, settings.test_episodes, transductive="both")


def _record(settings: ReptileOmniglotSettings, device) -> dict:
    device = torch.device(device)
    s = settings
    omniglot = load_omniglot(device=device)
    learner, theta, history = train_omniglot_reptile(s, device, progress=s.scale != "quick", omniglot=omniglot)
    result = evaluate_omniglot(learner, theta, s, device, omniglot)
    metrics = {}
    for key, paper in [("accuracy", PAPER_ACCURACY.get(("reptile", s.shots))),
                       ("accuracy_non_transductive", PAPER_NON_TRANSDUCTIVE.get(s.shots))]:
        mean, half = mean_ci95(result[key])
        metrics[key] = {"value": 100 * float(mean), "ci95": 100 * float(half), "paper": paper, "unit": "%"}
    selected = f" θ of iteration {history.selected['iteration']} (best on meta-validation)." if history.selected else ""
    return {"metrics": metrics, "test_tasks": s.test_episodes,
            "notes": "Meta-test characters are disjoint from meta-training ones (split of the MAML code), not rotated. "
                     "Batch norm uses batch statistics: 'accuracy' classifies the queries of an episode together "
                     "(transductive), 'accuracy_non_transductive' one query at a time with the support set. The "
                     "inner Adam's moments are kept across tasks, as in the reference code." + selected}


# Nichol et al. 2018, Omniglot table: each query classified on its own (the transductive numbers are
# in experiments.maml.PAPER_ACCURACY).
PAPER_NON_TRANSDUCTIVE = {1: 95.39, 5: 98.90}

# Estimates from the eager meta-iteration on an H200 (benchmarks/maml_memory.py: ~30 ms, 5 steps) × 100,000.
for _shots, _settings in [(1, ReptileOmniglotSettings), (5, Reptile5ShotSettings)]:
    experiment(f"reptile-omniglot-5w{_shots}s", title=f"Reptile, Omniglot 5-way {_shots}-shot",
               paper="nichol2018reptile", gpu_minutes=45, settings=_settings)(_record)
