"""Chapter 6, first-order MAML."""

from ..meta.maml import MAML
from ..tasks import TaskBatch
from .core import Case, exercise
from .maml import regression_setup


@exercise("fomaml.gradient", chapter="06_fomaml", title="the first-order meta-gradient of one task",
          function="fo_gradient", references=("mlcourse.meta.maml.MAML", "mlcourse.meta.functional.sgd_steps"),
          hint="adapt from a detached copy of θ with `steps` SGD steps on (x_tr, y_tr), then return "
               "torch.func.grad(loss)(phi, x_ts, y_ts): the query gradient taken at φ, not at θ.")
def fo_gradient_cases():
    for seed, alpha, steps in [(0, 0.01, 1), (1, 0.05, 2), (2, 0.02, 5)]:
        net, loss, theta, task = regression_setup(seed)
        maml = MAML(net, "mse", inner_lr=alpha, inner_steps=steps, first_order=True)

        def reference(loss, theta, x_tr, y_tr, x_ts, y_ts, alpha, steps, maml=maml):
            batch = TaskBatch(x_tr[None], y_tr[None], x_ts[None], y_ts[None])
            return maml.meta_gradient(theta, batch).grads

        yield Case(f"α = {alpha}, {steps} inner step{'s' if steps > 1 else ''}",
                   args=(loss, theta, task.x_tr, task.y_tr, task.x_ts, task.y_ts, alpha, steps),
                   reference=reference, rtol=1e-8, atol=1e-10)
