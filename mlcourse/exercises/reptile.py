"""Chapter 7, Reptile."""

import torch

from .core import Case, exercise, experiment


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


@experiment("reptile.toy_distance", chapter="07_reptile", title="where Reptile settles in the two-dimensional toy",
            function="toy_distance", references=("mlcourse.experiments.reptile.run_toy",),
            hint="run the chapter's toy with the settings of experiments.reptile.ToySettings (α = 0.05, β = 0.2, θ "
                 "from (1.6, 1.4), the three tasks in turn, one per meta-iteration) and return |a_1ᵀθ − 1|, the "
                 "distance of the final θ to the steep task's line, as a float.")
def toy_distance_cases():
    # Joint training (k = 1) ends near the steep task's line; with many steps θ ends near the centre,
    # whose distance to every line is 1 (the lines are tangent to the unit circle).
    yield Case("k = 1, 300 meta-iterations: joint training", args=(1, 300), within=(0.0, 0.3))
    yield Case("k = 30, 300 meta-iterations", args=(30, 300), within=(0.7, 1.1))
