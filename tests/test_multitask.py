"""Multi-task models: vectorised losses against a per-task loop, where the gradients of one task's
loss go (and do not go), finite differences, the loss weightings, batched runs, bad input."""

import pytest
import torch
from torch import nn

from mlcourse.meta.multitask import MultiTask
from mlcourse.meta.multitask_train import alphabet_tasks, stack_runs, train
from mlcourse.nets import MLP, Conv4
from mlcourse.tasks import SinusoidFamily

F64 = torch.float64
M = 3


def sinusoids(m=M, shots=4, queries=6, seed=0):
    return SinusoidFamily().sample(m, shots, queries, device="cpu", dtype=F64,
                                   generator=torch.Generator().manual_seed(seed))


def models(m=M, **kw):
    return {
        "shared": MultiTask("shared", m, net=MLP((1, 8, 1)), **kw),
        "hard": MultiTask("hard", m, trunk=nn.Sequential(MLP((1, 8, 8)), nn.ReLU()), head=nn.Linear(8, 1), **kw),
        "one-hot": MultiTask("conditioned", m, trunk=nn.Identity(), head=MLP((1 + m, 8, 1)), **kw),
        "embedding": MultiTask("conditioned", m, trunk=nn.Identity(), head=MLP((1 + 2, 8, 1)), embedding=2, **kw),
        "independent": MultiTask("independent", m, net=MLP((1, 8, 1)), **kw),
    }


@pytest.mark.parametrize("kind", list(models()))
@pytest.mark.parametrize("execution", ["vmap", "loop", "batched"])
def test_vectorised_losses_equal_a_per_task_loop(kind, execution):
    model = models(execution=execution)[kind]
    params = model.init_params(dtype=F64)
    data = sinusoids()
    torch.testing.assert_close(model.task_losses(params, data.x_tr, data.y_tr),
                               model.loop_losses(params, data.x_tr, data.y_tr))


@pytest.mark.parametrize("kind", list(models()))
def test_batched_gradients_equal_the_per_task_loop(kind):
    """The batched path (shared layers on all examples at once, per-task layers as batched matrix
    products) has the loop's gradient for every parameter, per-task ones included."""
    batched, loop = models(execution="batched")[kind], models(execution="loop")[kind]
    params = batched.init_params(dtype=F64)
    data = sinusoids()
    weights = torch.rand(M, dtype=F64)    # unequal task weights: each task's share must be its own
    got = torch.autograd.grad((weights * batched.task_losses(params, data.x_tr, data.y_tr)).sum(),
                              list(params.values()))
    want = torch.autograd.grad((weights * loop.loop_losses(params, data.x_tr, data.y_tr)).sum(),
                               list(params.values()))
    for name, g, w in zip(params, got, want):
        torch.testing.assert_close(g, w, msg=f"{kind}: gradient of {name}")


def test_batched_hard_sharing_takes_an_mlp_head_and_runs_under_vmap_over_runs():
    model = MultiTask("hard", M, trunk=MLP((1, 8, 4)), head=MLP((4, 6, 1)), execution="batched")
    params = model.init_params(dtype=F64, runs=2)
    data = stack_runs([sinusoids(seed=s) for s in range(2)])
    got = torch.func.vmap(model.task_losses)(params, data.x_tr, data.y_tr)
    for r in range(2):
        one = {k: v[r] for k, v in params.items()}
        torch.testing.assert_close(got[r], model.loop_losses(one, data.x_tr[r], data.y_tr[r]))


def test_auto_execution_batches_mlps_on_the_cpu_and_never_batch_norm():
    assert models()["hard"]._execution(torch.zeros(M, 4, 1)) == "batched"
    conv = MultiTask("hard", 2, trunk=nn.Sequential(Conv4(3, channels=4, downsample="stride").features,
                                                    nn.Flatten()),
                     head=nn.Linear(16, 3), loss="cross_entropy")
    assert not conv.can_batch() and conv._execution(torch.zeros(2, 4, 1, 28, 28)) == "vmap"
    with pytest.raises(ValueError, match="no batch normalisation"):
        MultiTask("shared", 2, net=Conv4(3, channels=4), loss="cross_entropy", execution="batched")
    with pytest.raises(ValueError, match="execution must be one of"):
        MultiTask("shared", 2, net=MLP(), execution="parallel")


