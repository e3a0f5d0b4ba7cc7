"""The experiments of chapter 4, black-box adaptation, at three scales.

- Regression black boxes (CNP, hypernetworks) against MAML on sinusoids: :class:`RegressionSettings`.
- Santoro et al. (2016), Table 1: accuracy by instance of the MANN and the LSTM on Omniglot, and the
  in-context transformer trained on the same episodes: :class:`SequenceSettings`,
  :func:`train_sequence_learner`, and the registered run ``mann-omniglot``.

Episodes of 5 classes × 10 instances (sequences of 50 steps, labels shuffled per episode), images
downsampled to 20 × 20, the 1,200 characters of the MAML split's meta-train and meta-val sets
(with their 90° rotations as new classes) for meta-training and its 423 meta-test characters for
testing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import train
from ..meta.mann import MANN, PAPER, LSTMLearner
from ..meta.sequences import INSTANCES, OmniglotSequences, SequenceLearner
from ..meta.transformer import InContextTransformer
from ..settings import Settings
from ..stats import mean_ci95
from . import experiment

# Table 1 of the paper (five classes, one-hot labels), accuracy in % at each instance.
PAPER_ACCURACY = {"mann": (36.4, 82.8, 91.0, 92.6, 94.9, 98.1), "lstm": (24.4, 49.5, 55.3, 61.0, 63.6, 62.5)}
KINDS = ("mann", "lstm", "transformer")


@dataclass(frozen=True)
class RegressionSettings(Settings):
    """The sinusoid comparison of the chapter (ours: no paper ran it). Each learner meets the same
    stream of meta-batches; K is drawn per meta-batch so that every learner meets every size of D^tr."""

    tasks: int = 25                # meta-batch
    min_shots: int = 2             # K is drawn from min_shots..max_shots for each meta-batch
    max_shots: int = 20
    queries: int = 10
    learning_rate: float = 1e-3    # β, Adam, as for MAML on sinusoids
    iterations: int = 5_000
    test_tasks: int = 500          # held-out tasks of the learning curves and the timing
    sweep_tasks: int = 200         # held-out tasks per K of the error-against-K sweep (MAML: 100 steps each)

    SCALES = {"book": {"iterations": 2_000, "test_tasks": 400},
              "quick": {"iterations": 60, "test_tasks": 100, "sweep_tasks": 20}}


@dataclass(frozen=True)
class SequenceSettings(Settings):
    """Santoro et al. 2016, Omniglot, five classes: a 200-unit LSTM controller, a 128 × 40 memory
    with four read heads, 100,000 episodes of meta-training in meta-batches of 16. The fields
    without the paper's value are ours and say why; the book's scale changes what its comments say."""

    classes: int = PAPER["classes"]
    instances: int = PAPER["instances"]
    image_size: int = PAPER["image_size"]
    meta_batch: int = PAPER["meta_batch"]
    episodes: int = PAPER["episodes"]            # meta-training episodes of the MANN and of the LSTM
    controller: int = PAPER["controller"]        # LSTM units (controller and baseline)
    slots: int = PAPER["slots"]
    width: int = PAPER["width"]
    heads: int = PAPER["heads"]
    gamma: float = PAPER["gamma"]                # usage decay: not given in the paper
    key_strength: bool = False                   # the paper's read has no key strength β
    encoder: str = "pixels"                      # the paper feeds the pixels
    embedding: int = 64                          # width of the "mlp" encoder's output
    learning_rate: float = 1e-3                  # Adam (ours; chosen by the chapter's sweep)
    max_grad_norm: float = 10.0                  # gradient-norm clipping (ours)
    warmup: int = 0                              # meta-batches of linear learning-rate warm-up, then cosine decay;
    cosine: bool = False                         # off: a constant learning rate
    # The in-context transformer (no paper; ours, see the chapter): same episodes, its own budget.
    transformer_episodes: int = PAPER["episodes"]
    transformer_dim: int = 64
    transformer_layers: int = 1
    transformer_heads: int = 4
    transformer_learning_rate: float = 5e-3      # peak of the warm-up + cosine schedule
    transformer_warmup: int = 30
    transformer_max_grad_norm: float = 1.0
    test_episodes: int = 1000
    eval_every: int = 500                        # meta-batches between learning-curve points
    eval_episodes: int = 200                     # held-out episodes per learning-curve point
    one_shot_queries: int = 5                    # queries per class of the 5-way 1-shot evaluation

    SCALES = {
        "book": {"episodes": 4_000, "transformer_episodes": 64_000, "encoder": "mlp", "key_strength": True,
                 "learning_rate": 3e-3, "warmup": 30, "cosine": True, "max_grad_norm": 1.0,
                 "test_episodes": 500, "eval_every": 100, "eval_episodes": 100},
        "quick": {"episodes": 32, "transformer_episodes": 64, "encoder": "mlp", "key_strength": True,
                  "warmup": 2, "cosine": True, "test_episodes": 20, "eval_every": 1, "eval_episodes": 10},
    }


def omniglot_sequences(settings: SequenceSettings, device):
    """(meta-train, meta-test) episode samplers of the paper's setting on ``device``."""
    from ..tasks import load_omniglot

    data = load_omniglot(device=device)
    split = data.split("maml")
    train_ids = torch.cat([split["train"], split["val"]])  # 1,200 characters for meta-training
    s = settings
    return (OmniglotSequences(data.images[train_ids], s.classes, s.instances, s.image_size, rotations=True,
                              device=device),
            OmniglotSequences(data.images[split["test"]], s.classes, s.instances, s.image_size, rotations=False,
                              device=device))


