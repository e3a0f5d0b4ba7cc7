import pytest
import torch

from mlcourse.meta.reptile import Reptile
from mlcourse.nets import MLP, Conv4, forward
from mlcourse.tasks import SinusoidFamily, TaskBatch

F64 = torch.float64


def plain_sgd(net, theta, x, y, lr, steps):
    """φ by a textbook loop of SGD steps with torch.autograd, for one task."""
    phi = {k: v.detach().clone().requires_grad_(True) for k, v in theta.items()}
    for _ in range(steps):
        loss = (forward(net, phi, x) - y).pow(2).mean()
        grads = torch.autograd.grad(loss, list(phi.values()))
        phi = {k: (v - lr * g).detach().requires_grad_(True) for (k, v), g in zip(phi.items(), grads)}
    return phi


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_update_is_the_mean_of_phi_minus_theta(execution):
    net = MLP((1, 8, 1))
    reptile = Reptile(net, "mse", inner_lr=0.05, inner_steps=4, execution=execution)
    theta = reptile.init_params("cpu", F64)
    before = {k: v.detach().clone() for k, v in theta.items()}
    batch = SinusoidFamily().sample(5, 6, device="cpu", dtype=F64)
    phis = [plain_sgd(net, before, t.x_tr, t.y_tr, 0.05, 4) for t in batch]
    beta = 0.3
    reptile.step(theta, torch.optim.SGD(theta.values(), lr=beta), batch)
    for k in theta:
        expected = before[k] + beta * torch.stack([p[k].detach() - before[k] for p in phis]).mean(0)
        torch.testing.assert_close(theta[k].detach(), expected, rtol=1e-10, atol=1e-12)


def test_minibatches_cycle_through_a_permutation_of_the_support():
    reptile = Reptile(MLP((1, 4, 1)), "mse", inner_steps=5, inner_batch=2)
    x = torch.arange(6.0).view(1, 6, 1).expand(3, 6, 1).contiguous()
    xs, ys = reptile._minibatches(x, x.clone(), steps=5, batch_size=2)
    assert xs.shape == (3, 5, 2, 1)
    for task in range(3):
        seen = xs[task, :3].flatten().tolist()       # the first three minibatches cover D^tr once
        assert sorted(seen) == [0, 1, 2, 3, 4, 5]
        assert xs[task, 3:].flatten().tolist() == seen[:4]   # then the same order again
    assert torch.equal(xs, ys)


def test_adam_inner_optimizer_matches_torch_adam_with_beta1_zero():
    net = MLP((1, 6, 1))
    reptile = Reptile(net, "mse", inner_lr=0.01, inner_steps=3, inner_optimizer="adam")
    theta = reptile.init_params("cpu", F64)
    batch = SinusoidFamily().sample(1, 8, device="cpu", dtype=F64)
    phi = reptile.adapt(theta, batch)
    params = [v.detach().clone().requires_grad_(True) for v in theta.values()]
    adam = torch.optim.Adam(params, lr=0.01, betas=(0.0, 0.999), eps=1e-8)
    for _ in range(3):
        adam.zero_grad()
        loss = (forward(net, dict(zip(theta, params)), batch.x_tr[0]) - batch.y_tr[0]).pow(2).mean()
        loss.backward()
        adam.step()
    for k, p in zip(theta, params):
        torch.testing.assert_close(phi[k][0], p.detach(), rtol=1e-7, atol=1e-9)


def test_conv_net_vmap_equals_loop():
    torch.manual_seed(0)
    net = Conv4(ways=2, channels=3)
    x = torch.rand(2, 4, 1, 28, 28, dtype=F64)
    y = torch.tensor([[0, 0, 1, 1]] * 2)
    batch = TaskBatch(x, y, x, y)
    results = []
    for execution in ("vmap", "loop"):
        reptile = Reptile(net, "cross_entropy", inner_lr=0.1, inner_steps=2, execution=execution)
        results.append(reptile.meta_gradient(reptile.init_params("cpu", F64), batch).grads)
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-9, atol=1e-11)


def test_bad_configuration():
    with pytest.raises(ValueError, match="inner_optimizer must be 'sgd' or 'adam', got 'rmsprop'"):
        Reptile(MLP(), inner_optimizer="rmsprop")
    with pytest.raises(ValueError, match="inner_steps must be an int >= 1, got 0"):
        Reptile(MLP(), inner_steps=0)
