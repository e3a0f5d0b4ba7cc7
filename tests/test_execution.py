"""The execution strategies (vmap, a per-task loop, the task-batched MLP, and the hybrid of a
vmapped adaptation with a per-task query pass) against one semantics: a textbook per-task loop
written here with torch.autograd on torch's own layers, and float64 finite differences. Also the
two implementations of batch norm (fused outside vmap, plain operations under it) to second
order, and the rules of ``choose_execution``."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from mlcourse.meta.functional import (adapted_mean_gradient, batched_loss, chain_mean_gradient, choose_execution,
                                      expand_tasks, map_tasks, mean_gradient, task_loss, task_metrics)
from mlcourse.meta.maml import MAML
from mlcourse.meta.metasgd import PREFIX, MetaSGD
from mlcourse.nets import MLP, BatchNorm, Conv4, channels_last, init_params
from mlcourse.tasks import SinusoidFamily, TaskBatch

F64 = torch.float64
CPU = torch.device("cpu")


class TorchConv4(nn.Module):
    """Conv4 as torch users write it ([conv, nn.BatchNorm2d, ReLU, max-pool]); names match nets.Conv4."""

    def __init__(self, ways, channels, image_size, downsample):
        super().__init__()
        blocks, size, c_in = [], image_size, 1
        for _ in range(4):
            block = [nn.Conv2d(c_in, channels, 3, stride=2 if downsample == "stride" else 1, padding=1),
                     nn.BatchNorm2d(channels, track_running_stats=False), nn.ReLU()]
            if downsample == "maxpool":
                block.append(nn.MaxPool2d(2))
                size //= 2
            else:
                size = (size + 1) // 2
            blocks.append(nn.Sequential(*block))
            c_in = channels
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(channels * size * size, ways)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def textbook_meta_gradient(net, kind, theta, batch, alpha, steps, first_order=False):
    """∇ of (1/n) Σ_i L(φ_i, D_i^ts) with respect to every entry of θ (Meta-SGD's rates under the
    names lr/<name>), by a per-task loop with torch.autograd on ``net``. First order: each inner
    gradient is a constant (dφ/dθ = I), the rates keep their exact gradient."""
    params = {k: v for k, v in theta.items() if not k.startswith(PREFIX)}
    rates = {k: theta[PREFIX + k] for k in params} if any(k.startswith(PREFIX) for k in theta) else None

    def loss(p, x, y):
        out = functional_call(net, p, (x,))
        return (out - y).pow(2).mean() if kind == "mse" else F.cross_entropy(out, y)

    total = 0
    for i in range(batch.num_tasks):
        phi = dict(params)
        for _ in range(steps):
            if first_order:
                point = {k: v.detach().requires_grad_(True) for k, v in phi.items()}
                g = torch.autograd.grad(loss(point, batch.x_tr[i], batch.y_tr[i]), list(point.values()))
            else:
                g = torch.autograd.grad(loss(phi, batch.x_tr[i], batch.y_tr[i]), list(phi.values()),
                                        create_graph=True)
            phi = {k: v - (alpha if rates is None else rates[k]) * gk for (k, v), gk in zip(phi.items(), g)}
        total = total + loss(phi, batch.x_ts[i], batch.y_ts[i]) / batch.num_tasks
    grads = torch.autograd.grad(total, list(theta.values()), allow_unused=True)
    return {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(theta.items(), grads)}


def assert_same_gradient(got, expected, rtol):
    """Every entry within rtol of the largest entry of the whole gradient."""
    assert got.keys() == expected.keys()
    scale = max(float(v.abs().max()) for v in expected.values())
    for k in expected:
        torch.testing.assert_close(got[k], expected[k].to(got[k].dtype), rtol=0, atol=rtol * scale,
                                   msg=lambda m: f"{k}: {m}")


def sinusoids(tasks=4, shots=5, queries=6, seed=0):
    return SinusoidFamily().sample(tasks, shots, queries, device="cpu", dtype=F64,
                                   generator=torch.Generator().manual_seed(seed))


def episodes(tasks=3, ways=3, shots=1, queries=6, size=16, dtype=F64, seed=0):
    """Random images as N-way episodes; 3-way 1-shot with 6 queries a class: 3 images in D^tr
    (vmap's side of choose_execution's rule), 18 in D^ts (the loop's)."""
    g = torch.Generator().manual_seed(seed)
    y_tr = torch.arange(ways).repeat(shots).expand(tasks, -1)
    y_ts = torch.arange(ways).repeat(queries).expand(tasks, -1)
    return TaskBatch(torch.rand(tasks, ways * shots, 1, size, size, generator=g, dtype=dtype), y_tr,
                     torch.rand(tasks, ways * queries, 1, size, size, generator=g, dtype=dtype), y_ts)


def learner(cls, net, kind, alpha, steps, first_order, execution, dtype=F64):
    torch.manual_seed(0)
    # Meta-SGD with different rates per entry, so that a mix-up of entries shows.
    extra = {"rate_range": (0.5 * alpha, 1.5 * alpha)} if cls is MetaSGD else {}
    model = cls(net, kind, inner_lr=alpha, inner_steps=steps, first_order=first_order, execution=execution, **extra)
    theta = model.init_params("cpu", dtype)
    return model, theta


# --- the MLP: vmap, loop, the batched matrix-product path, and auto ------------------------------
@pytest.mark.parametrize("execution", ["vmap", "loop", "batched", "auto"])
@pytest.mark.parametrize("cls", [MAML, MetaSGD])
@pytest.mark.parametrize("first_order,steps", [(False, 1), (False, 3), (True, 2)])
def test_mlp_executions_give_the_textbook_meta_gradient(execution, cls, first_order, steps):
    net = MLP((1, 7, 7, 1))
    model, theta = learner(cls, net, "mse", 0.05, steps, first_order, execution)
    batch = sinusoids()
    result = model.meta_gradient(theta, batch)
    assert_same_gradient(result.grads, textbook_meta_gradient(net, "mse", theta, batch, 0.05, steps, first_order),
                         rtol=1e-12)
    if cls is MetaSGD:  # every rate tensor of θ gets a gradient, and not a zero one
        assert all(result.grads[k].abs().max() > 0 for k in theta if k.startswith(PREFIX))
    expected_loss = torch.stack([task_metrics(net, "mse", model.adapt(theta, task), task.x_ts, task.y_ts)["loss"]
                                 for task in batch]).detach()
    torch.testing.assert_close(result.metrics["loss"], expected_loss, rtol=1e-12, atol=1e-14)


def test_mlp_batched_meta_gradient_matches_finite_differences():
    model, theta = learner(MetaSGD, MLP((1, 5, 5, 1)), "mse", 0.1, 2, False, "batched")
    batch = sinusoids(tasks=3)
    analytic = model.meta_gradient(theta, batch).grads
    check_directional_derivatives(lambda t: model.meta_loss(t, batch)[0], theta, analytic, rtol=1e-6)


def test_classification_mlp_batched_metrics_equal_per_task_metrics():
    net = MLP((4, 6, 3))
    theta = init_params(net, "cpu", F64)
    stacked = expand_tasks(theta, 5) | {"layers.0.weight": theta["layers.0.weight"] + torch.randn(5, 6, 4, dtype=F64)}
    x, y = torch.randn(5, 7, 4, dtype=F64), torch.randint(0, 3, (5, 7))
    got = batched_loss(net, "cross_entropy", stacked, x, y)
    for i in range(5):
        one = task_metrics(net, "cross_entropy", {k: v[i] for k, v in stacked.items()}, x[i], y[i])
        for k in one:
            torch.testing.assert_close(got[k][i], one[k], rtol=1e-12, atol=1e-14)


# --- Conv4: vmap, loop and the hybrid against torch's own layers --------------------------------
@pytest.mark.parametrize("downsample", ["maxpool", "stride"])
@pytest.mark.parametrize("execution", ["vmap", "loop", "auto"])
@pytest.mark.parametrize("cls,first_order,steps", [(MAML, False, 1), (MAML, False, 2), (MetaSGD, False, 1),
                                                   (MetaSGD, True, 2)])
def test_conv4_executions_give_the_textbook_meta_gradient(downsample, execution, cls, first_order, steps):
    net, reference = Conv4(3, channels=3, image_size=16, downsample=downsample), TorchConv4(3, 3, 16, downsample)
    model, theta = learner(cls, net, "cross_entropy", 0.4, steps, first_order, execution)
    batch = episodes()
    got = model.meta_gradient(theta, batch).grads
    assert_same_gradient(got, textbook_meta_gradient(reference, "cross_entropy", theta, batch, 0.4, steps, first_order),
                         rtol=1e-10)


@pytest.mark.parametrize("cls,first_order", [(MAML, False), (MetaSGD, False), (MetaSGD, True)])
def test_hybrid_in_chunks_gives_the_textbook_meta_gradient(cls, first_order):
    """5 tasks of 2-shot 3-way episodes with 6 queries a class: chunks of 18 // 6 = 3 tasks, so
    the adaptation runs in two chunks (2 and 3 tasks)."""
    net, reference = Conv4(3, channels=3, image_size=16), TorchConv4(3, 3, 16, "maxpool")
    model, theta = learner(cls, net, "cross_entropy", 0.4, 2, first_order, "auto")
    batch = episodes(tasks=5, shots=2)
    result = model.meta_gradient(theta, batch)
    assert_same_gradient(result.grads, textbook_meta_gradient(reference, "cross_entropy", theta, batch, 0.4, 2,
                                                              first_order), rtol=1e-10)
    expected = model.evaluate(theta, batch, steps=2)
    for k in expected:
        torch.testing.assert_close(result.metrics[k], expected[k], rtol=1e-10, atol=1e-12)


def test_auto_on_the_cpu_runs_conv4_as_the_hybrid():
    batch = episodes()
    net = Conv4(3, channels=3, image_size=16)
    assert choose_execution("auto", net, CPU, batch.shots, batched=True) == "vmap"
    assert choose_execution("auto", net, CPU, batch.queries, batched=True) == "loop"


@pytest.mark.parametrize("steps", [1, 2])
def test_hybrid_meta_gradient_with_batch_norm_matches_finite_differences(steps):
    """Second order through batch norm: vmapped adaptation (plain-operation batch norm) and the
    per-task query pass (torch's fused kernel), against central differences of the meta-loss.
    (First-order mode is not the meta-loss's gradient; the textbook comparisons above check it.)"""
    model, theta = learner(MetaSGD, Conv4(3, channels=2, image_size=16), "cross_entropy", 0.3, steps, False, "auto")
    batch = episodes(tasks=2)
    analytic = model.meta_gradient(theta, batch).grads
    check_directional_derivatives(lambda t: model.meta_loss(t, batch)[0], theta, analytic, rtol=1e-6)


@pytest.mark.parametrize("downsample", ["maxpool", "stride"])
@pytest.mark.parametrize("execution", ["loop", "auto"])
def test_float32_channels_last_conv4_is_close_to_float64(downsample, execution):
    """The float32 path on the CPU runs channels-last; it must agree with float64 (NCHW) to float32
    rounding, amplified by batch norm over few examples."""
    net = Conv4(3, channels=8, image_size=28, downsample=downsample)
    model, theta = learner(MAML, net, "cross_entropy", 0.4, 1, False, execution)
    batch = episodes(size=28)
    expected = model.meta_gradient(theta, batch).grads
    theta32 = {k: v.detach().float().requires_grad_(True) for k, v in theta.items()}
    got = model.meta_gradient(theta32, batch.to("cpu", dtype=torch.float32)).grads
    assert_same_gradient(got, expected, rtol=3e-4)


def test_conv4_runs_channels_last_on_the_cpu_in_float32():
    net = Conv4(5, channels=8)
    theta = init_params(net, "cpu")
    layouts = []
    net.features[1][0].register_forward_hook(
        lambda m, i, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last)))
    functional_call(net, theta, (torch.rand(4, 1, 28, 28),))
    functional_call(net, {k: v.double() for k, v in theta.items()}, (torch.rand(4, 1, 28, 28, dtype=F64),))
    assert layouts == [True, False]  # float64 has no oneDNN kernels: it stays NCHW
    x = torch.rand(3, 1, 5, 5)
    assert torch.equal(channels_last(x), x) and channels_last(x).stride() == (25, 1, 5, 1)


