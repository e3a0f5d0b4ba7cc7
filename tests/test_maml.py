"""MAML, first-order MAML and Meta-SGD against independent references: finite differences, a
per-task loop written the textbook way with torch.autograd, and the closed form for linear
regression."""

import pytest
import torch
from torch import nn

from mlcourse.meta.maml import MAML
from mlcourse.meta.metasgd import PREFIX, MetaSGD
from mlcourse.nets import MLP, Conv4, forward
from mlcourse.tasks import SinusoidFamily, TaskBatch
from mlcourse.train import DivergenceError, fit

F64 = torch.float64


def sinusoids(tasks=3, shots=4, queries=5, seed=0):
    return SinusoidFamily().sample(tasks, shots, queries, device="cpu", dtype=F64,
                                   generator=torch.Generator().manual_seed(seed))


def finite_difference(fn, params, eps=1e-6):
    """Central differences of the scalar fn(params) with respect to every entry of params."""
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


def assert_dicts_close(a, b, **tol):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], **tol, msg=lambda m: f"{k}: {m}")


def textbook_meta_gradient(net, theta, batch, alpha, steps, first_order=False):
    """A plain per-task loop with torch.autograd, independent of the package's torch.func code."""
    acc = None
    for i in range(batch.num_tasks):
        phi = dict(theta)
        for _ in range(steps):
            loss = (forward(net, phi, batch.x_tr[i]) - batch.y_tr[i]).pow(2).mean()
            grads = torch.autograd.grad(loss, list(phi.values()), create_graph=not first_order)
            phi = {k: v - alpha * g for (k, v), g in zip(phi.items(), grads)}
        if first_order:
            phi = {k: v.detach().requires_grad_(True) for k, v in phi.items()}
            query = (forward(net, phi, batch.x_ts[i]) - batch.y_ts[i]).pow(2).mean()
            grads = torch.autograd.grad(query, list(phi.values()))
        else:
            query = (forward(net, phi, batch.x_ts[i]) - batch.y_ts[i]).pow(2).mean()
            grads = torch.autograd.grad(query, list(theta.values()))
        acc = list(grads) if acc is None else [a + g for a, g in zip(acc, grads)]
    return {k: a / batch.num_tasks for k, a in zip(theta, acc)}


