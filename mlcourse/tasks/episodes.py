"""N-way K-shot classification episodes, sampled on the device in one go.

An episode is a task: pick N classes, relabel them 0..N−1 in a random order (so that a label
means nothing across episodes), and draw K support and Q query images of each class, disjoint.
The dataset is one uint8 tensor ``[classes, images per class, (C,) H, W]`` on the device; a batch
of episodes is a few indexing operations on it, with no Python loop over episodes.

Rotations by multiples of 90° augment Omniglot in two ways, and the papers differ:

- ``rotations="as_classes"`` (or ``True``): each of the four rotations of a character is a class
  of its own, so the split has four times as many classes to draw N distinct ones from — the
  augmentation Santoro et al. (2016) describe, used here for the memory-augmented network.
- ``rotations="per_class"``: draw N distinct characters, then rotate all images of each class of
  the episode by its own random multiple of 90° — what the MAML reference code does (and so
  Finn et al. 2017's Omniglot numbers, and the methods compared with them on MAML's code).

The two differ only in which classes can meet in one episode (a character and its own rotation
never do under "per_class"); both make rotated characters new classes.

Labels are shuffled per episode by default (``labels="shuffled"``): label j of one episode and
label j of the next name unrelated classes, so no single classifier solves every episode and a
learner must read D^tr. ``labels="fixed"`` builds the opposite, *non-mutually-exclusive* tasks
of Yin et al. (2020): every class gets one label for good (the classes are dealt into N groups
at random, once, and group j's classes are always labelled j), and an episode draws one class
of each group. A single classifier can then solve every meta-training episode without looking
at D^tr — the memorisation problem.
"""

from __future__ import annotations

import torch

from .. import runtime
from ..checks import check_count
from .batch import TaskBatch

ROTATIONS = (False, "as_classes", "per_class")
LABELS = ("shuffled", "fixed")