@pytest.mark.parametrize("downsample", ["maxpool", "stride"])
def test_conv4_pooling_before_relu_is_the_same_function(downsample):
    net, reference = Conv4(4, channels=5, downsample=downsample), TorchConv4(4, 5, 28, downsample)
    theta = init_params(net, "cpu", F64)
    x = torch.randn(6, 1, 28, 28, dtype=F64)
    out, expected = functional_call(net, theta, (x,)), functional_call(reference, theta, (x,))
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    g = torch.autograd.grad(out.pow(2).sum(), list(theta.values()))
    h = torch.autograd.grad(expected.pow(2).sum(), list(theta.values()))
    for a, b in zip(g, h):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# --- batch norm: fused outside vmap, plain operations under it -----------------------------------
def test_fused_and_primitive_batch_norm_agree_to_second_order():
    torch.manual_seed(0)
    bn = BatchNorm(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, -0.7, 0.3]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    x = torch.randn(4, 3, 5, 5, dtype=F64, requires_grad=True)
    cotangent, direction = torch.randn(4, 3, 5, 5, dtype=F64), torch.randn(4, 3, 5, 5, dtype=F64)
    results = []
    for forward in (bn, bn.primitive):
        y = forward(x)
        gx, gw = torch.autograd.grad(y, [x, bn.weight], cotangent, create_graph=True)
        second = torch.autograd.grad((gx * direction).sum() + gw.pow(2).sum(), [x, bn.weight])  # β: linear
        results.append([y, gx, gw, *second])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.autograd.gradgradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                                 (torch.randn(3, 2, 2, 2, dtype=F64, requires_grad=True),
                                  torch.randn(2, dtype=F64, requires_grad=True),
                                  torch.randn(2, dtype=F64, requires_grad=True)))


