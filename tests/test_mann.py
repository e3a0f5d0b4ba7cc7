"""The memory-augmented network, its LSTM baseline and the episode sequences they read."""

import pytest
import torch

from mlcourse.meta.mann import (MANN, LSTMLearner, cosine_similarity, least_used, read_weights, update_usage,
                                write_memory, write_weights)
from mlcourse.meta.sequences import (OmniglotSequences, accuracy_by_instance, instance_numbers, label_inputs,
                                     resize_images, sequence_metrics, sequence_step)
from mlcourse.nets import forward, init_params

D = torch.float64


def tiny_mann(**kw):
    args = dict(input_size=7, classes=3, hidden=8, slots=6, width=4, heads=2)
    args.update(kw)
    return MANN(**args)


# --- addressing -------------------------------------------------------------------------------
def test_reads_are_convex_combinations_of_memory_rows():
    memory = torch.randn(5, 10, 4, dtype=D)
    keys = torch.randn(5, 3, 4, dtype=D)
    w = read_weights(keys, memory)
    assert w.shape == (5, 3, 10)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(5, 3, dtype=D))
    # The largest weight goes to the row most similar to the key.
    cos = torch.nn.functional.cosine_similarity(keys.unsqueeze(2), memory.unsqueeze(1), dim=-1)
    torch.testing.assert_close(cosine_similarity(keys, memory), cos)
    assert torch.equal(w.argmax(-1), cos.argmax(-1))


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
    alpha = torch.full((2, 1), -60.0, dtype=D)  # σ(α) ≈ 0: write only to the least-used slot
    ww = write_weights(prev_read, lu, alpha)
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
    alpha = torch.randn(3, 2, dtype=D)
    g = torch.sigmoid(alpha)[..., None]
    torch.testing.assert_close(write_weights(prev_read, lu, alpha), g * prev_read + (1 - g) * lu)
    torch.testing.assert_close(write_weights(prev_read, lu, alpha).sum(-1), torch.ones(3, 2, dtype=D))


def test_usage_update_as_specified():
    usage, read, write = torch.rand(4, 6, dtype=D), torch.rand(4, 2, 6, dtype=D), torch.rand(4, 2, 6, dtype=D)
    expected = 0.9 * usage + read[:, 0] + read[:, 1] + write[:, 0] + write[:, 1]
    torch.testing.assert_close(update_usage(usage, read, write, 0.9), expected)


def test_trace_follows_the_lrua_rules():
    net = tiny_mann().double()
    x = torch.randn(2, 9, 7, dtype=D)
    _, tr = net.trace(x)
    assert tr["read"].shape == (2, 9, 2, 6) and tr["usage"].shape == (2, 9, 6) and tr["memory"].shape == (2, 9, 6, 4)
    usage = torch.zeros(2, 6, dtype=D)
    for t in range(9):
        usage = update_usage(usage, tr["read"][:, t], tr["write"][:, t], net.gamma)
        torch.testing.assert_close(tr["usage"][:, t], usage)
    # At t = 0 there is no previous read: head h writes only to the h-th least-used slot (slot h,
    # all usages being 0), with weight 1 − σ(α).
    first = tr["write"][:, 0]
    assert (first[:, 0, 1:] == 0).all() and (first[:, 1, 0] == 0).all() and (first[:, 1, 2:] == 0).all()
    assert ((first[:, 0, 0] > 0) & (first[:, 0, 0] < 1)).all()
    # Later writes mix the previous reads in: their rows sum to one.
    torch.testing.assert_close(tr["write"][:, 1:].sum(-1), torch.ones(2, 8, 2, dtype=D))
    # Only slots 0 and 1 hold anything after the first step.
    assert (tr["memory"][:, 0, 2:] == 0).all() and (tr["memory"][:, 0, :2] != 0).any()


