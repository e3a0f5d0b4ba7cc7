"""Meta-SGD (Li et al. 2017): MAML whose inner learning rate is learned, one rate per entry of θ.

    φ_i = θ − α ⊙ ∇θ L(θ, D_i^tr),        (θ, α) ← (θ, α) − β ∇_(θ, α) (1/n) Σ_i L(φ_i, D_i^ts).

α is a vector of the size of θ, so it sets both the size and the direction of the inner step;
it is trained jointly with θ by the MAML meta-gradient. In the package α lives in θ itself, under
the names ``"lr/<parameter name>"``, so that one optimiser, one checkpoint and one all-reduce
cover both. In first-order mode the gradient with respect to α stays exact and needs no
Hessian: ∂L(φ, D^ts)/∂α = −∇θL(θ, D^tr) ⊙ ∇φL(φ, D^ts) for one step.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import check_positive
from ..nets import Params
from .maml import MAML

PREFIX = "lr/"


class MetaSGD(MAML):
    """MAML with learned per-parameter rates α, initialised at ``inner_lr`` (a constant start makes
    the first meta-iteration exactly MAML's), or drawn uniformly from ``rate_range`` = (low, high)
    (Li et al. draw them from [0.005, 0.1])."""

    def __init__(self, net: nn.Module, loss: str = "mse", inner_lr: float = 0.01, inner_steps: int = 1,
                 first_order: bool = False, test_steps: int | None = None, execution: str = "auto",
                 rate_range: tuple[float, float] | None = None):
        super().__init__(net, loss, inner_lr, inner_steps, first_order, test_steps, execution)
        if rate_range is not None:
            if not (isinstance(rate_range, (tuple, list)) and len(rate_range) == 2):
                raise ValueError(f"rate_range must be (low, high), got {rate_range!r}.")
            low, high = (check_positive("rate_range's bounds", b) for b in rate_range)
            if low > high:
                raise ValueError(f"rate_range must be (low, high) with low <= high, got {rate_range!r}.")
            rate_range = (low, high)
        self.rate_range = rate_range

    def __repr__(self) -> str:
        return f"Meta-SGD(α₀={self.inner_lr}, inner_steps={self.inner_steps}, first_order={self.first_order})"

    def init_params(self, device=None, dtype=None, inner_lr: float | None = None) -> Params:
        """θ and α: the network's parameters, and ``"lr/<name>"`` rates of the same shapes (all
        ``inner_lr``, or uniform draws from ``rate_range`` with torch's global generator)."""
        value = self.inner_lr if inner_lr is None else check_positive("inner_lr", inner_lr)
        theta = super().init_params(device, dtype)
        if self.rate_range is None or inner_lr is not None:
            rates = {PREFIX + k: torch.full_like(p, value) for k, p in theta.items()}
        else:
            low, high = self.rate_range
            rates = {PREFIX + k: low + (high - low) * torch.rand(p.shape, dtype=p.dtype).to(p.device)
                     for k, p in theta.items()}
        return {**theta, **{k: v.detach().requires_grad_(True) for k, v in rates.items()}}

    def split(self, theta: Params) -> tuple[Params, Params]:
        params = {k: v for k, v in theta.items() if not k.startswith(PREFIX)}
        rates = {k[len(PREFIX):]: v for k, v in theta.items() if k.startswith(PREFIX)}
        if rates.keys() != params.keys():
            missing = sorted(params.keys() - rates.keys())
            raise ValueError(f"Meta-SGD needs a rate {PREFIX}<name> for every parameter of θ; missing "
                             f"{[PREFIX + m for m in missing][:4]} (make θ with MetaSGD.init_params).")
        return params, rates

    @staticmethod
    def rates(theta: Params) -> Params:
        """The learned rates α, keyed by parameter name (detached), e.g. to plot them per layer."""
        return {k[len(PREFIX):]: v.detach() for k, v in theta.items() if k.startswith(PREFIX)}

    @staticmethod
    def layer_rates(theta: Params) -> dict[str, tuple[float, float, float]]:
        """(mean, smallest, largest) of the learned rates of every parameter tensor: how far and in
        which direction each layer steps in the inner loop (negative rates step uphill)."""
        return {k: (float(v.mean()), float(v.min()), float(v.max())) for k, v in MetaSGD.rates(theta).items()}