@pytest.mark.parametrize("kind", ["shared", "hard", "conditioned", "independent"])
def test_conv_models_vectorised_equal_loop(kind):
    ways, conv = 3, lambda: Conv4(3, channels=4, downsample="stride")
    trunk = lambda: nn.Sequential(conv().features, nn.Flatten())
    build = {"shared": dict(net=conv()), "independent": dict(net=conv()),
             "hard": dict(trunk=trunk(), head=nn.Linear(16, ways)),
             "conditioned": dict(trunk=trunk(), head=MLP((16 + 2, 8, ways)), embedding=2)}[kind]
    model = MultiTask(kind, 2, loss="cross_entropy", **build)
    params = model.init_params(dtype=F64)
    x, y = torch.rand(2, 6, 1, 28, 28, dtype=F64), torch.randint(0, ways, (2, 6))
    metrics = model.task_metrics(params, x, y)
    torch.testing.assert_close(metrics["loss"], model.loop_losses(params, x, y))
    assert metrics["accuracy"].shape == (2,)


@pytest.mark.parametrize("kind", ["hard", "embedding", "independent"])
def test_a_tasks_loss_reaches_only_its_own_parameters_and_the_shared_ones(kind):
    model = models()[kind]
    params = model.init_params(dtype=F64)
    data = sinusoids()
    i = 1
    loss = model.task_losses(params, data.x_tr, data.y_tr)[i]
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)))
    for name, g in grads.items():
        g = torch.zeros_like(params[name]) if g is None else g
        if name.startswith(("heads.", "nets.")) or name == "embedding":
            others = torch.cat([g[:i].flatten(), g[i + 1:].flatten()])
            assert torch.all(others == 0), f"{name}: task {i}'s loss moved another task's parameters"
            assert g[i].abs().sum() > 0, f"{name}: task {i}'s loss gives no gradient to its own parameters"
        else:
            assert g.abs().sum() > 0, f"{name}: the shared parameters get no gradient"


def test_one_hot_code_is_not_a_parameter():
    params = models()["one-hot"].init_params()
    assert "embedding" not in params and params["head.layers.0.weight"].shape == (8, 1 + M)


def _finite_difference(fn, params, eps=1e-6):
    out = {}
    with torch.no_grad():
        for name, p in params.items():
            g = torch.zeros_like(p)
            for j in range(p.numel()):
                p.view(-1)[j] += eps
                up = float(fn(params))
                p.view(-1)[j] -= 2 * eps
                down = float(fn(params))
                p.view(-1)[j] += eps
                g.view(-1)[j] = (up - down) / (2 * eps)
            out[name] = g
    return out


def test_gradient_matches_finite_differences_with_uncertainty_weighting():
    model = MultiTask("hard", 2, trunk=nn.Sequential(MLP((1, 3)), nn.Tanh()), head=nn.Linear(3, 1),
                      weighting="uncertainty")
    params = model.init_params(dtype=F64)
    with torch.no_grad():
        params["log_var"].copy_(torch.tensor([0.3, -0.5]))
    data = sinusoids(2, shots=3)
    fn = lambda p: model.loss(p, data.x_tr, data.y_tr)
    grads = dict(zip(params, torch.autograd.grad(fn(params), list(params.values()))))
    numeric = _finite_difference(fn, params)
    for name in params:
        torch.testing.assert_close(grads[name], numeric[name], rtol=1e-5, atol=1e-7)


def test_weightings():
    data = sinusoids()
    fixed = models(weighting=[0.5, 2.0, 0.0])["hard"]
    params = fixed.init_params(dtype=F64)
    losses = fixed.task_losses(params, data.x_tr, data.y_tr)
    torch.testing.assert_close(fixed.loss(params, data.x_tr, data.y_tr), 0.5 * losses[0] + 2.0 * losses[1])
    equal = models()["hard"]
    torch.testing.assert_close(equal.combine(params, losses), losses.mean())
    # Uncertainty weighting: ½ e^{-s} L + ½ s is smallest at s = log L, i.e. weight e^{-s} = 1 / L.
    unc = models(weighting="uncertainty")["hard"]
    s = losses.detach().log().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(unc.combine({"log_var": s}, losses.detach()), s)
    torch.testing.assert_close(g, torch.zeros_like(g), atol=1e-12, rtol=0)


