"""The memory-augmented network, its LSTM baseline, the episode sequences they read and the
sequence learner that trains them."""

import pytest
import torch

from finite_differences import assert_gradient_matches_finite_differences
from mlcourse.meta.learner import Learner, MetaGradient
from mlcourse.meta.mann import (MANN, LSTMLearner, cosine_similarity, least_used, lstm_cell, read_weights,
                                update_usage, write_memory, write_weights)
from mlcourse.meta.sequences import (ImageEncoder, OmniglotSequences, SequenceLearner, accuracy_by_instance,
                                     instance_numbers, label_inputs, previous_labels, resize_images)
from mlcourse.meta.transformer import InContextTransformer
from mlcourse.tasks import TaskBatch

D = torch.float64


def tiny_mann(**kw):
    args = dict(pixels=4, classes=3, hidden=8, slots=6, width=4, heads=2)
    args.update(kw)
    return MANN(**args)


NETS = {
    "mann": lambda: tiny_mann(),
    "mann-strength-mlp": lambda: tiny_mann(key_strength=True, encoder="mlp", embedding=3),
    "lstm": lambda: LSTMLearner(4, 3, hidden=5),
    "lstm-mlp": lambda: LSTMLearner(4, 3, hidden=5, encoder="mlp", embedding=3, forget_bias=1.0),
    "transformer": lambda: InContextTransformer(4, 3, dim=8, heads=2, layers=2, embedding=3),
}


def episodes(b=2, t=7, q=3, dtype=D, generator=None):
    g = torch.Generator().manual_seed(0) if generator is None else generator
    x = torch.rand(b, t, 4, dtype=dtype, generator=g)
    y = torch.randint(0, 3, (b, t), generator=g)
    return x, y, torch.rand(b, q, 4, dtype=dtype, generator=g), torch.randint(0, 3, (b, q), generator=g)


# --- addressing -------------------------------------------------------------------------------
def test_reads_are_convex_combinations_of_memory_rows():
    memory = torch.randn(5, 10, 4, dtype=D)
    keys = torch.randn(5, 3, 4, dtype=D)
    w = read_weights(keys, memory)
    assert w.shape == (5, 3, 10)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(5, 3, dtype=D))
    cos = torch.nn.functional.cosine_similarity(keys.unsqueeze(2), memory.unsqueeze(1), dim=-1)
    torch.testing.assert_close(cosine_similarity(keys, memory), cos)
    assert torch.equal(w.argmax(-1), cos.argmax(-1))


def test_key_strength_sharpens_the_read_without_moving_its_peak():
    memory = torch.randn(4, 12, 5, dtype=D)
    keys = torch.randn(4, 2, 5, dtype=D)
    flat, sharp = read_weights(keys, memory), read_weights(keys, memory, torch.full((4, 2), 8.0, dtype=D))
    torch.testing.assert_close(read_weights(keys, memory, torch.ones(4, 2, dtype=D)), flat)  # β = 1: the paper's
    assert torch.equal(flat.argmax(-1), sharp.argmax(-1))
    assert (sharp.max(-1).values > flat.max(-1).values).all()
    cos = torch.nn.functional.cosine_similarity(keys.unsqueeze(2), memory.unsqueeze(1), dim=-1)
    torch.testing.assert_close(sharp, torch.softmax(8.0 * cos, -1))


def test_a_perfect_match_among_128_empty_rows_gets_two_percent_of_a_flat_read():
    """Why the key strength: with β = 1 the softmax over cosines in [−1, 1] is almost flat."""
    memory = torch.zeros(1, 128, 40, dtype=D)
    key = torch.randn(1, 1, 40, dtype=D)
    memory[0, 7] = key[0, 0]
    w = read_weights(key, memory)
    assert abs(float(w[0, 0, 7]) - torch.e / (torch.e + 127)) < 1e-6


