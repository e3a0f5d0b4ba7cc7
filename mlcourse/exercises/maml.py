"""Chapter 5, MAML."""

import torch

from ..meta.functional import sgd_steps, task_loss
from ..nets import MLP, init_params
from ..tasks import SinusoidFamily
from .core import Built, Case, exercise, recipe


@recipe("maml.mlp_loss")
def mlp_loss(sizes, kind="mse"):
    """L(φ, x, y) of an MLP with these layer sizes: the loss function the MAML exercises are given."""
    return task_loss(MLP(tuple(sizes)), kind)


def regression_setup(seed: int, hidden: int = 16):
    """A random float64 MLP, its loss (as a recipe, rebuilt wherever the check runs) and a sinusoid
    task: the inputs of the MAML exercises."""
    torch.manual_seed(seed)
    net = MLP((1, hidden, hidden, 1))
    loss = Built("maml.mlp_loss", sizes=[1, hidden, hidden, 1])
    theta = init_params(net, "cpu", torch.float64)
    task = SinusoidFamily().sample(1, 10, device="cpu", dtype=torch.float64,
                                   generator=torch.Generator().manual_seed(seed))[0]
    return net, loss, theta, task


@exercise("maml.adapt", chapter="05_maml", title="the inner loop with several steps and per-parameter rates",
          function="adapt",
          references=("mlcourse.meta.functional.sgd_steps", "mlcourse.meta.maml.MAML"),
          hint="repeat `steps` times: g = torch.func.grad(loss)(phi, x, y), then "
               "phi = {k: phi[k] − α_k · g[k]}, where α_k "
               "is alpha itself or alpha[k] when alpha is a dict. Do not detach anything.")
def adapt_cases():
    def reference(loss, theta, x, y, alpha, steps):
        return sgd_steps(loss, theta, x, y, alpha, steps)

    for seed, alpha, steps in [(0, 0.01, 1), (1, 0.05, 3)]:
        _, loss, theta, task = regression_setup(seed)
        yield Case(f"α = {alpha}, {steps} step{'s' if steps > 1 else ''}",
                   args=(loss, theta, task.x_tr, task.y_tr, alpha, steps), reference=reference, grad_wrt=(1,),
                   rtol=1e-8, atol=1e-10)
    _, loss, theta, task = regression_setup(2)
    alpha = {k: (0.01 + 0.02 * torch.rand_like(v)).requires_grad_(True) for k, v in theta.items()}
    yield Case("per-parameter α (Meta-SGD), 2 steps", args=(loss, theta, task.x_tr, task.y_tr, alpha, 2),
               reference=reference, grad_wrt=(1, 4), rtol=1e-8, atol=1e-10)
