"""Implicit MAML (Rajeswaran et al. 2019): meta-gradients with memory that does not grow with the
number of inner steps.

Adaptation solves a proximally regularised problem,

    φ_i = argmin_φ  L(φ, D_i^tr) + λ/2 ‖φ − θ‖²,

approximately, by gradient descent from θ, without recording a graph. At the solution
∇L(φ_i) + λ(φ_i − θ) = 0; differentiating this identity with respect to θ (the implicit function
theorem) gives dφ_i/dθ = (I + H_i/λ)^{-1}, with H_i the Hessian of the training loss at φ_i. So

    ∇θ L(φ_i, D_i^ts) = (I + H_i/λ)^{-1} ∇φ L(φ_i, D_i^ts),

which conjugate gradient solves with a few Hessian-vector products, never forming H_i. Nothing
of the inner loop is kept: memory and the meta-gradient's cost are independent of the inner steps.

Because the meta-gradient depends only on the solution, the inner solver can be anything that
finds it. Three are offered: plain gradient descent with a fixed step (``inner_solver="gd"``,
the paper's iMAML-GD), and gradient descent that never lets the objective rise
(``inner_solver="monotone"``): each task keeps its own step size, a step that would increase
L + λ/2‖φ − θ‖² (or make it non-finite) is refused and the step halved, an accepted one grows the
step by a quarter. A fixed step diverges on a task whose curvature exceeds 2/step; the monotone
solver cannot, and it takes larger steps where the curvature allows, for the same cost per step
(one gradient, which also gives the objective's value). The third, ``inner_solver="accelerated"``,
is Nesterov's accelerated gradient with the same per-task step control: a step from the
extrapolated point is taken only if it lowers the objective by at least step/2 ‖g‖² (else the
task's step is halved and the step retried), and the momentum restarts wherever the objective rose
(O'Donoghue and Candès 2015). On a smooth problem with condition number κ it needs about √κ
steps where gradient descent needs κ; each step costs one gradient and one extra loss value.

On the CPU the MLP runs the inner solver and the implicit gradient for all tasks at once in plain
autograd (the MLP's task-batched forward, as MAML does there; ``vmap``'s per-operation overhead
dominates such small tensors), with per-task step sizes, dot products and CG coefficients; the
tests hold it to the ``vmap`` and loop paths.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.func import grad, grad_and_value, jvp

from ..checks import check_count, check_positive
from ..linalg import conjugate_gradient, dot
from ..nets import Params
from ..tasks import Task, TaskBatch
from .functional import (adaptation_curve, batched_loss, choose_execution, map_tasks, sgd_steps,
                         task_metrics)
from .learner import GradientLearner, MetaGradient, NetworkLearner


SOLVERS = ("gd", "monotone", "accelerated")
GROW, SHRINK = 1.25, 0.5   # the adaptive solvers' step after an accepted and after a refused step


class CGWarning(UserWarning):
    """Conjugate gradient stopped before reaching the requested accuracy."""


class IMAML(NetworkLearner, GradientLearner):
    """iMAML with the gradient-descent inner solver.

    lam: λ, the strength of the pull toward θ (the paper's Omniglot value 2.0).
    inner_lr, inner_steps: step size and number of gradient steps on L + λ/2‖φ − θ‖².
    cg_steps: conjugate-gradient iterations for the implicit gradient (the paper: 5).
    damping: solves ((1 + damping) I + H/λ) g = v instead, for stability with noisy Hessians
        (0 gives the exact implicit gradient).
    cg_tolerance: relative CG residual above which a :class:`CGWarning` names the residual
        (``on_cg_failure="raise"`` raises instead, ``"ignore"`` skips the check and its host sync).
    inner_tolerance: the stopping rule of the inner solver. None runs exactly ``inner_steps``
        steps; a number stops earlier, once the largest gradient norm of the regularised objective
        over the tasks of the batch falls below it (checked every ``check_every`` steps).
    test_steps, test_lam: the test-time adaptation (default: as in training; the authors' code
        evaluates with plain gradient steps, ``test_lam=0``).
    inner_solver: "gd" (fixed step ``inner_lr``), "monotone" (per-task steps starting at
        ``inner_lr`` that never increase the objective) or "accelerated" (Nesterov momentum with
        the same step control and restarts; see the module docstring). Test-time adaptation uses
        the same solver. The accelerated solver's momentum restarts at each ``inner_tolerance`` check.
    """

    def __init__(self, net: nn.Module, loss: str = "cross_entropy", lam: float = 2.0, inner_lr: float = 0.1,
                 inner_steps: int = 16, cg_steps: int = 5, damping: float = 0.0, cg_tolerance: float = 0.1,
                 on_cg_failure: str = "warn", inner_tolerance: float | None = None, check_every: int = 5,
                 test_steps: int | None = None, test_lam: float | None = None, inner_solver: str = "gd",
                 execution: str = "auto"):
        super().__init__(net, loss, execution)
        if inner_solver not in SOLVERS:
            raise ValueError(f"inner_solver must be one of {SOLVERS}, got {inner_solver!r}.")
        self.inner_solver = inner_solver
        self.lam = check_positive("lam (λ)", lam)
        self.inner_lr = check_positive("inner_lr", inner_lr)
        self.inner_steps = check_count("inner_steps", inner_steps)
        self.cg_steps = check_count("cg_steps", cg_steps)
        self.damping = _check_nonnegative("damping", damping)
        self.cg_tolerance = check_positive("cg_tolerance", cg_tolerance)
        if on_cg_failure not in ("warn", "raise", "ignore"):
            raise ValueError(f"on_cg_failure must be 'warn', 'raise' or 'ignore', got {on_cg_failure!r}.")
        self.on_cg_failure = on_cg_failure
        self.inner_tolerance = None if inner_tolerance is None else check_positive("inner_tolerance", inner_tolerance)
        self.check_every = check_count("check_every", check_every)
        self.test_steps = self.inner_steps if test_steps is None else check_count("test_steps", test_steps)
        self.test_lam = self.lam if test_lam is None else _check_nonnegative("test_lam (λ at test time)", test_lam)

    def __repr__(self) -> str:
        return (f"IMAML(λ={self.lam}, inner_lr={self.inner_lr}, inner_steps={self.inner_steps}, "
                f"inner_solver={self.inner_solver}, cg_steps={self.cg_steps}, damping={self.damping}, "
                f"loss={self.loss_kind})")

    def _batched(self, batch: TaskBatch) -> bool:
        """Whether the inner solver and the implicit gradient run task-batched (MLP on the CPU)."""
        return choose_execution(self.execution, self.net, batch.device, batch.shots + batch.queries,
                                batched=True) == "batched"

    # --- the inner problem ---------------------------------------------------------------------
    def _gradient_norm(self, theta, phi, x, y) -> torch.Tensor:
        """‖∇φ (L(φ) + λ/2‖φ − θ‖²)‖ for one task: zero at the exact inner solution."""
        g = grad(self.loss)(phi, x, y)
        return sum((g[k] + self.lam * (phi[k] - theta[k])).pow(2).sum() for k in g).sqrt()

    def solve_inner(self, theta: Params, batch: TaskBatch) -> tuple[Params, torch.Tensor]:
        """φ_i for every task (stacked along a leading task dimension) and the gradient norm of each
        task's regularised objective at φ_i. No graph is recorded."""
        self.check_batch(theta, batch)
        execution = self._execution(batch)
        anchor = {k: v.detach() for k, v in theta.items()}
        per_task = (batch.x_tr, batch.y_tr)
        phi = {k: v.expand(batch.num_tasks, *v.shape).clone() for k, v in anchor.items()}
        rate = torch.full((batch.num_tasks,), self.inner_lr, device=batch.device, dtype=phi[next(iter(phi))].dtype)

        if self._batched(batch):
            return self._batched_solve(anchor, batch.x_tr, batch.y_tr, phi, rate)
        done = 0
        while done < self.inner_steps:
            chunk = self.inner_steps - done if self.inner_tolerance is None else min(self.check_every,
                                                                                     self.inner_steps - done)
            phi, rate = map_tasks(lambda a, x, y, p, r: self._inner_steps(a, x, y, p, r, chunk, self.lam),
                                  execution, (anchor,), (*per_task, phi, rate))
            done += chunk
            if self.inner_tolerance is not None and done < self.inner_steps:
                norms = map_tasks(lambda a, x, y, p: self._gradient_norm(a, p, x, y), execution, (anchor,),
                                  (*per_task, phi))
                if float(norms.max()) < self.inner_tolerance:  # one host sync per check, by design
                    break
        norms = map_tasks(lambda a, x, y, p: self._gradient_norm(a, p, x, y), execution, (anchor,), (*per_task, phi))
        return phi, norms

    def _inner_steps(self, anchor, x, y, phi, rate, steps, lam, record=None):
        """``steps`` steps of the inner solver on L(φ, (x, y)) + lam/2 ‖φ − anchor‖² for one task,
        from φ with step size ``rate``: (φ, rate), and with ``record=(x_ts, y_ts)`` also the query
        metrics after each step (stacked, [steps])."""
        def objective(p):
            value = self.loss(p, x, y)
            if lam:
                value = value + lam / 2 * sum((p[k] - anchor[k]).pow(2).sum() for k in p)
            return value

        points = []
        if self.inner_solver == "gd":
            for _ in range(steps):
                phi = sgd_steps(self.loss, phi, x, y, rate, 1, proximal=(anchor, lam) if lam else None)
                if record is not None:
                    points.append(task_metrics(self.net, self.loss_kind, phi, *record))
        elif self.inner_solver == "accelerated":
            state = _start(phi, objective(phi), rate)
            for _ in range(steps):
                state = _accelerated_step(grad_and_value(objective), objective, state, lambda v, like: v,
                                          lambda g: sum(t.pow(2).sum() for t in g.values()))
                if record is not None:
                    points.append(task_metrics(self.net, self.loss_kind, state[0], *record))
            phi, rate = state[0], state[4]
        else:
            g, value = grad_and_value(objective)(phi)
            for _ in range(steps):
                candidate = {k: phi[k] - rate * g[k] for k in phi}
                g_new, value_new = grad_and_value(objective)(candidate)
                accept = torch.isfinite(value_new) & (value_new <= value)
                phi = {k: torch.where(accept, candidate[k], phi[k]) for k in phi}
                g = {k: torch.where(accept, g_new[k], g[k]) for k in g}
                value = torch.where(accept, value_new, value)
                rate = torch.where(accept, rate * GROW, rate * SHRINK)
                if record is not None:
                    points.append(task_metrics(self.net, self.loss_kind, phi, *record))
        if record is None:
            return phi, rate
        return phi, rate, {k: torch.stack([p[k] for p in points]) for k in points[0]}

    # --- the same, for all tasks at once (the MLP's task-batched forward) -------------------------
    def _batched_grad_and_value(self, phi, anchor, x, y, lam):
        """Per-task gradients (stacked) and values [tasks] of L(φ_i) + lam/2 ‖φ_i − θ‖²."""
        with torch.enable_grad():
            point = {k: v.detach().requires_grad_(True) for k, v in phi.items()}
            value = batched_loss(self.net, self.loss_kind, point, x, y)["loss"]
            if lam:
                value = value + lam / 2 * sum((point[k] - anchor[k]).pow(2).flatten(1).sum(1) for k in point)
            g = torch.autograd.grad(value.sum(), list(point.values()))
        return dict(zip(point, g)), value.detach()

    def _batched_gradient(self, phi, anchor, x, y):
        """Per-task gradients of L(φ_i) + λ/2 ‖φ_i − θ‖², the proximal part in closed form."""
        g, _ = self._batched_grad_and_value(phi, anchor, x, y, 0.0)
        return {k: g[k] + self.lam * (phi[k] - anchor[k]) for k in g}

    def _batched_solve(self, anchor, x, y, phi, rate):
        """:meth:`solve_inner` for all tasks at once: the same steps, each task with its own rate."""
        done = 0
        while done < self.inner_steps:
            chunk = self.inner_steps if self.inner_tolerance is None else min(self.check_every,
                                                                              self.inner_steps - done)
            phi, rate = self._batched_steps(anchor, x, y, phi, rate, chunk)
            done += chunk
            if self.inner_tolerance is not None and done < self.inner_steps:
                if float(_norms(self._batched_gradient(phi, anchor, x, y)).max()) < self.inner_tolerance:
                    break  # one host sync per check, by design
        return phi, _norms(self._batched_gradient(phi, anchor, x, y))

    def _batched_steps(self, anchor, x, y, phi, rate, steps):
        """``steps`` steps of the inner solver for all tasks at once: (φ, rate)."""
        if self.inner_solver == "gd":
            for _ in range(steps):
                g = self._batched_gradient(phi, anchor, x, y)
                phi = {k: phi[k] - _per_task(rate, phi[k]) * g[k] for k in phi}
            return phi, rate

        def grad_and_value(p):
            return self._batched_grad_and_value(p, anchor, x, y, self.lam)

        if self.inner_solver == "accelerated":
            def value_of(p):
                fit = batched_loss(self.net, self.loss_kind, p, x, y)["loss"]
                return fit + self.lam / 2 * sum((p[k] - anchor[k]).pow(2).flatten(1).sum(1) for k in p)

            state = _start(phi, value_of(phi), rate)
            for _ in range(steps):
                state = _accelerated_step(grad_and_value, value_of, state, _per_task, lambda g: _batched_dot(g, g))
            return state[0], state[4]
        g, value = grad_and_value(phi)
        for _ in range(steps):
            candidate = {k: phi[k] - _per_task(rate, phi[k]) * g[k] for k in phi}
            g_new, value_new = grad_and_value(candidate)
            accept = torch.isfinite(value_new) & (value_new <= value)
            phi = {k: torch.where(_per_task(accept, phi[k]), candidate[k], phi[k]) for k in phi}
            g = {k: torch.where(_per_task(accept, g[k]), g_new[k], g[k]) for k in g}
            value = torch.where(accept, value_new, value)
            rate = torch.where(accept, rate * GROW, rate * SHRINK)
        return phi, rate

    def _batched_task_gradients(self, phi, x_tr, y_tr, x_ts, y_ts):
        """:meth:`_task_gradient` for all tasks at once: per-task CG with double-backward
        Hessian-vector products of the summed training losses (each task's loss depends on its
        own slice of φ only, so H is block-diagonal over tasks)."""
        with torch.enable_grad():
            point = {k: v.detach().requires_grad_(True) for k, v in phi.items()}
            query = batched_loss(self.net, self.loss_kind, point, x_ts, y_ts)
            query_grad = dict(zip(point, torch.autograd.grad(query["loss"].sum(), list(point.values()))))
            train_loss = batched_loss(self.net, self.loss_kind, point, x_tr, y_tr)["loss"].sum()
            train_grad = torch.autograd.grad(train_loss, list(point.values()), create_graph=True)

        def matvec(v):
            with torch.enable_grad():
                hv = torch.autograd.grad(train_grad, list(point.values()), [v[k] for k in point],
                                         retain_graph=True, allow_unused=True)
            return {k: (1 + self.damping) * v[k] + (0 if h is None else h.detach()) / self.lam
                    for k, h in zip(point, hv)}

        g, residual = conjugate_gradient(matvec, query_grad, self.cg_steps, batch_dims=1)
        return g, {**{k: v.detach() for k, v in query.items()}, "cg_residual": residual}

    # --- the implicit meta-gradient ---------------------------------------------------------------
    def _task_gradient(self, phi, x_tr, y_tr, x_ts, y_ts):
        """(I(1 + damping) + H/λ)^{-1} ∇φ L(φ, D^ts) for one task, with its query metrics."""
        query_grad = grad(self.loss)(phi, x_ts, y_ts)

        def matvec(v):
            hv = jvp(lambda p: grad(self.loss)(p, x_tr, y_tr), (phi,), (v,))[1]
            return {k: (1 + self.damping) * v[k] + hv[k] / self.lam for k in v}

        g, residual = conjugate_gradient(matvec, query_grad, self.cg_steps)
        metrics = task_metrics(self.net, self.loss_kind, phi, x_ts, y_ts)
        return g, {**metrics, "cg_residual": residual}

    def meta_gradient(self, theta: Params, batch: TaskBatch) -> MetaGradient:
        """The implicit meta-gradient averaged over the batch, and per-task diagnostics: query
        loss (and accuracy) at φ_i, CG's relative residual, the inner gradient norm."""
        with torch.no_grad():
            phi, inner_norm = self.solve_inner(theta, batch)
            if self._batched(batch):
                grads, info = self._batched_task_gradients(phi, batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts)
            else:
                grads, info = map_tasks(self._task_gradient, self._execution(batch), (),
                                        (phi, batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts))
        info["inner_grad_norm"] = inner_norm
        mean = {k: v.mean(0) for k, v in grads.items()}
        self._check(mean, info["cg_residual"])
        return MetaGradient(mean, info)

    def _check(self, grads: Params, residual: torch.Tensor) -> None:
        if self.on_cg_failure == "ignore":
            return
        finite = torch.stack([torch.isfinite(g).all() for g in grads.values()]).all()
        worst, finite = torch.stack([residual.max(), finite.to(residual.dtype)]).tolist()  # one host sync
        if not finite:
            raise FloatingPointError(
                "the implicit meta-gradient is not finite: a Hessian-vector product of the training loss "
                f"overflowed. Try a larger λ (now {self.lam}) or damping (now {self.damping}), or a smaller inner_lr.")
        if worst > self.cg_tolerance:
            message = (f"conjugate gradient did not converge in {self.cg_steps} steps: relative residual {worst:.3g} "
                       f"(worst task of the batch) > cg_tolerance {self.cg_tolerance}. Raise cg_steps or damping.")
            if self.on_cg_failure == "raise":
                raise RuntimeError(message)
            warnings.warn(message, CGWarning, stacklevel=3)

    def adapt(self, theta: Params, batch: Task | TaskBatch, steps: int | None = None) -> Params:
        """φ_i ≈ argmin L(φ, D_i^tr) + λ/2 ‖φ − θ‖² for every task (a :class:`Task` gives one φ): the
        inner solver's result, stacked along a task dimension; no graph."""
        single = isinstance(batch, Task)
        if single:
            batch = TaskBatch.stack([batch])
        if steps is None:
            phi, _ = self.solve_inner(theta, batch)
        else:
            self.check_batch(theta, batch)
            steps = check_count("steps", steps)
            anchor = {k: v.detach() for k, v in theta.items()}
            rate = torch.full((batch.num_tasks,), self.inner_lr, device=batch.device,
                              dtype=anchor[next(iter(anchor))].dtype)
            phi, _ = map_tasks(lambda a, x, y, r: self._inner_steps(a, x, y, a, r, steps, self.lam),
                               self._execution(batch), (anchor,), (batch.x_tr, batch.y_tr, rate))
        return {k: v[0] for k, v in phi.items()} if single else phi

    def adaptation_curve(self, theta: Params, batch: TaskBatch, steps: int, execution: str | None = None,
                         lam: float | None = None) -> dict[str, torch.Tensor]:
        """Query metrics after 0..steps steps of the inner solver (proximal gradient descent):
        [tasks, steps + 1]. By default iMAML adapts the way it meta-trained; ``lam`` replaces λ at
        test time (0 gives plain gradient steps, as the paper's authors evaluate)."""
        self.check_batch(theta, batch)
        lam = self.lam if lam is None else _check_nonnegative("lam (λ) at test time", lam)
        if self.inner_solver == "gd":
            return adaptation_curve(self.net, self.loss_kind, theta, batch, steps, self.inner_lr,
                                    execution or self.execution, lam=lam)
        steps = check_count("steps", steps, minimum=0)
        anchor = {k: v.detach() for k, v in theta.items()}
        rate = torch.full((batch.num_tasks,), self.inner_lr, device=batch.device, dtype=anchor[next(iter(anchor))].dtype)

        def curve(a, x_tr, y_tr, x_ts, y_ts, r):
            start = task_metrics(self.net, self.loss_kind, a, x_ts, y_ts)
            if steps == 0:
                return {k: v.unsqueeze(0) for k, v in start.items()}
            _, _, after = self._inner_steps(a, x_tr, y_tr, a, r, steps, lam, record=(x_ts, y_ts))
            return {k: torch.cat([start[k].unsqueeze(0), after[k]]) for k in start}

        execution = choose_execution(execution or self.execution, self.net, batch.device, batch.shots + batch.queries)
        with torch.no_grad():
            return map_tasks(curve, execution, (anchor,), (batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts, rate))

    def evaluate(self, theta: Params, batch: TaskBatch, steps: int | None = None,
                 lam: float | None = None) -> dict[str, torch.Tensor]:
        """Per-task query metrics after ``test_steps`` steps with λ = ``test_lam``."""
        curve = self.adaptation_curve(theta, batch, self.test_steps if steps is None else steps,
                                      lam=self.test_lam if lam is None else lam)
        return {k: v[:, -1] for k, v in curve.items()}


def _start(phi, value, rate):
    """The accelerated solver's state at φ: (x, G(x), y, accepted steps since a restart, step)."""
    return phi, value, phi, torch.zeros_like(rate), rate


def _accelerated_step(grad_and_value, value_of, state, spread, squared_norm):
    """One step of the accelerated solver on every task (or on one task under ``vmap``): a gradient
    step from the extrapolated point y, kept only where it lowers G by step/2 ‖g‖²; where it is
    kept, the new point is extrapolated along its move, unless G rose, where the momentum restarts.
    ``spread(v, like)`` shapes a per-task value to broadcast against a parameter tensor."""
    x, fx, y, k, rate = state
    g, fy = grad_and_value(y)
    candidate = {n: y[n] - spread(rate, y[n]) * g[n] for n in y}
    fc = value_of(candidate)
    accept = torch.isfinite(fc) & (fc <= fy - rate / 2 * squared_norm(g))
    restart = fc > fx
    k = torch.where(accept, torch.where(restart, torch.zeros_like(k), k + 1), k)
    beta = (k - 1).clamp(min=0) / (k + 2)
    new_x = {n: torch.where(spread(accept, x[n]), candidate[n], x[n]) for n in x}
    new_y = {n: torch.where(spread(accept, x[n]), candidate[n] + spread(beta, x[n]) * (candidate[n] - x[n]), y[n])
             for n in x}
    return (new_x, torch.where(accept, fc, fx), new_y, k, torch.where(accept, rate * GROW, rate * SHRINK))


def _check_nonnegative(name: str, value) -> float:
    """``value`` as a float if it is a finite number >= 0, else an error naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def _per_task(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-task value [tasks] shaped to broadcast against a stacked tensor [tasks, ...]."""
    return value.view(-1, *([1] * (like.dim() - 1)))


def _batched_dot(a, b) -> torch.Tensor:
    """Per-task dot products [tasks] of two dicts of stacked tensors."""
    return dot(a, b, batch_dims=1)


def _norms(g) -> torch.Tensor:
    return _batched_dot(g, g).sqrt()
