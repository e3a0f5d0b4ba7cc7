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
    orders = set()
    for task in range(3):
        seen = xs[task, :3].flatten().tolist()       # the first three minibatches cover D^tr once
        assert sorted(seen) == [0, 1, 2, 3, 4, 5]
        again = xs[task, 3:].flatten().tolist()      # then the start of a second pass: distinct examples
        assert len(set(again)) == 4 and set(again) <= set(seen)
        orders.add(tuple(seen))
    assert len(orders) > 1                           # every task draws its own order
    assert torch.equal(xs, ys)


def test_every_pass_over_the_support_is_a_new_order():
    reptile = Reptile(MLP((1, 4, 1)), "mse", inner_steps=40, inner_batch=5)
    x = torch.arange(10.0).view(1, 10, 1)
    xs, _ = reptile._minibatches(x, x.clone(), steps=40, batch_size=5, generator=torch.Generator().manual_seed(0))
    passes = xs[0].reshape(20, 10)
    assert all(sorted(p.tolist()) == list(range(10)) for p in passes)
    assert len({tuple(p.tolist()) for p in passes}) > 1


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


def _torch_adam_run(net, params, adam, x, y, steps):
    for _ in range(steps):
        adam.zero_grad()
        loss = (forward(net, dict(zip(names_of(net), params)), x) - y).pow(2).mean()
        loss.backward()
        adam.step()


def names_of(net):
    return [k for k, _ in net.named_parameters()]


def test_kept_adam_state_is_one_torch_adam_run_across_tasks():
    """One task per meta-iteration: the reference code's sequence. One torch Adam (β1 = 0) runs
    through every task's steps; only the weights are reset to θ before each task."""
    net = MLP((1, 6, 1))
    reptile = Reptile(net, "mse", inner_lr=0.01, inner_steps=3, inner_optimizer="adam", keep_adam_state=True)
    theta = reptile.init_params("cpu", F64)
    sgd = torch.optim.SGD(theta.values(), lr=0.5)
    params = [v.detach().clone().requires_grad_(True) for v in theta.values()]
    adam = torch.optim.Adam(params, lr=0.01, betas=(0.0, 0.999), eps=1e-8)
    family = SinusoidFamily()
    for it in range(3):
        batch = family.sample(1, 8, device="cpu", dtype=F64, generator=torch.Generator().manual_seed(it))
        with torch.no_grad():
            for p, v in zip(params, theta.values()):
                p.copy_(v)
        _torch_adam_run(net, params, adam, batch.x_tr[0], batch.y_tr[0], 3)
        before = {k: v.detach().clone() for k, v in theta.items()}
        reptile.step(theta, sgd, batch)
        for (k, v), p in zip(theta.items(), params):   # θ moved half way to φ
            torch.testing.assert_close(v.detach(), before[k] + 0.5 * (p.detach() - before[k]), rtol=1e-7, atol=1e-9)
        for k, p in zip(theta, params):
            torch.testing.assert_close(reptile.adam_state.second[k], adam.state[p]["exp_avg_sq"], rtol=1e-7, atol=1e-12)
    assert float(reptile.adam_state.count) == 9


def test_kept_adam_state_is_the_mean_over_the_tasks_and_evaluation_leaves_it_alone():
    net = MLP((1, 6, 1))
    reptile = Reptile(net, "mse", inner_lr=0.01, inner_steps=2, inner_optimizer="adam", keep_adam_state=True)
    theta = reptile.init_params("cpu", F64)
    batch = SinusoidFamily().sample(3, 8, device="cpu", dtype=F64, generator=torch.Generator().manual_seed(2))
    reptile.meta_gradient(theta, batch)
    expected = {k: torch.zeros_like(v) for k, v in theta.items()}
    for i in range(3):
        params = [v.detach().clone().requires_grad_(True) for v in theta.values()]
        adam = torch.optim.Adam(params, lr=0.01, betas=(0.0, 0.999), eps=1e-8)
        _torch_adam_run(net, params, adam, batch.x_tr[i], batch.y_tr[i], 2)
        for k, p in zip(theta, params):
            expected[k] += adam.state[p]["exp_avg_sq"] / 3
    for k in theta:
        torch.testing.assert_close(reptile.adam_state.second[k], expected[k], rtol=1e-7, atol=1e-12)
    saved = reptile.state_dict()
    reptile.evaluate(theta, batch)
    reptile.adapt(theta, batch)
    for k in theta:
        assert torch.equal(reptile.adam_state.second[k], saved["adam"]["second"][k])
    # a fresh-Adam learner adapts differently from one that starts from the carried moments
    fresh = Reptile(net, "mse", inner_lr=0.01, inner_steps=2, inner_optimizer="adam")
    assert any((fresh.adapt(theta, batch)[k] - reptile.adapt(theta, batch)[k]).abs().max() > 1e-6 for k in theta)


