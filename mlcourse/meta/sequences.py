"""Episodes as sequences, and the one learner that trains any network reading them.

This is the setting of Santoro et al. (2016) for black-box learners that read an episode one
example at a time. An *online* episode of N classes with I instances each is a sequence of N·I
images in a random order; at step t the learner sees x_t with the label of the previous step,
y_{t−1}, and must predict y_t. Labels are shuffled in every episode (the episode sampler relabels
its classes at random), so a label can only be predicted from what the episode itself showed.
Accuracy is reported by *instance*: the k-th presentation of a class within the episode.

How a sequence episode is a :class:`~mlcourse.tasks.TaskBatch`
---------------------------------------------------------------
A sequence learner reads D^tr as a sequence, in the order the batch holds it, and makes two kinds
of predictions, both scored by the cross-entropy:

- *online*: at each step t of D^tr, y_t is predicted from x_1..x_t and y_1..y_{t−1} (Santoro et
  al.'s objective: every step is first a query, then, once its label arrives, part of the
  training set);
- *queries*: each input of D^ts is predicted from all of D^tr, each query on its own (the queries
  do not see one another).

So an online episode is ``TaskBatch(x_tr=sequence, y_tr=labels, x_ts=[tasks, 0, ...], y_ts=[tasks, 0])``
— D^tr is the whole sequence and D^ts is empty — which :meth:`OmniglotSequences.sample` returns;
and an N-way K-shot episode is the usual TaskBatch, D^tr its support in a shuffled order and D^ts
its queries (:meth:`OmniglotSequences.support_query`). φ_i = f_θ(D_i^tr) is the network's state
after reading D^tr: an LSTM's (h, c), a MANN's memory, a transformer's keys and values.

A sequence network (:class:`SequenceNet`) is a module with
``forward(x_tr, y_tr, x_ts=None, return_state=False) -> (online [B, T, N], queries [B, Q, N] | None[, φ])``;
:class:`SequenceLearner` turns any of them into a :class:`~mlcourse.meta.learner.Learner`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..checks import check_count, check_positive
from ..nets import Params, check_functional, init_params
from ..tasks import EpisodeSampler, TaskBatch
from .learner import Learner, MetaGradient, apply_gradients

INSTANCES = (1, 2, 3, 4, 5, 10)  # the columns of Santoro et al.'s Table 1


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
    """Episodes of ``classes`` characters × ``instances`` drawings, as sequences and as support/query sets.

    images: uint8 [characters, per_class, H, W] (a split of :func:`mlcourse.tasks.load_omniglot`),
    resized once to ``image_size`` (20 × 20 in the paper). rotations: the four 90° rotations of a
    character are four classes (the paper's augmentation). Images are flattened to
    ``image_size²`` pixels in [0, 1].
    """

    def __init__(self, images: torch.Tensor, classes: int = 5, instances: int = 10, image_size: int = 20,
                 rotations: bool = True, device=None):
        self.classes = check_count("classes", classes)
        self.instances = check_count("instances", instances, minimum=2)
        self.image_size = check_count("image_size", image_size)
        self.small = resize_images(images, image_size)
        # The sampler draws K + Q distinct images of each class; a sequence uses all of them.
        shots = instances // 2
        self.sampler = EpisodeSampler(self.small, ways=classes, shots=shots, queries=instances - shots,
                                      rotations=rotations, device=device)

    @property
    def pixels(self) -> int:
        return self.image_size**2

    @property
    def length(self) -> int:
        return self.classes * self.instances

    def sample(self, n: int, generator: torch.Generator | None = None) -> TaskBatch:
        """``n`` online episodes: D^tr the sequences x [n, N·I, pixels], y [n, N·I]; D^ts empty."""
        batch = self.sampler.sample(n, generator)
        x = torch.cat([batch.x_tr, batch.x_ts], 1).flatten(2)  # [n, N·I, size²], class by class
        y = torch.cat([batch.y_tr, batch.y_ts], 1)
        # A random order within each episode, drawn for all episodes at once on the device.
        order = torch.rand(n, self.length, device=x.device, generator=generator).argsort(1)
        x, y = x.gather(1, order.unsqueeze(-1).expand_as(x)), y.gather(1, order)
        return TaskBatch(x, y, x[:, :0], y[:, :0], {"classes": batch.params["classes"]})

    def support_query(self, n: int, shots: int = 1, queries: int = 5,
                      generator: torch.Generator | None = None) -> TaskBatch:
        """``n`` N-way K-shot episodes with the support in a random order (a sequence learner reads it in
        order) and ``queries`` queries per class; images flattened like :meth:`sample`'s."""
        check_count("shots", shots)
        check_count("queries", queries)
        sampler = EpisodeSampler(self.sampler.images, ways=self.classes, shots=shots, queries=queries,
                                 device=self.sampler.device)
        batch = sampler.sample(n, generator)
        order = torch.rand(n, batch.shots, device=batch.device, generator=generator).argsort(1)
        x_tr = batch.x_tr.flatten(2).gather(1, order.unsqueeze(-1).expand(-1, -1, self.pixels))
        return TaskBatch(x_tr, batch.y_tr.gather(1, order), batch.x_ts.flatten(2), batch.y_ts, batch.params)


def instance_numbers(y: torch.Tensor, classes: int) -> torch.Tensor:
    """For each step, how many times its class has appeared so far, this step included (1-based)."""
    counts = one_hot(y, classes, torch.int64).cumsum(1)
    return counts.gather(-1, y.unsqueeze(-1)).squeeze(-1)


def accuracy_by_instance(logits: torch.Tensor, y: torch.Tensor, instances=INSTANCES) -> torch.Tensor:
    """Per-episode accuracy at the k-th presentation of a class, [episodes, len(instances)]."""
    number = instance_numbers(y, logits.shape[-1])
    correct = (logits.argmax(-1) == y).to(logits.dtype)
    columns = []
    for k in instances:
        at_k = (number == k).to(logits.dtype)
        columns.append((correct * at_k).sum(1) / at_k.sum(1).clamp_min(1))
    return torch.stack(columns, 1)


# --- what every sequence network shares -------------------------------------------------------
class ImageEncoder(nn.Module):
    """e(x): flattened images [B, T, pixels] -> features [B, T, dim].

    ``"pixels"``: the pixels themselves (Santoro et al.: the controller's input layer is linear in
    them). ``"mlp"``: a two-layer ReLU network, part of θ, trained with the rest.
    """

    KINDS = ("pixels", "mlp")

    def __init__(self, pixels: int, kind: str = "pixels", dim: int = 64, hidden: int = 256):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"encoder must be one of {self.KINDS}, got {kind!r}.")
        self.pixels, self.kind = check_count("pixels", pixels), kind
        if kind == "pixels":
            self.dim = pixels
        else:
            self.net = nn.Sequential(nn.Linear(pixels, check_count("hidden", hidden)), nn.ReLU(),
                                     nn.Linear(hidden, check_count("dim", dim)))
            self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.kind == "pixels" else self.net(x)


