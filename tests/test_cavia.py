"""CAVIA against independent references: float64 finite differences of the inner loss with
respect to the context and of the meta-objective with respect to θ, a per-task loop written with
torch.autograd, and the networks' behaviour at the zero context."""

import pytest
import torch

from mlcourse.meta.cavia import CAVIA, CONTEXT, ContextConv4, ContextMLP
from mlcourse.nets import MLP, Conv4, forward, init_params
from mlcourse.tasks import EpisodeSampler, SinusoidFamily, TaskBatch

F64 = torch.float64


def sinusoids(tasks=3, shots=4, queries=5, seed=0):
    return SinusoidFamily().sample(tasks, shots, queries, device="cpu", dtype=F64,
                                   generator=torch.Generator().manual_seed(seed))


def finite_difference(fn, params, eps=1e-6):
    out = {}
    with torch.no_grad():
        for name, p in params.items():
            g = torch.zeros_like(p)
            for i in range(p.numel()):
                p.view(-1)[i] += eps
                up = float(fn(params))
                p.view(-1)[i] -= 2 * eps
                down = float(fn(params))
                p.view(-1)[i] += eps
                g.view(-1)[i] = (up - down) / (2 * eps)
            out[name] = g
    return out


def mse(net, params, x, y):
    return (forward(net, params, x) - y).pow(2).mean()


def test_the_context_step_is_minus_alpha_times_the_finite_difference_gradient():
    torch.manual_seed(0)
    cavia = CAVIA(ContextMLP((1, 6, 6, 1), context=3), "mse", inner_lr=0.7, inner_steps=1)
    theta = cavia.init_params("cpu", F64)
    task = sinusoids(tasks=1)[0]
    context = {CONTEXT: torch.zeros(3, dtype=F64)}
    numeric = finite_difference(lambda c: mse(cavia.net, {**theta, **c}, task.x_tr, task.y_tr), context)[CONTEXT]
    assert numeric.abs().max() > 1e-4
    torch.testing.assert_close(cavia.adapt(theta, task)[CONTEXT], -0.7 * numeric, rtol=1e-6, atol=1e-9)
    # a second step from there, again against finite differences at the new context
    two = CAVIA(cavia.net, "mse", inner_lr=0.7, inner_steps=2)
    c1 = {CONTEXT: -0.7 * numeric}
    numeric2 = finite_difference(lambda c: mse(cavia.net, {**theta, **c}, task.x_tr, task.y_tr), c1)[CONTEXT]
    torch.testing.assert_close(two.adapt(theta, task)[CONTEXT], c1[CONTEXT] - 0.7 * numeric2, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("steps", [1, 2])
def test_meta_gradient_matches_finite_differences_of_the_meta_objective(steps):
    torch.manual_seed(1)
    cavia = CAVIA(ContextMLP((1, 5, 5, 1), context=2), "mse", inner_lr=0.5, inner_steps=steps)
    theta = cavia.init_params("cpu", F64)
    batch = sinusoids()
    analytic = cavia.meta_gradient(theta, batch).grads
    numeric = finite_difference(lambda p: cavia.meta_loss(p, batch)[0], theta)
    assert analytic.keys() == numeric.keys() == theta.keys() and CONTEXT not in theta
    for k in theta:
        torch.testing.assert_close(analytic[k], numeric[k], rtol=1e-5, atol=1e-7, msg=lambda m: f"{k}: {m}")


def textbook(net, theta, batch, alpha, steps, first_order):
    """A per-task loop with torch.autograd on the context."""
    total = None
    for task in batch:
        c = torch.zeros(net.context.numel(), dtype=F64, requires_grad=True)
        for _ in range(steps):
            g, = torch.autograd.grad(mse(net, {**theta, CONTEXT: c}, task.x_tr, task.y_tr), c,
                                     create_graph=not first_order)
            c = c - alpha * g
        if first_order:
            c = c.detach()
        grads = torch.autograd.grad(mse(net, {**theta, CONTEXT: c}, task.x_ts, task.y_ts), list(theta.values()))
        total = list(grads) if total is None else [a + b for a, b in zip(total, grads)]
    return {k: g / batch.num_tasks for k, g in zip(theta, total)}


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_vectorised_equals_a_textbook_loop(first_order, execution):
    torch.manual_seed(2)
    net = ContextMLP((1, 8, 8, 1), context=4)
    cavia = CAVIA(net, "mse", inner_lr=0.3, inner_steps=3, first_order=first_order, execution=execution)
    theta = cavia.init_params("cpu", F64)
    batch = sinusoids(tasks=4)
    expected = textbook(net, theta, batch, 0.3, 3, first_order)
    got = cavia.meta_gradient(theta, batch).grads
    for k in theta:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-10, atol=1e-12)