def test_kept_adam_state_checkpoints_through_fit(tmp_path):
    from mlcourse import train

    net = MLP((1, 4, 1))

    def run(iterations, path):
        torch.manual_seed(0)
        reptile = Reptile(net, "mse", inner_lr=0.01, inner_steps=2, inner_optimizer="adam", keep_adam_state=True)
        theta = reptile.init_params("cpu", F64)
        sgd = torch.optim.SGD(theta.values(), lr=0.5)
        generator = torch.Generator().manual_seed(1)
        step = lambda it: reptile.step(theta, sgd, SinusoidFamily().sample(2, 5, device="cpu", dtype=F64,  # noqa
                                                                          generator=generator))
        train.fit(step, iterations, progress=False, checkpoint=path, checkpoint_every=2,
                  state={"theta": theta, "optimizer": sgd, "reptile": reptile, "generator": generator})
        return reptile, theta

    whole, theta_whole = run(6, tmp_path / "a.pt")
    run(4, tmp_path / "b.pt")
    resumed, theta_resumed = run(6, tmp_path / "b.pt")
    for k in theta_whole:
        torch.testing.assert_close(theta_resumed[k], theta_whole[k], rtol=0, atol=0)
        torch.testing.assert_close(resumed.adam_state.second[k], whole.adam_state.second[k], rtol=0, atol=0)


def test_non_transductive_evaluation_classifies_each_query_with_the_support_only():
    torch.manual_seed(0)
    net = Conv4(ways=2, channels=3)
    x_tr, x_ts = torch.rand(2, 4, 1, 28, 28, dtype=F64), torch.rand(2, 3, 1, 28, 28, dtype=F64)
    batch = TaskBatch(x_tr, torch.tensor([[0, 0, 1, 1]] * 2), x_ts, torch.tensor([[0, 1, 1]] * 2))
    for execution in ("vmap", "loop"):
        reptile = Reptile(net, "cross_entropy", inner_lr=0.1, inner_steps=2, execution=execution)
        theta = reptile.init_params("cpu", F64)
        both = reptile.evaluate(theta, batch, transductive="both")
        phi = reptile.adapt(theta, batch, steps=2)
        for i in range(2):
            p = {k: v[i] for k, v in phi.items()}
            one = torch.stack([forward(net, p, torch.cat([x_tr[i], x_ts[i, j:j + 1]]))[-1] for j in range(3)])
            together = forward(net, p, x_ts[i])
            loss = torch.nn.functional.cross_entropy
            torch.testing.assert_close(both["loss_non_transductive"][i], loss(one, batch.y_ts[i]))
            torch.testing.assert_close(both["loss"][i], loss(together, batch.y_ts[i]))
            assert not torch.allclose(one, together)      # batch statistics make the difference
        alone = Reptile(net, "cross_entropy", inner_lr=0.1, inner_steps=2, transductive=False, execution=execution)
        torch.testing.assert_close(alone.evaluate(theta, batch)["loss"], both["loss_non_transductive"])


def test_bad_options():
    with pytest.raises(ValueError, match="keep_adam_state needs inner_optimizer='adam'"):
        Reptile(MLP(), inner_optimizer="sgd", keep_adam_state=True)
    with pytest.raises(ValueError, match="transductive must be True or False"):
        Reptile(MLP(), transductive="yes")
    reptile = Reptile(MLP((1, 4, 1)), "mse")
    theta = reptile.init_params("cpu")
    with pytest.raises(ValueError, match="transductive must be True, False or 'both'"):
        reptile.evaluate(theta, SinusoidFamily().sample(2, 5, device="cpu"), transductive="sometimes")
    with pytest.raises(ValueError, match="does not keep its Adam state"):
        reptile.load_state_dict({"adam": {"second": {}, "count": torch.zeros(())}})