class SequenceNet(nn.Module):
    """Base class: input checks and the (x, previous label) inputs of the recurrent learners.

    Subclasses set ``classes``, ``encoder`` and implement ``read(x_tr, y_tr) -> (online logits, φ)``
    and ``answer(φ, x_ts) -> query logits``.
    """

    classes: int
    encoder: ImageEncoder
    previous_image: bool = False  # also give step t the image x_{t−1} that y_{t−1} labels

    def forward(self, x_tr: torch.Tensor, y_tr: torch.Tensor, x_ts: torch.Tensor | None = None,
                return_state: bool = False):
        self.check(x_tr, y_tr, x_ts)
        online, state = self.read(x_tr, y_tr)
        queries = None if x_ts is None or x_ts.shape[1] == 0 else self.answer(state, x_ts)
        return (online, queries, state) if return_state else (online, queries)

    def check(self, x_tr, y_tr, x_ts=None) -> None:
        pixels = self.encoder.pixels
        for name, x in (("x_tr", x_tr), ("x_ts", x_ts)):
            if x is None and name == "x_ts":
                continue
            if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != pixels or not x.is_floating_point():
                got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"{type(self).__name__} expects {name} as float images flattened to "
                                 f"[episodes, steps, {pixels}], got {got}.")
        if not isinstance(y_tr, torch.Tensor) or y_tr.shape != x_tr.shape[:2]:
            got = tuple(y_tr.shape) if isinstance(y_tr, torch.Tensor) else type(y_tr).__name__
            raise ValueError(f"y_tr must be labels [episodes, steps] = {tuple(x_tr.shape[:2])}, got {got}.")
        if y_tr.dtype != torch.int64:
            raise TypeError(f"labels y_tr must be int64 class indices, got {y_tr.dtype}.")
        if x_tr.shape[1] < 1:
            raise ValueError("D^tr is empty (T = 0): a sequence learner needs at least one step to read.")
        if x_ts is not None and x_ts.shape[0] != x_tr.shape[0]:
            raise ValueError(f"x_ts holds {x_ts.shape[0]} episodes but x_tr {x_tr.shape[0]}.")
        # The range check reads the labels on the host: free on the CPU, skipped on accelerators so
        # that training never waits for the device.
        if y_tr.device.type == "cpu" and (int(y_tr.min()) < 0 or int(y_tr.max()) >= self.classes):
            raise ValueError(f"labels must lie in 0..{self.classes - 1}, got values in "
                             f"{int(y_tr.min())}..{int(y_tr.max())}.")

    @property
    def input_size(self) -> int:
        return self.encoder.dim * (1 + self.previous_image) + self.classes

    def step_inputs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[e(x_t), one-hot y_{t−1}] for every step (zeros for the label at t = 0): [B, T, dim + N];
        with ``previous_image``, [e(x_t), e(x_{t−1}), one-hot y_{t−1}]."""
        e = self.encoder(x)
        parts = [e]
        if self.previous_image:
            parts.append(torch.cat([e.new_zeros(e.shape[0], 1, e.shape[2]), e[:, :-1]], 1))
        return torch.cat([*parts, previous_labels(y, self.classes, x.dtype)], -1)

    def query_inputs(self, state: dict, x_ts: torch.Tensor) -> torch.Tensor:
        """The step input of each query after D^tr: [e(x_q), (e(x_T),) one-hot y_T], [B, Q, input_size]."""
        q = x_ts.shape[1]
        parts = [self.encoder(x_ts)]
        if self.previous_image:
            parts.append(state["image"].unsqueeze(1).expand(-1, q, -1))
        return torch.cat([*parts, state["label"].unsqueeze(1).expand(-1, q, -1)], -1)

    def last_step(self, x_tr: torch.Tensor, y_tr: torch.Tensor) -> dict:
        """What a query's step input needs from D^tr: the last label (and image)."""
        last = {"label": one_hot(y_tr[:, -1], self.classes, x_tr.dtype)}
        if self.previous_image:
            last["image"] = self.encoder(x_tr[:, -1])
        return last