def test_batched_runs_equal_separate_runs():
    """R runs trained as one computation give the same parameters as R separate runs."""
    model = models()["hard"]
    batches = [sinusoids(seed=s) for s in range(2)]
    stacked = model.init_params(dtype=F64, runs=2)
    separate = [{k: v[r].detach().clone().requires_grad_(True) for k, v in stacked.items()} for r in range(2)]
    train(model, stacked, stack_runs(batches), steps=5, lr=1e-2, runs=True, progress=False)
    for r in range(2):
        train(model, separate[r], batches[r], steps=5, lr=1e-2, progress=False)
        for k in stacked:
            torch.testing.assert_close(stacked[k][r], separate[r][k])


def test_training_fits_every_task_and_logs_per_task_curves():
    model = models()["hard"]
    params = model.init_params(dtype=F64)
    data = sinusoids(shots=10)
    before = model.task_losses(params, data.x_tr, data.y_tr)
    history = train(model, params, data, steps=200, lr=1e-2, batch_size=5, eval_every=50, progress=False)
    after = model.task_losses(params, data.x_tr, data.y_tr)
    assert torch.all(after < before)
    iterations, curves = history.curve("test_loss", "eval")
    assert list(iterations) == [50, 100, 150, 200] and curves.shape == (4, M)


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="unknown multi-task model 'soft'"):
        MultiTask("soft", 2, net=MLP())
    with pytest.raises(ValueError, match="needs trunk"):
        MultiTask("hard", 2, net=MLP())
    with pytest.raises(ValueError, match="takes net, not trunk"):
        MultiTask("shared", 2, net=MLP(), trunk=MLP())
    with pytest.raises(ValueError, match="2 finite non-negative weights"):
        MultiTask("shared", 2, net=MLP(), weighting=[1.0])
    with pytest.raises(ValueError, match="unknown weighting 'focal'"):
        MultiTask("shared", 2, net=MLP(), weighting="focal")
    with pytest.raises(ValueError, match="embedding= is for the 'conditioned' model"):
        MultiTask("hard", 2, trunk=MLP(), head=MLP(), embedding=3)
    with pytest.raises(ValueError, match="num_tasks"):
        MultiTask("shared", 0, net=MLP())
    model = models()["hard"]
    with pytest.raises(ValueError, match=r"x must have shape \[M=3"):
        model.outputs(model.init_params(), torch.zeros(2, 4, 1))
    with pytest.raises(ValueError, match="lr"):
        train(model, model.init_params(), sinusoids(), steps=1, lr=-1.0, progress=False)


def test_alphabet_tasks_label_characters_within_each_alphabet():
    # 3 alphabets of 4 characters, 5 drawers; pixel (0, 0) encodes character and drawer.
    images = torch.zeros(12, 5, 28, 28, dtype=torch.uint8)
    for c in range(12):
        for d in range(5):
            images[c, d, 0, 0] = 10 * c + d
    alphabet = torch.arange(12) // 4
    data = alphabet_tasks(images, alphabet, [2, 0], characters=3, train_drawers=[[0, 1], [2, 2]], test_drawers=[4])
    assert data.x_tr.shape == (2, 6, 1, 28, 28) and data.x_ts.shape == (2, 3, 1, 28, 28)
    code = (data.x_tr[:, :, 0, 0, 0] * 255).round().long()
    assert code[0].tolist() == [80, 81, 90, 91, 100, 101] and code[1].tolist() == [2, 2, 12, 12, 22, 22]
    assert data.y_tr[0].tolist() == [0, 0, 1, 1, 2, 2] and data.y_ts[1].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="same number of training slots"):
        alphabet_tasks(images, alphabet, [0, 1], 3, [[0], [0, 1]], [4])
    with pytest.raises(ValueError, match="fewer than the 5"):
        alphabet_tasks(images, alphabet, [0], 5, [[0]], [4])
