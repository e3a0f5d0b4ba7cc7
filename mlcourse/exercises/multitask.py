"""Chapter 2, multi-task learning."""

import torch
from torch import nn
from torch.func import vmap

from ..meta.multitask import MultiTask
from ..nets import MLP, forward
from .core import Case, exercise


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