def test_batch_norm_under_vmap_gives_the_per_task_second_order_gradient():
    """torch's fused kernel would give a wrong meta-gradient here; BatchNorm switches under vmap."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), BatchNorm(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 2))
    loss = task_loss(net, "cross_entropy")
    theta = init_params(net, "cpu", F64)
    x, y = torch.randn(3, 4, 2, 4, 4, dtype=F64), torch.randint(0, 2, (3, 4))
    xq, yq = torch.randn(3, 5, 2, 4, 4, dtype=F64), torch.randint(0, 2, (3, 5))

    def task(t, a, b, c, d):
        g = grad(loss)(t, a, b)
        return {"loss": loss({k: t[k] - 0.5 * g[k] for k in t}, c, d)}

    grads = {ex: mean_gradient(task, theta, ex, (), (x, y, xq, yq))[0] for ex in ("vmap", "loop")}
    assert_same_gradient(grads["vmap"], grads["loop"], rtol=1e-12)


def test_batch_norm_of_one_value_per_channel_is_its_bias():
    bn = BatchNorm(4)
    with torch.no_grad():
        bn.bias.copy_(torch.arange(4.0))
    torch.testing.assert_close(bn(torch.randn(1, 4, 1, 1)), torch.arange(4.0).view(1, 4, 1, 1))


# --- the chain rule helper -----------------------------------------------------------------------
@pytest.mark.parametrize("adapting,querying", [("vmap", "loop"), ("loop", "vmap"), ("vmap", "vmap")])
def test_chain_mean_gradient_equals_the_direct_gradient(adapting, querying):
    net = MLP((2, 5, 1))
    loss = task_loss(net, "mse")
    theta = init_params(net, "cpu", F64)
    x, y, xq, yq = (torch.randn(4, n, d, dtype=F64) for n, d in ((3, 2), (3, 1), (6, 2), (6, 1)))

    def adapt(t, a, b):
        g = grad(loss)(t, a, b)
        return {k: t[k] - 0.3 * g[k] for k in t}

    def task(t, a, b, c, d):
        return task_metrics(net, "mse", adapt(t, a, b), c, d)

    phi = map_tasks(adapt, adapting, (theta,), (x, y))
    query = lambda p, c, d: task_metrics(net, "mse", p, c, d)  # noqa: E731
    got, metrics = chain_mean_gradient(phi, theta, query, querying, (xq, yq))
    expected, expected_metrics = mean_gradient(task, theta, "loop", (), (x, y, xq, yq))
    assert_same_gradient(got, expected, rtol=1e-12)
    torch.testing.assert_close(metrics["loss"], expected_metrics["loss"], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("chunk", [None, 1, 2, 4])
def test_adapted_mean_gradient_is_the_same_in_any_chunks(chunk):
    net = MLP((2, 5, 1))
    loss = task_loss(net, "mse")
    theta = init_params(net, "cpu", F64)
    x, y, xq, yq = (torch.randn(4, n, d, dtype=F64) for n, d in ((3, 2), (3, 1), (6, 2), (6, 1)))

    def adapt(t, a, b):
        g = grad(loss)(t, a, b)
        return {k: t[k] - 0.3 * g[k] for k in t}

    query = lambda p, c, d: task_metrics(net, "mse", p, c, d)  # noqa: E731
    got, metrics = adapted_mean_gradient(adapt, query, theta, (x, y), (xq, yq), "vmap", "loop", chunk)
    expected, expected_metrics = mean_gradient(lambda t, a, b, c, d: query(adapt(t, a, b), c, d), theta, "loop", (),
                                               (x, y, xq, yq))
    assert_same_gradient(got, expected, rtol=1e-12)
    torch.testing.assert_close(metrics["loss"], expected_metrics["loss"], rtol=1e-12, atol=1e-14)


# --- choose_execution ----------------------------------------------------------------------------
def test_choose_execution_rules():
    mlp, conv = MLP(), Conv4(5)
    cuda = torch.device("cuda")
    assert choose_execution("auto", mlp, CPU, 10, batched=True) == "batched"
    assert choose_execution("auto", mlp, CPU, 10) == "vmap"          # a caller without a batched form
    assert choose_execution("batched", mlp, CPU, 10) == "vmap"
    assert choose_execution("auto", mlp, cuda, 10, batched=True) == "vmap"
    assert choose_execution("auto", conv, CPU, 5, batched=True) == "vmap"
    assert choose_execution("auto", conv, CPU, 75, batched=True) == "loop"
    assert choose_execution("auto", conv, CPU, None) == "loop"
    assert choose_execution("auto", conv, cuda, 75) == "vmap"
    assert choose_execution("loop", mlp, CPU, 10, batched=True) == "loop"


class OwnForward(MLP):
    def forward(self, x):
        return super().forward(x).tanh()


@pytest.mark.parametrize("execution,net,message", [
    ("gpu", MLP(), "execution must be 'auto', 'vmap', 'loop' or 'batched', got 'gpu'"),
    ("batched", Conv4(5), "needs a network with a task-batched forward"),
    ("batched", OwnForward(), "needs a network with a task-batched forward"),
])
def test_bad_executions(execution, net, message):
    with pytest.raises(ValueError, match=message):
        choose_execution(execution, net, CPU, 10, batched=True)


def test_a_subclass_forward_is_never_bypassed():
    net = OwnForward((1, 4, 1))
    model = MAML(net, "mse", inner_lr=0.1)
    theta = model.init_params("cpu", F64)
    batch = sinusoids(tasks=2)
    assert_same_gradient(model.meta_gradient(theta, batch).grads,
                         textbook_meta_gradient(net, "mse", theta, batch, 0.1, 1), rtol=1e-12)


def check_directional_derivatives(fn, theta, analytic, rtol, directions=3, eps=1e-6):
    """⟨∇f, d⟩ against (f(θ + εd) − f(θ − εd)) / 2ε for random directions d over all of θ."""
    g = torch.Generator().manual_seed(7)
    for _ in range(directions):
        d = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in theta.items()}
        with torch.no_grad():
            up = float(fn({k: v + eps * d[k] for k, v in theta.items()}))
            down = float(fn({k: v - eps * d[k] for k, v in theta.items()}))
        numeric = (up - down) / (2 * eps)
        exact = float(sum((analytic[k] * d[k]).sum() for k in theta))
        assert abs(numeric - exact) <= rtol * max(1.0, abs(exact)), (numeric, exact)


# --- the first-order batch-norm + max-pool kernel -------------------------------------------------

@pytest.mark.parametrize("signs", ["positive", "mixed"])
def test_batch_norm_max_pool_kernel_is_pooled_batch_norm_with_exact_first_derivatives(signs):
    """maxpool(BN(h)) by pooling first: the same values and first derivatives as torch's batch norm
    followed by its max-pool, for channels whose scale γ is positive and for negative ones (which
    take the minimum); a second derivative through it is refused, never wrong."""
    from mlcourse.nets import _BatchNormMaxPool

    torch.manual_seed(0)
    h = torch.randn(3, 4, 6, 6, dtype=F64, requires_grad=True)
    weight = torch.rand(4, dtype=F64) + 0.5
    if signs == "mixed":
        weight = weight * torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=F64)
    weight.requires_grad_(True)
    bias = torch.randn(4, dtype=F64, requires_grad=True)

    def reference(h, weight, bias):
        return F.max_pool2d(F.batch_norm(h, None, None, weight, bias, training=True, eps=1e-5), 2)

    torch.testing.assert_close(_BatchNormMaxPool.apply(h, weight, bias, 1e-5), reference(h, weight, bias),
                               rtol=1e-12, atol=1e-12)
    upstream = torch.randn(3, 4, 3, 3, dtype=F64)
    got = torch.autograd.grad((_BatchNormMaxPool.apply(h, weight, bias, 1e-5) * upstream).sum(), (h, weight, bias))
    expected = torch.autograd.grad((reference(h, weight, bias) * upstream).sum(), (h, weight, bias))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda h, w, b: _BatchNormMaxPool.apply(h, w, b, 1e-5), (h, weight, bias))
    first = torch.autograd.grad(_BatchNormMaxPool.apply(h, weight, bias, 1e-5).pow(2).sum(), h, create_graph=True)[0]
    with pytest.raises(RuntimeError):
        first.sum().backward()


def test_conv4_uses_the_kernel_only_where_first_derivatives_are_asked_for(monkeypatch):
    """Inside first_derivatives_only Conv4 runs the kernel in every block and computes the same
    function and gradient as outside it, where the kernel is not used."""
    from mlcourse import nets
    from mlcourse.nets import first_derivatives_only

    calls = []
    original = nets._BatchNormMaxPool.apply
    monkeypatch.setattr(nets._BatchNormMaxPool, "apply", lambda *a: calls.append(1) or original(*a))

    net = Conv4(3, channels=3, image_size=16)
    theta = init_params(net, "cpu", F64)
    theta = {k: v.requires_grad_(True) for k, v in theta.items()}
    x = torch.randn(6, 1, 16, 16, dtype=F64)
    y = torch.randint(0, 3, (6,))
    loss = lambda: F.cross_entropy(functional_call(net, theta, (x,)), y)  # noqa: E731
    expected = torch.autograd.grad(loss(), list(theta.values()))
    assert not calls
    with first_derivatives_only():
        got = torch.autograd.grad(loss(), list(theta.values()))
    assert len(calls) == 4
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
