"""Chapter 2, multi-task learning."""

import math

import torch
from torch import nn
from torch.func import vmap

from ..meta.multitask import MultiTask
from ..nets import MLP, forward
from .core import Case, exercise, experiment


@exercise("multitask.uncertainty", chapter="02_multitask", title="the uncertainty-weighted multi-task loss",
          function="uncertainty_weighted", references=("mlcourse.meta.multitask.MultiTask",),
          hint="return the mean over tasks of ½·exp(−s_i)·L_i + ½·s_i, with s = log_var, as one tensor expression.")
def uncertainty_cases():
    generator = torch.Generator().manual_seed(0)
    for tasks in (1, 4, 7):
        model = MultiTask("shared", tasks, net=MLP(), weighting="uncertainty")
        losses = torch.rand(tasks, generator=generator, dtype=torch.float64) * 3
        log_var = torch.randn(tasks, generator=generator, dtype=torch.float64).requires_grad_(True)
        yield Case(f"{tasks} task{'s' if tasks > 1 else ''}", args=(losses, log_var),
                   reference=lambda losses, log_var, model=model: model.combine({"log_var": log_var}, losses),
                   grad_wrt=(1,), rtol=1e-10, atol=1e-12)


@exercise("multitask.linear_heads", chapter="02_multitask", title="per-task linear heads as one batched product",
          function="linear_heads", references=("mlcourse.meta.multitask.MultiTask",),
          hint="torch.einsum('mnd,mod->mno', features, weight) plus the bias broadcast over the n examples "
               "(bias[:, None, :]).")
def linear_heads_cases():
    generator = torch.Generator().manual_seed(1)
    for tasks, n, d, o in [(3, 5, 4, 1), (5, 8, 6, 3)]:
        head = nn.Linear(d, o)
        features = torch.randn(tasks, n, d, generator=generator, dtype=torch.float64)
        weight = torch.randn(tasks, o, d, generator=generator, dtype=torch.float64).requires_grad_(True)
        bias = torch.randn(tasks, o, generator=generator, dtype=torch.float64).requires_grad_(True)

        def reference(features, weight, bias, head=head):   # the package's per-task head, vmapped over tasks
            return vmap(lambda f, w, b: forward(head, {"weight": w, "bias": b}, f))(features, weight, bias)

        yield Case(f"{tasks} tasks, {n} examples, {d} features, {o} output{'s' if o > 1 else ''}",
                   args=(features, weight, bias), reference=reference, grad_wrt=(1, 2), rtol=1e-10, atol=1e-12)


@experiment("multitask.target_loss", chapter="02_multitask", title="negative transfer from companions a phase away",
            function="target_loss",
            hint="slot 0: the target A = 3, b = 0.5 with its 10 points repeated to 20; slots 1-9: companions with "
                 "A ~ U[2.5, 3.5] and b ~ U[0.5 + shift − 0.2, 0.5 + shift + 0.2], 20 points each; train "
                 "MultiTask('shared', 10, net=MLP()) or MultiTask('hard', 10, trunk=MLP((1, 40, 40, 4)), "
                 "head=nn.Linear(4, 1)) with mlcourse.meta.multitask_train.train(..., 1500, lr=3e-3) and return "
                 "the target's test_loss (history.last()['test_loss'][0]) as a float.")
def target_loss_cases():
    # Measured over seeds: one network 14-18 (the average of opposite functions misses the target),
    # hard sharing below 0.02 (a head absorbs the sign flip). Predicting zero costs about 4.6.
    yield Case("one network, companions half a period away, seed 0", args=("one network", math.pi, 0),
               within=(5.0, 40.0), time_limit=300)
    yield Case("hard sharing, companions half a period away, seed 0", args=("hard sharing", math.pi, 0),
               within=(0.0, 0.2), time_limit=300)
