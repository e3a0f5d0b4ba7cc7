"""Time and peak memory of one meta-iteration against the number of inner steps, for MAML,
first-order MAML, Reptile and iMAML, in the sinusoid and the Omniglot setting. Shared by the
chapters' figures and the benchmarks.

Memory is the peak in use during one meta-gradient, above what was in use before it (see
:mod:`mlcourse.profile` for how it is measured on each device).
"""

from __future__ import annotations

import torch

from ..meta.imaml import IMAML
from ..meta.maml import MAML
from ..meta.reptile import Reptile
from ..nets import MLP, Conv4
from ..profile import peak_bytes, seconds
from ..tasks import EpisodeSampler, SinusoidFamily, TaskBatch

METHODS = ("maml", "fomaml", "reptile", "imaml")


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
    if method == "imaml":
        return IMAML(net, loss, lam=2.0, inner_lr=alpha, inner_steps=steps, cg_steps=5, on_cg_failure="ignore")
    raise ValueError(f"method must be one of {METHODS}, got {method!r}.")


def meta_iteration_cost(method: str, setting: str, steps: int, device, tasks: int = 25,
                        repeats: int = 3) -> tuple[float, int | None]:
    """(seconds, peak bytes) of one meta-gradient."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    device = torch.device(device)
    alpha = 0.01 if setting == "sinusoid" else 0.1

    def prepare(tasks, steps):
        net, loss, batch = setting_batch(setting, tasks, device, torch.Generator().manual_seed(0))
        method_learner = learner(method, net, loss, steps, alpha)
        theta = method_learner.init_params(device)

        def meta_gradient():
            if isinstance(method_learner, MAML):
                method_learner.meta_loss(theta, batch)[0].backward()
            else:
                method_learner.meta_gradient(theta, batch)

        return meta_gradient

    prepare(1, 1)()  # one-time costs (lazy imports, thread pools, workspaces) stay out of the numbers
    meta_gradient = prepare(tasks, steps)
    memory = peak_bytes(meta_gradient, device)
    return seconds(meta_gradient, device, repeats=repeats), memory
