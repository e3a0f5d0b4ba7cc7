"""Chapter 8, iMAML."""

import torch

from ..meta.imaml import conjugate_gradient
from .core import Built, Case, exercise, recipe


@recipe("imaml.block_matvec")
def block_matvec(blocks):
    """v ↦ A v for a block-diagonal A held as one matrix per key of the dicts."""
    def matvec(v):
        return {k: blocks[k] @ v[k] for k in v}
    return matvec


@exercise("imaml.cg", chapter="08_imaml", title="conjugate gradient on dicts of tensors",
          function="cg_dict", references=("mlcourse.linalg.conjugate_gradient", "mlcourse.meta.imaml.IMAML"),
          hint="keep x, the residual r = b − A x and the direction p as dicts; the dot product of two dicts is the sum "
               "of (u[k] * v[k]).sum() over keys; each step: α = rᵀr / pᵀAp, x += α p, r −= α Ap, "
               "β = r_newᵀr_new / rᵀr, "
               "p = r + β p. Start from x = 0.")
def cg_cases():
    generator = torch.Generator().manual_seed(0)

    def spd(n):
        m = torch.randn(n, n, generator=generator, dtype=torch.float64)
        return m @ m.T + n * torch.eye(n, dtype=torch.float64)

    for dims, steps in [((3, 2), 1), ((3, 2), 5), ((4, 6), 3)]:
        blocks = {"u": spd(dims[0]), "v": spd(dims[1])}
        b = {k: torch.randn(a.shape[0], generator=generator, dtype=torch.float64) for k, a in blocks.items()}

        matvec = Built("imaml.block_matvec", blocks=blocks)
        yield Case(f"a positive definite operator on vectors of sizes {dims}, {steps} step{'s' if steps > 1 else ''}",
                   args=(matvec, b, steps), reference=lambda m, b, s: conjugate_gradient(m, b, s)[0],
                   rtol=1e-8, atol=1e-10)