def make_learner(kind: str, settings: SequenceSettings) -> SequenceLearner:
    """The MANN, the LSTM or the transformer of ``settings`` as a :class:`SequenceLearner`."""
    s, pixels = settings, settings.image_size**2
    if kind == "mann":
        net = MANN(pixels, s.classes, s.controller, s.slots, s.width, s.heads, s.gamma, key_strength=s.key_strength,
                   encoder=s.encoder, embedding=s.embedding)
    elif kind == "lstm":
        net = LSTMLearner(pixels, s.classes, s.controller, encoder=s.encoder, embedding=s.embedding)
    elif kind == "transformer":
        net = InContextTransformer(pixels, s.classes, s.transformer_dim, s.transformer_heads, s.transformer_layers,
                                   encoder="mlp", embedding=s.embedding)
        return SequenceLearner(net, max_grad_norm=s.transformer_max_grad_norm)
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    return SequenceLearner(net, max_grad_norm=s.max_grad_norm)


def schedule(settings: SequenceSettings, kind: str):
    """(iterations, peak learning rate, lr(it)) of one learner: linear warm-up, then a cosine decay
    to zero (or a constant rate)."""
    s = settings
    transformer = kind == "transformer"
    episodes = s.transformer_episodes if transformer else s.episodes
    iterations = max(episodes // s.meta_batch, 1)
    peak = s.transformer_learning_rate if transformer else s.learning_rate
    warmup, cosine = (s.transformer_warmup, True) if transformer else (s.warmup, s.cosine)

    def rate(it: int) -> float:
        factor = min(1.0, (it + 1) / warmup) if warmup else 1.0
        if cosine:
            factor *= 0.5 * (1 + math.cos(math.pi * it / iterations))
        return peak * factor

    return iterations, peak, rate


def train_sequence_learner(kind: str, settings: SequenceSettings, device, train_set: OmniglotSequences,
                           test_set: OmniglotSequences | None = None, seed: int = 0, progress: bool = True):
    """Meta-train one learner on online episodes; returns (learner, θ, history). With ``test_set``,
    the accuracy by instance on held-out episodes is logged every ``eval_every`` meta-batches."""
    if not isinstance(settings, SequenceSettings):
        raise TypeError(f"settings must be SequenceSettings (e.g. SequenceSettings.at()), got {settings!r}.")
    torch.manual_seed(seed)
    learner = make_learner(kind, settings)
    theta = learner.init_params(device)
    iterations, peak, rate = schedule(settings, kind)
    optimizer = torch.optim.Adam(theta.values(), lr=peak)
    generator = torch.Generator(device=device).manual_seed(seed + 1)

    def step(it):
        for group in optimizer.param_groups:
            group["lr"] = rate(it)
        return learner.step(theta, optimizer, train_set.sample(settings.meta_batch, generator))

    fixed = torch.Generator(device=device).manual_seed(seed + 2)
    # The same held-out episodes at every point of the learning curve.
    episodes = None if test_set is None else test_set.sample(settings.eval_episodes, fixed)

    def curve(_):
        accuracy = learner.instance_accuracy(theta, episodes).mean(0)
        return {f"instance_{k}": float(a) for k, a in zip(INSTANCES, accuracy)}

    history = train.fit(step, iterations, log_every=min(50, iterations), evaluate=None if test_set is None else curve,
                        eval_every=settings.eval_every, desc=kind, progress=progress,
                        hint="try a smaller learning rate or a longer warm-up",
                        state={"theta": theta, "optimizer": optimizer, "generator": generator})
    return learner, theta, history


def accuracy_by_instance(learner: SequenceLearner, theta, test_set: OmniglotSequences, episodes: int,
                         seed: int = 3, chunk: int = 100) -> torch.Tensor:
    """Per-episode accuracy by instance (columns :data:`INSTANCES`) on ``episodes`` held-out episodes, [episodes, 6]."""
    generator = torch.Generator(device=test_set.sampler.device).manual_seed(seed)
    rows = [learner.instance_accuracy(theta, test_set.sample(min(chunk, episodes - start), generator)).cpu()
            for start in range(0, episodes, chunk)]
    return torch.cat(rows)


def one_shot_accuracy(learner: SequenceLearner, theta, test_set: OmniglotSequences, episodes: int,
                      queries: int, seed: int = 4, chunk: int = 100) -> torch.Tensor:
    """Per-episode accuracy on 5-way 1-shot episodes: the support in a random order, then each query."""
    generator = torch.Generator(device=test_set.sampler.device).manual_seed(seed)
    rows = [learner.evaluate(theta, test_set.support_query(min(chunk, episodes - start), 1, queries, generator))[
        "query_accuracy"].cpu() for start in range(0, episodes, chunk)]
    return torch.cat(rows)


def _record(settings: SequenceSettings, device, kinds, progress: bool) -> dict:
    train_set, test_set = omniglot_sequences(settings, device)
    metrics, curves = {}, {}
    for kind in kinds:
        learner, theta, history = train_sequence_learner(kind, settings, device, train_set, test_set,
                                                         progress=progress)
        mean, half = mean_ci95(accuracy_by_instance(learner, theta, test_set, settings.test_episodes))
        for k, m, h, paper in zip(INSTANCES, mean, half, PAPER_ACCURACY.get(kind, (None,) * len(INSTANCES))):
            metrics[f"{kind}_instance_{k}"] = {"value": round(100 * float(m), 2), "ci95": round(100 * float(h), 2),
                                               "paper": paper, "unit": "%"}
        m, h = mean_ci95(one_shot_accuracy(learner, theta, test_set, settings.test_episodes,
                                           settings.one_shot_queries))
        metrics[f"{kind}_one_shot"] = {"value": round(100 * float(m), 2), "ci95": round(100 * float(h), 2),
                                       "paper": None, "unit": "%"}
        curves[kind] = [{"episode": row["iteration"] * settings.meta_batch,
                         **{k: v for k, v in row.items() if k.startswith("instance_")}} for row in history.eval]
    return {
        "metrics": metrics,
        "curves": curves,
        "notes": ("Accuracy (%) on held-out characters at the k-th presentation of a class in an episode (and on "
                  "5-way 1-shot episodes, the support then each query), mean over test episodes with 95% intervals. "
                  "The paper gives no usage decay γ (we use 0.95); each step writes its key and then reads the "
                  "memory it has just written, with the same key. No random translations or small rotations are "
                  "used, only the 90° rotations as new classes. The optimiser is ours (Adam, see the settings)."),
    }


@experiment("mann-omniglot", title="Memory-augmented network, LSTM and in-context transformer, Omniglot 5 classes, "
            "accuracy by instance", paper="santoro2016mann", gpu_minutes=25,
            # H200: MANN 107, LSTM 554 episodes/s, 100,000 of each (19 min), plus the transformer
            settings=SequenceSettings)
def mann_omniglot(settings: SequenceSettings, device) -> dict:
    return _record(settings, device, KINDS, progress=settings.scale != "quick")
