"""The in-context transformer: shapes, its causal mask, its keys-and-values state φ, gradients."""

import pytest
import torch

from finite_differences import assert_gradient_matches_finite_differences
from mlcourse.meta.sequences import SequenceLearner
from mlcourse.meta.transformer import Block, InContextTransformer
from mlcourse.tasks import TaskBatch

D = torch.float64


def net(layers=2, **kw):
    args = dict(pixels=6, classes=3, dim=8, heads=2, layers=layers, embedding=5)
    args.update(kw)
    return InContextTransformer(**args).double()


def data(b=2, t=6, q=4):
    g = torch.Generator().manual_seed(3)
    return (torch.rand(b, t, 6, dtype=D, generator=g), torch.randint(0, 3, (b, t), generator=g),
            torch.rand(b, q, 6, dtype=D, generator=g))


def test_shapes_and_the_state_is_every_layers_keys_and_values():
    model = net(layers=3)
    x, y, xq = data()
    online, queries, state = model(x, y, xq, return_state=True)
    assert online.shape == (2, 6, 3) and queries.shape == (2, 4, 3)
    assert len(state["cache"]) == 3
    for keys, values in state["cache"]:
        assert keys.shape == values.shape == (2, 2, 6, 4)  # [episodes, heads, pairs, dim / heads]
    torch.testing.assert_close(model.answer(state, xq), queries)


def test_attention_weights_of_the_online_queries_respect_the_mask():
    model = net()
    x, y, _ = data()
    logits, weights = model.trace(x, y)
    torch.testing.assert_close(logits, model(x, y)[0])
    assert len(weights) == 2
    for w in weights:
        assert w.shape == (2, 2, 6, 7)  # pairs 0..5, then the query itself
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 6, dtype=D))
        pairs = w[..., :6]
        later_or_own = torch.ones(6, 6, dtype=torch.bool).triu()  # pair s >= t: its own label or later
        assert (pairs[..., later_or_own] == 0).all()
        assert (w[..., 0, -1] == 1).all()  # the first query sees nothing but itself


@pytest.mark.parametrize("layers", [1, 2])
def test_no_prediction_depends_on_its_own_label_or_on_later_steps(layers):
    model = net(layers)
    x, y, _ = data()
    online = model(x, y)[0]
    for t in range(6):
        x2, y2 = x.clone(), y.clone()
        y2[:, t] = (y2[:, t] + 1) % 3               # the label of step t itself
        x2[:, t + 1:] = torch.rand_like(x2[:, t + 1:])  # every later image
        y2[:, t + 1:] = (y2[:, t + 1:] + 2) % 3      # and every later label
        changed = model(x2, y2)[0]
        torch.testing.assert_close(changed[:, :t + 1], online[:, :t + 1])
    # ... while an earlier label does change the prediction (the test can fail).
    y3 = y.clone()
    y3[:, 0] = (y3[:, 0] + 1) % 3
    assert not torch.allclose(model(x, y3)[0][:, 1:], online[:, 1:])


def test_one_layer_reads_the_prompt_as_a_set():
    """Without position embeddings, a one-layer transformer's answer to a query does not depend on the
    order of D^tr (deeper ones do, through the causal mask among the pairs)."""
    x, y, xq = data()
    order = torch.randperm(6)
    one = net(layers=1)
    torch.testing.assert_close(one(x[:, order], y[:, order], xq)[1], one(x, y, xq)[1])
    two = net(layers=2)
    assert not torch.allclose(two(x[:, order], y[:, order], xq)[1], two(x, y, xq)[1])


def test_a_block_attending_to_nothing_but_itself_keeps_its_value():
    block = Block(8, 2).double()
    tokens = torch.randn(1, 3, 8, dtype=D)
    keys, values = block.keys_values(torch.randn(1, 5, 8, dtype=D))
    out = block(tokens, keys, values, torch.zeros(3, 5, dtype=torch.bool), attend_self=True)
    own_v = block.value(block.norm1(tokens))
    expected = tokens + block.proj(own_v)
    torch.testing.assert_close(out, expected + block.mlp(block.norm2(expected)))


def test_meta_gradient_matches_finite_differences():
    model = net()
    learner = SequenceLearner(model)
    theta = learner.init_params("cpu", D)
    x, y, xq = data(t=4, q=2)
    batch = TaskBatch(x, y, xq, torch.randint(0, 3, (2, 2)))

    def loss(params):
        return learner.task_metrics(params, batch)["loss"].mean()

    assert_gradient_matches_finite_differences(loss, theta)


def test_label_embeddings_start_small():
    model = InContextTransformer(6, 3, label_std=0.02)
    assert model.label.weight.std() < 0.05 and model.label.weight.shape == (4, 64)


def test_bad_settings_give_clear_errors():
    with pytest.raises(ValueError, match="dim=10 must be a multiple of heads=4"):
        InContextTransformer(6, 3, dim=10, heads=4)
    with pytest.raises(ValueError, match="layers must be an int >= 1"):
        InContextTransformer(6, 3, layers=0)
    with pytest.raises(ValueError, match="label_std"):
        InContextTransformer(6, 3, label_std=-1)
    model = net()
    x, y, _ = data()
    with pytest.raises(ValueError, match=r"\[episodes, steps, 6\]"):
        model(x[..., :5], y)
