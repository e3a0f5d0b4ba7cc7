"""Conjugate gradient on dicts of tensors, shared by iMAML (the implicit meta-gradient) and TRPO
(the natural-gradient direction): both solve A x = b with A known only through products A v."""

from __future__ import annotations

import torch

from .checks import check_count

Vector = dict[str, torch.Tensor]


def dot(a: Vector, b: Vector, batch_dims: int = 0) -> torch.Tensor:
    """aᵀb over all entries, or per system ([leading dims]) over the dims after ``batch_dims``."""
    return sum((a[k] * b[k]).flatten(batch_dims).sum(batch_dims) for k in a)


def _times(c: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """c (one number per system) times v, broadcast over v's own dims."""
    return c.reshape(*c.shape, *[1] * (v.dim() - c.dim())) * v


def conjugate_gradient(matvec, b: Vector, steps: int, batch_dims: int = 0) -> tuple[Vector, torch.Tensor]:
    """x ≈ A⁻¹ b after ``steps`` iterations of conjugate gradient from x = 0, for a symmetric A
    given as ``matvec`` on dicts of tensors, and the relative residual ‖b − A x‖ / ‖b‖ (from CG's
    own recurrence, so it costs no extra product). Works inside ``vmap`` and without host
    synchronisation (no data-dependent branches).

    For a positive definite A this is textbook CG. A network's curvature matrix can be indefinite;
    CG then stops at the first direction of non-positive curvature (pᵀAp ≤ 0) and keeps the x it
    has, as truncated Newton methods do, rather than stepping along a direction it cannot trust.

    ``batch_dims``: leading dims of every tensor that index independent systems (stacked tasks);
    each system then has its own coefficients, stops on its own and gets its own residual.
    """
    check_count("conjugate-gradient steps", steps)
    x = {k: torch.zeros_like(v) for k, v in b.items()}
    r = dict(b)
    p = dict(b)
    rr = dot(r, r, batch_dims)
    active = rr > 0
    for _ in range(steps):
        ap = matvec(p)
        pap = dot(p, ap, batch_dims)
        active = active & (pap > 0)
        alpha = torch.where(active, rr / torch.where(active, pap, 1), 0)
        x = {k: x[k] + _times(alpha, p[k]) for k in x}
        r = {k: r[k] - _times(alpha, ap[k]) for k in r}
        rr_new = dot(r, r, batch_dims)
        active = active & (rr_new > 0)
        beta = torch.where(active, rr_new / torch.where(rr > 0, rr, 1), 0)
        p = {k: r[k] + _times(beta, p[k]) for k in p}
        rr = rr_new
    return x, rr.sqrt() / dot(b, b, batch_dims).sqrt().clamp_min(1e-30)
