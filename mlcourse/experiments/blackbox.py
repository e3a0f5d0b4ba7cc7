"""Santoro et al. (2016), Table 1: accuracy by instance of the MANN and the LSTM on Omniglot.

Episodes of 5 classes × 10 instances (sequences of 50 steps, labels shuffled per episode), images
downsampled to 20 × 20, the 1,200 characters of the MAML split's meta-train and meta-val sets
(with their 90° rotations as new classes) for meta-training and its 423 meta-test characters for
testing. Both learners have a 200-unit LSTM; the MANN adds a 128 × 40 memory with four read heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..meta.mann import MANN, PAPER, LSTMLearner
from ..meta.sequences import OmniglotSequences, evaluate_by_instance, meta_train
from ..nets import init_params
from ..settings import Settings
from ..stats import mean_ci95
from . import experiment

INSTANCES = (1, 2, 3, 4, 5, 10)
# Table 1 of the paper (five classes, one-hot labels), accuracy in % at each instance.
PAPER_ACCURACY = {"mann": (36.4, 82.8, 91.0, 92.6, 94.9, 98.1), "lstm": (24.4, 49.5, 55.3, 61.0, 63.6, 62.5)}
LEARNING_RATE = 1e-3  # Adam, with the gradient norm clipped at 10


@dataclass(frozen=True)
class MANNSettings(Settings):
    """Santoro et al. 2016, Omniglot with five classes: 100,000 episodes of meta-training."""

    episodes: int = PAPER["episodes"]
    test_episodes: int = 1000
    eval_every: int = 500      # meta-batches between learning-curve points
    learning_rate: float = LEARNING_RATE

    SCALES = {"book": {"episodes": 16_000, "test_episodes": 500, "eval_every": 100},
              "quick": {"episodes": 32, "test_episodes": 20, "eval_every": 1}}


def omniglot_sequences(device, image_size: int = PAPER["image_size"]):
    """(meta-train, meta-test) sequence samplers of the paper's setting on ``device``."""
    from ..tasks import load_omniglot

    data = load_omniglot(device=device)
    split = data.split("maml")
    train = torch.cat([split["train"], split["val"]])  # 1,200 characters for meta-training
    return (OmniglotSequences(data.images[train], PAPER["classes"], PAPER["instances"], image_size,
                              rotations=True, device=device),
            OmniglotSequences(data.images[split["test"]], PAPER["classes"], PAPER["instances"], image_size,
                              rotations=False, device=device))


def make_learner(kind: str, input_size: int, classes: int = PAPER["classes"]):
    if kind == "mann":
        return MANN(input_size, classes)
    if kind == "lstm":
        return LSTMLearner(input_size, classes)
    raise ValueError(f"kind must be 'mann' or 'lstm', got {kind!r}.")


@experiment("mann-omniglot", title="Memory-augmented network vs LSTM, Omniglot 5 classes, accuracy by instance",
            paper="santoro2016mann", gpu_minutes=19,  # H200: MANN 107, LSTM 554 episodes/s; 100,000 of each
            settings=MANNSettings)
def mann_omniglot(settings: MANNSettings, device) -> dict:
    scale = settings.scale
    train, test = omniglot_sequences(device)
    iterations = settings.episodes // PAPER["meta_batch"]
    metrics, curves = {}, {}
    for kind in ("mann", "lstm"):
        net = make_learner(kind, train.input_size)
        theta = init_params(net, device)
        optimizer = torch.optim.Adam(theta.values(), lr=settings.learning_rate)
        history = meta_train(net, theta, optimizer, train, iterations, PAPER["meta_batch"], evaluate_on=test,
                             eval_every=settings.eval_every if scale != "quick" else None,
                             eval_episodes=min(200, settings.test_episodes), desc=kind, progress=scale != "quick")
        per_episode = evaluate_by_instance(net, theta, test, settings.test_episodes, instances=INSTANCES)
        mean, half = mean_ci95(per_episode.cpu())
        for k, m, h, paper in zip(INSTANCES, mean, half, PAPER_ACCURACY[kind]):
            metrics[f"{kind}_instance_{k}"] = {"value": round(100 * float(m), 2), "ci95": round(100 * float(h), 2),
                                               "paper": paper, "unit": "%"}
        curves[kind] = [{"episode": row["iteration"] * PAPER["meta_batch"],
                         **{k: v for k, v in row.items() if k.startswith("instance_")}} for row in history.eval]
    return {
        "metrics": metrics,
        "architecture": {"meta_batch": PAPER["meta_batch"], "optimizer": "Adam", "gradient_clip": 10.0, "controller": PAPER["controller"],
                     "memory": [PAPER["slots"], PAPER["width"]], "read_heads": PAPER["heads"], "gamma": PAPER["gamma"],
                     "image_size": PAPER["image_size"], "test_episodes": settings.test_episodes,
                     "split": "MAML split: meta-train + meta-val (1,200 characters, rotations) / meta-test (423)"},
        "curves": curves,
        "notes": ("Accuracy (%) on held-out characters at the k-th presentation of a class in an episode, mean over "
                  "test episodes with 95% intervals. The paper gives no usage decay γ (we use 0.95), and reads here "
                  "come from the memory before the step's write (the key is also what is written). No random "
                  "translations or small rotations are used, only the 90° rotations as new classes."),
    }
