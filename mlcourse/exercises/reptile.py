"""Chapter 7, Reptile."""

import torch

from .core import Case, exercise


@exercise("reptile.step", chapter="07_reptile", title="the Reptile update",
          function="reptile_step", references=("mlcourse.meta.reptile.Reptile",),
          hint="for every parameter name: θ + β · mean over tasks (dimension 0) of (φ_i − θ). Note the sign: θ moves "
               "toward the φ_i.")
def reptile_step_cases():
    def reference(theta, phis, beta):
        return {k: theta[k] + beta * (phis[k] - theta[k]).mean(0) for k in theta}

    generator = torch.Generator().manual_seed(0)
    for tasks, beta in [(1, 0.1), (5, 1.0), (8, 0.3)]:
        theta = {"w": torch.randn(4, 3, generator=generator, dtype=torch.float64),
                 "b": torch.randn(4, generator=generator, dtype=torch.float64)}
        phis = {k: v + 0.5 * torch.randn(tasks, *v.shape, generator=generator, dtype=torch.float64)
                for k, v in theta.items()}
        yield Case(f"{tasks} task{'s' if tasks > 1 else ''}, β = {beta}", args=(theta, phis, beta), reference=reference,
                   rtol=1e-10, atol=1e-12)
