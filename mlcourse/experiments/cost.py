"""Time and memory of one meta-iteration against the number of inner steps, for MAML, first-order
MAML and Reptile (and, later, iMAML), in the sinusoid and the Omniglot setting. Shared by the
chapters' figures and ``benchmarks/maml_memory.py``."""

from __future__ import annotations

import torch

from ..meta.maml import MAML
from ..meta.reptile import Reptile
from ..nets import MLP, Conv4
from ..profile import peak_bytes, seconds
from ..tasks import EpisodeSampler, SinusoidFamily, TaskBatch


def setting_batch(setting: str, tasks: int, device, generator=None) -> tuple[torch.nn.Module, str, TaskBatch]:
    """The network, loss and a task batch of a setting: "sinusoid" (MLP, K = 10) or "omniglot"
    (Conv4, 5-way 1-shot, 5 queries per class; random images stand in for characters, since cost
    does not depend on the pixels)."""
    device = torch.device(device)
    if setting == "sinusoid":
        return MLP(), "mse", SinusoidFamily().sample(tasks, 10, device=device, generator=generator)
    if setting == "omniglot":
        images = (torch.rand(20, 20, 28, 28, generator=generator) * 255).to(torch.uint8)
        sampler = EpisodeSampler(images, ways=5, shots=1, queries=5, device=device)
        return Conv4(5, downsample="stride"), "cross_entropy", sampler.sample(tasks)
    raise ValueError(f"setting must be 'sinusoid' or 'omniglot', got {setting!r}.")


def learner(method: str, net, loss: str, steps: int, alpha: float):
    if method in ("maml", "fomaml"):
        return MAML(net, loss, inner_lr=alpha, inner_steps=steps, first_order=method == "fomaml")
    if method == "reptile":
        return Reptile(net, loss, inner_lr=alpha, inner_steps=steps)
    raise ValueError(f"method must be 'maml', 'fomaml' or 'reptile', got {method!r}.")


def meta_iteration_cost(method: str, setting: str, steps: int, device, tasks: int = 25,
                        repeats: int = 3) -> tuple[float, int | None]:
    """(seconds, bytes) of one meta-gradient computation: see :mod:`mlcourse.profile` for what
    the bytes mean on each device. Reptile keeps no graph: its bytes are those of its task solutions."""
    net, loss, batch = setting_batch(setting, tasks, device, torch.Generator().manual_seed(0))
    alpha = 0.01 if setting == "sinusoid" else 0.4
    method_learner = learner(method, net, loss, steps, alpha)
    theta = method_learner.init_params(device)
    device = torch.device(device)

    if method == "reptile":
        def forward():  # the task solutions φ_i: Reptile keeps no graph
            return method_learner.solutions(theta, batch)
    else:
        def forward():  # the meta-loss, holding the graph through the inner steps
            return method_learner.meta_loss(theta, batch)[0]

    peak_bytes(forward, device)  # warm-up: first calls allocate workspaces once
    memory = peak_bytes(forward, device)
    return seconds(lambda: method_learner.meta_gradient(theta, batch), device, repeats=repeats), memory
