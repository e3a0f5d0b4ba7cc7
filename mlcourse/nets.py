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

import contextlib
import threading

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.func import functional_call

from .checks import check_count

Params = dict[str, torch.Tensor]


ACTIVATIONS = {"relu": (nn.ReLU, torch.relu), "tanh": (nn.Tanh, torch.tanh)}


class MLP(nn.Module):
    """A fully connected network; ``MLP()`` is the 1-40-40-1 ReLU network of Finn et al. (2017).

    activation: "relu" or "tanh". A tanh network's loss is smooth everywhere, which iMAML's
    implicit gradient assumes; a ReLU network's loss has kinks, where an inner solver can stall."""

    def __init__(self, sizes=(1, 40, 40, 1), activation: str = "relu"):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"sizes needs an input and an output size, got {sizes!r}.")
        for s in sizes:
            check_count("layer size", s)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}.")
        module, self._activation = ACTIVATIONS[activation]
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(module())
        self.layers = nn.Sequential(*layers)
        self.sizes = tuple(sizes)
        self.activation = activation

    def forward(self, x):
        return self.layers(x)

    def forward_tasks(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """f_{φ_i}(x_i) for every task i in one batched computation: each parameter carries a
        leading task dimension ([tasks, out, in] weights, [tasks, out] biases) and x is
        [tasks, examples, in]. Each linear layer is one batched matrix product, so the gradient
        of the sum of the tasks' losses with respect to the stacked parameters holds every
        task's own gradient, in plain autograd (no ``vmap``)."""
        check_params(self, params)
        linear = [i for i, m in enumerate(self.layers) if isinstance(m, nn.Linear)]
        for j, i in enumerate(linear):
            w, b = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
            if j < len(linear) - 1:
                x = self._activation(x)
        return x


def _under_vmap() -> bool:
    """Whether ``torch.func.vmap`` is transforming the current computation."""
    try:
        stack = torch._C._functorch.get_interpreter_stack()
        vmap = torch._C._functorch.TransformType.Vmap
    except AttributeError:  # no such introspection in this torch: assume the worst
        return True
    return bool(stack) and any(level.key() == vmap for level in stack)


_region = threading.local()


@contextlib.contextmanager
def first_derivatives_only():
    """Within this block the caller takes first derivatives only (no ``create_graph``), so the
    networks may use kernels whose backward is not itself differentiable (Conv4's batch norm
    followed by max-pooling, :class:`_BatchNormMaxPool`). Asking for a second derivative
    through them raises torch's error; nothing is ever computed wrongly."""
    before = getattr(_region, "first_order", False)
    _region.first_order = True
    try:
        yield
    finally:
        _region.first_order = before


def _first_derivatives_only() -> bool:
    return getattr(_region, "first_order", False) and torch._C._functorch.peek_interpreter_stack() is None


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """x [N, C, H, W] stored channels-last (NHWC). For one channel both layouts hold the same
    bytes and ``contiguous(memory_format=...)`` keeps the NCHW strides, which makes the next
    convolution write NCHW again; the strides are set explicitly then."""
    if x.shape[1] == 1:
        x = x.contiguous()
        return x.as_strided(x.shape, (x.shape[2] * x.shape[3], 1, x.shape[3], 1))
    return x.contiguous(memory_format=torch.channels_last)


class BatchNorm(nn.Module):
    """Batch normalisation with the statistics of the current batch only (no running averages).

    Two implementations of the same function. Outside ``vmap`` it is torch's fused kernel
    (``F.batch_norm``), whose first and second derivatives are exact there (the meta-gradient
    of the per-task loop matches float64 finite differences). Under ``vmap`` that kernel's
    batching rule gives wrong second-order gradients (the MAML meta-gradient of a
    batch-normalised network came out different from the per-task loop and from finite
    differences), so there it is written with plain tensor operations. ``tests/test_nets.py`` and
    ``tests/test_execution.py`` check both against each other and against finite differences.
    The parameter names match ``nn.BatchNorm2d``.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        # The fused kernel refuses one value per channel (a single 1×1 image); the formula gives β.
        if _under_vmap() or x.numel() == x.shape[1]:
            return self.primitive(x)
        return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)

    def primitive(self, x):
        """The same normalisation in plain tensor operations (what ``vmap`` batches correctly)."""
        dims = [0, *range(2, x.dim())]  # every dimension but the channels
        mean = x.mean(dims, keepdim=True)
        var = (x - mean).pow(2).mean(dims, keepdim=True)
        shape = [1, -1] + [1] * (x.dim() - 2)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)


class _BatchNormMaxPool(torch.autograd.Function):
    """maxpool_2×2(BN(h)) with BN's batch statistics, computed by pooling first.

    BN is, per channel, the increasing map h ↦ (h − μ)·γ/σ + β when γ ≥ 0 (decreasing when γ < 0),
    so the 2×2 maximum of BN(h) is BN of the maximum of h (of the minimum for γ < 0). Only the
    statistics μ, σ² need every value of h; the normalisation, and most of the backward pass, run
    on a quarter of the values, and no normalised copy of h is ever written. The backward pass is
    hand-written (first derivatives only): ∂L/∂h is the pooled gradient scattered to the
    maxima plus the terms through μ and σ², ∂μ/∂h = 1/N and ∂σ²/∂h = 2(h − μ)/N.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, eps):
        # torch's batch-norm kernel gives μ and 1/σ ten times faster than var_mean over (0, 2, 3)
        # on the CPU (measured on a channels-last [75, 64, 28, 28]); its normalised output is dropped.
        _, mean, rstd = torch.native_batch_norm(h, None, None, None, None, True, 0.0, eps)
        mean, rstd = mean.view(1, -1, 1, 1), rstd.view(1, -1, 1, 1)
        pooled, index = F.max_pool2d_with_indices(h, 2)
        flip = weight < 0
        if bool(flip.any()):  # decreasing channels take the 2×2 minimum
            low, low_index = F.max_pool2d_with_indices(-h[:, flip], 2)
            pooled[:, flip], index[:, flip] = -low, low_index
        scale = (weight.view(1, -1, 1, 1) * rstd)
        ctx.save_for_backward(h, weight, mean, rstd, pooled, index)
        return (pooled - mean) * scale + bias.view(1, -1, 1, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        h, weight, mean, rstd, pooled, index = ctx.saved_tensors
        dims, n = (0, 2, 3), h.numel() // h.shape[1]
        centred = pooled - mean
        grad_weight = (grad_out * centred).sum(dims) * rstd.flatten()
        grad_bias = grad_out.sum(dims)
        grad_pooled = grad_out * (weight.view(1, -1, 1, 1) * rstd)
        grad_mean = -grad_pooled.sum(dims, keepdim=True)
        grad_var = -0.5 * rstd.pow(2) * (grad_pooled * centred).sum(dims, keepdim=True)
        slope = 2 * grad_var / n                                   # ∂L/∂σ² · ∂σ²/∂h = slope · (h − μ)
        # max-pool's own backward scatters to the maxima in h's memory layout (channels-last here);
        # a scatter_add_ on an NCHW view of the same values ran 3.6 times slower.
        grad_h = torch.ops.aten.max_pool2d_with_indices_backward(grad_pooled, h, [2, 2], [2, 2], [0, 0], [1, 1],
                                                                 False, index)
        grad_h.addcmul_(h, slope).add_(grad_mean / n - slope * mean)
        return grad_h, grad_weight, grad_bias, None


class Conv4(nn.Module):
    """Four blocks of [3×3 conv with 64 channels, batch norm (batch statistics), ReLU, 2×2 max-pool]
    and a linear layer to ``ways`` logits: the few-shot classifier of Vinyals et al. (2016) used by
    MAML on Omniglot. ``downsample="stride"`` replaces max-pooling by stride-2 convolutions, the
    variant of the MAML reference code for Omniglot.

    Each block pools before its ReLU: max-pooling commutes with any non-decreasing function, so
    relu(maxpool(h)) = maxpool(relu(h)) with the same gradients, and the ReLU (and its backward)
    runs on a quarter of the values. On the CPU, float32 inputs outside ``vmap`` are run
    channels-last (NHWC), the layout in which oneDNN's convolutions, batch norm and pooling skip
    their layout conversions (``benchmarks/maml_vs_textbook.py`` measures what it buys).
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
            block = [nn.Conv2d(c_in, channels, 3, stride=stride, padding=1), BatchNorm(channels)]
            if downsample == "maxpool":
                block.append(nn.MaxPool2d(2))
                size //= 2
            else:
                size = (size + 1) // 2
            block.append(nn.ReLU())
            blocks.append(nn.Sequential(*block))
            c_in = channels
        if size < 1:
            raise ValueError(f"images of {image_size}×{image_size} are too small for four 2× downsamplings.")
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(channels * size * size, ways)

    def forward(self, x):
        if x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and not _under_vmap():
            x = channels_last(x)
        if not _first_derivatives_only():
            return self.head(self.features(x).flatten(1))
        for conv, norm, *rest in self.features:
            h = conv(x)
            if isinstance(rest[0], nn.MaxPool2d) and rest[0].kernel_size == 2 and rest[0].stride == 2:
                x = _BatchNormMaxPool.apply(h, norm.weight, norm.bias, norm.eps)
                rest = rest[1:]
            else:
                x = norm(h)
            for layer in rest:
                x = layer(x)
        return self.head(x.flatten(1))


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
