"""Every entry of an autograd gradient against a central difference, in float64.

This is the comparison ``torch.autograd.gradcheck`` makes for a scalar function (its tolerances
too), with the 2P evaluations of the loss run as batches under ``vmap`` rather than one by one: the
sequence learners' losses are hundreds of tiny operations, so one by one costs seconds per check.
"""

import torch
from torch.func import vmap


def assert_gradient_matches_finite_differences(loss, params: dict, eps: float = 1e-6, atol: float = 1e-5,
                                               rtol: float = 1e-3, vectorise: bool = True, chunk: int = 512):
    """``loss(params)`` is a float64 scalar; ``vectorise=False`` evaluates the perturbed points one by
    one, for networks with an operation that ``vmap`` cannot batch (``nn.LSTM``)."""
    names = list(params)
    if any(v.dtype != torch.float64 for v in params.values()):
        raise TypeError("finite differences need float64 parameters")
    shapes = [params[k].shape for k in names]
    flat = torch.cat([params[k].detach().reshape(-1) for k in names])

    def flat_loss(f):
        values, at = [], 0
        for shape in shapes:
            values.append(f[at:at + shape.numel()].view(shape))
            at += shape.numel()
        return loss(dict(zip(names, values)))

    point = flat.clone().requires_grad_(True)
    analytic = torch.autograd.grad(flat_loss(point), point)[0]
    steps = torch.eye(flat.numel(), dtype=flat.dtype) * eps
    if vectorise:
        batched = vmap(flat_loss, chunk_size=chunk)
        with torch.no_grad():
            numeric = (batched(flat + steps) - batched(flat - steps)) / (2 * eps)
    else:
        with torch.no_grad():
            numeric = torch.stack([(flat_loss(flat + s) - flat_loss(flat - s)) / (2 * eps) for s in steps])
    bad = ((analytic - numeric).abs() > atol + rtol * numeric.abs()).nonzero().flatten()
    if len(bad):
        where = [name for name, shape in zip(names, shapes) for _ in range(shape.numel())]
        worst = bad[(analytic - numeric)[bad].abs().argmax()]
        raise AssertionError(f"{len(bad)} of {flat.numel()} gradient entries differ from central differences; worst "
                             f"in {where[worst]}: autograd {analytic[worst]:.6g}, finite differences {numeric[worst]:.6g}")