class EpisodeSampler:
    """Samples batches of N-way K-shot episodes with Q queries per class.

    Args:
        images: uint8 tensor ``[classes, per_class, H, W]`` or ``[classes, per_class, C, H, W]``
            (any number of channels), as :func:`mlcourse.tasks.load_omniglot` gives it.
        ways: N, classes per episode.
        shots: K, support images per class.
        queries: Q, query images per class (default K, as in the MAML Omniglot setting).
        rotations: False, "as_classes" (True means the same) or "per_class"; see the module docstring.
        labels: "shuffled" (a new random labelling per episode, the default) or "fixed" (each class
            keeps one label across episodes: non-mutually-exclusive tasks; see the module docstring).
        label_seed: the seed of the fixed assignment of classes to labels (with ``labels="fixed"``).
        device: where images live and episodes are sampled (default ``runtime.device()``).

    ``sample(n)`` returns a :class:`TaskBatch` with ``x_tr [n, N*K, C, H, W]`` float in [0, 1],
    ``y_tr [n, N*K]`` int64 labels, likewise ``x_ts``/``y_ts`` with N*Q queries; examples are
    ordered class by class. ``params["classes"] [n, N]`` says which dataset class each label is
    (with "as_classes", rotation r of character c is class ``r * characters + c``), and with
    "per_class" ``params["rotations"] [n, N]`` the quarter turns of each class. With
    ``labels="fixed"``, ``class_labels [classes]`` is the label each class always gets.
    """

    def __init__(self, images: torch.Tensor, ways: int, shots: int, queries: int | None = None,
                 rotations: bool | str = False, device=None, labels: str = "shuffled", label_seed: int = 0):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
            raise TypeError(f"images must be a uint8 tensor [classes, per_class, (C,) H, W], got {got}.")
        if images.dim() == 4:
            images = images.unsqueeze(2)
        if images.dim() != 5:
            raise ValueError(f"images must have shape [classes, per_class, H, W] or [classes, per_class, C, H, W], "
                             f"got {tuple(images.shape)}.")
        self.ways = check_count("ways (N)", ways)
        self.shots = check_count("shots (K)", shots)
        self.queries = self.shots if queries is None else check_count("queries (Q)", queries)
        if rotations is True:
            rotations = "as_classes"
        if rotations not in ROTATIONS:
            raise ValueError(f"rotations must be False, True / 'as_classes' or 'per_class', got {rotations!r}.")
        self.rotations = rotations
        if labels not in LABELS:
            raise ValueError(f"labels must be 'shuffled' or 'fixed', got {labels!r}.")
        self.labels = labels
        device = runtime.device() if device is None else runtime.check_device(device)
        if rotations and images.shape[-1] != images.shape[-2]:
            raise ValueError(f"rotations need square images, got {tuple(images.shape[-2:])}.")
        if rotations == "as_classes":
            images = torch.cat([torch.rot90(images, k, dims=(-2, -1)) for k in range(4)])
        self.images = images.to(device).contiguous()
        # "per_class" keeps the four rotations side by side: [4, classes, per_class, C, H, W].
        self._turned = (torch.stack([torch.rot90(self.images, k, dims=(-2, -1)) for k in range(4)])
                        if rotations == "per_class" else None)
        classes, per_class = self.images.shape[:2]
        if self.ways > classes:
            raise ValueError(
                f"{self.ways}-way episodes need {self.ways} classes but this split has {classes}"
                f"{' (rotations included)' if rotations == 'as_classes' else ''}; allowed: ways <= {classes}."
            )
        if self.shots + self.queries > per_class:
            raise ValueError(
                f"each class has {per_class} images, but K={self.shots} shots plus Q={self.queries} "
                f"queries need {self.shots + self.queries} distinct ones; allowed: shots + queries <= {per_class}."
            )
        self.class_labels = None
        if labels == "fixed":
            # Deal the classes into N groups at random, once: class c is always labelled class_labels[c].
            order = torch.randperm(classes, generator=torch.Generator().manual_seed(label_seed))
            self.class_labels = torch.empty(classes, dtype=torch.int64)
            self.class_labels[order] = torch.arange(classes) % self.ways
            groups = [torch.nonzero(self.class_labels == j).flatten() for j in range(self.ways)]
            self._group_sizes = torch.tensor([len(g) for g in groups], device=device)
            self._groups = torch.stack([torch.cat([g, g[:1].expand(self._group_sizes.max() - len(g))])
                                        for g in groups]).to(device)   # [N, largest group], padded
            self.class_labels = self.class_labels.to(device)

    @property
    def num_classes(self) -> int:
        return self.images.shape[0]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __repr__(self) -> str:
        return (f"EpisodeSampler({self.ways}-way {self.shots}-shot, {self.queries} queries per class, "
                f"{self.num_classes} classes, rotations={self.rotations!r}, labels={self.labels!r}, "
                f"device={self.device})")

    def sample(self, num_episodes: int, generator: torch.Generator | None = None) -> TaskBatch:
        """A batch of ``num_episodes`` independent episodes (one task each)."""
        b = check_count("num_episodes", num_episodes)
        n, k, q = self.ways, self.shots, self.queries
        classes_total, per_class, c, h, w = self.images.shape
        dev = self.device
        if self.class_labels is None:
            # N distinct classes per episode in random order: the order is the per-episode label shuffle.
            classes = torch.rand(b, classes_total, device=dev, generator=generator).topk(n, dim=1).indices
        else:
            # One class of each label's group, in label order: class c always carries class_labels[c].
            pick = (torch.rand(b, n, device=dev, generator=generator) * self._group_sizes).long()
            pick = torch.minimum(pick, self._group_sizes - 1)
            classes = self._groups[torch.arange(n, device=dev), pick]
        # K + Q distinct images of each chosen class; the first K form D^tr, the rest D^ts.
        picks = torch.rand(b, n, per_class, device=dev, generator=generator).topk(k + q, dim=2).indices
        params = {"classes": classes}
        if self._turned is None:
            images = self.images[classes.unsqueeze(-1), picks]  # [b, n, k + q, c, h, w] uint8
        else:
            turns = torch.randint(4, (b, n), device=dev, generator=generator)
            images = self._turned[turns.unsqueeze(-1), classes.unsqueeze(-1), picks]
            params["rotations"] = turns
        x = images.to(torch.float32).div_(255.0)
        labels = torch.arange(n, device=dev).view(1, n, 1).expand(b, n, k + q)
        return TaskBatch(
            x[:, :, :k].reshape(b, n * k, c, h, w), labels[:, :, :k].reshape(b, n * k),
            x[:, :, k:].reshape(b, n * q, c, h, w), labels[:, :, k:].reshape(b, n * q),
            params,
        )
