"""Chapter 9, MAML for reinforcement learning."""

import torch

from ..rl.maml_rl import inner_objective
from .core import Case, exercise


@exercise("maml_rl.dice", chapter="09_maml_rl", title="the DiCE inner objective",
          function="dice_objective", references=("mlcourse.rl.maml_rl.inner_objective",),
          hint="with □(x) = exp(x − x.detach()) and c_t = the cumulative sum over time of masked "
               "log-probabilities, the "
               "objective is Σ_t (□(c_t) − □(c_t − log π_t)) · A_t · mask_t / (number of valid steps).")
def dice_cases():
    generator = torch.Generator().manual_seed(0)
    for trajectories, horizon in [(1, 4), (3, 6)]:
        logp = torch.randn(trajectories, horizon, generator=generator, dtype=torch.float64)
        adv = torch.randn(trajectories, horizon, generator=generator, dtype=torch.float64)
        mask = (torch.arange(horizon) < torch.randint(1, horizon + 1, (trajectories, 1), generator=generator)).double()
        yield Case(f"{trajectories} trajectories of {horizon} steps", args=(logp, adv, mask),
                   reference=lambda logp, adv, mask: inner_objective(logp, adv, mask, "dice"),
                   derivatives=(0, 2), rtol=1e-9, atol=1e-10)
