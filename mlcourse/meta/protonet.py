"""Prototypical networks (Snell et al. 2017): a nearest-class-mean classifier in a learned embedding.

θ is an embedding network f_θ. Adaptation computes no gradient: it averages the embedded support
images of each class into a prototype,

    c_k = (1/K) Σ_{(x, y) ∈ D_i^tr, y = k} f_θ(x)          (φ_i = (c_1, ..., c_N) = Alg(θ, D_i^tr)),

and a query x is classified by a softmax over its negative distances to the prototypes,

    p_θ(y = k | x, D_i^tr) = exp(−d(f_θ(x), c_k)) / Σ_k' exp(−d(f_θ(x), c_k')),

with d the squared Euclidean distance (the paper's choice) or, for comparison, the negative cosine
similarity. θ is trained by the gradient of the query cross-entropy, −(1/n) Σ_i mean log p_θ(y | x)
over D_i^ts, straight through the prototypes (first-order derivatives only).

Batch norm (as in :class:`mlcourse.nets.Conv4`) uses the statistics of the batch it is given, so
which images are embedded together matters. ``batch_statistics="episode"`` embeds each episode's
support and query images as one batch, as the paper's code does; ``"separate"`` embeds D^tr and
D^ts as two batches, so that the prototypes depend on D^tr alone. Either way the queries of a task
share statistics (as in MAML's evaluation): the evaluation is transductive.

Labels are class indices 0..N−1 of each episode; N is not fixed in the learner, so one θ is
trained on 60-way episodes and tested on 5-way ones. Prototypes are computed for every label that
could occur (as many slots as D^tr has examples) and the slots of labels absent from D^tr are
masked out of the softmax, so no number is read from the device inside a training step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nets import Conv4, Params, forward
from ..tasks import Task, TaskBatch
from .functional import map_tasks, mean_gradient
from .learner import MetaGradient, NetworkLearner

DISTANCES = ("squared_euclidean", "cosine")
BATCH_STATISTICS = ("episode", "separate")


class Conv4Embedding(Conv4):
    """Conv4 without its head: four blocks of [3×3 conv, batch norm (batch statistics), ReLU, 2×2
    max-pool], flattened. With 64 channels and 28×28 images this is the 64-dimensional embedding of
    Snell et al. (2017) (their encoder, which pools after the ReLU; here the pool comes first,
    the same function, see :class:`mlcourse.nets.Conv4`)."""

    def __init__(self, in_channels: int = 1, channels: int = 64, image_size: int = 28,
                 downsample: str = "maxpool"):
        super().__init__(1, in_channels, channels, image_size, downsample)
        self.head = nn.Identity()  # Conv4's forward then returns the flattened features


def one_hot(labels: torch.Tensor, slots: int, dtype: torch.dtype) -> torch.Tensor:
    """[examples, slots]: 1 where the example's label is the slot (works under ``vmap``)."""
    return (labels.unsqueeze(-1) == torch.arange(slots, device=labels.device)).to(dtype)


