"""The iMAML chapter's experiments: the memory-budget comparison, the divergence runs and the
curvature probe, at a size that runs in seconds."""

import math

import torch
from torch.func import hessian

from mlcourse.experiments import imaml as experiments
from mlcourse.meta.functional import task_loss
from mlcourse.nets import MLP
from mlcourse.tasks import SinusoidFamily


def test_many_steps_trains_every_method_and_picks_the_budget_from_measured_memory():
    s = experiments.ManyStepsSettings.at("quick", iterations=2, test_tasks=8, inner_steps=4, maml_steps=3,
                                         budget_steps=(1, 2, 3), tasks=4)
    rows, details = experiments.many_steps(s, "cpu")
    methods = [(r.method, r.steps) for r in rows]
    assert methods[-1] == ("imaml", 4) and ("maml", 1) in methods and ("maml", 3) in methods
    assert ("maml", details["budget"]) in methods and details["budget"] in (1, 2, 3)
    memory = {k: m for k, (_, m) in details["maml_costs"].items()}
    if all(m is not None for m in memory.values()) and details["imaml_cost"][1] is not None:
        fitting = [k for k, m in memory.items() if m <= details["imaml_cost"][1]]
        assert details["budget"] == max(fitting, default=1)
    for r in rows:
        assert math.isfinite(r.mse[0]) and r.mse[1] >= 0 and r.seconds > 0
    assert details["test_inner_norm"].shape == (8,) and details["test_cg_residual"].shape == (8,)
    table = experiments.many_steps_table(rows)
    assert table.count("\n") == len(rows) + 1 and "iMAML" in table and "MiB" in table


def test_divergence_runs_stop_at_the_first_non_finite_meta_gradient_and_keep_the_last_finite_state():
    # A step far beyond 2 / (λ + curvature) blows the fixed-step inner loop up at once; the
    # monotone solver refuses such steps and keeps going.
    s = experiments.DivergenceSettings.at("quick", iterations=3, inner_lr=5.0, inner_steps=40, tasks=4)
    runs = experiments.divergence_runs(s, "cpu")
    gd, monotone = runs["gd"], runs["monotone"]
    assert gd["diverged_at"] == 0 and gd["loss"] == [] and gd["batch"] is None
    assert monotone["diverged_at"] is None and len(monotone["loss"]) == 3
    assert all(math.isfinite(v) for v in monotone["loss"] + monotone["inner_max"])
    assert monotone["batch"].num_tasks == 4


def test_inner_trajectories_follow_both_solvers_on_the_worst_task():
    s = experiments.DivergenceSettings.at("quick", inner_lr=0.05, inner_steps=6)
    from mlcourse.meta.imaml import IMAML
    theta = IMAML(MLP(), "mse").init_params("cpu")
    batch = SinusoidFamily().sample(5, 10, device="cpu", generator=torch.Generator().manual_seed(0))
    out = experiments.inner_trajectories(s, theta, batch)
    assert out["gd"].shape == (7,) and out["monotone"].shape == (7,) and 0 <= out["task"] < 5
    torch.testing.assert_close(out["gd"][0], out["monotone"][0])      # both start at θ
    assert torch.all(out["monotone"][1:] <= out["monotone"][:-1] + 1e-6)  # never rises


def test_largest_curvature_is_the_top_eigenvalue_of_each_tasks_hessian():
    net = MLP((1, 6, 1))
    from mlcourse.meta.imaml import IMAML
    theta = {k: v.double() for k, v in IMAML(net, "mse").init_params("cpu").items()}
    batch = SinusoidFamily().sample(3, 8, device="cpu", dtype=torch.float64,
                                    generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    found = experiments.largest_curvature(net, theta, batch, iterations=300)
    loss = task_loss(net, "mse")
    names = list(theta)
    for i in range(3):
        def flat_loss(v):
            parts = torch.split(v, [theta[k].numel() for k in names])
            return loss({k: p.view(theta[k].shape) for k, p in zip(names, parts)}, batch.x_tr[i], batch.y_tr[i])
        h = hessian(flat_loss)(torch.cat([theta[k].flatten() for k in names]))
        eigenvalues = torch.linalg.eigvalsh(h)
        top = eigenvalues[eigenvalues.abs().argmax()]  # power iteration finds the largest in magnitude
        torch.testing.assert_close(found[i], top, rtol=1e-3, atol=1e-6)


def test_inner_solvers_stall_on_the_relu_network_and_not_on_the_tanh_one():
    stall = experiments.inner_stall(steps=(30, 300), tasks=8)
    assert set(stall) == {(a, s) for a in ("relu", "tanh") for s in ("monotone", "accelerated")}
    assert all(len(v) == 2 for v in stall.values())
    relu, tanh = stall["relu", "accelerated"][-1], stall["tanh", "accelerated"][-1]
    assert tanh < relu / 10 and stall["tanh", "monotone"][-1] < stall["tanh", "monotone"][0] / 3
    assert min(stall["relu", "monotone"]) > 0.05   # ten times the steps, still far from stationary
