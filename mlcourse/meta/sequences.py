"""Episodes as sequences: the setting of Santoro et al. (2016) for recurrent black-box learners.

An episode of N classes with I instances each becomes a sequence of N·I images in random order.
At step t the learner sees x_t and the label of the previous step, y_{t−1} (one-hot, zeros at
t = 0), and must predict y_t. Labels are shuffled in every episode (the episode sampler relabels
its classes at random), so a label can only be predicted from what the episode itself showed.
Accuracy is reported by *instance*: the k-th presentation of a class within the episode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_count
from ..nets import Params, forward
from ..tasks import EpisodeSampler


def one_hot(y: torch.Tensor, classes: int, dtype) -> torch.Tensor:
    """One-hot rows by comparison (F.one_hot checks its input on the host, a sync on a GPU)."""
    return (y.unsqueeze(-1) == torch.arange(classes, device=y.device)).to(dtype)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images [..., H, W] resized to size × size on their device (area-averaging, antialiased)."""
    check_count("size", size)
    if images.dtype != torch.uint8 or images.dim() < 2:
        raise TypeError(f"images must be a uint8 tensor [..., H, W], got {images.dtype} {tuple(images.shape)}.")
    if images.shape[-2:] == (size, size):
        return images
    flat = images.reshape(-1, 1, *images.shape[-2:]).float()
    out = F.interpolate(flat, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).reshape(*images.shape[:-2], size, size)


class OmniglotSequences:
    """Batches of episode sequences: ``sample(n)`` gives x [n, N·I, size²] in [0, 1] and y [n, N·I].

    images: uint8 [classes, per_class, H, W] (a split of :func:`mlcourse.tasks.load_omniglot`);
    resized once to ``image_size`` (20 × 20 in the paper). rotations: the four 90° rotations of a
    character are four classes (the paper's augmentation).
    """

    def __init__(self, images: torch.Tensor, classes: int = 5, instances: int = 10, image_size: int = 20,
                 rotations: bool = True, device=None):
        self.classes = check_count("classes", classes)
        self.instances = check_count("instances", instances, minimum=2)
        self.image_size = check_count("image_size", image_size)
        small = resize_images(images, image_size)
        # The sampler draws K + Q distinct images of each class; we use all of them.
        shots = instances // 2
        self.sampler = EpisodeSampler(small, ways=classes, shots=shots, queries=instances - shots,
                                      rotations=rotations, device=device)

    @property
    def input_size(self) -> int:
        """Size of a step's input: the pixels and the previous one-hot label."""
        return self.image_size**2 + self.classes

    @property
    def length(self) -> int:
        return self.classes * self.instances

    def sample(self, n: int, generator: torch.Generator | None = None):
        batch = self.sampler.sample(n, generator)
        x = torch.cat([batch.x_tr, batch.x_ts], 1).flatten(2)  # [n, N·I, size²], class by class
        y = torch.cat([batch.y_tr, batch.y_ts], 1)
        # A random order within each episode, drawn for all episodes at once on the device.
        order = torch.rand(n, self.length, device=x.device, generator=generator).argsort(1)
        return x.gather(1, order.unsqueeze(-1).expand_as(x)), y.gather(1, order)


def label_inputs(x: torch.Tensor, y: torch.Tensor, classes: int) -> torch.Tensor:
    """[x_t, one-hot y_{t−1}] for every step: x [B, T, P], y [B, T] -> [B, T, P + classes]."""
    if x.dim() != 3 or y.shape != x.shape[:2]:
        raise ValueError(f"expected x [episodes, T, pixels] and y [episodes, T], got x {tuple(x.shape)}, "
                         f"y {tuple(y.shape)}.")
    if y.dtype != torch.int64:
        raise TypeError(f"labels y must be int64 class indices, got {y.dtype}.")
    # The range check reads the labels on the host: free on the CPU, skipped on accelerators so
    # that training never waits for the device.
    if y.device.type == "cpu" and y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(f"labels must lie in 0..{classes - 1}, got values in {int(y.min())}..{int(y.max())}.")
    previous = one_hot(y[:, :-1], classes, x.dtype)
    previous = torch.cat([previous.new_zeros(y.shape[0], 1, classes), previous], 1)
    return torch.cat([x, previous], -1)


