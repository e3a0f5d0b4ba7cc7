"""iMAML against closed forms, a direct solve, the unrolled meta-gradient and a per-task loop."""

import pytest
import torch
from torch import nn
from torch.func import vmap

from mlcourse.meta.functional import sgd_steps, task_loss
from mlcourse.linalg import conjugate_gradient
from mlcourse.meta.imaml import IMAML, CGWarning
from mlcourse.nets import MLP
from mlcourse.tasks import SinusoidFamily, TaskBatch

F64 = torch.float64


def _linear_tasks(tasks=4, d=3, k=6, q=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(tasks, d, 1, generator=g, dtype=F64)
    x_tr, x_ts = torch.randn(tasks, k, d, generator=g, dtype=F64), torch.randn(tasks, q, d, generator=g, dtype=F64)
    return TaskBatch(x_tr, x_tr @ w + 0.1 * torch.randn(tasks, k, 1, generator=g, dtype=F64),
                     x_ts, x_ts @ w + 0.1 * torch.randn(tasks, q, 1, generator=g, dtype=F64))


def test_linear_regression_closed_forms():
    """L_tr(φ) = (1/K)‖Xφ − y‖²: φ* = (A + λI)^{-1}(c + λθ) with A = (2/K)XᵀX, c = (2/K)Xᵀy, and the
    meta-gradient is (I + A/λ)^{-1} ∇L_ts(φ*)."""
    d, lam = 3, 2.0
    net = nn.Sequential(nn.Linear(d, 1, bias=False))
    imaml = IMAML(net, "mse", lam=lam, inner_lr=0.05, inner_steps=800, cg_steps=d, cg_tolerance=1e-6)
    theta = imaml.init_params("cpu", F64)
    batch = _linear_tasks(d=d)
    phi, norms = imaml.solve_inner(theta, batch)
    grads, info = imaml.meta_gradient(theta, batch)
    w = theta["0.weight"].detach().T
    eye = torch.eye(d, dtype=F64)
    expected_grad = torch.zeros(d, 1, dtype=F64)
    for i in range(batch.num_tasks):
        x, y = batch.x_tr[i], batch.y_tr[i]
        a, c = 2 / len(x) * x.T @ x, 2 / len(x) * x.T @ y
        phi_star = torch.linalg.solve(a + lam * eye, c + lam * w)
        torch.testing.assert_close(phi["0.weight"][i].T, phi_star, rtol=1e-8, atol=1e-10)
        query_grad = 2 / batch.queries * batch.x_ts[i].T @ (batch.x_ts[i] @ phi_star - batch.y_ts[i])
        expected_grad += torch.linalg.solve(eye + a / lam, query_grad) / batch.num_tasks
    torch.testing.assert_close(grads["0.weight"], expected_grad.T, rtol=1e-7, atol=1e-9)
    assert norms.max() < 1e-8 and info["cg_residual"].max() < 1e-8


def test_unrolled_meta_gradient_approaches_the_implicit_one():
    """Differentiating through more and more steps of the regularised inner problem converges to
    the implicit gradient, as the implicit function theorem says. (A smooth network: with ReLU the
    inner solution can sit on a kink, where gradient descent never reaches a zero gradient.)"""
    torch.manual_seed(0)
    net, lam, lr = nn.Sequential(nn.Linear(1, 6), nn.Tanh(), nn.Linear(6, 1)), 2.0, 0.02
    loss = task_loss(net, "mse")
    batch = SinusoidFamily().sample(3, 8, device="cpu", dtype=F64, generator=torch.Generator().manual_seed(3))
    imaml = IMAML(net, "mse", lam=lam, inner_lr=lr, inner_steps=3000, cg_steps=60, cg_tolerance=1e-6)
    theta = imaml.init_params("cpu", F64)
    implicit, _ = imaml.meta_gradient(theta, batch)

    def unrolled(steps):
        def task(x_tr, y_tr, x_ts, y_ts):
            phi = sgd_steps(loss, theta, x_tr, y_tr, lr, steps, proximal=(theta, lam))
            return loss(phi, x_ts, y_ts)
        meta = vmap(task)(batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts).mean()
        return dict(zip(theta, torch.autograd.grad(meta, list(theta.values()))))

    def error(g):
        num = sum((g[k] - implicit[k]).pow(2).sum() for k in g).sqrt()
        return float(num / sum(v.pow(2).sum() for v in implicit.values()).sqrt())

    errors = [error(unrolled(steps)) for steps in (10, 100, 1000)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3, errors


@pytest.mark.parametrize("tolerance", [None, 1e-3])
def test_vectorised_equals_loop(tolerance):
    net = MLP((1, 8, 1))
    batch = SinusoidFamily().sample(5, 10, device="cpu", dtype=F64, generator=torch.Generator().manual_seed(4))
    results = []
    for execution in ("vmap", "loop"):
        imaml = IMAML(net, "mse", lam=2.0, inner_lr=0.05, inner_steps=30, cg_steps=5, execution=execution,
                      inner_tolerance=tolerance, on_cg_failure="ignore")
        results.append(imaml.meta_gradient(imaml.init_params("cpu", F64), batch))
    for k in results[0][0]:
        torch.testing.assert_close(results[0][0][k], results[1][0][k], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results[0][1]["cg_residual"], results[1][1]["cg_residual"])


def test_stopping_rule_stops_once_every_task_is_solved():
    net = nn.Sequential(nn.Linear(3, 1, bias=False))
    batch = _linear_tasks()
    exact = IMAML(net, "mse", lam=2.0, inner_lr=0.05, inner_steps=5)
    theta = exact.init_params("cpu", F64)
    loose = IMAML(net, "mse", lam=2.0, inner_lr=0.05, inner_steps=500, inner_tolerance=1e9, check_every=5)
    torch.testing.assert_close(loose.solve_inner(theta, batch)[0], exact.solve_inner(theta, batch)[0])
    tight = IMAML(net, "mse", lam=2.0, inner_lr=0.05, inner_steps=2000, inner_tolerance=1e-6, check_every=5)
    assert tight.solve_inner(theta, batch)[1].max() < 1e-6


def test_memory_of_the_meta_gradient_does_not_depend_on_inner_steps():
    """Nothing of the inner loop is kept for a backward pass: no tensor requires grad afterwards."""
    imaml = IMAML(MLP(), "mse", inner_steps=7, on_cg_failure="ignore")
    theta = imaml.init_params("cpu")
    grads, info = imaml.meta_gradient(theta, SinusoidFamily().sample(3, 5, device="cpu"))
    assert not any(g.requires_grad for g in grads.values()) and not info["loss"].requires_grad


def test_training_step_moves_theta_and_reports_diagnostics():
    imaml = IMAML(MLP(), "mse", lam=1.0, inner_lr=0.02, inner_steps=5, on_cg_failure="ignore")
    theta = imaml.init_params("cpu")
    before = {k: v.detach().clone() for k, v in theta.items()}
    metrics = imaml.step(theta, torch.optim.Adam(theta.values(), lr=1e-3), SinusoidFamily().sample(4, 10, device="cpu"))
    assert set(metrics) == {"loss", "cg_residual", "inner_grad_norm"}
    assert any((theta[k] - before[k]).abs().max() > 0 for k in theta)


def test_cg_failure_is_reported_with_its_residual():
    net = MLP((1, 16, 16, 1))
    batch = SinusoidFamily().sample(4, 10, device="cpu", dtype=F64, generator=torch.Generator().manual_seed(0))
    imaml = IMAML(net, "mse", lam=0.05, inner_lr=0.01, inner_steps=3, cg_steps=1, cg_tolerance=1e-6)
    theta = imaml.init_params("cpu", F64)
    with pytest.warns(CGWarning, match=r"did not converge in 1 steps: relative residual \d"):
        imaml.meta_gradient(theta, batch)
    strict = IMAML(net, "mse", lam=0.05, inner_lr=0.01, inner_steps=3, cg_steps=1, cg_tolerance=1e-6,
                   on_cg_failure="raise")
    with pytest.raises(RuntimeError, match="relative residual"):
        strict.meta_gradient(theta, batch)


def test_non_finite_hessian_vector_products_are_an_error():
    imaml = IMAML(MLP((1, 4, 1)), "mse", inner_steps=2)
    theta = imaml.init_params("cpu", F64)
    batch = SinusoidFamily().sample(2, 4, device="cpu", dtype=F64)
    batch.x_tr[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="not finite.*larger λ"):
        imaml.meta_gradient(theta, batch)


@pytest.mark.parametrize("kwargs,message", [
    ({"lam": 0.0}, "lam \\(λ\\) must be a positive finite number, got 0.0"),
    ({"lam": -1.0}, "lam \\(λ\\) must be a positive"),
    ({"cg_steps": 0}, "cg_steps must be an int >= 1"),
    ({"damping": -0.1}, "damping must be a finite number >= 0"),
    ({"on_cg_failure": "shout"}, "on_cg_failure must be"),
])
def test_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IMAML(MLP(), "mse", **kwargs)


def test_cg_stops_at_negative_curvature_instead_of_following_it():
    a = torch.diag(torch.tensor([2.0, -1.0], dtype=F64))      # indefinite
    b = {"x": torch.tensor([1.0, 1.0], dtype=F64)}
    x, residual = conjugate_gradient(lambda v: {"x": a @ v["x"]}, b, steps=5)
    assert torch.isfinite(x["x"]).all() and residual > 0.1   # no blow-up, and the failure is visible
    # the first direction b has curvature bᵀAb = 1 > 0, so one step is taken along it, then CG stops
    torch.testing.assert_close(x["x"], b["x"] * (2 / 1))


def test_test_time_lambda_zero_is_plain_gradient_descent():
    from mlcourse.meta.functional import adaptation_curve

    imaml = IMAML(MLP((1, 8, 1)), "mse", lam=2.0, inner_lr=0.01)
    theta = imaml.init_params("cpu", F64)
    batch = SinusoidFamily().sample(3, 5, device="cpu", dtype=F64, generator=torch.Generator().manual_seed(1))
    plain = adaptation_curve(imaml.net, "mse", theta, batch, 4, 0.01)["loss"]
    torch.testing.assert_close(imaml.adaptation_curve(theta, batch, 4, lam=0.0)["loss"], plain)
    proximal = imaml.adaptation_curve(theta, batch, 4)["loss"]
    assert (proximal[:, 2:] - plain[:, 2:]).abs().max() > 1e-8  # the default keeps the training λ
    with pytest.raises(ValueError, match="must be a finite number >= 0, got -1.0"):
        imaml.adaptation_curve(theta, batch, 4, lam=-1.0)


def test_monotone_solver_converges_where_a_fixed_step_diverges():
    """Linear regression with curvature far above 2/step: fixed-step descent blows up, the monotone
    solver reaches the closed-form solution and its objective never rises."""
    d, lam = 3, 2.0
    net = nn.Sequential(nn.Linear(d, 1, bias=False))
    batch = _linear_tasks(d=d)
    batch = TaskBatch(5 * batch.x_tr, 5 * batch.y_tr, batch.x_ts, batch.y_ts)   # curvature ~ 50 × (2/K)XᵀX
    fixed = IMAML(net, "mse", lam=lam, inner_lr=0.5, inner_steps=60, on_cg_failure="ignore")
    theta = fixed.init_params("cpu", F64)
    phi_fixed, _ = fixed.solve_inner(theta, batch)
    assert not torch.isfinite(phi_fixed["0.weight"]).all() or phi_fixed["0.weight"].abs().max() > 1e6
    safe = IMAML(net, "mse", lam=lam, inner_lr=0.5, inner_steps=200, inner_solver="monotone", on_cg_failure="ignore")
    phi, norms = safe.solve_inner(theta, batch)
    w = theta["0.weight"].detach().T
    for i in range(batch.num_tasks):
        x, y = batch.x_tr[i], batch.y_tr[i]
        a, c = 2 / len(x) * x.T @ x, 2 / len(x) * x.T @ y
        torch.testing.assert_close(phi["0.weight"][i].T, torch.linalg.solve(a + lam * torch.eye(d, dtype=F64),
                                                                            c + lam * w), rtol=1e-7, atol=1e-9)
    assert norms.max() < 1e-6
    # the objective along the monotone path never rises
    loss = task_loss(net, "mse")
    anchor = {k: v.detach() for k, v in theta.items()}

    def objective(p, x, y):
        return loss(p, x, y) + lam / 2 * sum((p[k] - anchor[k]).pow(2).sum() for k in p)

    rate = torch.tensor(0.5, dtype=F64)
    p, values = anchor, []
    for _ in range(30):
        p, rate = safe._inner_steps(anchor, batch.x_tr[0], batch.y_tr[0], p, rate, 1, lam)
        values.append(float(objective(p, batch.x_tr[0], batch.y_tr[0])))
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))


