"""The meta-batch split across processes with ``torch.distributed``.

Each process holds the same θ, samples its own share of the meta-batch, and computes the
meta-gradient of its share; :func:`average` all-reduces those gradients (and the metrics) so
that every process applies the update of the whole meta-batch. Outside ``torch.distributed``
(one process) everything here is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _leaves(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for k in tree for t in _leaves(tree[k])]
    if isinstance(tree, (tuple, list)):
        return [t for v in tree for t in _leaves(v)]
    raise TypeError(f"can only average tensors, dicts, tuples and lists of them, got {type(tree).__name__}.")


def _rebuild(tree, leaves):
    if isinstance(tree, torch.Tensor):
        return next(leaves)
    if isinstance(tree, dict):
        return {k: _rebuild(v, leaves) for k, v in tree.items()}
    return type(tree)(_rebuild(v, leaves) for v in tree)


def average(tree):
    """The mean over processes of every tensor in ``tree`` (a tensor, or dicts/tuples of them),
    with one all-reduce of one flat buffer; ``tree`` itself when not distributed."""
    if not active():
        return tree
    leaves = _leaves(tree)
    flat = torch.cat([t.detach().reshape(-1).to(torch.float64 if t.dtype == torch.float64 else torch.float32)
                      for t in leaves])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    out, start = [], 0
    for t in leaves:
        out.append(flat[start:start + t.numel()].view(t.shape).to(t.dtype))
        start += t.numel()
    return _rebuild(tree, iter(out))