def previous_labels(y: torch.Tensor, classes: int, dtype) -> torch.Tensor:
    """One-hot y_{t−1} at every step t, zeros at t = 0: y [B, T] -> [B, T, classes]."""
    previous = one_hot(y[:, :-1], classes, dtype)
    return torch.cat([previous.new_zeros(y.shape[0], 1, classes), previous], 1)


def label_inputs(x: torch.Tensor, y: torch.Tensor, classes: int) -> torch.Tensor:
    """[x_t, one-hot y_{t−1}] for every step: x [B, T, P], y [B, T] -> [B, T, P + classes]."""
    if x.dim() != 3 or y.shape != x.shape[:2]:
        raise ValueError(f"expected x [episodes, T, pixels] and y [episodes, T], got x {tuple(x.shape)}, "
                         f"y {tuple(y.shape)}.")
    if y.dtype != torch.int64:
        raise TypeError(f"labels y must be int64 class indices, got {y.dtype}.")
    if y.device.type == "cpu" and y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(f"labels must lie in 0..{classes - 1}, got values in {int(y.min())}..{int(y.max())}.")
    return torch.cat([x, previous_labels(y, classes, x.dtype)], -1)


# --- the learner ------------------------------------------------------------------------------
class SequenceLearner(Learner):
    """Any :class:`SequenceNet` as a learner: φ_i = f_θ(D_i^tr) is its state after reading D^tr.

    online: score the online predictions of D^tr (Santoro et al.'s objective) besides the queries.
    max_grad_norm: the meta-gradient's norm is clipped to it in :meth:`step` (after the average
    over processes); None for no clipping.

    >>> learner = SequenceLearner(MANN(400, classes=5))
    >>> theta = learner.init_params()
    >>> metrics = learner.step(theta, torch.optim.Adam(theta.values(), 1e-3), sequences.sample(16))
    """

    loss_kind = "cross_entropy"

    def __init__(self, net: SequenceNet, online: bool = True, max_grad_norm: float | None = 10.0):
        if not isinstance(net, SequenceNet):
            raise TypeError(f"SequenceLearner needs a SequenceNet (LSTMLearner, MANN, InContextTransformer), "
                            f"got {type(net).__name__}.")
        check_functional(net)
        self.net, self.online = net, bool(online)
        self.max_grad_norm = None if max_grad_norm is None else check_positive("max_grad_norm", max_grad_norm)

    def __repr__(self) -> str:
        return f"SequenceLearner({type(self.net).__name__}, online={self.online})"

    def init_params(self, device=None, dtype=None) -> Params:
        from .. import runtime

        return init_params(self.net, runtime.device() if device is None else device, dtype)

    def _check(self, theta: Params, batch: TaskBatch) -> None:
        if not isinstance(batch, TaskBatch):
            raise TypeError(f"expected a TaskBatch, got {type(batch).__name__}.")
        if not theta:
            raise ValueError("θ is empty: it must hold the network's parameters (see init_params).")
        p = next(iter(theta.values()))
        if batch.device != p.device or batch.x_tr.dtype != p.dtype:
            raise ValueError(f"the task batch holds {batch.x_tr.dtype} on {batch.device} but θ is {p.dtype} on "
                             f"{p.device}; use batch.to(device, dtype=...) to match.")
        if not self.online and batch.queries == 0:
            raise ValueError("this learner scores queries only (online=False) but the batch's D^ts is empty.")

    def adapt(self, theta: Params, batch: TaskBatch, steps: int | None = None):
        """φ_i = f_θ(D_i^tr) for every task: the network's state after reading D^tr (``steps`` has no
        meaning for a black box and must be None)."""
        if steps is not None:
            raise ValueError(f"a black-box learner adapts in one forward pass; steps must be None, got {steps!r}.")
        self._check(theta, batch)
        return functional_call(self.net, theta, (batch.x_tr, batch.y_tr), {"return_state": True})[2]

    def predictions(self, theta: Params, batch: TaskBatch):
        """(online logits [tasks, T, N], query logits [tasks, Q, N] or None), differentiable in θ."""
        self._check(theta, batch)
        return functional_call(self.net, theta, (batch.x_tr, batch.y_tr, batch.x_ts))

    def task_metrics(self, theta: Params, batch: TaskBatch) -> dict[str, torch.Tensor]:
        """Per-task loss (mean cross-entropy of the scored predictions) and accuracies, each [tasks]."""
        online, queries = self.predictions(theta, batch)
        logits, labels, metrics = [], [], {}
        if self.online:
            logits.append(online)
            labels.append(batch.y_tr)
            metrics["online_accuracy"] = (online.argmax(-1) == batch.y_tr).to(online.dtype).mean(1)
        if queries is not None:
            logits.append(queries)
            labels.append(batch.y_ts)
            metrics["query_accuracy"] = (queries.argmax(-1) == batch.y_ts).to(queries.dtype).mean(1)
        logits, labels = torch.cat(logits, 1), torch.cat(labels, 1)
        nll = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
        return {"loss": nll.mean(1), "accuracy": (logits.argmax(-1) == labels).to(logits.dtype).mean(1), **metrics}

    def meta_gradient(self, theta: Params, batch: TaskBatch) -> MetaGradient:
        metrics = self.task_metrics(theta, batch)
        grads = torch.autograd.grad(metrics["loss"].mean(), list(theta.values()))
        return MetaGradient(dict(zip(theta, grads)), {k: v.detach() for k, v in metrics.items()})

    @torch.no_grad()
    def evaluate(self, theta: Params, batch: TaskBatch, steps: int | None = None) -> dict[str, torch.Tensor]:
        if steps is not None:
            raise ValueError(f"a black-box learner adapts in one forward pass; steps must be None, got {steps!r}.")
        return self.task_metrics(theta, batch)

    @torch.no_grad()
    def instance_accuracy(self, theta: Params, batch: TaskBatch, instances=INSTANCES) -> torch.Tensor:
        """Accuracy of the online predictions at the k-th presentation of a class, [tasks, len(instances)]."""
        online, _ = self.predictions(theta, batch)
        return accuracy_by_instance(online, batch.y_tr, instances)

    def step(self, theta: Params, optimizer: torch.optim.Optimizer, batch: TaskBatch) -> dict[str, torch.Tensor]:
        """One meta-update with the meta-gradient's norm clipped to ``max_grad_norm`` (recurrent nets
        occasionally produce a large gradient)."""
        from .. import distributed

        result = self.meta_gradient(theta, batch)
        grads, metrics = distributed.average((result.grads, result.means()))
        if self.max_grad_norm is not None:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()]))
            scale = (self.max_grad_norm / (norm + 1e-6)).clamp(max=1.0)
            grads = {k: g * scale for k, g in grads.items()}
        apply_gradients(theta, grads)
        optimizer.step()
        return metrics