# --- networks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [tiny_mann, lambda: LSTMLearner(7, 3, hidden=8)], ids=["mann", "lstm"])
def test_batched_episodes_equal_a_loop_over_episodes(make):
    net = make().double()
    theta = init_params(net, dtype=D)
    x = torch.randn(4, 11, 7, dtype=D)
    batched = forward(net, theta, x)
    assert batched.shape == (4, 11, 3)
    looped = torch.cat([forward(net, theta, x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, looped)


def test_outputs_are_causal():
    """The prediction at step t depends on steps <= t only (the next label is not peeked at)."""
    net = tiny_mann().double()
    x = torch.randn(1, 8, 7, dtype=D)
    y = net(x)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(1, 3, 7, dtype=D)
    torch.testing.assert_close(net(x2)[:, :5], y[:, :5])


@pytest.mark.parametrize("make", [lambda: tiny_mann(slots=4, hidden=5), lambda: LSTMLearner(7, 3, hidden=5)],
                         ids=["mann", "lstm"])
def test_gradients_match_finite_differences(make):
    net = make().double()
    theta = init_params(net, dtype=D)
    x = torch.randn(2, 5, 4, dtype=D)  # 4 pixels + 3 one-hot labels = 7 inputs per step
    y = torch.randint(0, 3, (2, 5))
    names = list(theta)

    def loss(*values):
        return sequence_metrics(net, dict(zip(names, values)), x, y)["loss"]

    assert torch.autograd.gradcheck(loss, tuple(theta.values()), eps=1e-6, atol=1e-5)


def test_tiny_mann_overfits_one_episode():
    torch.manual_seed(0)
    net = MANN(input_size=8 + 3, classes=3, hidden=32, slots=8, width=8, heads=1)
    theta = init_params(net)
    x = torch.rand(1, 12, 8)
    y = torch.tensor([[0, 1, 2, 1, 0, 2, 2, 1, 0, 0, 2, 1]])
    optimizer = torch.optim.Adam(theta.values(), lr=1e-2)
    first = sequence_step(net, theta, optimizer, x, y)["loss"]
    for _ in range(150):
        metrics = sequence_step(net, theta, optimizer, x, y)
    assert first > 1.0 and metrics["loss"] < 0.05 and metrics["accuracy"] == 1.0


def test_bad_inputs_give_clear_errors():
    net = tiny_mann()
    with pytest.raises(ValueError, match=r"inputs \[episodes, T, 7\].*got \(2, 5\)"):
        net(torch.randn(2, 5))
    with pytest.raises(ValueError, match="got \\(2, 5, 6\\)"):
        net(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match="heads=5.*slots=4"):
        MANN(7, 3, slots=4, heads=5)
    with pytest.raises(ValueError, match="gamma"):
        MANN(7, 3, gamma=1.5)
    with pytest.raises(ValueError, match="slots must be an int >= 1"):
        MANN(7, 3, slots=0)
    with pytest.raises(ValueError, match=r"labels must lie in 0..2, got values in 0..3"):
        label_inputs(torch.randn(1, 4, 4), torch.tensor([[0, 1, 3, 2]]), 3)
    with pytest.raises(TypeError, match="int64"):
        label_inputs(torch.randn(1, 4, 4), torch.zeros(1, 4), 3)


# --- sequences --------------------------------------------------------------------------------
def test_label_inputs_carry_the_previous_label():
    x = torch.randn(2, 4, 3)
    y = torch.tensor([[2, 0, 1, 1], [0, 0, 2, 1]])
    z = label_inputs(x, y, 3)
    assert z.shape == (2, 4, 6)
    torch.testing.assert_close(z[..., :3], x)
    assert z[:, 0, 3:].abs().sum() == 0
    assert z[0, 1:, 3:].argmax(-1).tolist() == [2, 0, 1]


def test_instance_numbers_and_accuracy_by_instance():
    y = torch.tensor([[1, 0, 1, 1, 0]])
    assert instance_numbers(y, 2).tolist() == [[1, 1, 2, 3, 2]]
    logits = torch.nn.functional.one_hot(torch.tensor([[1, 1, 0, 1, 0]]), 2).float()  # right at 0, 3, 4
    acc = accuracy_by_instance(logits, y, instances=(1, 2, 3))
    torch.testing.assert_close(acc, torch.tensor([[0.5, 0.5, 1.0]]))


def test_sequences_hold_every_class_instances_times_in_a_shuffled_order():
    images = (torch.rand(12, 20, 28, 28) * 255).to(torch.uint8)
    seqs = OmniglotSequences(images, classes=5, instances=10, image_size=20, device="cpu")
    x, y = seqs.sample(6, torch.Generator().manual_seed(0))
    assert x.shape == (6, 50, 400) and y.shape == (6, 50) and seqs.input_size == 405
    assert 0 <= x.min() and x.max() <= 1
    assert (torch.nn.functional.one_hot(y, 5).sum(1) == 10).all()
    assert not (y == y.sort(1).values).all(), "the order within episodes must be shuffled"


def test_resize_images_keeps_dtype_and_mean():
    images = (torch.rand(3, 2, 28, 28) * 255).to(torch.uint8)
    small = resize_images(images, 20)
    assert small.shape == (3, 2, 20, 20) and small.dtype == torch.uint8
    assert abs(small.float().mean() - images.float().mean()) < 2
    with pytest.raises(TypeError, match="uint8"):
        resize_images(images.float(), 20)