def instance_numbers(y: torch.Tensor, classes: int) -> torch.Tensor:
    """For each step, how many times its class has appeared so far, this step included (1-based)."""
    counts = one_hot(y, classes, torch.int64).cumsum(1)
    return counts.gather(-1, y.unsqueeze(-1)).squeeze(-1)


def accuracy_by_instance(logits: torch.Tensor, y: torch.Tensor, instances=(1, 2, 3, 4, 5, 10)) -> torch.Tensor:
    """Per-episode accuracy at the k-th presentation of a class, [episodes, len(instances)]."""
    number = instance_numbers(y, logits.shape[-1])
    correct = (logits.argmax(-1) == y).to(logits.dtype)
    columns = []
    for k in instances:
        at_k = (number == k).to(logits.dtype)
        columns.append((correct * at_k).sum(1) / at_k.sum(1).clamp_min(1))
    return torch.stack(columns, 1)


def sequence_metrics(net: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy of the predictions of y_t at every step, and the accuracy (no host sync)."""
    logits = forward(net, params, label_inputs(x, y, net.classes))
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    return {"loss": loss, "accuracy": (logits.argmax(-1) == y).float().mean(), "logits": logits}


def sequence_step(net: nn.Module, params: Params, optimizer: torch.optim.Optimizer, x, y,
                  clip: float | None = 10.0) -> dict[str, torch.Tensor]:
    """One meta-update of θ on a meta-batch of sequences; returns the loss and accuracy."""
    optimizer.zero_grad(set_to_none=True)
    metrics = sequence_metrics(net, params, x, y)
    metrics["loss"].backward()
    if clip is not None:  # recurrent nets occasionally produce a large gradient; clip its norm
        torch.nn.utils.clip_grad_norm_(list(params.values()), clip)
    optimizer.step()
    return {"loss": metrics["loss"].detach(), "accuracy": metrics["accuracy"]}


@torch.no_grad()
def evaluate_by_instance(net: nn.Module, params: Params, sequences: OmniglotSequences, episodes: int,
                         batch: int = 100, instances=(1, 2, 3, 4, 5, 10), generator=None) -> torch.Tensor:
    """Per-episode accuracy by instance on ``episodes`` fresh episodes, [episodes, len(instances)]."""
    check_count("episodes", episodes)
    rows = []
    for start in range(0, episodes, batch):
        x, y = sequences.sample(min(batch, episodes - start), generator)
        logits = forward(net, params, label_inputs(x, y, net.classes))
        rows.append(accuracy_by_instance(logits, y, instances))
    return torch.cat(rows)


def meta_train(net: nn.Module, params: Params, optimizer: torch.optim.Optimizer, sequences: OmniglotSequences,
               iterations: int, meta_batch: int = 16, evaluate_on: OmniglotSequences | None = None,
               eval_every: int | None = None, eval_episodes: int = 200, instances=(1, 2, 3, 4, 5, 10),
               desc: str = "meta-training", progress: bool = True, log_every: int = 50):
    """Meta-train a sequence learner with :func:`mlcourse.train.fit`; returns its History.

    Each iteration samples ``meta_batch`` fresh episodes and takes one step. With ``evaluate_on``,
    the accuracy by instance on ``eval_episodes`` held-out episodes is logged every ``eval_every``
    iterations as ``instance_k``.
    """
    from ..train import fit

    check_count("meta_batch", meta_batch)

    def step(_):
        x, y = sequences.sample(meta_batch)
        return sequence_step(net, params, optimizer, x, y)

    def evaluate(_):
        accuracy = evaluate_by_instance(net, params, evaluate_on, eval_episodes, instances=instances).mean(0)
        return {f"instance_{k}": float(a) for k, a in zip(instances, accuracy)}

    return fit(step, iterations, log_every=min(log_every, max(iterations, 1)),
               evaluate=None if evaluate_on is None else evaluate,
               eval_every=eval_every, desc=desc, progress=progress,
               hint="try a smaller learning rate or gradient clipping")
