"""Trust-region steps (Schulman et al. 2015) for any differentiable objective of a parameter dict.

TRPO maximises a surrogate L(θ) subject to a bound on the average KL divergence between the old
and the new policy, KL ≤ δ. Linearising L and taking the KL to second order gives the step
θ ← θ + √(2δ / sᵀFs) · s with s = F⁻¹∇L, where F is the Hessian of the KL at the old θ (the
Fisher information). F is never formed: conjugate gradient solves F s = ∇L from products F v,
each one a second backward pass through ∇KL. A backtracking line search then shrinks the step
until the surrogate improves and the exact KL is within δ.

MAML uses TRPO as its meta-optimiser (Finn et al. 2017): there L and KL are functions of θ through
the adapted parameters φ_i(θ), so F v differentiates through the inner step too.
"""

from __future__ import annotations

from typing import Callable

import torch

from .. import linalg
from ..checks import check_count, check_positive
from ..nets import Params


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflat(vector: torch.Tensor, like: Params) -> Params:
    out, start = {}, 0
    for k, p in like.items():
        out[k] = vector[start:start + p.numel()].view_as(p)
        start += p.numel()
    return out


LINE_SEARCHES = ("auto", "sequential", "parallel")


class TRPO:
    """The KL-constrained step: max_kl δ = 0.01, 10 conjugate-gradient steps with damping 1e-5,
    line search shrinking the step by 0.8 up to 15 times (the settings of the reference code).

    fisher_fraction < 1 computes the Fisher-vector products on that share of the data (rllab's
    ``subsample_factor``): the products are the costly part of the step, the Fisher only shapes
    the step's direction and length, and the line search checks the exact KL on all the data.

    line_search: both ways take the first (largest) fraction of the step that improves the
    surrogate within the KL bound. "sequential" tries the fractions one by one and stops at the
    first acceptable one (fewest evaluations; one host synchronisation per try); "parallel" tries
    all of them and selects without reading any value on the host, so that the whole step can be
    captured as a CUDA graph; "auto" is parallel on CUDA and sequential elsewhere.

    Under ``torch.distributed`` each process holds its share of the tasks: the surrogate, the KL,
    their gradients and the Fisher-vector products are averaged over processes (weighted by their
    shares, :mod:`mlcourse.distributed`), so every process computes the same direction, the same
    line-search decision and the same new θ as one process holding every task.
    """

    def __init__(self, max_kl: float = 0.01, cg_iters: int = 10, cg_damping: float = 1e-5,
                 backtrack: float = 0.8, line_search_steps: int = 15, fisher_fraction: float = 1.0,
                 line_search: str = "auto"):
        self.max_kl = check_positive("max_kl (δ)", max_kl)
        self.fisher_fraction = float(fisher_fraction)
        if not 0 < self.fisher_fraction <= 1:
            raise ValueError(f"fisher_fraction must lie in (0, 1] (the share of the data used for the "
                             f"Fisher-vector products), got {fisher_fraction!r}.")
        self.cg_iters = check_count("cg_iters", cg_iters)
        self.cg_damping = float(cg_damping)
        if self.cg_damping < 0:
            raise ValueError(f"cg_damping must be >= 0, got {cg_damping!r}.")
        self.backtrack = float(backtrack)
        if not 0 < self.backtrack < 1:
            raise ValueError(f"backtrack must lie in (0, 1), got {backtrack!r}.")
        self.line_search_steps = check_count("line_search_steps", line_search_steps)
        if line_search not in LINE_SEARCHES:
            raise ValueError(f"line_search must be one of {LINE_SEARCHES}, got {line_search!r}.")
        self.line_search = line_search

    def __repr__(self) -> str:
        return f"TRPO(max_kl={self.max_kl}, cg_iters={self.cg_iters}, line_search_steps={self.line_search_steps})"

    def step(self, theta: Params, objective: Callable[[], tuple[torch.Tensor, torch.Tensor]],
             fisher_kl: Callable[[], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """One trust-region step on θ (updated in place).

        objective(): (surrogate L, KL) at the current θ, as scalars differentiable in θ; the KL is
        measured from the policy of the θ at the time of the call to ``step``.
        fisher_kl(): the KL whose Hessian at θ gives the Fisher-vector products (e.g. on a subsample
        of the data); default: the KL of ``objective``.
        Returns the surrogate improvement, the KL of the accepted step and the fraction of the full
        step taken (0 when the line search found no acceptable step and θ was left unchanged).
        """
        from .. import distributed

        params = list(theta.values())
        surrogate, kl = objective()
        g = distributed.average(dict(zip(theta, torch.autograd.grad(surrogate, params, retain_graph=True))))
        if fisher_kl is not None:
            kl = fisher_kl()
        grad_kl = dict(zip(theta, torch.autograd.grad(kl, params, create_graph=True)))

        def fisher_vector(v: Params) -> Params:
            hv = distributed.average(dict(zip(theta, torch.autograd.grad(linalg.dot(grad_kl, v), params,
                                                                           retain_graph=True))))
            return {k: hv[k] + self.cg_damping * v[k] for k in theta}

        direction, _ = linalg.conjugate_gradient(fisher_vector, g, self.cg_iters)
        curvature = linalg.dot(direction, fisher_vector(direction))
        scale = torch.sqrt(2 * self.max_kl / curvature.clamp(min=1e-12))
        full_step = (scale * flat(direction.values())).detach()
        start = flat(params).detach()
        before = distributed.average(surrogate.detach())
        grad_kl.clear()  # free the graph of the KL gradient before the line search

        def measure():
            new_surrogate, new_kl = objective()
            return distributed.average((new_surrogate.detach(), new_kl.detach()))

        parallel = self.line_search == "parallel" or (self.line_search == "auto" and start.device.type == "cuda")
        with torch.no_grad():
            if parallel:
                return self._parallel_search(theta, start, full_step, before, measure)
            for k in range(self.line_search_steps):
                fraction = self.backtrack**k
                self._assign(theta, start + fraction * full_step)
                new_surrogate, new_kl = measure()
                improvement = new_surrogate - before
                # The one host synchronisation of the step: the line search must decide.
                if bool((improvement > 0) & (new_kl <= self.max_kl)):
                    return {"improvement": improvement, "kl": new_kl,
                            "step_fraction": torch.tensor(fraction, device=start.device)}
            self._assign(theta, start)
        zero = torch.zeros((), device=start.device)
        return {"improvement": zero, "kl": zero, "step_fraction": zero}

    def _parallel_search(self, theta, start, full_step, before, measure):
        """Every fraction tried, the first acceptable one kept, with no value read on the host."""
        fractions = torch.tensor([self.backtrack**k for k in range(self.line_search_steps)], dtype=start.dtype,
                                 device=start.device)
        accepted = torch.zeros((), dtype=torch.bool, device=start.device)
        chosen = torch.zeros((), dtype=start.dtype, device=start.device)
        improvement = torch.zeros((), dtype=before.dtype, device=start.device)
        kl = torch.zeros((), dtype=before.dtype, device=start.device)
        for k in range(self.line_search_steps):
            self._assign(theta, start + fractions[k] * full_step)
            new_surrogate, new_kl = measure()
            gain = new_surrogate - before
            ok = (gain > 0) & (new_kl <= self.max_kl) & ~accepted
            chosen = torch.where(ok, fractions[k], chosen)
            improvement = torch.where(ok, gain, improvement)
            kl = torch.where(ok, new_kl, kl)
            accepted = accepted | ok
        self._assign(theta, torch.where(accepted, start + chosen * full_step, start))
        return {"improvement": improvement, "kl": kl, "step_fraction": chosen}

    @staticmethod
    def _assign(theta: Params, vector: torch.Tensor) -> None:
        for p, v in zip(theta.values(), unflat(vector, theta).values()):
            p.copy_(v)