def prototypes(z_tr: torch.Tensor, y_tr: torch.Tensor, slots: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(c [slots, D], present [slots]): the mean embedding of each label's support examples.

    z_tr: [examples, D] embedded D^tr; y_tr: [examples] labels in 0..slots−1 (default slots: as
    many as there are examples, enough for any labelling). A label with no support example gets a
    zero prototype and ``present`` False."""
    slots = z_tr.shape[0] if slots is None else slots
    members = one_hot(y_tr, slots, z_tr.dtype)                 # [examples, slots]
    counts = members.sum(0)                                     # [slots]
    c = (members.T @ z_tr) / counts.clamp(min=1).unsqueeze(-1)  # [slots, D]
    return c, counts > 0


def negative_distances(z: torch.Tensor, c: torch.Tensor, distance: str = "squared_euclidean") -> torch.Tensor:
    """[queries, slots] logits: −‖z − c_k‖² (squared Euclidean) or cos(z, c_k) (cosine)."""
    if distance == "squared_euclidean":
        # ‖z‖² − 2 z·c + ‖c‖², the form that is one matrix product; clamped at 0 against rounding.
        squared = (z.pow(2).sum(-1, keepdim=True) - 2 * z @ c.T + c.pow(2).sum(-1)).clamp(min=0)
        return -squared
    if distance == "cosine":
        return F.normalize(z, dim=-1) @ F.normalize(c, dim=-1).T
    raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}.")


def classify(z_tr: torch.Tensor, y_tr: torch.Tensor, z_ts: torch.Tensor,
             distance: str = "squared_euclidean") -> torch.Tensor:
    """[queries, slots] logits of the queries z_ts against the prototypes of (z_tr, y_tr); the slots
    of labels absent from D^tr are −∞ (probability 0)."""
    c, present = prototypes(z_tr, y_tr)
    logits = negative_distances(z_ts, c, distance)
    return logits.masked_fill(~present, float("-inf"))


class ProtoNet(NetworkLearner):
    """Prototypical networks: ``net`` embeds images (``Conv4Embedding()`` is the paper's), prototypes
    are the class means of the embedded D^tr, queries are classified by their distances to them.

    distance: "squared_euclidean" (Snell et al.'s) or "cosine" (the similarity of matching networks).
    batch_statistics: "episode" (D^tr and D^ts embedded as one batch, the paper's code) or
        "separate" (two batches: the prototypes then depend on D^tr only); see the module docstring.
    execution: "auto", "vmap" or "loop" over the tasks of a batch (the same numbers; "auto" picks
        by :func:`mlcourse.meta.functional.choose_execution`).

    >>> protonet = ProtoNet(Conv4Embedding())
    >>> theta = protonet.init_params()
    >>> optimizer = torch.optim.Adam(theta.values(), lr=1e-3)
    >>> metrics = protonet.step(theta, optimizer, sampler.sample(1))    # a 60-way episode
    """

    def __init__(self, net: nn.Module, distance: str = "squared_euclidean", batch_statistics: str = "episode",
                 execution: str = "auto"):
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an embedding network (an nn.Module), got {type(net).__name__}.")
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}.")
        if batch_statistics not in BATCH_STATISTICS:
            raise ValueError(f"batch_statistics must be one of {BATCH_STATISTICS}, got {batch_statistics!r}.")
        if execution == "batched":
            raise ValueError("execution must be 'auto', 'vmap' or 'loop' for ProtoNet (it has no task-batched "
                             "form), got 'batched'.")
        super().__init__(net, "cross_entropy", execution)
        self.distance = distance
        self.batch_statistics = batch_statistics

    def __repr__(self) -> str:
        return (f"ProtoNet({type(self.net).__name__}, distance={self.distance!r}, "
                f"batch_statistics={self.batch_statistics!r})")

    # --- embedding and the per-task computation -------------------------------------------------------
    def embed(self, theta: Params, x_tr: torch.Tensor, x_ts: torch.Tensor | None = None):
        """f_θ of one task's support images (and of its queries, with the statistics the option
        says): z_tr [examples, D], or (z_tr, z_ts)."""
        if x_ts is None:
            return self._features(theta, x_tr)
        if self.batch_statistics == "separate":
            return self._features(theta, x_tr), self._features(theta, x_ts)
        z = self._features(theta, torch.cat([x_tr, x_ts]))
        return z[:x_tr.shape[0]], z[x_tr.shape[0]:]

    def _features(self, theta: Params, x: torch.Tensor) -> torch.Tensor:
        z = forward(self.net, theta, x)
        return z.flatten(1)

    def _task(self, theta: Params, x_tr, y_tr, x_ts, y_ts) -> dict[str, torch.Tensor]:
        """One task's query loss and accuracy under the prototypes of its D^tr."""
        z_tr, z_ts = self.embed(theta, x_tr, x_ts)
        logits = classify(z_tr, y_tr, z_ts, self.distance)
        return {"loss": F.cross_entropy(logits, y_ts), "accuracy": (logits.argmax(-1) == y_ts).float().mean()}


    # --- the learner interface -------------------------------------------------------------------------
    def adapt(self, theta: Params, batch: Task | TaskBatch, steps: int | None = None) -> torch.Tensor:
        """φ = Alg(θ, D^tr): the prototypes, [slots, D] for a :class:`Task` and [tasks, slots, D] for a
        :class:`TaskBatch` (slot k is label k's mean embedding; zero for a label D^tr lacks).
        Differentiable with respect to θ. With ``batch_statistics="episode"`` the support images are
        embedded together with the task's queries, as in training. ``steps`` must be None: there
        are no adaptation steps."""
        if steps is not None:
            raise ValueError(f"prototypical networks adapt without steps (the prototypes are class means); "
                             f"steps must be None, got {steps!r}.")

        def one(t, x_tr, y_tr, x_ts):
            z_tr = self.embed(t, x_tr) if self.batch_statistics == "separate" else self.embed(t, x_tr, x_ts)[0]
            return prototypes(z_tr, y_tr)[0]

        if isinstance(batch, Task):
            self.check_task(theta, batch)
            return one(theta, batch.x_tr, batch.y_tr, batch.x_ts)
        self.check_batch(theta, batch)
        return map_tasks(one, self._execution(batch), (theta,), (batch.x_tr, batch.y_tr, batch.x_ts))

    def meta_gradient(self, theta: Params, batch: TaskBatch) -> MetaGradient:
        """∇θ of the mean query cross-entropy through the prototypes, and per-task loss and accuracy."""
        self.check_batch(theta, batch)
        return MetaGradient(*mean_gradient(self._task, theta, self._execution(batch), (),
                                           (batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts)))

    def evaluate(self, theta: Params, batch: TaskBatch, steps: int | None = None) -> dict[str, torch.Tensor]:
        """Per-task query loss and accuracy with the prototypes of each task's D^tr. No graph."""
        if steps is not None:
            raise ValueError(f"prototypical networks evaluate without steps; steps must be None, got {steps!r}.")
        self.check_batch(theta, batch)
        fixed = {k: v.detach() for k, v in theta.items()}
        with torch.no_grad():
            return map_tasks(self._task, self._execution(batch), (fixed,),
                             (batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts))

    def divergence_hint(self) -> str:
        return "try a smaller outer learning rate β (the prototypes have no inner rate to tune)."

    # --- checks -----------------------------------------------------------------------------------------
    trial_examples = 2  # an embedding must keep its examples apart: [2, ...] -> [2, D]

    def _check_output(self, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor, what: str) -> None:
        """The labels as a prototype classifier needs them (integer class indices), and an embedding
        per example."""
        if y.is_floating_point() or y.dim() != 2:
            raise ValueError(f"prototypical networks need integer class labels [tasks, examples], got {y.dtype} "
                             f"{tuple(y.shape)}.")
        if out.dim() < 2 or out.shape[0] != min(2, x.shape[1]):
            raise ValueError(f"{type(self.net).__name__} must map [examples, ...] inputs to [examples, D] "
                             f"embeddings, got {tuple(out.shape)} for {min(2, x.shape[1])} examples.")

    def check_batch(self, params: Params, batch: TaskBatch) -> None:
        super().check_batch(params, batch)
        if batch.y_ts.dim() != 2 or batch.y_ts.is_floating_point():
            raise ValueError(f"query labels must be integer class indices [tasks, queries], got {batch.y_ts.dtype} "
                             f"{tuple(batch.y_ts.shape)}.")
        _check_labels(batch.y_tr, batch.y_ts, "task batch")

    def check_task(self, params: Params, task: Task) -> None:
        super().check_task(params, task)
        if task.y_ts.dim() != 1 or task.y_ts.is_floating_point():
            raise ValueError(f"query labels must be integer class indices [queries], got {task.y_ts.dtype} "
                             f"{tuple(task.y_ts.shape)}.")
        _check_labels(task.y_tr.unsqueeze(0), task.y_ts.unsqueeze(0), "task")


def _check_labels(y_tr: torch.Tensor, y_ts: torch.Tensor, what: str) -> None:
    """On the CPU (where reading values costs no device sync): support labels in 0..examples−1, and
    every query label present in its task's support set (else its class has no prototype)."""
    if y_tr.device.type != "cpu" or not y_tr.numel():
        return
    slots = y_tr.shape[1]
    low, high = int(y_tr.min()), int(y_tr.max())
    if low < 0 or high >= slots:
        raise ValueError(f"support labels must be class indices in 0..{slots - 1} (D^tr has {slots} examples per "
                         f"task), got {low}..{high}.")
    present = one_hot(y_tr, slots, torch.float32).sum(1) > 0            # [tasks, slots]
    if y_ts.numel():
        if int(y_ts.min()) < 0 or int(y_ts.max()) >= slots:
            raise ValueError(f"query labels must be among the support labels (0..{slots - 1}), got "
                             f"{int(y_ts.min())}..{int(y_ts.max())}.")
        missing = ~torch.gather(present, 1, y_ts)
        if missing.any():
            task, j = (int(v) for v in torch.nonzero(missing)[0])
            raise ValueError(f"the {what}'s task {task} has a query of label {int(y_ts[task, j])} but no support "
                             "example of it: every query's class needs a prototype (at least one shot).")
