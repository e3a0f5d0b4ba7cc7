"""Chapter 10, the MAML family: Meta-SGD, CAVIA, MAML++ and ANIL."""

import torch

from ..experiments.maml_family import linear_cka
from ..meta.mamlpp import msl_weights
from .core import Case, exercise, experiment

CHAPTER = "10_maml_family"


@exercise("maml_family.linear_cka", chapter=CHAPTER, title="linear CKA between two representations",
          function="cka", references=("mlcourse.experiments.maml_family.linear_cka",),
          hint="centre every column of x and of y (subtract its mean over the n examples); then return "
               "‖yᵀx‖²_F / (‖xᵀx‖_F · ‖yᵀy‖_F), with ‖·‖_F the Frobenius norm (sum of squares, square root).")
def cka_cases():
    generator = torch.Generator().manual_seed(0)

    def normal(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    x = normal(20, 6)
    rotation, _ = torch.linalg.qr(normal(6, 6))
    yield Case("two unrelated representations of 20 examples, 6 and 4 features", args=(x, normal(20, 4)),
               reference=linear_cka, rtol=1e-8, atol=1e-10)
    yield Case("a rotated, scaled and shifted copy (CKA is 1)", args=(x, 2.5 * x @ rotation + 3.0),
               reference=linear_cka, rtol=1e-8, atol=1e-10)
    shifted = normal(30, 5) + 10.0
    other = shifted[:, :3] + normal(30, 3)
    yield Case("features with large means (centring matters)", args=(shifted.requires_grad_(True), other),
               reference=linear_cka, grad_wrt=(0,), rtol=1e-7, atol=1e-9)


@exercise("maml_family.msl_weights", chapter=CHAPTER, title="MAML++'s multi-step loss weights",
          function="step_weights", references=("mlcourse.meta.mamlpp.msl_weights", "mlcourse.meta.mamlpp"),
          hint="with N steps and progress p clipped to [0, 1]: every non-final weight is max((1 − p)/N, 0.03/N); "
               "the final weight is min((1 + p(N − 1))/N, 1 − (N − 1)·0.03/N). Return a list of N floats.")
def msl_cases():
    def reference(steps, progress):
        return torch.tensor(msl_weights(steps, progress), dtype=torch.float64)

    def compare(expected, given):
        try:
            given = torch.as_tensor(given, dtype=torch.float64).flatten()
        except (TypeError, ValueError):
            return "expected a list of numbers"
        if given.shape != expected.shape:
            return f"expected {expected.numel()} weights, got {given.numel()}"
        if not torch.allclose(given, expected, rtol=1e-9, atol=1e-12):
            return f"weights differ: expected {[round(float(v), 4) for v in expected]}"
        return None

    for steps, progress in [(5, 0.0), (5, 0.4), (5, 1.0), (3, 2.0), (1, 0.5)]:
        yield Case(f"{steps} step{'s' if steps > 1 else ''}, progress {progress}", args=(steps, progress), reference=reference,
                   compare=compare)


@experiment("maml_family.cavia_mse", chapter=CHAPTER, title="CAVIA on sinusoids with few context parameters",
            function="cavia_mse", hint="build CAVIA(ContextMLP(context=context), 'mse', inner_lr=1.0), train it with "
            "Adam (β = 0.001) on meta-batches of 25 sinusoid tasks with K = 10 for `iterations` meta-updates, and "
            "return the mean squared error of learner.evaluate on 200 new tasks (100 query points each) as a float.")
def cavia_cases():
    # At 400 meta-iterations CAVIA with two context numbers is well below the error of predicting
    # zero everywhere (about 4.2 on this task family) and of the untrained network.
    yield Case("2 context parameters, 400 meta-iterations, seed 0", args=(2, 400, 0), within=(0.0, 2.5),
               time_limit=300)
