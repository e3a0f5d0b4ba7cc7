"""Black-box learners for regression: the set encoder, the CNP, the hypernetworks and BlackBox."""

import pytest
import torch

from mlcourse.meta.blackbox import CNP, BlackBox, HyperNetwork, SetEncoder
from mlcourse.meta.learner import Learner
from mlcourse.nets import MLP, count_params, forward
from mlcourse.tasks import SinusoidFamily, TaskBatch

D = torch.float64
MODELS = {
    "cnp": lambda: CNP(r_dim=8, hidden=8),
    "hyper-all": lambda: HyperNetwork((1, 5, 5, 1), "all", r_dim=4, hidden=8),
    "hyper-last": lambda: HyperNetwork((1, 5, 5, 1), "last", r_dim=4, hidden=8),
}


def sets(tasks=3, k=6, q=4, dtype=D):
    return (torch.randn(tasks, k, 1, dtype=dtype), torch.randn(tasks, k, 1, dtype=dtype),
            torch.randn(tasks, q, 1, dtype=dtype))


@pytest.mark.parametrize("name", MODELS)
def test_prediction_ignores_the_order_of_the_training_set(name):
    model = MODELS[name]().double()
    x_tr, y_tr, x_ts = sets()
    perm = torch.randperm(x_tr.shape[1])
    torch.testing.assert_close(model(x_tr[:, perm], y_tr[:, perm], x_ts), model(x_tr, y_tr, x_ts))


def test_set_encoder_is_a_mean_of_pointwise_codes():
    enc = SetEncoder(2, 3, hidden=4).double()
    pairs = torch.randn(2, 5, 2, dtype=D)
    torch.testing.assert_close(enc(pairs), torch.stack([enc.net(p).mean(0) for p in pairs]))