def test_first_and_second_order_differ():
    cavia = CAVIA(ContextMLP((1, 6, 6, 1), context=3), "mse", inner_lr=0.5, inner_steps=2)
    theta = cavia.init_params("cpu", F64)
    batch = sinusoids()
    second = cavia.meta_gradient(theta, batch).grads
    first = CAVIA(cavia.net, "mse", inner_lr=0.5, inner_steps=2, first_order=True).meta_gradient(theta, batch).grads
    assert any((second[k] - first[k]).abs().max() > 1e-6 for k in theta)


def test_only_the_context_adapts_and_the_curve_matches_adapt():
    cavia = CAVIA(ContextMLP((1, 6, 6, 1), context=3), "mse", inner_lr=0.5, inner_steps=1)
    theta = cavia.init_params("cpu", F64)
    batch = sinusoids(tasks=3)
    phi = cavia.adapt(theta, batch, steps=2)
    assert phi.keys() == {*theta, CONTEXT} and phi[CONTEXT].shape == (3, 3)
    for k, v in theta.items():
        assert torch.equal(phi[k], v.expand(3, *v.shape))
    curve = cavia.adaptation_curve(theta, batch, steps=3)["loss"]
    assert curve.shape == (3, 4) and not curve.requires_grad
    for i, task in enumerate(batch):
        for steps in range(4):
            expected = mse(cavia.net, cavia.adapt(theta, task, steps=steps), task.x_ts, task.y_ts)
            torch.testing.assert_close(curve[i, steps], expected.detach())
    torch.testing.assert_close(cavia.evaluate(theta, batch, steps=3)["loss"], curve[:, 3])


def test_zero_context_leaves_the_networks_as_they_are():
    torch.manual_seed(3)
    mlp = ContextMLP((1, 7, 1), context=4)
    params = init_params(mlp, "cpu", F64)
    x = torch.randn(5, 1, dtype=F64)
    plain = MLP((1, 7, 1))
    first = params["body.layers.0.weight"][:, :1]
    plain_params = {"layers.0.weight": first, "layers.0.bias": params["body.layers.0.bias"],
                    "layers.2.weight": params["body.layers.2.weight"], "layers.2.bias": params["body.layers.2.bias"]}
    torch.testing.assert_close(forward(mlp, params, x), forward(plain, plain_params, x))
    conv = ContextConv4(3, context=5, channels=4)
    params = init_params(conv, "cpu", F64)
    images = torch.rand(6, 1, 28, 28, dtype=F64)
    body = {k[len("body."):]: v for k, v in params.items() if k.startswith("body.")}
    torch.testing.assert_close(forward(conv, params, images), forward(Conv4(3, channels=4), body, images))
    params[CONTEXT] = torch.randn(5, dtype=F64)    # a non-zero context does change the output
    assert (forward(conv, params, images) - forward(Conv4(3, channels=4), body, images)).abs().max() > 1e-6


def test_classification_with_film_context():
    torch.manual_seed(4)
    cavia = CAVIA(ContextConv4(3, context=4, channels=4, film_block=1), "cross_entropy", inner_lr=1.0,
                  inner_steps=2)
    theta = cavia.init_params("cpu", F64)
    images = (torch.rand(10, 6, 28, 28) * 255).to(torch.uint8)
    batch = EpisodeSampler(images, ways=3, shots=1, queries=2, device="cpu").sample(2)
    batch = TaskBatch(batch.x_tr.double(), batch.y_tr, batch.x_ts.double(), batch.y_ts)
    grads, metrics = cavia.meta_gradient(theta, batch)
    assert {"loss", "accuracy"} <= metrics.keys() and grads["film.weight"].abs().max() > 0
    some = ["film.weight", "body.head.bias"]
    numeric = finite_difference(lambda p: cavia.meta_loss({**theta, **p}, batch)[0],
                                {k: theta[k].detach().clone() for k in some})
    for k in some:
        torch.testing.assert_close(grads[k], numeric[k], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("make,message", [
    (lambda: CAVIA(MLP(), "mse"), "parameter named 'context'"),
    (lambda: CAVIA(ContextMLP(), "mse", inner_lr=0.0), "inner_lr"),
    (lambda: CAVIA(ContextMLP(), "mse", inner_steps=-1), "inner_steps must be an int >= 0"),
    (lambda: ContextMLP(context=0), "context"),
    (lambda: ContextConv4(context=3, film_block=4), "film_block must be one of"),
])
def test_bad_configuration(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_theta_holding_a_context_is_refused():
    cavia = CAVIA(ContextMLP((1, 4, 1), context=2), "mse")
    theta = init_params(cavia.net, "cpu")
    with pytest.raises(ValueError, match="must not hold 'context'"):
        cavia.meta_gradient(theta, SinusoidFamily().sample(2, 3, device="cpu"))