def test_cosine_of_zero_memory_is_finite_with_finite_gradient():
    memory = torch.zeros(2, 4, 3, dtype=D, requires_grad=True)
    keys = torch.randn(2, 1, 3, dtype=D, requires_grad=True)
    w = read_weights(keys, memory)
    torch.testing.assert_close(w, torch.full_like(w, 0.25))  # nothing stored: a uniform read
    w[..., 0].sum().backward()
    assert torch.isfinite(memory.grad).all() and torch.isfinite(keys.grad).all()


def test_least_used_picks_the_smallest_usage_in_order_with_ties_to_the_lower_index():
    usage = torch.tensor([[0.5, 0.1, 0.9, 0.1, 0.3]], dtype=D)
    lu = least_used(usage, 3)
    assert lu.shape == (1, 3, 5)
    assert lu.argmax(-1).tolist() == [[1, 3, 4]]
    torch.testing.assert_close(lu.sum(-1), torch.ones(1, 3, dtype=D))


def test_least_used_writes_go_to_the_least_used_slot():
    memory = torch.randn(2, 5, 3, dtype=D)
    usage = torch.tensor([[0.5, 0.1, 0.9, 0.7, 0.3], [0.2, 0.6, 0.9, 0.05, 0.4]], dtype=D)
    prev_read = torch.softmax(torch.randn(2, 1, 5, dtype=D), -1)
    lu = least_used(usage, 1)
    gate = torch.full((2, 1), -60.0, dtype=D)  # σ(g) ≈ 0: write only to the least-used slot
    ww = write_weights(prev_read, lu, gate)
    torch.testing.assert_close(ww, lu)
    key = torch.randn(2, 1, 3, dtype=D)
    new = write_memory(memory, lu[:, 0], ww, key)
    for b, slot in enumerate([1, 3]):
        torch.testing.assert_close(new[b, slot], key[b, 0])  # cleared, then written
        others = [i for i in range(5) if i != slot]
        torch.testing.assert_close(new[b, others], memory[b, others])


def test_write_weights_interpolate_between_last_read_and_least_used():
    prev_read = torch.softmax(torch.randn(3, 2, 6, dtype=D), -1)
    lu = least_used(torch.rand(3, 6, dtype=D), 2)
    gate = torch.randn(3, 2, dtype=D)
    g = torch.sigmoid(gate)[..., None]
    torch.testing.assert_close(write_weights(prev_read, lu, gate), g * prev_read + (1 - g) * lu)
    torch.testing.assert_close(write_weights(prev_read, lu, gate).sum(-1), torch.ones(3, 2, dtype=D))


def test_usage_update_as_specified():
    usage, read, write = torch.rand(4, 6, dtype=D), torch.rand(4, 2, 6, dtype=D), torch.rand(4, 2, 6, dtype=D)
    expected = 0.9 * usage + read[:, 0] + read[:, 1] + write[:, 0] + write[:, 1]
    torch.testing.assert_close(update_usage(usage, read, write, 0.9), expected)


def test_trace_follows_the_lrua_rules():
    net = tiny_mann().double()
    x, y, _, _ = episodes(t=9)
    _, tr = net.trace(x, y)
    assert tr["read"].shape == (2, 9, 2, 6) and tr["usage"].shape == (2, 9, 6) and tr["memory"].shape == (2, 9, 6, 4)
    usage = torch.zeros(2, 6, dtype=D)
    for t in range(9):
        usage = update_usage(usage, tr["read"][:, t], tr["write"][:, t], net.gamma)
        torch.testing.assert_close(tr["usage"][:, t], usage)
    # At t = 0 there is no previous read: head h writes only to the h-th least-used slot (slot h,
    # all usages being 0), with weight 1 − σ(g).
    first = tr["write"][:, 0]
    assert (first[:, 0, 1:] == 0).all() and (first[:, 1, 0] == 0).all() and (first[:, 1, 2:] == 0).all()
    assert ((first[:, 0, 0] > 0) & (first[:, 0, 0] < 1)).all()
    # Later writes mix the previous reads in: their rows sum to one.
    torch.testing.assert_close(tr["write"][:, 1:].sum(-1), torch.ones(2, 8, 2, dtype=D))
    assert (tr["memory"][:, 0, 2:] == 0).all() and (tr["memory"][:, 0, :2] != 0).any()
    # Each step reads the memory it has just written, with the key it wrote.
    for t in range(9):
        torch.testing.assert_close(tr["read"][:, t].sum(-1), torch.ones(2, 2, dtype=D))


