"""Conjugate gradient on dicts of tensors, shared by iMAML (the implicit meta-gradient) and TRPO
(the natural-gradient direction): both solve A x = b with A known only through products A v."""

from __future__ import annotations

import torch

from .checks import check_count

Vector = dict[str, torch.Tensor]


def dot(a: Vector, b: Vector) -> torch.Tensor:
    return sum((a[k] * b[k]).sum() for k in a)


def conjugate_gradient(matvec, b: Vector, steps: int) -> tuple[Vector, torch.Tensor]:
    """x ≈ A⁻¹ b after ``steps`` iterations of conjugate gradient from x = 0, for a symmetric A
    given as ``matvec`` on dicts of tensors, and the relative residual ‖b − A x‖ / ‖b‖ (from CG's
    own recurrence, so it costs no extra product). Works inside ``vmap`` and without host
    synchronisation (no data-dependent branches).

    For a positive definite A this is textbook CG. A network's curvature matrix can be indefinite;
    CG then stops at the first direction of non-positive curvature (pᵀAp ≤ 0) and keeps the x it
    has, as truncated Newton methods do, rather than stepping along a direction it cannot trust.
    """
    check_count("conjugate-gradient steps", steps)
    x = {k: torch.zeros_like(v) for k, v in b.items()}
    r = dict(b)
    p = dict(b)
    rr = dot(r, r)
    active = rr > 0
    for _ in range(steps):
        ap = matvec(p)
        pap = dot(p, ap)
        active = active & (pap > 0)
        alpha = torch.where(active, rr / torch.where(active, pap, 1), 0)
        x = {k: x[k] + alpha * p[k] for k in x}
        r = {k: r[k] - alpha * ap[k] for k in r}
        rr_new = dot(r, r)
        active = active & (rr_new > 0)
        beta = torch.where(active, rr_new / torch.where(rr > 0, rr, 1), 0)
        p = {k: r[k] + beta * p[k] for k in p}
        rr = rr_new
    return x, rr.sqrt() / dot(b, b).sqrt().clamp_min(1e-30)
