"""The one conjugate gradient of the package (iMAML's implicit gradient and TRPO's step):
a direct solve, its residual, batching with vmap, and truncation at non-positive curvature."""

import pytest
import torch
from torch.func import vmap

from mlcourse.linalg import conjugate_gradient, dot

F64 = torch.float64


def _spd(n, seed):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=g, dtype=F64)
    return m @ m.T + 0.5 * torch.eye(n, dtype=F64)


def test_solves_a_positive_definite_system_on_a_dict():
    a1, a2 = _spd(4, 0), _spd(2, 1)
    b = {"u": torch.randn(4, dtype=F64), "v": torch.randn(2, dtype=F64)}
    x, residual = conjugate_gradient(lambda z: {"u": a1 @ z["u"], "v": a2 @ z["v"]}, b, steps=6)
    torch.testing.assert_close(x["u"], torch.linalg.solve(a1, b["u"]))
    torch.testing.assert_close(x["v"], torch.linalg.solve(a2, b["v"]))
    assert residual < 1e-8


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_the_residual_it_reports_is_the_true_one(steps):
    a = _spd(6, 2)
    b = {"x": torch.randn(6, dtype=F64)}
    x, residual = conjugate_gradient(lambda z: {"x": a @ z["x"]}, b, steps)
    r = b["x"] - a @ x["x"]
    torch.testing.assert_close(residual, r.norm() / b["x"].norm())


def test_batched_with_vmap_and_a_zero_right_hand_side():
    mats = torch.stack([_spd(4, s) + 3 * torch.eye(4, dtype=F64) for s in range(3)])
    b = torch.randn(3, 4, dtype=F64)
    b[1] = 0
    x = vmap(lambda a, rhs: conjugate_gradient(lambda z: {"x": a @ z["x"]}, {"x": rhs}, 4)[0]["x"])(mats, b)
    torch.testing.assert_close(x, torch.linalg.solve(mats, b))
    assert (x[1] == 0).all()


def test_stops_at_the_first_direction_of_non_positive_curvature():
    a = torch.diag(torch.tensor([2.0, -1.0], dtype=F64))
    b = {"x": torch.tensor([1.0, 1.0], dtype=F64)}
    x, _ = conjugate_gradient(lambda z: {"x": a @ z["x"]}, b, steps=5)
    # The first direction b has bᵀAb = 1 > 0: one step along it, then the next direction has
    # negative curvature and CG keeps what it has (a truncated Newton step).
    alpha = dot(b, b) / (b["x"] @ a @ b["x"])
    torch.testing.assert_close(x["x"], alpha * b["x"])


def test_refuses_a_non_positive_number_of_steps():
    with pytest.raises(ValueError, match="conjugate-gradient steps must be an int >= 1"):
        conjugate_gradient(lambda z: z, {"x": torch.ones(2)}, 0)


def test_stacked_systems_are_each_solved_as_on_their_own():
    """batch_dims=1: every task's system gets the iterates, stop and residual it gets alone."""
    torch.manual_seed(0)
    tasks, n = 4, 5
    m = torch.randn(tasks, n, n, dtype=torch.float64)
    a = m @ m.transpose(1, 2) + torch.eye(n, dtype=torch.float64)
    a[2] = -a[2]                                   # one system with negative curvature stops at once
    b = {"w": torch.randn(tasks, n, dtype=torch.float64)}
    x, residual = conjugate_gradient(lambda v: {"w": (a @ v["w"][..., None])[..., 0]}, b, 3, batch_dims=1)
    for i in range(tasks):
        xi, ri = conjugate_gradient(lambda v: {"w": a[i] @ v["w"]}, {"w": b["w"][i]}, 3)
        torch.testing.assert_close(x["w"][i], xi["w"], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(residual[i], ri, rtol=1e-12, atol=1e-12)
