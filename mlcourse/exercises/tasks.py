"""Chapter 1, Tasks."""

import math

import torch

from ..tasks import SinusoidFamily
from .core import Case, describe, exercise, experiment


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


# --- N-way K-shot episodes (Algorithm 1.1) ---------------------------------------------------------

def _pool(classes: int, per_class: int, seed: int) -> torch.Tensor:
    """Images [C, D, 2, 3] that say who they are: pixel (0, 0) is the class, (0, 1) the drawer,
    the rest is noise (so a wrong index cannot pass by accident)."""
    images = torch.rand(classes, per_class, 2, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    images[:, :, 0, 0] = torch.arange(classes, dtype=torch.float64)[:, None]
    images[:, :, 0, 1] = torch.arange(per_class, dtype=torch.float64)[None, :]
    return images


def _reference_episodes(images, episodes, ways, shots, queries):
    """Algorithm 1.1 for a whole batch: random distinct classes in random order, random distinct
    images of each, the first K to D^tr."""
    classes = torch.rand(episodes, images.shape[0]).topk(ways, dim=1).indices
    picks = torch.rand(episodes, ways, images.shape[1]).topk(shots + queries, dim=2).indices
    chosen = images[classes[:, :, None], picks]
    labels = torch.arange(ways).view(1, ways, 1).expand(episodes, ways, shots + queries)
    return (chosen[:, :, :shots].flatten(1, 2), labels[:, :, :shots].flatten(1),
            chosen[:, :, shots:].flatten(1, 2), labels[:, :, shots:].flatten(1))


def _episodes_check(images, ways, shots, queries):
    """A compare function for sample_episodes on the pool ``images``."""
    classes_total, per_class = images.shape[:2]

    def compare(expected, given) -> str | None:
        if not (isinstance(given, (tuple, list)) and len(given) == 4):
            return f"expected four tensors (x_tr, y_tr, x_ts, y_ts), got {type(given).__name__}"
        if not all(isinstance(t, torch.Tensor) for t in given):
            return "expected four tensors (x_tr, y_tr, x_ts, y_ts)"
        for name, e, g in zip(("x_tr", "y_tr", "x_ts", "y_ts"), expected, given):
            if tuple(g.shape) != tuple(e.shape):
                return f"{name} must have shape {tuple(e.shape)}, got {tuple(g.shape)}"
        x_tr, y_tr, x_ts, y_ts = (t.detach().cpu() for t in given)
        x, y = torch.cat([x_tr, x_ts], 1).double(), torch.cat([y_tr, y_ts], 1)
        if y.is_floating_point() or y.min() < 0 or y.max() >= ways:
            return f"labels must be integers 0..{ways - 1}, got {describe(y)}"
        c, d = x[..., 0, 0].round().long(), x[..., 0, 1].round().long()
        if c.min() < 0 or c.max() >= classes_total or d.min() < 0 or d.max() >= per_class:
            return "some returned images are not images of the pool (were they changed or made up?)"
        if not torch.allclose(x, images[c, d], atol=1e-6):
            return "some returned images are not images of the pool (were they changed or made up?)"
        counts_tr = torch.stack([(y_tr == j).sum(1) for j in range(ways)], 1)
        counts_ts = torch.stack([(y_ts == j).sum(1) for j in range(ways)], 1)
        if not ((counts_tr == shots).all() and (counts_ts == queries).all()):
            return f"every label needs K = {shots} images in D^tr and Q = {queries} in D^ts of every episode"
        one_class = torch.zeros(y.shape[0], ways, dtype=torch.long)
        for j in range(ways):   # the class of label j: every image labelled j must be of it
            of_label = torch.where(y == j, c, -1)
            first = of_label.max(1).values
            if not ((of_label == first[:, None]) | (of_label == -1)).all():
                return f"label {j} names images of more than one class in some episode"
            one_class[:, j] = first
        if (one_class.sort(1).values.diff(1) == 0).any():
            return "some episode gives two labels to the same class"
        key = c * per_class + d
        if (key.sort(1).values.diff(1) == 0).any():
            return "some image appears twice in an episode (D^tr and D^ts must be disjoint, images distinct)"
        episodes = y.shape[0]
        if episodes >= 500:
            ordered = (one_class.diff(1) > 0).all(1).float().mean()
            if ordered > 0.2:
                return (f"in {float(ordered):.0%} of the episodes the labels follow the order of the classes: "
                        "labels must be assigned in a random order")
            expected_count = episodes * ways / classes_total
            seen = torch.bincount(one_class.flatten(), minlength=classes_total).double()
            if (seen - expected_count).abs().max() > 0.15 * expected_count:
                return "classes are not chosen uniformly at random"
            first_label = torch.bincount(one_class[:, 0], minlength=classes_total).double()
            if (first_label - episodes / classes_total).abs().max() > 0.3 * episodes / classes_total:
                return "label 0 does not go to a uniformly random class"
            drawers = torch.bincount(d[:, : ways * shots].flatten(), minlength=per_class).double()
            if (drawers - drawers.mean()).abs().max() > 0.25 * drawers.mean():
                return "the images of D^tr are not chosen uniformly among a class's images"
        return None

    return compare


@exercise("tasks.sample_episodes", chapter="01_tasks", title="N-way K-shot episodes without a loop",
          function="sample_episodes", references=("mlcourse.tasks.EpisodeSampler",),
          hint="argsort (or topk) of torch.rand(episodes, C) gives N random distinct classes in a random order per "
               "episode; argsort of torch.rand(episodes, N, D) gives K + Q distinct images of each. Index the images "
               "with both at once, split off the first K, and label class j of an episode with j.")
def sample_episodes_cases():
    for classes, per_class, episodes, ways, shots, queries, seed in [
            (12, 6, 4, 4, 2, 3, 0), (5, 4, 3, 5, 1, 3, 1), (10, 20, 3000, 5, 1, 2, 2)]:
        images = _pool(classes, per_class, seed)
        label = (f"{episodes:,} episode{'s' if episodes > 1 else ''}, {ways}-way {shots}-shot, {queries} queries, "
                 f"{classes} classes of {per_class} images" + (" (the distribution)" if episodes >= 500 else ""))
        yield Case(label, args=(images, episodes, ways, shots, queries), reference=_reference_episodes,
                   compare=_episodes_check(images, ways, shots, queries), seed=seed)


# --- the value of a prior: least squares near the noise floor ----------------------------------------

@experiment("tasks.noise_floor_ratio", chapter="01_tasks", title="how close to the noise floor least squares gets",
            function="noise_floor_ratio",
            hint="draw 1,000 tasks with SinusoidFamily().sample(1000, k), add torch.randn noise (σ = 1) to y_tr, fit "
                 "w = (FᵀF + 1e-3·I)⁻¹Fᵀy with the features (1, sin jx, cos jx) for j ≤ (p − 1)/2, and return "
                 "(mean squared error against the noise-free function on fresh x, plus σ² = 1) divided by σ².")
def noise_floor_cases():
    # Exercise 1 predicts about 1 + p/K at the training inputs; the true loss lies a little above.
    yield Case("p = 3 features, K = 30 points, seed 0", args=(3, 30, 0), within=(1.05, 1.2), time_limit=120)
    yield Case("p = 7 features, K = 30 points, seed 1", args=(7, 30, 1), within=(1.2, 1.6), time_limit=120)
