"""MAML++ (Antoniou et al. 2019, "How to train your MAML"): MAML with the changes that make its
training stable, each an option of one learner so that each can be switched on alone.

- ``multi_step_loss`` (MSL): the meta-objective is a weighted sum of the query losses after every
  inner step, Σ_j w_j L(φ_j, D^ts), not only after the last. The weights start equal and are
  annealed toward the last step over ``msl_iterations`` meta-iterations; afterwards only the last
  step's loss counts (as in the authors' code). Every step's parameters receive a direct gradient,
  which tames the vanishing and exploding gradients of a long unrolled inner loop.
- ``per_step_bn`` (BNWB): every inner step j has its own batch-norm weights and biases, meta-learned
  and not adapted in the inner loop (the support pass of step j and the query pass after step j
  use set j). Batch statistics are always those of the batch (no running statistics: the book's
  networks keep none, so the paper's per-step running statistics, BNRS, do not arise).
- ``per_step_rates`` (LSLR): a learned inner learning rate for every parameter tensor (layer) and
  every step, α_{j,k}, initialised at ``inner_lr``.
- ``first_order_iterations`` (DA, derivative-order annealing): the first that many meta-iterations
  use first-order meta-gradients, then second order.
- ``cosine_iterations`` (CA): the outer learning rate β follows a cosine from the optimiser's
  initial value down to ``min_outer_lr`` over that many meta-iterations.

With every option off MAMLPlusPlus is MAML. The options that depend on training progress read
:attr:`MAMLPlusPlus.iteration`, which :meth:`step` advances (it is the learner's state, saved with
:meth:`state_dict`). In θ, the per-step batch-norm parameters are ``"bn/<j>/<name>"`` and the rates
``"lr/<j>/<name>"``, beside the network's other parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import grad

from ..checks import check_count, check_positive
from ..nets import BatchNorm, Params
from ..tasks import Task, TaskBatch
from .functional import choose_execution, map_tasks, task_metrics
from .maml import MAML

BN, LR = "bn/", "lr/"
MIN_NON_FINAL = 0.03   # the authors' floor for the weight of a non-final step, times the number of steps


def msl_weights(steps: int, progress: float) -> list[float]:
    """The multi-step loss weights w_0..w_{N−1} at training progress ``progress`` ∈ [0, 1] (the
    fraction of the annealing done): equal at 0; the non-final weights fall linearly to
    0.03/N and the last rises to 1 − (N − 1)·0.03/N at 1 (the authors' schedule, continuous)."""
    steps = check_count("steps", steps)
    p = min(max(float(progress), 0.0), 1.0)
    floor = MIN_NON_FINAL / steps
    weights = [max((1 - p) / steps, floor) for _ in range(steps - 1)]
    weights.append(min((1 + p * (steps - 1)) / steps, 1 - (steps - 1) * floor))
    return weights


class MAMLPlusPlus(MAML):
    """MAML with the options of MAML++ (see the module docstring for each). Defaults: MAML++ as the
    paper uses it, except the schedules' lengths, which are the experiment's business (0 or None
    switches a schedule off)."""

    def __init__(self, net: nn.Module, loss: str = "cross_entropy", inner_lr: float = 0.1, inner_steps: int = 5,
                 test_steps: int | None = None, multi_step_loss: bool = True, msl_iterations: int = 10_000,
                 per_step_bn: bool = True, per_step_rates: bool = True, first_order_iterations: int = 0,
                 cosine_iterations: int | None = None, min_outer_lr: float = 1e-5, first_order: bool = False,
                 execution: str = "auto"):
        super().__init__(net, loss, inner_lr, inner_steps, first_order, test_steps, execution)
        for name, value in [("multi_step_loss", multi_step_loss), ("per_step_bn", per_step_bn),
                            ("per_step_rates", per_step_rates), ("first_order", first_order)]:
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False, got {value!r}.")
        self.multi_step_loss = multi_step_loss
        self.msl_iterations = check_count("msl_iterations", msl_iterations)
        self.per_step_bn = per_step_bn
        self.per_step_rates = per_step_rates
        self.first_order_iterations = check_count("first_order_iterations", first_order_iterations, minimum=0)
        self.cosine_iterations = None if cosine_iterations is None else check_count("cosine_iterations",
                                                                                    cosine_iterations)
        self.min_outer_lr = check_positive("min_outer_lr", min_outer_lr)
        self.bn_names = tuple(f"{module}.{p}" for module, m in net.named_modules()
                              if isinstance(m, (BatchNorm, nn.modules.batchnorm._NormBase)) for p in ("weight", "bias")
                              if getattr(m, p, None) is not None)
        if per_step_bn and not self.bn_names:
            raise ValueError(f"per_step_bn=True needs batch-norm layers, and {type(net).__name__} has none; "
                             "use per_step_bn=False.")
        self.slots = max(self.inner_steps, 1)   # sets of per-step parameters: one per training step
        self.iteration = 0

    def __repr__(self) -> str:
        options = [name for name, on in [("MSL", self.multi_step_loss), ("BNWB", self.per_step_bn),
                                         ("LSLR", self.per_step_rates), ("DA", self.first_order_iterations > 0),
                                         ("CA", self.cosine_iterations is not None)] if on]
        return (f"MAML++(α={self.inner_lr}, inner_steps={self.inner_steps}, options={'+'.join(options) or 'none'}, "
                f"loss={self.loss_kind})")

    # --- θ: the network, per-step batch norm, per-step rates -----------------------------------------
    def _adapted_names(self) -> list[str]:
        """The parameters the inner loop changes: all of the network's but the per-step batch norm."""
        skip = set(self.bn_names) if self.per_step_bn else set()
        return [name for name, _ in self.net.named_parameters() if name not in skip]

    def init_params(self, device=None, dtype=None) -> Params:
        """θ: the network's parameters (without its batch norm when per_step_bn), a copy of the
        batch-norm weights and biases for every step (``bn/<j>/<name>``), and one rate per
        parameter tensor and step (``lr/<j>/<name>``, scalars) when per_step_rates."""
        net = super().init_params(device, dtype)
        theta = {k: v for k, v in net.items() if not (self.per_step_bn and k in self.bn_names)}
        if self.per_step_bn:
            for j in range(self.slots):
                for k in self.bn_names:
                    theta[f"{BN}{j}/{k}"] = net[k].detach().clone().requires_grad_(True)
        if self.per_step_rates:
            p = next(iter(net.values()))
            for j in range(self.slots):
                for k in self._adapted_names():
                    theta[f"{LR}{j}/{k}"] = torch.tensor(self.inner_lr, device=p.device, dtype=p.dtype,
                                                         requires_grad=True)
        return theta

    def _bn(self, theta: Params, step: int) -> Params:
        j = min(step, self.slots - 1)
        return {k: theta[f"{BN}{j}/{k}"] for k in self.bn_names} if self.per_step_bn else {}

    def _step_rates(self, theta: Params, step: int, inner_lr: float | None):
        if inner_lr is not None:
            return inner_lr
        if not self.per_step_rates:
            return self.inner_lr
        j = min(step, self.slots - 1)
        return {k: theta[f"{LR}{j}/{k}"] for k in self._adapted_names()}

    def _check_theta(self, theta: Params) -> None:
        expected = set(self.init_params_keys())
        if set(theta) != expected:
            missing, unexpected = sorted(expected - set(theta)), sorted(set(theta) - expected)
            raise ValueError(f"θ does not match this MAML++ learner's options: missing {missing[:4]}, unexpected "
                             f"{unexpected[:4]} (make θ with MAMLPlusPlus.init_params).")

    def init_params_keys(self) -> list[str]:
        names = [n for n, _ in self.net.named_parameters() if not (self.per_step_bn and n in self.bn_names)]
        if self.per_step_bn:
            names += [f"{BN}{j}/{k}" for j in range(self.slots) for k in self.bn_names]
        if self.per_step_rates:
            names += [f"{LR}{j}/{k}" for j in range(self.slots) for k in self._adapted_names()]
        return names

    def split(self, theta: Params):
        """(the network's parameters, with step 0's batch norm, and step 0's rates)."""
        self._check_theta(theta)
        adapted = {k: theta[k] for k in self._adapted_names()}
        return {**adapted, **self._bn(theta, 0)}, self._step_rates(theta, 0, None)

    # --- the unrolled inner loop ---------------------------------------------------------------------
    def _unroll(self, theta: Params, x, y, steps: int, first_order: bool, inner_lr: float | None = None):
        """[(φ_1, bn_0), ..., (φ_steps, bn_{steps−1})]: the adapted parameters after every step, each
        with the batch-norm set its query pass uses. Differentiable in θ (rates included)."""
        params = {k: theta[k] for k in self._adapted_names()}
        out = []
        for j in range(steps):
            bn, lr = self._bn(theta, j), self._step_rates(theta, j, inner_lr)
            fixed = {k: v.detach() for k, v in bn.items()} if first_order else bn
            point = {k: v.detach() for k, v in params.items()} if first_order else params
            g = grad(lambda p, x, y: self.loss({**p, **fixed}, x, y))(point, x, y)
            params = {k: p - (lr[k] if isinstance(lr, dict) else lr) * g[k] for k, p in params.items()}
            out.append({**params, **bn})
        return out

    def step_weights(self) -> list[float]:
        """The weight of each step's query loss in the meta-objective at the current iteration."""
        n = self.inner_steps
        if n == 0:
            return []
        if self.multi_step_loss and self.iteration < self.msl_iterations:
            return msl_weights(n, self.iteration / self.msl_iterations)
        return [0.0] * (n - 1) + [1.0]

    def second_order_now(self) -> bool:
        return not self.first_order and self.iteration >= self.first_order_iterations

    def _task(self, theta: Params, x_tr, y_tr, x_ts, y_ts) -> dict[str, torch.Tensor]:
        """The task's meta-objective Σ_j w_j L(φ_j, D^ts) as "loss", and the final step's query loss
        ("final_loss") and accuracy."""
        if self.inner_steps == 0:
            return task_metrics(self.net, self.loss_kind, self.split(theta)[0], x_ts, y_ts)
        weights = self.step_weights()
        phis = self._unroll(theta, x_tr, y_tr, self.inner_steps, not self.second_order_now())
        objective, final = 0.0, None
        for j, (w, phi) in enumerate(zip(weights, phis)):
            if w == 0.0 and j < len(phis) - 1:
                continue   # a step whose loss does not count costs no query pass
            final = task_metrics(self.net, self.loss_kind, phi, x_ts, y_ts)
            objective = objective + w * final["loss"]
        return {**final, "loss": objective, "final_loss": final["loss"]}

    # --- one meta-update: the schedules ------------------------------------------------------------
    def outer_lr_factor(self) -> float:
        """β_t / β_0 of the cosine annealing at the current iteration (1 without it)."""
        if self.cosine_iterations is None:
            return 1.0
        t = min(self.iteration, self.cosine_iterations) / self.cosine_iterations
        return 0.5 * (1 + math.cos(math.pi * t))

    def step(self, theta: Params, optimizer: torch.optim.Optimizer, batch: TaskBatch) -> dict[str, torch.Tensor]:
        """One meta-update at the current iteration's β, MSL weights and derivative order; advances
        :attr:`iteration`."""
        if self.cosine_iterations is not None:
            for group in optimizer.param_groups:
                base = group.setdefault("initial_lr", group["lr"])
                low = min(self.min_outer_lr, base)
                group["lr"] = low + (base - low) * self.outer_lr_factor()
        metrics = super().step(theta, optimizer, batch)
        self.iteration += 1
        return metrics

    def state_dict(self) -> dict:
        """The learner's training state (its iteration), for checkpoints (``train.fit(state=...)``)."""
        return {"iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = check_count("iteration", state["iteration"], minimum=0)

    # --- adaptation and evaluation -------------------------------------------------------------------
    def adapt(self, theta: Params, batch: Task | TaskBatch, steps: int | None = None,
              inner_lr: float | None = None) -> Params:
        """φ after ``steps`` inner steps (default: the training's), as the network's parameters, with
        the batch-norm set of the last step. Differentiable with respect to θ."""
        steps = self.inner_steps if steps is None else check_count("steps", steps, minimum=0)
        lr = None if inner_lr is None else check_positive("inner_lr (α)", inner_lr)
        start = self.split(theta)[0]

        def one(t, x, y):
            phis = self._unroll(t, x, y, steps, self.first_order, lr)
            return phis[-1] if phis else start

        if isinstance(batch, Task):
            self.check_task(start, batch)
            return one(theta, batch.x_tr, batch.y_tr)
        self.check_batch(start, batch)
        if not steps:
            return {k: v.expand(batch.num_tasks, *v.shape) for k, v in start.items()}
        return map_tasks(one, self._execution(batch), (theta,), (batch.x_tr, batch.y_tr))

    def adaptation_curve(self, theta: Params, batch: TaskBatch, steps: int, inner_lr: float | None = None,
                         execution: str | None = None) -> dict[str, torch.Tensor]:
        """Query metrics after 0, 1, ..., ``steps`` inner steps (steps beyond the training's reuse the
        last step's batch norm and rates): tensors [tasks, steps + 1]. No graph."""
        steps = check_count("steps", steps, minimum=0)
        lr = None if inner_lr is None else check_positive("inner_lr (α)", inner_lr)
        fixed = {k: v.detach() for k, v in theta.items()}
        start = self.split(fixed)[0]
        self.check_batch(start, batch)

        def curve(x_tr, y_tr, x_ts, y_ts):
            points = [task_metrics(self.net, self.loss_kind, start, x_ts, y_ts)]
            points += [task_metrics(self.net, self.loss_kind, phi, x_ts, y_ts)
                       for phi in self._unroll(fixed, x_tr, y_tr, steps, True, lr)]
            return {k: torch.stack([p[k] for p in points]) for k in points[0]}

        execution = choose_execution(execution or self.execution, self.net, batch.device, batch.shots + batch.queries)
        return map_tasks(curve, execution, (), (batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts))

    def divergence_hint(self) -> str:
        return (f"MAML++'s inner rate α = {self.inner_lr} (the rates' start) may be too large: try a smaller α, or "
                "switch on the multi-step loss.")
