"""Chapter 11, metric-based meta-learning: prototypes, their distance logits, and the linear
classifier that squared-Euclidean prototypes are."""

import torch

from ..meta.protonet import negative_distances, prototypes
from .core import Case, exercise

CHAPTER = "11_metric"


def _episodes(generator, ways, shots, queries, dim):
    """Embedded support and query sets with the labels in a random order (not class by class)."""
    z_tr = torch.randn(ways * shots, dim, generator=generator, dtype=torch.float64)
    z_ts = torch.randn(ways * queries, dim, generator=generator, dtype=torch.float64)
    y_tr = torch.arange(ways).repeat_interleave(shots)[torch.randperm(ways * shots, generator=generator)]
    return z_tr, y_tr, z_ts


def _prototype_logits(z_tr, y_tr, z_ts, ways):
    return negative_distances(z_ts, prototypes(z_tr, y_tr, ways)[0])


def _linear_head(z_tr, y_tr, ways):
    c = prototypes(z_tr, y_tr, ways)[0]
    return 2 * c, -c.pow(2).sum(-1)


@exercise("metric.prototype_logits", chapter=CHAPTER, title="prototypes and their squared-distance logits",
          function="prototype_logits",
          references=("mlcourse.meta.protonet.prototypes", "mlcourse.meta.protonet.negative_distances",
                      "mlcourse.meta.protonet.classify"),
          hint="c_k is the mean of the rows of z_tr whose label is k (the labels come in any order; a one-hot "
               "matrix of y_tr, transposed, times z_tr sums them); return −‖z_ts[q] − c_k‖² for every query q "
               "and class k, a [queries, ways] tensor.")
def prototype_logits_cases():
    generator = torch.Generator().manual_seed(0)
    for ways, shots, queries, dim in [(3, 1, 2, 4), (5, 3, 4, 8), (20, 2, 1, 16)]:
        z_tr, y_tr, z_ts = _episodes(generator, ways, shots, queries, dim)
        yield Case(f"{ways}-way {shots}-shot, {queries} quer{'ies' if queries > 1 else 'y'} per class, "
                   f"{dim}-dimensional embeddings", args=(z_tr, y_tr, z_ts, ways), reference=_prototype_logits,
                   rtol=1e-9, atol=1e-10)
    z_tr, y_tr, z_ts = _episodes(generator, 4, 5, 3, 6)
    yield Case("4-way 5-shot, the gradients with respect to both embeddings",
               args=(z_tr.requires_grad_(True), y_tr, z_ts.requires_grad_(True), 4), reference=_prototype_logits,
               grad_wrt=(0, 2), rtol=1e-8, atol=1e-10)


@exercise("metric.linear_head", chapter=CHAPTER, title="squared-Euclidean prototypes as a linear layer",
          function="linear_head", references=("mlcourse.meta.protonet.prototypes",),
          hint="compute the prototypes c_k (mean of the rows of z_tr with label k), then return the pair "
               "(w, b) with w[k] = 2·c_k, shape [ways, D], and b[k] = −‖c_k‖², shape [ways].")
def linear_head_cases():
    generator = torch.Generator().manual_seed(1)
    for ways, shots, dim in [(2, 1, 3), (5, 5, 8), (10, 2, 64)]:
        z_tr, y_tr, _ = _episodes(generator, ways, shots, 1, dim)
        yield Case(f"{ways}-way {shots}-shot, {dim}-dimensional embeddings", args=(z_tr, y_tr, ways),
                   reference=_linear_head, rtol=1e-9, atol=1e-10)