@pytest.mark.parametrize("steps", [1, 2])
def test_second_order_meta_gradient_matches_finite_differences(steps):
    torch.manual_seed(0)
    maml = MAML(MLP((1, 6, 6, 1)), "mse", inner_lr=0.1, inner_steps=steps)
    theta = maml.init_params("cpu", F64)
    batch = sinusoids()
    analytic = maml.meta_gradient(theta, batch).grads
    numeric = finite_difference(lambda p: maml.meta_loss(p, batch)[0], theta)
    assert_dicts_close(analytic, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_vectorised_equals_textbook_loop(first_order, execution):
    torch.manual_seed(1)
    net = MLP((1, 8, 8, 1))
    maml = MAML(net, "mse", inner_lr=0.05, inner_steps=3, first_order=first_order, execution=execution)
    theta = maml.init_params("cpu", F64)
    batch = sinusoids(tasks=5)
    assert_dicts_close(maml.meta_gradient(theta, batch).grads,
                       textbook_meta_gradient(net, theta, batch, 0.05, 3, first_order), rtol=1e-10, atol=1e-12)


def test_zero_inner_steps_is_the_ordinary_gradient():
    net = MLP((1, 6, 6, 1))
    maml = MAML(net, "mse", inner_lr=0.1, inner_steps=0)
    theta = maml.init_params("cpu", F64)
    batch = sinusoids()
    x, y = batch.x_ts.reshape(-1, 1), batch.y_ts.reshape(-1, 1)
    loss = (forward(net, theta, x) - y).pow(2).mean()   # equal query sizes: the mean of means
    expected = dict(zip(theta, torch.autograd.grad(loss, list(theta.values()))))
    assert_dicts_close(maml.meta_gradient(theta, batch).grads, expected, rtol=1e-10, atol=1e-12)


def test_first_order_is_the_query_gradient_at_phi():
    net = MLP((1, 6, 6, 1))
    maml = MAML(net, "mse", inner_lr=0.1, inner_steps=2, first_order=True)
    theta = maml.init_params("cpu", F64)
    batch = sinusoids(tasks=4)
    expected = {k: torch.zeros_like(v) for k, v in theta.items()}
    for task in batch:
        phi = {k: v.detach().requires_grad_(True) for k, v in maml.adapt(theta, task).items()}
        query = (forward(net, phi, task.x_ts) - task.y_ts).pow(2).mean()
        for (k, _), g in zip(phi.items(), torch.autograd.grad(query, list(phi.values()))):
            expected[k] += g / batch.num_tasks
    assert_dicts_close(maml.meta_gradient(theta, batch).grads, expected, rtol=1e-10, atol=1e-12)
    # ... and it differs from the second-order gradient
    second = MAML(net, "mse", inner_lr=0.1, inner_steps=2).meta_gradient(theta, batch).grads
    assert any((second[k] - expected[k]).abs().max() > 1e-6 for k in theta)


def test_linear_regression_closed_form():
    """f(x) = θᵀx with squared loss: φ = (I − αA_tr)θ + αc_tr with A = (2/K)XᵀX, c = (2/K)Xᵀy, and
    the meta-gradient of L_ts(φ) is (I − αA_tr) (2/Q) X_tsᵀ(X_ts φ − y_ts), averaged over tasks."""
    torch.manual_seed(2)
    d, alpha = 4, 0.05
    net = nn.Sequential(nn.Linear(d, 1, bias=False))
    maml = MAML(net, "mse", inner_lr=alpha, inner_steps=1)
    theta = maml.init_params("cpu", F64)
    tasks, k, q = 6, 5, 7
    w_true = torch.randn(tasks, d, 1, dtype=F64)
    x_tr, x_ts = torch.randn(tasks, k, d, dtype=F64), torch.randn(tasks, q, d, dtype=F64)
    batch = TaskBatch(x_tr, x_tr @ w_true + 0.1 * torch.randn(tasks, k, 1, dtype=F64),
                      x_ts, x_ts @ w_true + 0.1 * torch.randn(tasks, q, 1, dtype=F64))
    w = theta["0.weight"].detach().T  # [d, 1]
    eye = torch.eye(d, dtype=F64)
    expected = torch.zeros(d, 1, dtype=F64)
    for i in range(tasks):
        a = 2 / k * batch.x_tr[i].T @ batch.x_tr[i]
        c = 2 / k * batch.x_tr[i].T @ batch.y_tr[i]
        phi = (eye - alpha * a) @ w + alpha * c
        expected += (eye - alpha * a) @ (2 / q * batch.x_ts[i].T @ (batch.x_ts[i] @ phi - batch.y_ts[i])) / tasks
    torch.testing.assert_close(maml.meta_gradient(theta, batch).grads["0.weight"], expected.T, rtol=1e-10, atol=1e-12)
    phi0 = maml.adapt(theta, batch[0])["0.weight"].T
    a0 = 2 / k * batch.x_tr[0].T @ batch.x_tr[0]
    torch.testing.assert_close(phi0, (eye - alpha * a0) @ w + alpha * 2 / k * batch.x_tr[0].T @ batch.y_tr[0])


def test_meta_sgd_learning_rates_get_the_right_gradient():
    meta_sgd = MetaSGD(MLP((1, 5, 1)), "mse", inner_lr=0.1, inner_steps=2)
    theta = meta_sgd.init_params("cpu", F64)
    assert {k for k in theta if k.startswith(PREFIX)} == {PREFIX + k for k in meta_sgd.net.state_dict()}
    batch = sinusoids()
    analytic = meta_sgd.meta_gradient(theta, batch).grads
    numeric = finite_difference(lambda p: meta_sgd.meta_loss(p, batch)[0], theta)
    assert_dicts_close(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_first_order_meta_sgd_learns_its_rates():
    """First order drops dφ/dθ but not dφ/dα: with one step φ = θ − α ⊙ g(θ) and g does not depend
    on α, so the rates' gradient is the exact one, −g ⊙ ∇φL(φ, D^ts) (finite differences agree);
    with two steps it is −(g₀ + g₁) ⊙ ∇φL with the step gradients held constant."""
    torch.manual_seed(5)
    net = MLP((1, 5, 1))
    one = MetaSGD(net, "mse", inner_lr=0.1, inner_steps=1, first_order=True)
    theta = one.init_params("cpu", F64)
    with torch.no_grad():
        for k, v in theta.items():
            if k.startswith(PREFIX):
                v.uniform_(0.02, 0.2)
    batch = sinusoids(tasks=4)
    grads = one.meta_gradient(theta, batch).grads
    numeric = finite_difference(lambda p: one.meta_loss(p, batch)[0], theta)
    for k in theta:
        if k.startswith(PREFIX):
            assert grads[k].abs().max() > 1e-6, f"{k} receives no gradient"
            torch.testing.assert_close(grads[k], numeric[k], rtol=1e-5, atol=1e-7)
    two = MetaSGD(net, "mse", inner_lr=0.1, inner_steps=2, first_order=True)
    grads = two.meta_gradient(theta, batch).grads
    params, rates = two.split(theta)
    expected = {k: torch.zeros_like(v) for k, v in theta.items()}
    for task in batch:
        phi, step_grads = {k: v.detach() for k, v in params.items()}, []
        for _ in range(2):
            phi = {k: v.requires_grad_(True) for k, v in phi.items()}
            loss = (forward(net, phi, task.x_tr) - task.y_tr).pow(2).mean()
            g = dict(zip(phi, torch.autograd.grad(loss, list(phi.values()))))
            step_grads.append(g)
            phi = {k: (phi[k] - rates[k].detach() * g[k]).detach() for k in phi}
        phi = {k: v.requires_grad_(True) for k, v in phi.items()}
        query = (forward(net, phi, task.x_ts) - task.y_ts).pow(2).mean()
        q = dict(zip(phi, torch.autograd.grad(query, list(phi.values()))))
        for k in params:
            expected[k] += q[k] / batch.num_tasks                       # dφ/dθ = I
            expected[PREFIX + k] += -(step_grads[0][k] + step_grads[1][k]) * q[k] / batch.num_tasks
    assert_dicts_close(grads, expected, rtol=1e-9, atol=1e-11)


def test_meta_sgd_refuses_a_theta_without_rates():
    meta_sgd = MetaSGD(MLP((1, 5, 1)), "mse")
    theta = MAML(MLP((1, 5, 1)), "mse").init_params("cpu")
    with pytest.raises(ValueError, match="needs a rate lr/<name>"):
        meta_sgd.meta_gradient(theta, SinusoidFamily().sample(2, 3, device="cpu"))


def test_conv4_vmap_equals_loop_and_uses_batch_statistics():
    torch.manual_seed(3)
    net = Conv4(ways=3, channels=4)
    assert not list(net.buffers())
    x = torch.rand(2, 3, 1, 28, 28, dtype=F64)
    y = torch.arange(3).expand(2, 3)
    batch = TaskBatch(x, y, torch.rand(2, 6, 1, 28, 28, dtype=F64), torch.arange(3).repeat(2).expand(2, 6))
    grads = {}
    for execution in ("vmap", "loop"):
        maml = MAML(net, "cross_entropy", inner_lr=0.4, inner_steps=2, execution=execution)
        theta = maml.init_params("cpu", F64)
        torch.manual_seed(3)
        grads[execution] = maml.meta_gradient(theta, batch).grads
    assert_dicts_close(grads["vmap"], grads["loop"], rtol=1e-9, atol=1e-11)


def test_adaptation_curve_matches_adapt():
    maml = MAML(MLP((1, 6, 6, 1)), "mse", inner_lr=0.1, inner_steps=1)
    theta = maml.init_params("cpu", F64)
    batch = sinusoids(tasks=3)
    curve = maml.adaptation_curve(theta, batch, steps=3)["loss"]
    assert curve.shape == (3, 4)
    for i, task in enumerate(batch):
        for steps in range(4):
            phi = maml.adapt(theta, task, steps=steps)
            expected = (forward(maml.net, phi, task.x_ts) - task.y_ts).pow(2).mean()
            torch.testing.assert_close(curve[i, steps], expected.detach())


def test_training_reduces_the_post_adaptation_loss():
    torch.manual_seed(4)
    family = SinusoidFamily()
    maml = MAML(MLP(), "mse", inner_lr=0.01, inner_steps=1)
    theta = maml.init_params("cpu")
    optimizer = torch.optim.Adam(theta.values(), lr=1e-3)
    test = family.sample(200, 10, device="cpu", generator=torch.Generator().manual_seed(9))
    before = maml.adaptation_curve(theta, test, 1)["loss"][:, 1].mean()
    fit(lambda it: maml.step(theta, optimizer, family.sample(25, 10, device="cpu")), 500, progress=False)
    after = maml.adaptation_curve(theta, test, 1)["loss"][:, 1].mean()
    assert after < 0.8 * before


def test_divergence_names_the_iteration_and_alpha():
    family = SinusoidFamily()
    maml = MAML(MLP(), "mse", inner_lr=50.0, inner_steps=3)
    theta = maml.init_params("cpu")
    optimizer = torch.optim.SGD(theta.values(), lr=1.0)
    with pytest.raises(DivergenceError, match=r"at iteration \d+\..*smaller α"):
        fit(lambda it: maml.step(theta, optimizer, family.sample(5, 10, device="cpu")), 200, log_every=50,
            progress=False, hint=maml.divergence_hint())


@pytest.mark.parametrize("make,error,message", [
    (lambda: MAML(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), "mse"), ValueError, "running_mean"),
    (lambda: MAML(MLP(), "hinge"), ValueError, "unknown loss 'hinge'"),
    (lambda: MAML(MLP(), "mse", inner_lr=-0.1), ValueError, "inner_lr \\(α\\) must be a positive"),
    (lambda: MAML(MLP(), "mse", inner_steps=-1), ValueError, "inner_steps must be an int >= 0"),
    (lambda: MAML(MLP(), "mse", execution="gpu"), ValueError, "execution must be"),
])
def test_bad_configuration(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_mismatched_batch():
    maml = MAML(MLP(), "mse")
    theta = maml.init_params("cpu", torch.float32)
    with pytest.raises(ValueError, match="float64 inputs but θ is torch.float32"):
        maml.meta_loss(theta, sinusoids())
    with pytest.raises(TypeError, match="expected a TaskBatch"):
        maml.meta_loss(theta, (1, 2))