def _reference_mann(net, x, y):
    """The MANN written step by step from the paper's equations, for comparison with the batched code."""
    p = dict(net.named_parameters())
    inputs = torch.cat([x, previous_labels(y, net.classes, x.dtype)], -1)
    b, n, w, r = x.shape[0], net.slots, net.width, net.heads
    h = c = x.new_zeros(b, net.hidden)
    read, read_w = x.new_zeros(b, r * w), x.new_zeros(b, r, n)
    memory, usage, outputs = x.new_zeros(b, n, w), x.new_zeros(b, n), []
    for t in range(x.shape[1]):
        gates = (inputs[:, t] @ p["input.weight"].T + p["input.bias"]
                 + torch.cat([h, read], -1) @ p["recurrent.weight"].T)
        h, c = lstm_cell(gates, c)
        out = (h @ p["head.weight"].T + p["head.bias"]).view(b, r, -1)
        key, gate = torch.tanh(out[..., :w]), out[..., w]
        order = usage.argsort(dim=-1, stable=True)[:, :r]
        lu = torch.zeros(b, r, n, dtype=x.dtype).scatter(-1, order[..., None], 1.0)
        write = torch.sigmoid(gate)[..., None] * read_w + (1 - torch.sigmoid(gate)[..., None]) * lu
        memory = memory * (1 - lu[:, 0])[..., None] + torch.einsum("brn,brw->bnw", write, key)
        cos = torch.nn.functional.cosine_similarity(key[:, :, None], memory[:, None], dim=-1, eps=1e-30)
        read_w = torch.softmax(cos, -1)
        read = torch.einsum("brn,bnw->brw", read_w, memory).flatten(1)
        usage = net.gamma * usage + read_w.sum(1) + write.sum(1)
        outputs.append(torch.cat([h, read], -1) @ p["output.weight"].T + p["output.bias"])
    return torch.stack(outputs, 1)


def test_mann_equals_the_equations_written_step_by_step():
    net = tiny_mann().double()
    x, y, _, _ = episodes(t=9)
    torch.testing.assert_close(net(x, y)[0], _reference_mann(net, x, y), rtol=1e-6, atol=1e-6)


def _reference_lstm(net, x, y):
    p = dict(net.named_parameters())
    inputs = torch.cat([net.encoder(x), previous_labels(y, net.classes, x.dtype)], -1)
    h = c = x.new_zeros(x.shape[0], net.hidden)
    outputs = []
    for t in range(x.shape[1]):
        gates = (inputs[:, t] @ p["lstm.weight_ih_l0"].T + p["lstm.bias_ih_l0"] + h @ p["lstm.weight_hh_l0"].T
                 + p["lstm.bias_hh_l0"])
        h, c = lstm_cell(gates, c)
        outputs.append(h @ p["output.weight"].T + p["output.bias"])
    return torch.stack(outputs, 1)


def test_fused_lstm_equals_the_cell_written_out():
    net = NETS["lstm-mlp"]().double()
    x, y, _, _ = episodes()
    torch.testing.assert_close(net(x, y)[0], _reference_lstm(net, x, y))
    assert float(net.lstm.bias_ih_l0[5:10].detach().mean()) > 0.5  # forget_bias=1 was added to the forget gate


