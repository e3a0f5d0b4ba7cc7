"""ANIL against independent references: float64 finite differences of the meta-objective,
Meta-SGD with zero rates on the trunk (the same algorithm through MAML's full inner loop), and a
textbook first-order loop."""

import pytest
import torch

from mlcourse.meta.anil import ANIL, last_layer
from mlcourse.meta.metasgd import PREFIX, MetaSGD
from mlcourse.nets import MLP, Conv4, forward
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


def test_the_default_head_is_the_last_layer():
    assert last_layer(MLP()) == "layers.4" and last_layer(Conv4(5)) == "head"
    assert ANIL(Conv4(5), "cross_entropy").head_names == ("head.weight", "head.bias")


@pytest.mark.parametrize("steps", [1, 2])
def test_meta_gradient_matches_finite_differences(steps):
    torch.manual_seed(0)
    anil = ANIL(MLP((1, 5, 5, 1)), "mse", inner_lr=0.1, inner_steps=steps)
    theta = anil.init_params("cpu", F64)
    batch = sinusoids()
    analytic = anil.meta_gradient(theta, batch).grads
    numeric = finite_difference(lambda p: anil.meta_loss(p, batch)[0], theta)
    for k in theta:
        torch.testing.assert_close(analytic[k], numeric[k], rtol=1e-5, atol=1e-7, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_anil_is_meta_sgd_with_zero_rates_on_the_trunk(first_order, execution):
    torch.manual_seed(1)
    net = MLP((1, 8, 8, 1))
    anil = ANIL(net, "mse", inner_lr=0.05, inner_steps=3, first_order=first_order, execution=execution)
    theta = anil.init_params("cpu", F64)
    meta_sgd = MetaSGD(net, "mse", inner_lr=0.05, inner_steps=3, first_order=first_order, execution=execution)
    rates = {PREFIX + k: torch.full_like(v, 0.05 if k in anil.head_names else 0.0).requires_grad_(True)
             for k, v in theta.items()}
    batch = sinusoids(tasks=4)
    expected = meta_sgd.meta_gradient({**theta, **rates}, batch).grads
    got = anil.meta_gradient(theta, batch).grads
    for k in theta:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-10, atol=1e-12)


def test_first_order_is_the_query_gradient_at_phi():
    net = MLP((1, 6, 6, 1))
    anil = ANIL(net, "mse", inner_lr=0.1, inner_steps=2, first_order=True)
    theta = anil.init_params("cpu", F64)
    batch = sinusoids(tasks=3)
    expected = {k: torch.zeros_like(v) for k, v in theta.items()}
    for task in batch:
        phi = {k: v.detach().requires_grad_(True) for k, v in anil.adapt(theta, task).items()}
        query = (forward(net, phi, task.x_ts) - task.y_ts).pow(2).mean()
        for k, g in zip(phi, torch.autograd.grad(query, list(phi.values()))):
            expected[k] += g / batch.num_tasks
    got = anil.meta_gradient(theta, batch).grads
    for k in theta:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-10, atol=1e-12)


def test_adaptation_changes_the_head_only_and_the_curve_matches_adapt():
    anil = ANIL(MLP((1, 6, 6, 1)), "mse", inner_lr=0.1, inner_steps=1)
    theta = anil.init_params("cpu", F64)
    batch = sinusoids(tasks=3)
    phi = anil.adapt(theta, batch, steps=2)
    for k, v in theta.items():
        same = torch.equal(phi[k], v.detach().expand(3, *v.shape))
        assert same == (k not in anil.head_names), k
    curve = anil.adaptation_curve(theta, batch, steps=3)["loss"]
    for i, task in enumerate(batch):
        for steps in range(4):
            expected = (forward(anil.net, anil.adapt(theta, task, steps=steps), task.x_ts) - task.y_ts).pow(2).mean()
            torch.testing.assert_close(curve[i, steps], expected.detach())


def test_conv4_vmap_equals_loop():
    torch.manual_seed(2)
    images = (torch.rand(10, 6, 28, 28) * 255).to(torch.uint8)
    batch = EpisodeSampler(images, ways=3, shots=1, queries=2, device="cpu").sample(2)
    batch = TaskBatch(batch.x_tr.double(), batch.y_tr, batch.x_ts.double(), batch.y_ts)
    net = Conv4(3, channels=4)
    theta = ANIL(net, "cross_entropy").init_params("cpu", F64)
    grads = {}
    for execution in ("vmap", "loop"):
        anil = ANIL(net, "cross_entropy", inner_lr=0.4, inner_steps=2, execution=execution)
        grads[execution] = anil.meta_gradient(theta, batch).grads
    for k in grads["vmap"]:
        torch.testing.assert_close(grads["vmap"][k], grads["loop"][k], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("head,message", [
    ("classifier", "names no parameters"),
    (("layers.0", "layers.2", "layers.4"), "covers every parameter"),
    ("", "must name one or more modules"),
])
def test_bad_heads(head, message):
    with pytest.raises(ValueError, match=message):
        ANIL(MLP(), "mse", head=head)