@pytest.mark.parametrize("name", MODELS)
def test_batched_tasks_equal_a_loop_over_tasks(name):
    model = MODELS[name]().double()
    x_tr, y_tr, x_ts = sets(tasks=4)
    batched = model(x_tr, y_tr, x_ts)
    assert batched.shape == (4, 4, 1)
    looped = torch.cat([model(x_tr[i:i + 1], y_tr[i:i + 1], x_ts[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, looped)


def test_full_hypernetwork_generates_every_weight_of_the_mlp():
    model = HyperNetwork(generate="all").double()
    assert model.phi_size == count_params(dict(MLP().named_parameters())) == 1761
    x_tr, y_tr, x_ts = sets()
    phi = model.adapt(x_tr, y_tr)
    assert {k: tuple(v.shape[1:]) for k, v in phi.items()} == {k: tuple(v.shape) for k, v in MLP().named_parameters()}
    expected = torch.stack([forward(MLP().double(), {k: v[i] for k, v in phi.items()}, x_ts[i]) for i in range(3)])
    torch.testing.assert_close(model(x_tr, y_tr, x_ts), expected)


def test_hypernetworks_start_at_the_mlp_initialisation():
    """With the generator's weight at zero, every task gets the MLP's own initial weights."""
    for generate in ("all", "last"):
        model = HyperNetwork(generate=generate).double()
        with torch.no_grad():
            model.generator.weight.zero_()
        phi = model.adapt(*sets()[:2])
        flat = torch.cat([v.flatten(1) for v in phi.values()], 1)
        torch.testing.assert_close(flat, model.generator.bias.expand(3, -1))
        first = phi["layers.0.weight" if generate == "all" else "weight"]
        assert first.abs().max() <= 1.0 and first.std() > 0.05  # a default PyTorch initialisation


def test_last_layer_hypernetwork_outputs_only_the_head():
    model = HyperNetwork(generate="last").double()
    assert model.phi_size == 41
    x_tr, y_tr, x_ts = sets()
    phi = model.adapt(x_tr, y_tr)
    assert phi["weight"].shape == (3, 1, 40) and phi["bias"].shape == (3, 1)
    expected = model.trunk(x_ts) @ phi["weight"].transpose(1, 2) + phi["bias"][:, None]
    torch.testing.assert_close(model(x_tr, y_tr, x_ts), expected)
    # The shared trunk is part of θ; the head's weights are not.
    names = set(dict(model.named_parameters()))
    assert any(n.startswith("trunk.") for n in names) and not any(n.startswith("target") for n in names)


@pytest.mark.parametrize("name", MODELS)
def test_gradients_match_finite_differences(name):
    model = MODELS[name]().double()
    learner = BlackBox(model)
    theta = learner.init_params("cpu", D)
    x_tr, y_tr, x_ts = sets(tasks=2, k=3, q=2)
    batch = TaskBatch(x_tr, y_tr, x_ts, torch.randn(2, 2, 1, dtype=D))
    names = list(theta)

    def loss(*values):
        return learner.meta_loss(dict(zip(names, values)), batch)[0]

    assert torch.autograd.gradcheck(loss, tuple(theta.values()), eps=1e-6, atol=1e-5)


def test_step_is_a_gradient_step_on_the_query_loss():
    learner = BlackBox(CNP(r_dim=8, hidden=8).double())
    theta = learner.init_params("cpu", D)
    batch = SinusoidFamily().sample(5, shots=4, device="cpu", dtype=D)
    loss = sum((learner.predict(theta, batch.x_tr[i:i + 1], batch.y_tr[i:i + 1], batch.x_ts[i:i + 1])
                - batch.y_ts[i:i + 1]).pow(2).mean() for i in range(5)) / 5
    grads = torch.autograd.grad(loss, list(theta.values()))
    expected = {k: (p - 0.1 * g).detach() for (k, p), g in zip(theta.items(), grads)}
    metrics = learner.step(theta, torch.optim.SGD(theta.values(), lr=0.1), batch)
    torch.testing.assert_close(metrics["loss"], loss.detach())
    for k in theta:
        torch.testing.assert_close(theta[k].detach(), expected[k])


@pytest.mark.parametrize("name", MODELS)
def test_the_learner_contract(name):
    learner = BlackBox(MODELS[name]())
    assert isinstance(learner, Learner) and learner.loss_kind == "mse"
    theta = learner.init_params("cpu")
    batch = SinusoidFamily().sample(3, shots=4, queries=5, device="cpu")
    grads, metrics = learner.meta_gradient(theta, batch)
    assert grads.keys() == theta.keys() and metrics["loss"].shape == (3,)
    for k, g in grads.items():
        assert g.shape == theta[k].shape and not g.requires_grad and g.abs().max() > 0, k
    torch.testing.assert_close(metrics["loss"], learner.task_metrics(theta, batch)["loss"].detach())
    phi = learner.adapt(theta, batch)
    if name == "cnp":
        assert phi.shape == (3, 8)
    else:
        assert all(v.shape[0] == 3 for v in phi.values())
        assert sum(v[0].numel() for v in phi.values()) == learner.model.phi_size
    per_task = learner.evaluate(theta, batch)
    assert per_task["loss"].shape == (3,) and not per_task["loss"].requires_grad
    before = {k: v.detach().clone() for k, v in theta.items()}
    means = learner.step(theta, torch.optim.SGD(theta.values(), lr=0.1), batch)
    assert set(means) == {"loss"} and any(not torch.equal(before[k], theta[k].detach()) for k in theta)
    with pytest.raises(ValueError, match="steps must be None"):
        learner.evaluate(theta, batch, steps=2)
    with pytest.raises(ValueError, match="float64 on cpu but θ is torch.float32"):
        learner.evaluate(theta, batch.to("cpu", dtype=D))


def test_cnp_learns_the_sinusoid_family():
    torch.manual_seed(0)
    family = SinusoidFamily()
    learner = BlackBox(CNP(r_dim=32, hidden=32))
    theta = learner.init_params("cpu")
    optimizer = torch.optim.Adam(theta.values(), lr=3e-3)
    test = family.sample(200, shots=10, device="cpu", generator=torch.Generator().manual_seed(1))
    before = learner.meta_loss(theta, test)[0]
    for _ in range(300):
        learner.step(theta, optimizer, family.sample(25, shots=10, device="cpu"))
    after = learner.meta_loss(theta, test)[0]
    assert after < 0.5 * before, (before, after)


def test_bad_inputs_give_clear_errors():
    model = CNP()
    x_tr, y_tr, x_ts = sets(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"x_tr must have shape \[tasks, points, 1\], got \(3, 6\)"):
        model(x_tr[..., 0], y_tr, x_ts)
    with pytest.raises(ValueError, match="D\\^tr and D\\^ts disagree"):
        model(x_tr, y_tr[:, :4], x_ts)
    with pytest.raises(ValueError, match="K = 0"):
        model(x_tr[:, :0], y_tr[:, :0], x_ts)
    with pytest.raises(ValueError, match="generate must be 'all' or 'last'"):
        HyperNetwork(generate="first")
    with pytest.raises(ValueError, match="loss='mse'"):
        BlackBox(CNP(), loss="cross_entropy")
    with pytest.raises(TypeError, match="TaskBatch"):
        BlackBox(CNP()).task_metrics(dict(CNP().named_parameters()), (x_tr, y_tr))


def test_mann_reproduction_runs_at_quick_scale(tmp_path, omniglot_dir):
    from mlcourse import reproduce

    record = reproduce.run("mann-omniglot", "quick", "cpu", out=tmp_path)
    assert (tmp_path / "mann-omniglot.json").exists()
    for kind in ("mann", "lstm", "transformer"):
        for k in (1, 2, 3, 4, 5, 10):
            metric = record["metrics"][f"{kind}_instance_{k}"]
            assert 0 <= metric["value"] <= 100 and metric["unit"] == "%"
            assert (metric["paper"] is None) == (kind == "transformer")
        assert 0 <= record["metrics"][f"{kind}_one_shot"]["value"] <= 100
    assert record["settings"]["slots"] == 128 and record["settings"]["heads"] == 4
    assert record["settings"]["episodes"] == 32 and record["settings"]["scale"] == "quick"


def test_sequence_settings_keep_the_papers_values():
    from mlcourse.experiments.blackbox import SequenceSettings

    paper = SequenceSettings.at("paper")
    assert (paper.controller, paper.slots, paper.width, paper.heads, paper.episodes, paper.meta_batch) == \
        (200, 128, 40, 4, 100_000, 16)
    assert paper.encoder == "pixels" and not paper.key_strength
    book = SequenceSettings.at("book")
    assert set(book.changed_from_paper()) >= {"episodes", "encoder", "key_strength"}