def test_the_meta_gradient_depends_on_the_solution_not_on_the_solver():
    """Two solvers, two paths, one solution: the same implicit meta-gradient (a smooth network)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 6), nn.Tanh(), nn.Linear(6, 1))
    batch = SinusoidFamily().sample(3, 8, device="cpu", dtype=F64, generator=torch.Generator().manual_seed(3))
    gd = IMAML(net, "mse", lam=2.0, inner_lr=0.02, inner_steps=3000, cg_steps=60, cg_tolerance=1e-6)
    monotone = IMAML(net, "mse", lam=2.0, inner_lr=0.02, inner_steps=600, cg_steps=60, cg_tolerance=1e-6,
                     inner_solver="monotone")
    accelerated = IMAML(net, "mse", lam=2.0, inner_lr=0.02, inner_steps=300, cg_steps=60, cg_tolerance=1e-6,
                        inner_solver="accelerated")
    theta = gd.init_params("cpu", F64)
    (a, info_a), (b, info_b) = gd.meta_gradient(theta, batch), monotone.meta_gradient(theta, batch)
    c, info_c = accelerated.meta_gradient(theta, batch)
    assert max(float(i["inner_grad_norm"].max()) for i in (info_a, info_b, info_c)) < 1e-6
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(a[k], c[k], rtol=1e-5, atol=1e-8)


def test_the_accelerated_solver_solves_what_the_monotone_one_cannot_in_the_same_steps():
    """Ill-conditioned linear regressions (condition numbers 137 to 1,190): after the same 300 steps
    the accelerated solver is at the closed-form solution while the monotone one is still far."""
    d, lam = 4, 0.05
    net = nn.Sequential(nn.Linear(d, 1, bias=False))
    batch = _linear_tasks(d=d)
    scale = torch.tensor([4.0, 1.0, 0.3, 0.1], dtype=F64)
    batch = TaskBatch(batch.x_tr * scale, batch.y_tr, batch.x_ts, batch.y_ts)
    norms = {}
    for solver in ("monotone", "accelerated"):
        imaml = IMAML(net, "mse", lam=lam, inner_lr=0.05, inner_steps=300, inner_solver=solver, on_cg_failure="ignore")
        theta = imaml.init_params("cpu", F64)
        phi, norms[solver] = imaml.solve_inner(theta, batch)
    w = theta["0.weight"].detach().T
    for i in range(batch.num_tasks):
        x, y = batch.x_tr[i], batch.y_tr[i]
        a, c = 2 / len(x) * x.T @ x, 2 / len(x) * x.T @ y
        hessian = a + lam * torch.eye(d, dtype=F64)
        assert torch.linalg.cond(hessian) > 100
        torch.testing.assert_close(phi["0.weight"][i].T, torch.linalg.solve(hessian, c + lam * w), rtol=1e-4, atol=1e-6)
    assert norms["accelerated"].max() < 1e-5 and norms["monotone"].max() > 0.1


@pytest.mark.parametrize("solver", ["gd", "monotone", "accelerated"])
def test_solvers_vectorised_equal_loop_and_curves_end_where_adapt_ends(solver):
    net = MLP((1, 8, 1))
    batch = SinusoidFamily().sample(4, 10, device="cpu", dtype=F64, generator=torch.Generator().manual_seed(6))
    out = []
    for execution in ("vmap", "loop"):
        imaml = IMAML(net, "mse", lam=2.0, inner_lr=0.05, inner_steps=12, inner_solver=solver, execution=execution,
                      on_cg_failure="ignore")
        theta = imaml.init_params("cpu", F64)
        phi = imaml.adapt(theta, batch)
        curve = imaml.adaptation_curve(theta, batch, 12)
        end = torch.stack([task_loss(net, "mse")({k: v[i] for k, v in phi.items()}, batch.x_ts[i], batch.y_ts[i])
                           for i in range(4)])
        torch.testing.assert_close(curve["loss"][:, -1], end)
        torch.testing.assert_close(imaml.adapt(theta, batch, steps=12)["layers.0.weight"], phi["layers.0.weight"])
        out.append((phi, curve["loss"], imaml.meta_gradient(theta, batch).grads))
    for k in out[0][0]:
        torch.testing.assert_close(out[0][0][k], out[1][0][k], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(out[0][2][k], out[1][2][k], rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(out[0][1], out[1][1])


def test_unknown_solver_is_an_error():
    with pytest.raises(ValueError, match="inner_solver must be one of \\('gd', 'monotone', 'accelerated'\\), got 'newton'"):
        IMAML(MLP(), "mse", inner_solver="newton")


@pytest.mark.parametrize("solver", ["gd", "monotone", "accelerated"])
@pytest.mark.parametrize("tolerance", [None, 1e-3])
def test_task_batched_path_equals_vmap(solver, tolerance):
    """On the CPU the MLP solves the inner problems and the CG systems of all tasks at once in plain
    autograd; it must give vmap's φ_i, meta-gradient and diagnostics (with a step large enough that
    the monotone solver refuses some steps, so that per-task rates differ)."""
    net = MLP((1, 8, 8, 1))
    batch = SinusoidFamily().sample(5, 10, device="cpu", dtype=F64, generator=torch.Generator().manual_seed(7))
    out = {}
    for execution in ("batched", "vmap"):
        imaml = IMAML(net, "mse", lam=1.0, inner_lr=0.08, inner_steps=20, cg_steps=6, damping=0.5,
                      inner_solver=solver, inner_tolerance=tolerance, execution=execution, on_cg_failure="ignore")
        assert imaml._batched(batch) == (execution == "batched")
        theta = imaml.init_params("cpu", F64)
        out[execution] = (imaml.solve_inner(theta, batch), imaml.meta_gradient(theta, batch))
    (phi_b, norm_b), (grads_b, info_b) = out["batched"]
    (phi_v, norm_v), (grads_v, info_v) = out["vmap"]
    for k in phi_v:
        torch.testing.assert_close(phi_b[k], phi_v[k], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grads_b[k], grads_v[k], rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(norm_b, norm_v, rtol=1e-9, atol=1e-12)
    for key in ("loss", "cg_residual", "inner_grad_norm"):
        torch.testing.assert_close(info_b[key], info_v[key], rtol=1e-8, atol=1e-12)


def test_auto_runs_the_mlp_task_batched_on_the_cpu_and_keeps_no_graph():
    imaml = IMAML(MLP(), "mse", inner_steps=3, on_cg_failure="ignore")
    batch = SinusoidFamily().sample(3, 5, device="cpu")
    assert imaml._batched(batch)
    grads, info = imaml.meta_gradient(imaml.init_params("cpu"), batch)
    assert not any(g.requires_grad for g in grads.values()) and not info["cg_residual"].requires_grad
