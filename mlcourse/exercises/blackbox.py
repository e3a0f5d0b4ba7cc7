"""Chapter 4, black-box adaptation."""

import torch

from ..meta import mann
from ..meta.sequences import accuracy_by_instance
from .core import Case, exercise


@exercise("blackbox.lrua_write", chapter="04_blackbox", title="the least-recently-used memory write",
          function="lrua_write",
          references=("mlcourse.meta.mann.write_memory", "mlcourse.meta.mann.write_weights",
                      "mlcourse.meta.mann.least_used"),
          hint="rows = the `heads` least-used slots (argsort of usage); least-used weights are one-hot rows; "
               "w = σ(α)·read_before + (1 − σ(α))·least_used; clear the single least-used row, then add wᵀ·key.")
def lrua_cases():
    def reference(memory, usage, read_before, key, alpha):
        least = mann.least_used(usage, key.shape[1])
        return mann.write_memory(memory, least[:, 0], mann.write_weights(read_before, least, alpha), key)

    generator = torch.Generator().manual_seed(1)
    for episodes, slots, width, heads in [(2, 8, 3, 1), (8, 32, 6, 3)]:
        args = (torch.randn(episodes, slots, width, generator=generator, dtype=torch.float64),
                torch.rand(episodes, slots, generator=generator, dtype=torch.float64),
                torch.softmax(torch.randn(episodes, heads, slots, generator=generator, dtype=torch.float64), -1),
                torch.randn(episodes, heads, width, generator=generator, dtype=torch.float64),
                torch.randn(episodes, heads, generator=generator, dtype=torch.float64))
        yield Case(f"{episodes} episodes, memory {slots}×{width}, {heads} head{'s' if heads > 1 else ''}", args=args,
                   reference=reference, rtol=1e-10, atol=1e-12)


@exercise("blackbox.instance_accuracy", chapter="04_blackbox", title="accuracy at the k-th presentation of a class",
          function="instance_accuracy",
          references=("mlcourse.meta.sequences.accuracy_by_instance", "mlcourse.meta.sequences.instance_numbers"),
          hint="a cumulative sum over time of the one-hot labels counts how often each label has been seen; keep the "
               "steps where that count for the current label equals k and average the correct predictions there.")
def instance_accuracy_cases():
    generator = torch.Generator().manual_seed(2)
    y = torch.stack([torch.arange(5).repeat(10)[torch.randperm(50, generator=generator)] for _ in range(6)])
    logits = torch.randn(6, 50, 5, generator=generator)
    for k in (1, 2, 5, 10):
        yield Case(f"6 episodes of 50 steps, k = {k}", args=(logits, y, k),
                   reference=lambda logits, y, k: accuracy_by_instance(logits, y, instances=(k,))[:, 0])
