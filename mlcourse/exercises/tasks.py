"""Chapter 1, Tasks."""

import math

import torch

from ..tasks import SinusoidFamily
from .core import Case, exercise


def _sinusoid_sample(expected, given) -> str | None:
    """The given (x, y) must be sinusoid tasks of the family: y = A sin(x − b) with A, b, x in range."""
    if not (isinstance(given, (tuple, list)) and len(given) == 2):
        return f"expected a pair (x, y), got {type(given).__name__}"
    x, y = given
    if not isinstance(x, torch.Tensor) or x.shape != expected[0].shape or y.shape != expected[1].shape:
        return (f"expected x and y of shape {tuple(expected[0].shape)}, got "
                f"{tuple(getattr(x, 'shape', ()))} and {tuple(getattr(y, 'shape', ()))}")
    if not (x.min() >= -5 and x.max() <= 5):
        return f"x must lie in [-5, 5], got values from {float(x.min()):.3g} to {float(x.max()):.3g}"
    # Each task is c1 sin x + c2 cos x; a least-squares fit recovers A = |c| and b from it.
    features = torch.cat([torch.sin(x), torch.cos(x)], dim=-1).double()
    coef = torch.linalg.lstsq(features, y.double()).solution[..., 0]
    residual = (features @ coef[..., None] - y.double()).abs().max()
    if residual > 1e-3:
        return f"y is not A·sin(x − b) of each task's x (largest misfit {float(residual):.3g})"
    amplitude = coef.norm(dim=-1)
    phase = torch.atan2(-coef[:, 1], coef[:, 0]) % (2 * math.pi)
    if amplitude.min() < 0.1 - 1e-3 or amplitude.max() > 5 + 1e-3:
        return f"amplitudes must lie in [0.1, 5], got {float(amplitude.min()):.3g} to {float(amplitude.max()):.3g}"
    if phase.max() > math.pi + 1e-3:
        return f"phases must lie in [0, π], got up to {float(phase.max()):.3g}"
    if len(x) >= 500 and (abs(float(amplitude.mean()) - 2.55) > 0.15 or abs(float(phase.mean()) - math.pi / 2) > 0.1):
        return (f"amplitude and phase must be uniform: means {float(amplitude.mean()):.3g} and "
                f"{float(phase.mean()):.3g},"
                f" expected about 2.55 and {math.pi / 2:.3g}")
    return None


@exercise("tasks.sample_sinusoids", chapter="01_tasks", title="sample a batch of sinusoid tasks",
          function="sample_sinusoids", references=("mlcourse.tasks.SinusoidFamily",),
          hint="draw A ~ U[0.1, 5] and b ~ U[0, π] per task ([n, 1, 1]) and x ~ U[-5, 5] ([n, k, 1]) with torch.rand, "
               "then y = A · sin(x − b), all in one broadcast.")
def sample_sinusoids_cases():
    def reference(n, k):
        batch = SinusoidFamily().sample(n, k, device="cpu")
        return batch.x_tr, batch.y_tr

    yield Case("7 tasks of 4 points", args=(7, 4), reference=reference, compare=_sinusoid_sample)
    yield Case("2,000 tasks of 5 points (the distribution)", args=(2000, 5), reference=reference,
               compare=_sinusoid_sample)