# --- every sequence network --------------------------------------------------------------------
@pytest.mark.parametrize("name", NETS)
def test_batched_episodes_equal_a_loop_over_episodes(name):
    net = NETS[name]().double()
    x, y, xq, _ = episodes(b=4)
    online, queries = net(x, y, xq)
    assert online.shape == (4, 7, 3) and queries.shape == (4, 3, 3)
    for i in range(4):
        o, q = net(x[i:i + 1], y[i:i + 1], xq[i:i + 1])
        torch.testing.assert_close(o, online[i:i + 1])
        torch.testing.assert_close(q, queries[i:i + 1])


@pytest.mark.parametrize("name", NETS)
def test_online_prediction_at_t_is_the_answer_to_a_query_after_the_first_t_steps(name):
    """The two kinds of prediction agree: step t of D^tr is a query from the prefix before it."""
    net = NETS[name]().double()
    x, y, _, _ = episodes()
    online, _ = net(x, y)
    for t in range(1, 7):
        _, answer = net(x[:, :t], y[:, :t], x[:, t:t + 1])
        torch.testing.assert_close(answer[:, 0], online[:, t])


@pytest.mark.parametrize("name", NETS)
def test_predictions_never_see_their_own_label_or_later_steps(name):
    net = NETS[name]().double()
    x, y, xq, _ = episodes()
    online, queries = net(x, y, xq)
    for t in range(7):
        x2, y2 = x.clone(), y.clone()
        x2[:, t + 1:] = torch.rand_like(x2[:, t + 1:])
        y2[:, t:] = (y2[:, t:] + 1) % 3  # its own label and every later one
        torch.testing.assert_close(net(x2, y2)[0][:, :t + 1], online[:, :t + 1])
    # A query does not see the other queries.
    xq2 = xq.clone()
    xq2[:, 1:] = torch.rand_like(xq2[:, 1:])
    torch.testing.assert_close(net(x, y, xq2)[1][:, 0], queries[:, 0])


@pytest.mark.parametrize("name", ["mann", "mann-strength-mlp", "lstm-mlp", "transformer"])
def test_meta_gradient_matches_finite_differences(name):
    torch.manual_seed(0)
    net = NETS[name]().double()
    learner = SequenceLearner(net)
    theta = learner.init_params("cpu", D)
    x, y, xq, yq = episodes(b=2, t=5, q=2)
    batch = TaskBatch(x, y, xq, yq)

    def loss(params):
        return learner.task_metrics(params, batch)["loss"].mean()

    # nn.LSTM has no vmap rule: its perturbed points are evaluated one by one.
    assert_gradient_matches_finite_differences(loss, theta, vectorise=not name.startswith("lstm"))


@pytest.mark.parametrize("name", ["mann", "lstm", "transformer"])
def test_the_learner_contract(name):
    learner = SequenceLearner(NETS[name]())
    assert isinstance(learner, Learner) and learner.loss_kind == "cross_entropy"
    theta = learner.init_params("cpu")
    assert all(v.is_leaf and v.requires_grad for v in theta.values())
    x, y, xq, yq = episodes(b=3, dtype=torch.float32)
    batch = TaskBatch(x, y, xq, yq)
    result = learner.meta_gradient(theta, batch)
    assert isinstance(result, MetaGradient) and result.grads.keys() == theta.keys()
    for k, g in result.grads.items():
        assert g.shape == theta[k].shape and torch.isfinite(g).all() and not g.requires_grad
    assert {"loss", "accuracy", "online_accuracy", "query_accuracy"} == set(result.metrics)
    assert all(v.shape == (3,) for v in result.metrics.values())
    before = {k: v.detach().clone() for k, v in theta.items()}
    means = learner.step(theta, torch.optim.SGD(theta.values(), lr=0.1), batch)
    assert set(means) == set(result.metrics) and all(v.dim() == 0 for v in means.values())
    assert any(not torch.equal(before[k], theta[k].detach()) for k in theta)
    per_task = learner.evaluate(theta, batch)
    assert per_task["loss"].shape == (3,) and not per_task["loss"].requires_grad
    phi = learner.adapt(theta, batch)
    assert all(v.shape[0] == 3 for v in phi.values() if isinstance(v, torch.Tensor))
    # Queries only: the loss is theirs alone.
    queries_only = SequenceLearner(learner.net, online=False).evaluate(theta, batch)
    torch.testing.assert_close(queries_only["accuracy"], per_task["query_accuracy"])


