"""The meta-batch split across processes with ``torch.distributed``.

Each process holds the same θ, samples its own share of the meta-batch from its own random
stream, and computes the meta-gradient of its share; :func:`average` all-reduces those gradients
(and the metrics) so that every process applies the update of the whole meta-batch::

    torchrun --nproc-per-node 4 -m mlcourse.reproduce maml-omniglot-5w1s

Under ``torchrun`` (which sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the rendezvous
address), :func:`setup` joins the process group: NCCL when the processes have GPUs (process r
uses ``cuda:LOCAL_RANK``), gloo on CPUs. :func:`share` gives each process its part of a
meta-batch of n tasks; when n does not divide evenly, :func:`average` weights each process by the
share it took, so the result is still the mean over the n tasks. Outside ``torch.distributed``
(one process) everything here is the identity.
"""

from __future__ import annotations

import datetime
import os
import random

import numpy as np
import torch
import torch.distributed as dist

# This process's share of the last meta-batch split by share(), as a fraction of the whole.
_weight: float | None = None


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True in the process that writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def launched() -> bool:
    """True when torchrun (or another launcher) started several processes for this run."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_type: str | None = None) -> torch.device | None:
    """Join the process group torchrun describes (idempotent); returns this process's device
    (``cuda:LOCAL_RANK`` on GPUs, else the CPU), or None when not launched by torchrun."""
    if not launched():
        return None
    use_cuda = torch.cuda.is_available() if device_type is None else device_type == "cuda"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return device


def share(n: int) -> int:
    """How many of a meta-batch of ``n`` tasks this process samples: n split as evenly as possible
    (the first n mod P processes take one more). Remembers the share, so that :func:`average`
    weights this process's mean by it."""
    global _weight
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"a meta-batch must hold an int >= 1 of tasks, got {n!r}.")
    size = world_size()
    if size == 1:
        _weight = None
        return n
    if n < size:
        raise ValueError(f"a meta-batch of {n} tasks cannot be split over {size} processes: every process needs "
                         f"at least one task; use at most {n} processes or a larger meta-batch.")
    mine = n // size + (1 if rank() < n % size else 0)
    _weight = mine / n
    return mine


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
    with one all-reduce of one flat buffer; ``tree`` itself when not distributed. Each process's
    values are weighted by its share of the meta-batch (:func:`share`; equal weights without it),
    so per-process means of unequal shares average to the mean over all tasks."""
    if not active():
        return tree
    leaves = _leaves(tree)
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in leaves) else torch.float32
    flat = torch.cat([t.detach().reshape(-1).to(dtype) for t in leaves])
    weight = 1.0 / dist.get_world_size() if _weight is None else _weight
    flat *= weight
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    out, start = [], 0
    for t in leaves:
        out.append(flat[start:start + t.numel()].view(t.shape).to(t.dtype))
        start += t.numel()
    return _rebuild(tree, iter(out))


def broadcast_(tensors) -> None:
    """Overwrite every tensor of ``tensors`` (a dict or list) in place with rank 0's values."""
    if not active():
        return
    with torch.no_grad():
        for t in (tensors.values() if isinstance(tensors, dict) else tensors):
            dist.broadcast(t.data, src=0)


def agree(flag: bool) -> bool:
    """True on every process if it is true on any (decisions that must be taken together, such
    as stopping for a time budget: clocks differ between processes)."""
    if not active():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def from_main(obj):
    """Rank 0's ``obj`` (plain Python data) on every process."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_collective_device())
    return box[0]


def gather(obj) -> list:
    """Every process's ``obj`` (plain data and CPU tensors), in rank order, on every process."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def same_everywhere(params: dict[str, torch.Tensor]) -> bool:
    """Whether θ is equal on every process (up to rounding): a check that training averages its
    gradients. One small all-reduce; True when not distributed."""
    if not active():
        return True
    with torch.no_grad():
        total = torch.stack([p.detach().double().sum() for p in params.values()]).sum()
        both = torch.stack([total, -total]).to(_collective_device())
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        spread = float(both[0] + both[1])
        return spread <= 1e-6 * max(1.0, abs(float(total)))


def fork_random_streams() -> None:
    """Give every process its own random stream, derived from the current (common) state and the
    rank, so that processes sample different tasks; deterministic for a given seed and rank."""
    if not active():
        return
    base = int(torch.randint(0, 2**62, (1,)).item())
    seed = (base + 1_000_003 * rank()) % 2**63
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
