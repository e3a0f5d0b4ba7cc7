"""The networks of the lecture, used as pure functions of their parameters.

A network here is an ``nn.Module`` that only describes the computation; the numbers live in a
dict of tensors (θ or φ_i) that :func:`forward` passes in with ``torch.func.functional_call``.
So one module serves every task of a meta-batch, each with its own parameters, and
``torch.func.vmap`` can batch over tasks.

Batch normalisation never keeps running statistics: it always normalises with the statistics
of the batch it is given, as the MAML reference code does. A running average would mix the
statistics of different tasks (and of D^tr with D^ts) into a buffer that the functional view
cannot see, and ``vmap`` over tasks would have to write it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from .checks import check_count

Params = dict[str, torch.Tensor]


class MLP(nn.Module):
    """A fully connected ReLU network; ``MLP()`` is the 1-40-40-1 network of Finn et al. (2017)."""

    def __init__(self, sizes=(1, 40, 40, 1)):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"sizes needs an input and an output size, got {sizes!r}.")
        for s in sizes:
            check_count("layer size", s)
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)
        self.sizes = tuple(sizes)

    def forward(self, x):
        return self.layers(x)


class BatchNorm(nn.Module):
    """Batch normalisation with the statistics of the current batch only (no running averages).

    Written with plain tensor operations rather than ``F.batch_norm``: the fused kernel's
    batching rule gives wrong second-order gradients under ``vmap`` (the MAML meta-gradient of a
    batch-normalised network came out different from the per-task loop and from finite
    differences; ``tests/test_maml.py`` checks it). The parameter names match ``nn.BatchNorm2d``.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        dims = [0, *range(2, x.dim())]  # every dimension but the channels
        mean = x.mean(dims, keepdim=True)
        var = (x - mean).pow(2).mean(dims, keepdim=True)
        shape = [1, -1] + [1] * (x.dim() - 2)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)


class Conv4(nn.Module):
    """Four blocks of [3×3 conv with 64 channels, batch norm (batch statistics), ReLU, 2×2 max-pool]
    and a linear layer to ``ways`` logits: the few-shot classifier of Vinyals et al. (2016) used by
    MAML on Omniglot. ``downsample="stride"`` replaces max-pooling by stride-2 convolutions, the
    variant of the MAML reference code for Omniglot.
    """

    def __init__(self, ways: int = 5, in_channels: int = 1, channels: int = 64, image_size: int = 28,
                 downsample: str = "maxpool"):
        super().__init__()
        check_count("ways", ways)
        if downsample not in ("maxpool", "stride"):
            raise ValueError(f"downsample must be 'maxpool' or 'stride', got {downsample!r}.")
        blocks, size, c_in = [], image_size, in_channels
        for _ in range(4):
            stride = 2 if downsample == "stride" else 1
            block = [nn.Conv2d(c_in, channels, 3, stride=stride, padding=1), BatchNorm(channels), nn.ReLU()]
            if downsample == "maxpool":
                block.append(nn.MaxPool2d(2))
                size //= 2
            else:
                size = (size + 1) // 2
            blocks.append(nn.Sequential(*block))
            c_in = channels
        if size < 1:
            raise ValueError(f"images of {image_size}×{image_size} are too small for four 2× downsamplings.")
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(channels * size * size, ways)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def init_params(net: nn.Module, device=None, dtype=None) -> Params:
    """θ: a fresh copy of the module's initial parameters as leaf tensors that require grad.

    Refuses modules with buffers (e.g. batch norm with running statistics): their state would
    live outside θ and leak between tasks.
    """
    check_functional(net)
    return {name: p.detach().to(device=device, dtype=dtype).clone().requires_grad_(True)
            for name, p in net.named_parameters()}


def check_functional(net: nn.Module) -> None:
    buffers = [name for name, _ in net.named_buffers()]
    if buffers:
        raise ValueError(
            f"{type(net).__name__} has buffers {buffers[:4]}; networks used with per-task parameters must "
            "be stateless. For batch norm use track_running_stats=False (batch statistics always)."
        )


def forward(net: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    """f_params(x): the network evaluated with the given parameters (θ or some φ_i).

    ``params`` must hold exactly the network's parameters: a missing entry would otherwise be
    taken silently from the module's own initial weights, which belong to no θ.
    """
    check_params(net, params)
    return functional_call(net, params, (x,), strict=True)


def check_params(net: nn.Module, params: Params) -> None:
    """A clear error unless ``params`` names exactly the parameters of ``net``."""
    names = getattr(net, "_param_names", None)
    if names is None:
        names = net._param_names = frozenset(name for name, _ in net.named_parameters())
    if not isinstance(params, dict):
        raise TypeError(f"parameters must be a dict of tensors (θ or φ_i), got {type(params).__name__}.")
    if params.keys() != names:
        missing, unexpected = sorted(names - params.keys()), sorted(params.keys() - names)
        raise ValueError(f"the parameters do not match {type(net).__name__}: "
                         + (f"missing {missing[:4]}" if missing else "")
                         + ("; " if missing and unexpected else "")
                         + (f"unexpected {unexpected[:4]}" if unexpected else "")
                         + f" (the network has {len(names)} parameter tensors: {sorted(names)[:4]}...).")


def count_params(params: Params) -> int:
    return sum(p.numel() for p in params.values())