def test_step_clips_the_meta_gradient_norm():
    learner = SequenceLearner(NETS["lstm"](), max_grad_norm=1e-3)
    theta = learner.init_params("cpu")
    x, y, _, _ = episodes(dtype=torch.float32)
    batch = TaskBatch(x, y, x[:, :0], y[:, :0])
    before = {k: v.detach().clone() for k, v in theta.items()}
    learner.step(theta, torch.optim.SGD(theta.values(), lr=1.0), batch)
    moved = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(theta[k].detach() - before[k])
                                                  for k in theta]))
    torch.testing.assert_close(moved, torch.tensor(1e-3), rtol=1e-3, atol=0)


def test_tiny_mann_overfits_one_episode():
    torch.manual_seed(0)
    learner = SequenceLearner(MANN(8, 3, hidden=32, slots=8, width=8, heads=1))
    theta = learner.init_params("cpu")
    x = torch.rand(1, 12, 8)
    y = torch.tensor([[0, 1, 2, 1, 0, 2, 2, 1, 0, 0, 2, 1]])
    batch = TaskBatch(x, y, x[:, :0], y[:, :0])
    optimizer = torch.optim.Adam(theta.values(), lr=1e-2)
    first = learner.step(theta, optimizer, batch)["loss"]
    for _ in range(150):
        metrics = learner.step(theta, optimizer, batch)
    assert first > 1.0 and metrics["loss"] < 0.05 and metrics["accuracy"] == 1.0


def test_bad_inputs_give_clear_errors():
    net = tiny_mann()
    x, y, _, _ = episodes(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"x_tr as float images flattened to \[episodes, steps, 4\].*\(2, 7\)"):
        net(x[..., 0], y)
    with pytest.raises(ValueError, match=r"got torch.float32 \(2, 7, 5\)"):
        net(torch.rand(2, 7, 5), y)
    with pytest.raises(ValueError, match=r"y_tr must be labels \[episodes, steps\] = \(2, 7\), got \(2, 6\)"):
        net(x, y[:, :6])
    with pytest.raises(TypeError, match="int64"):
        net(x, y.float())
    with pytest.raises(ValueError, match=r"labels must lie in 0..2, got values in 3..3"):
        net(x, torch.full_like(y, 3))
    with pytest.raises(ValueError, match="T = 0"):
        net(x[:, :0], y[:, :0])
    with pytest.raises(ValueError, match="x_ts holds 1 episodes but x_tr 2"):
        net(x, y, x[:1])
    with pytest.raises(ValueError, match="heads=5.*slots=4"):
        MANN(4, 3, slots=4, heads=5)
    with pytest.raises(ValueError, match="gamma"):
        MANN(4, 3, gamma=1.5)
    with pytest.raises(ValueError, match="slots must be an int >= 1"):
        MANN(4, 3, slots=0)
    with pytest.raises(ValueError, match="encoder must be one of"):
        LSTMLearner(4, 3, encoder="conv")
    with pytest.raises(TypeError, match="needs a SequenceNet"):
        SequenceLearner(torch.nn.Linear(3, 3))
    learner = SequenceLearner(net)
    theta = learner.init_params("cpu")
    with pytest.raises(TypeError, match="TaskBatch"):
        learner.evaluate(theta, (x, y))
    with pytest.raises(ValueError, match="float64 on cpu but θ is torch.float32"):
        learner.evaluate(theta, TaskBatch(x.double(), y, x[:, :0].double(), y[:, :0]))
    with pytest.raises(ValueError, match="steps must be None"):
        learner.adapt(theta, TaskBatch(x, y, x, y), steps=3)
    with pytest.raises(ValueError, match="D\\^ts is empty"):
        SequenceLearner(net, online=False).evaluate(theta, TaskBatch(x, y, x[:, :0], y[:, :0]))
    with pytest.raises(ValueError, match="max_grad_norm"):
        SequenceLearner(net, max_grad_norm=0)


