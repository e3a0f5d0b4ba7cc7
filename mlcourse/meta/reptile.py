"""Reptile (Nichol et al. 2018): move θ toward the solutions of the tasks.

For each task, k steps of SGD (or of Adam with β1 = 0, the paper's Omniglot setting) on
minibatches of D_i^tr give φ_i; then

    θ ← θ + β (1/n) Σ_i (φ_i − θ).

No gradient flows through the inner steps, so memory does not grow with k. The update is
returned as a pseudo-gradient g = θ − mean_i φ_i, so any optimizer can apply it: plain SGD with
learning rate β gives exactly the update above.

Two details of the authors' code (github.com/openai/supervised-reptile) are options here:

- ``keep_adam_state=True``: the inner Adam's second-moment estimate and step count are never
  reset. The reference code keeps one Adam optimiser for the whole run and restores only the
  network's weights between tasks, so each task starts from the moments the previous ones left,
  and every test task starts from the moments meta-training left (restored after each test task).
  Here the tasks of a meta-batch run side by side: each starts from the state the meta-iteration
  began with, and the mean of their final states carries on (for one task per meta-iteration
  this is exactly the reference's sequence). Evaluation reads the state and never changes it.
- ``transductive=False`` at evaluation: batch normalisation uses the statistics of the batch it
  is given, so classifying all queries of a task in one batch lets them inform each other
  (transductive, as MAML's code does). The reference code's non-transductive evaluation
  classifies each query in a batch with D^tr only: the support images and that one query.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import grad

from ..checks import check_count, check_positive
from ..nets import Params, forward
from ..tasks import Task, TaskBatch
from .functional import adaptation_curve, choose_execution, map_tasks, task_metrics
from .learner import GradientLearner, MetaGradient, NetworkLearner

ADAM_BETA2, ADAM_EPS = 0.999, 1e-8


class AdamMoments:
    """The inner Adam's state that Reptile can carry across tasks: the second-moment estimate v
    (one tensor per entry of θ) and the number of steps taken. Empty until the first meta-update;
    ``state_dict``/``load_state_dict`` let training loops checkpoint it."""

    def __init__(self):
        self.second: Params = {}
        self.count: torch.Tensor | None = None   # a device tensor, so that no step reads it on the host

    def ready(self) -> bool:
        return self.count is not None

    def start(self, theta: Params) -> None:
        """Zero moments shaped like θ (what a fresh Adam optimiser holds)."""
        p = next(iter(theta.values()))
        self.second = {k: torch.zeros_like(v, memory_format=torch.contiguous_format).detach() for k, v in theta.items()}
        self.count = torch.zeros((), device=p.device, dtype=p.dtype)

    def state_dict(self) -> dict:
        if not self.ready():
            return {}
        return {"second": {k: v.clone() for k, v in self.second.items()}, "count": self.count.clone()}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            self.second, self.count = {}, None
            return
        if not isinstance(state, dict) or set(state) != {"second", "count"} or not isinstance(state["second"], dict):
            raise ValueError("an AdamMoments state holds {'second': {name: tensor}, 'count': tensor}, "
                             f"got {sorted(state) if isinstance(state, dict) else type(state).__name__}.")
        if self.ready():   # in place: a step replayed as a CUDA graph keeps reading the same memory
            differ = sorted(set(self.second) ^ set(state["second"]))
            if differ:
                raise ValueError(f"the saved Adam moments differ from these in entries {differ[:4]}.")
            with torch.no_grad():
                for k, v in self.second.items():
                    if state["second"][k].shape != v.shape:
                        raise ValueError(f"the saved Adam moment of {k!r} has shape {tuple(state['second'][k].shape)},"
                                         f" this one {tuple(v.shape)}.")
                    v.copy_(state["second"][k])
                self.count.copy_(state["count"])
        else:
            self.second = {k: v.detach().clone() for k, v in state["second"].items()}
            self.count = state["count"].detach().clone()


class Reptile(NetworkLearner, GradientLearner):
    """Reptile with ``inner_steps`` steps of ``inner_optimizer`` ("sgd" or "adam", β1 = 0) at rate
    ``inner_lr`` on minibatches of ``inner_batch`` examples of D^tr (default: all of D^tr). At
    test time it adapts with ``test_steps`` steps on minibatches of ``test_batch`` (defaults: the
    training values; the paper evaluates Omniglot with 50 steps on minibatches of 5).

    keep_adam_state: carry the inner Adam's moments across tasks, as the reference code does
        (see the module docstring); False starts every task from a fresh Adam.
    transductive: how :meth:`evaluate` classifies D^ts (see the module docstring); True
        classifies the queries of a task together.
    """

    def __init__(self, net: nn.Module, loss: str = "mse", inner_lr: float = 0.01, inner_steps: int = 5,
                 inner_batch: int | None = None, inner_optimizer: str = "sgd", test_steps: int | None = None,
                 test_batch: int | None = None, keep_adam_state: bool = False, transductive: bool = True,
                 execution: str = "auto"):
        super().__init__(net, loss, execution)
        if inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"inner_optimizer must be 'sgd' or 'adam', got {inner_optimizer!r}.")
        if not isinstance(keep_adam_state, bool) or (keep_adam_state and inner_optimizer != "adam"):
            raise ValueError(f"keep_adam_state needs inner_optimizer='adam' (got {inner_optimizer!r}) and must be a "
                             f"bool, got {keep_adam_state!r}.")
        if not isinstance(transductive, bool):
            raise ValueError(f"transductive must be True or False, got {transductive!r}.")
        self.inner_lr = check_positive("inner_lr (α)", inner_lr)
        self.inner_steps = check_count("inner_steps", inner_steps)
        self.inner_batch = None if inner_batch is None else check_count("inner_batch", inner_batch)
        self.inner_optimizer = inner_optimizer
        self.test_steps = self.inner_steps if test_steps is None else check_count("test_steps", test_steps)
        self.test_batch = self.inner_batch if test_batch is None else check_count("test_batch", test_batch)
        self.transductive = transductive
        self.adam_state = AdamMoments() if keep_adam_state else None

    def __repr__(self) -> str:
        return (f"Reptile(α={self.inner_lr}, inner_steps={self.inner_steps}, inner_batch={self.inner_batch}, "
                f"inner_optimizer={self.inner_optimizer}, keep_adam_state={self.adam_state is not None}, "
                f"loss={self.loss_kind})")

    def _minibatches(self, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int | None, generator=None):
        """[tasks, steps, batch, ...]: the examples each inner step sees. Each pass over D^tr is a
        new random order of it, cut into consecutive minibatches (a minibatch may span two passes),
        as the reference code samples without replacement; all of D^tr at every step when
        batch_size is None or not smaller than D^tr."""
        tasks, shots = x.shape[:2]
        if batch_size is None or batch_size >= shots:
            index = torch.arange(shots, device=x.device).expand(tasks, steps, shots)
        else:
            passes = -(-steps * batch_size // shots)
            order = torch.rand(tasks, passes, shots, device=x.device, generator=generator).argsort(dim=2)
            index = order.reshape(tasks, -1)[:, :steps * batch_size].reshape(tasks, steps, batch_size)

        def gather(t):
            flat = index.reshape(tasks, -1)
            picked = torch.gather(t, 1, flat.view(tasks, -1, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:]))
            return picked.view(tasks, *index.shape[1:], *t.shape[2:])

        return gather(x), gather(y)

    def _solve(self, theta: Params, second: Params, count, x_steps, y_steps) -> tuple[Params, Params]:
        """φ for one task and the inner Adam's final second moments: the inner optimizer run over
        its minibatches [steps, batch, ...], from the moments ``second`` after ``count`` steps."""
        gradient = grad(self.loss)
        params = theta
        for t in range(x_steps.shape[0]):
            g = gradient(params, x_steps[t], y_steps[t])
            if self.inner_optimizer == "sgd":
                params = {k: p - self.inner_lr * g[k] for k, p in params.items()}
            else:  # Adam with β1 = 0: a per-entry step size from a running mean of g²
                second = {k: ADAM_BETA2 * second[k] + (1 - ADAM_BETA2) * g[k] ** 2 for k in params}
                correction = 1 - ADAM_BETA2 ** (count + t + 1)
                params = {k: p - self.inner_lr * g[k] / ((second[k] / correction).sqrt() + ADAM_EPS)
                          for k, p in params.items()}
        return params, second

    def _adapt(self, theta: Params, batch: TaskBatch, steps: int, batch_size: int | None, generator=None):
        """(φ_i stacked, the inner Adam's final moments stacked) for every task of the batch."""
        self.check_batch(theta, batch)
        x_steps, y_steps = self._minibatches(batch.x_tr, batch.y_tr, steps, batch_size, generator)
        start = {k: p.detach() for k, p in theta.items()}
        if self.adam_state is not None:
            if not self.adam_state.ready():
                self.adam_state.start(start)
            second, count = self.adam_state.second, self.adam_state.count
        else:
            second = {k: torch.zeros_like(p) for k, p in start.items()}
            count = torch.zeros((), device=batch.device, dtype=next(iter(start.values())).dtype)
        execution = choose_execution(self.execution, self.net, batch.device, batch.shots)
        return map_tasks(self._solve, execution, (start, second, count), (x_steps, y_steps))

    def adapt(self, theta: Params, batch: Task | TaskBatch, steps: int | None = None,
              batch_size: int | None = None, generator=None) -> Params:
        """φ_i for every task of the batch (a :class:`Task` gives one φ), stacked along a leading
        task dimension; no graph. ``steps`` and ``batch_size`` override the training values. With
        ``keep_adam_state`` each task starts from the carried moments (which this does not change)."""
        single = isinstance(batch, Task)
        if single:
            batch = TaskBatch.stack([batch])
        steps = self.inner_steps if steps is None else check_count("steps", steps)
        batch_size = self.inner_batch if batch_size is None else check_count("batch_size", batch_size)
        phi, _ = self._adapt(theta, batch, steps, batch_size, generator)
        return {k: v[0] for k, v in phi.items()} if single else phi

    def meta_gradient(self, theta: Params, batch: TaskBatch, generator=None) -> MetaGradient:
        """The pseudo-gradient θ − (1/n) Σ_i φ_i (an optimizer step against it moves θ toward the
        φ_i), and the query metrics of the φ_i for monitoring. With ``keep_adam_state`` the
        carried moments become the mean of the tasks' final moments."""
        phi, second = self._adapt(theta, batch, self.inner_steps, self.inner_batch, generator)
        if self.adam_state is not None:
            with torch.no_grad():   # in place, so that a captured CUDA graph keeps reading the same tensors
                for k, v in self.adam_state.second.items():
                    v.copy_(second[k].mean(0))
                self.adam_state.count.add_(self.inner_steps)
        grads = {k: p.detach() - phi[k].mean(0) for k, p in theta.items()}
        return MetaGradient(grads, self.query_metrics(phi, batch))

    def state_dict(self) -> dict:
        """The learner's own state across meta-iterations (the carried Adam moments), for checkpoints."""
        return {"adam": self.adam_state.state_dict() if self.adam_state is not None else {}}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or set(state) != {"adam"}:
            raise ValueError(f"a Reptile state holds {{'adam': ...}}, got {state!r:.80}.")
        if self.adam_state is None:
            if state["adam"]:
                raise ValueError("this Reptile does not keep its Adam state (keep_adam_state=False), "
                                 "but the saved state holds Adam moments.")
            return
        self.adam_state.load_state_dict(state["adam"])

    def query_metrics(self, phi: Params, batch: TaskBatch, transductive: bool | None = None) -> dict[str, torch.Tensor]:
        """Metrics of stacked task parameters φ_i on each task's D^ts, each of shape [tasks].
        Non-transductive: each query is classified in a batch of D^tr and that query alone."""
        transductive = self.transductive if transductive is None else transductive
        execution = choose_execution(self.execution, self.net, batch.device, batch.queries)
        if transductive:
            return map_tasks(lambda params, x, y: task_metrics(self.net, self.loss_kind, params, x, y),
                             execution, (), (phi, batch.x_ts, batch.y_ts))
        return map_tasks(self._one_query_at_a_time, execution, (), (phi, batch.x_tr, batch.x_ts, batch.y_ts))

    def _one_query_at_a_time(self, params, x_tr, x_ts, y_ts):
        out = torch.stack([forward(self.net, params, torch.cat([x_tr, x_ts[j:j + 1]]))[-1]
                           for j in range(x_ts.shape[0])])
        if self.loss_kind == "mse":
            return {"loss": (out - y_ts).pow(2).mean()}
        return {"loss": torch.nn.functional.cross_entropy(out, y_ts), "accuracy": (out.argmax(-1) == y_ts).float().mean()}

    def evaluate(self, theta: Params, batch: TaskBatch, steps: int | None = None, batch_size: int | None = None,
                 transductive: bool | str | None = None) -> dict[str, torch.Tensor]:
        """Per-task query metrics after ``test_steps`` inner-optimizer steps on minibatches of
        ``test_batch`` (the paper's evaluation). ``transductive``: True, False, or "both" (the
        transductive metrics, and the non-transductive ones with the suffix ``_non_transductive``,
        from the same adaptation); default: the learner's setting."""
        if transductive not in (None, True, False, "both"):
            raise ValueError(f"transductive must be True, False or 'both', got {transductive!r}.")
        steps = self.test_steps if steps is None else check_count("steps", steps)
        batch_size = self.test_batch if batch_size is None else check_count("batch_size", batch_size)
        phi, _ = self._adapt(theta, batch, steps, batch_size)
        if transductive != "both":
            return self.query_metrics(phi, batch, transductive)
        one_by_one = self.query_metrics(phi, batch, False)
        return {**self.query_metrics(phi, batch, True), **{f"{k}_non_transductive": v for k, v in one_by_one.items()}}

    def adaptation_curve(self, theta: Params, batch: TaskBatch, steps: int, inner_lr: float | None = None,
                         execution: str | None = None) -> dict[str, torch.Tensor]:
        """Query metrics after 0..steps full-batch SGD steps on D^tr (as MAML's); [tasks, steps + 1]."""
        self.check_batch(theta, batch)
        lr = self.inner_lr if inner_lr is None else check_positive("inner_lr", inner_lr)
        return adaptation_curve(self.net, self.loss_kind, theta, batch, steps, lr, execution or self.execution)
