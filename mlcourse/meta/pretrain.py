"""Pretraining on source tasks: all source classes as one large classification problem.

This is the θ_pretrained that transfer learning starts from. The source data are the images of
many classes, ``[classes, per_class, H, W]`` uint8 (e.g. Omniglot's meta-training characters);
some drawers of every class are held out to measure how well the source problem itself is learned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_count, check_positive
from ..nets import Params, forward, init_params
from ..train import History, fit


def pretrain(net: nn.Module, images: torch.Tensor, steps: int, batch_size: int = 128, lr: float = 1e-3,
             holdout: int = 2, eval_every: int | None = None, progress: bool = True) -> tuple[Params, History]:
    """θ_pretrained: Adam on the cross-entropy of ``net`` (with one output per source class) over
    random batches of source images; returns θ and the training history (``accuracy`` on the
    training batches, and ``holdout_accuracy`` on the last ``holdout`` images of every class)."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 [classes, per_class, H, W], got {images.dtype} {tuple(images.shape)}.")
    classes, per_class = images.shape[:2]
    check_count("steps", steps, minimum=0)
    check_count("batch_size", batch_size)
    check_positive("lr", lr)
    if not 0 <= holdout < per_class:
        raise ValueError(f"holdout must be in [0, {per_class - 1}] (images per class {per_class}), got {holdout}.")
    device = images.device
    theta = init_params(net, device)
    outputs = forward(net, theta, torch.zeros(2, 1, *images.shape[2:], device=device)).shape[-1]
    if outputs != classes:
        raise ValueError(f"the network has {outputs} outputs but there are {classes} source classes.")
    optimizer = torch.optim.Adam(theta.values(), lr=lr)
    train_per_class = per_class - holdout

    def batch(n, drawers, offset=0):
        c = torch.randint(classes, (n,), device=device)
        d = torch.randint(drawers, (n,), device=device) + offset
        return images[c, d].unsqueeze(1).float().div_(255), c

    def step(it):
        x, y = batch(batch_size, train_per_class)
        optimizer.zero_grad(set_to_none=True)
        out = forward(net, theta, x)
        loss = F.cross_entropy(out, y)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach(), "accuracy": (out.argmax(-1) == y).float().mean()}

    def evaluate(it):
        if not holdout:
            return {}
        with torch.no_grad():
            x, y = batch(1024, holdout, train_per_class)
            acc = torch.cat([(forward(net, theta, xs).argmax(-1) == ys).float()
                             for xs, ys in zip(x.split(batch_size), y.split(batch_size))])
        return {"holdout_accuracy": float(acc.mean())}

    history = fit(step, steps, log_every=max(1, min(50, steps)), evaluate=evaluate,
                  eval_every=eval_every or max(1, steps // 5), desc="pretraining", progress=progress)
    return {k: v.detach() for k, v in theta.items()}, history