# --- sequences --------------------------------------------------------------------------------
def test_label_inputs_carry_the_previous_label():
    x = torch.randn(2, 4, 3)
    y = torch.tensor([[2, 0, 1, 1], [0, 0, 2, 1]])
    z = label_inputs(x, y, 3)
    assert z.shape == (2, 4, 6)
    torch.testing.assert_close(z[..., :3], x)
    assert z[:, 0, 3:].abs().sum() == 0
    assert z[0, 1:, 3:].argmax(-1).tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match=r"labels must lie in 0..2, got values in 0..3"):
        label_inputs(torch.randn(1, 4, 4), torch.tensor([[0, 1, 3, 2]]), 3)


def test_instance_numbers_and_accuracy_by_instance():
    y = torch.tensor([[1, 0, 1, 1, 0]])
    assert instance_numbers(y, 2).tolist() == [[1, 1, 2, 3, 2]]
    logits = torch.nn.functional.one_hot(torch.tensor([[1, 1, 0, 1, 0]]), 2).float()  # right at 0, 3, 4
    acc = accuracy_by_instance(logits, y, instances=(1, 2, 3))
    torch.testing.assert_close(acc, torch.tensor([[0.5, 0.5, 1.0]]))


def test_sequences_hold_every_class_instances_times_in_a_shuffled_order():
    images = (torch.rand(12, 20, 28, 28) * 255).to(torch.uint8)
    seqs = OmniglotSequences(images, classes=5, instances=10, image_size=20, device="cpu")
    batch = seqs.sample(6, torch.Generator().manual_seed(0))
    assert batch.x_tr.shape == (6, 50, 400) and batch.y_tr.shape == (6, 50) and seqs.pixels == 400
    assert batch.x_ts.shape == (6, 0, 400) and batch.y_ts.shape == (6, 0)
    assert 0 <= batch.x_tr.min() and batch.x_tr.max() <= 1
    assert (torch.nn.functional.one_hot(batch.y_tr, 5).sum(1) == 10).all()
    assert not (batch.y_tr == batch.y_tr.sort(1).values).all(), "the order within episodes must be shuffled"


def test_support_query_episodes_have_a_shuffled_support_with_one_image_per_class():
    images = (torch.rand(12, 20, 28, 28) * 255).to(torch.uint8)
    seqs = OmniglotSequences(images, classes=5, instances=10, image_size=20, device="cpu")
    batch = seqs.support_query(50, shots=1, queries=3, generator=torch.Generator().manual_seed(0))
    assert batch.x_tr.shape == (50, 5, 400) and batch.x_ts.shape == (50, 15, 400)
    assert (batch.y_tr.sort(1).values == torch.arange(5)).all()
    assert (batch.y_tr != torch.arange(5)).any(), "the support must not come in label order"
    # The query images are other drawings of the support's characters.
    for i in range(3):
        assert not any(torch.equal(q, s) for q in batch.x_ts[i] for s in batch.x_tr[i])


def test_image_encoder_kinds():
    x = torch.rand(2, 3, 16)
    assert torch.equal(ImageEncoder(16, "pixels")(x), x)
    mlp = ImageEncoder(16, "mlp", dim=5, hidden=7)
    assert mlp(x).shape == (2, 3, 5) and mlp.dim == 5


def test_resize_images_keeps_dtype_and_mean():
    images = (torch.rand(3, 2, 28, 28) * 255).to(torch.uint8)
    small = resize_images(images, 20)
    assert small.shape == (3, 2, 20, 20) and small.dtype == torch.uint8
    assert abs(small.float().mean() - images.float().mean()) < 2
    with pytest.raises(TypeError, match="uint8"):
        resize_images(images.float(), 20)
