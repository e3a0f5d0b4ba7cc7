"""Fine-tuning: the exact update with layer-wise rates, frozen layers, the unfreezing schedule,
head re-initialisation, cross-validation that never reads D^ts, vmap against a loop, pretraining,
and clear errors."""

import pytest
import torch
from torch import nn
from torch.func import grad

from mlcourse.meta.finetune import (cross_validate, descend, evaluate, finetune, new_head, options, plan,
                                    scratch_params, start_params)
from mlcourse.meta.finetune_options import layer_groups
from mlcourse.meta.functional import sgd_steps, task_loss
from mlcourse.meta.pretrain import pretrain
from mlcourse.nets import Conv4, init_params
from mlcourse.tasks import EpisodeSampler, TaskBatch

F64 = torch.float64
WAYS = 3


class Tiny(nn.Module):
    """Three layer groups: body.0, body.1 (a Sequential) and head."""

    def __init__(self, ways=WAYS):
        super().__init__()
        self.body = nn.Sequential(nn.Sequential(nn.Linear(4, 5), nn.Tanh()), nn.Sequential(nn.Linear(5, 6), nn.Tanh()))
        self.head = nn.Linear(6, ways)

    def forward(self, x):
        return self.head(self.body(x))


def tiny(ways=WAYS, shots=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    net = Tiny(ways)
    theta = {k: v.detach().to(F64) for k, v in net.named_parameters()}
    x = torch.randn(ways * shots, 4, generator=gen, dtype=F64)
    y = torch.arange(ways).repeat_interleave(shots)
    return net, theta, x, y


def group(name):
    return ".".join(name.split(".")[:2]) if name.startswith("body") else "head"


def changed(a, b):
    return {k for k in a if a[k].shape != b[k].shape or not torch.equal(a[k], b[k])}


def test_default_groups_follow_the_modules():
    net, theta, _, _ = tiny()
    assert [g for g, _ in layer_groups(theta)] == ["body.0", "body.1", "head"]
    conv = init_params(Conv4(5, channels=4))
    assert [g for g, _ in layer_groups(conv)] == ["features.0", "features.1", "features.2", "features.3", "head"]


def test_one_step_with_layer_wise_rates_is_exact():
    net, theta, x, y = tiny()
    alpha, decay = 0.3, 0.5
    phi = finetune(net, theta, x, y, lr=alpha, steps=1, head="keep", layer_lr=decay)
    g = grad(task_loss(net, "cross_entropy"))(theta, x, y)
    rate = {"body.0": alpha * decay**2, "body.1": alpha * decay, "head": alpha}
    for k in theta:
        expected = theta[k] - rate[group(k)] * g[k]
        torch.testing.assert_close(phi[k], expected, rtol=1e-12, atol=1e-12)
    # A dict of multipliers sets the named groups and leaves the others at α.
    phi = finetune(net, theta, x, y, lr=alpha, steps=1, head="keep", layer_lr={"body": 0.1})
    for k in theta:
        m = 0.1 if k.startswith("body") else 1.0
        torch.testing.assert_close(phi[k], theta[k] - alpha * m * g[k], rtol=1e-12, atol=1e-12)


def test_plain_descent_equals_the_packages_sgd_steps():
    net, theta, x, y = tiny()
    phi = finetune(net, theta, x, y, lr=0.2, steps=3, head="keep")
    reference = sgd_steps(task_loss(net, "cross_entropy"), theta, x, y, 0.2, 3)
    for k in theta:
        torch.testing.assert_close(phi[k], reference[k])


def test_frozen_layers_do_not_change():
    net, theta, x, y = tiny()
    phi = finetune(net, theta, x, y, lr=0.5, steps=4, head="keep", freeze=["body.0"])
    assert changed(theta, phi) == {"body.1.0.weight", "body.1.0.bias", "head.weight", "head.bias"}
    phi = finetune(net, theta, x, y, lr=0.5, steps=4, head="keep", freeze="body")
    assert changed(theta, phi) == {"head.weight", "head.bias"}


def test_gradual_unfreezing_follows_its_schedule():
    net, theta, x, y = tiny()
    schedule, _ = plan(theta, options(steps=7, unfreeze_every=3))
    groups = [sorted({group(n) for n in s}) for s in schedule]
    assert groups == [["head"]] * 3 + [["body.1", "head"]] * 3 + [["body.0", "body.1", "head"]]
    for steps, moved in [(3, {"head"}), (6, {"head", "body.1"}), (7, {"head", "body.1", "body.0"})]:
        phi = finetune(net, theta, x, y, lr=0.5, steps=steps, head="keep", unfreeze_every=3)
        assert {group(k) for k in changed(theta, phi)} == moved
    # Freezing wins over unfreezing: body.0 stays frozen even after its turn.
    phi = finetune(net, theta, x, y, lr=0.5, steps=9, head="keep", unfreeze_every=3, freeze="body.0")
    assert not any(k.startswith("body.0") for k in changed(theta, phi))


@pytest.mark.parametrize("how", ["random", "zero"])
def test_reinitialisation_changes_only_the_head(how):
    net, theta, x, y = tiny(ways=WAYS)
    phi = finetune(net, theta, x, y, ways=5, lr=0.1, steps=0, head=how, generator=torch.Generator().manual_seed(1))
    assert changed(theta, phi) == {"head.weight", "head.bias"}
    assert phi["head.weight"].shape == (5, 6) and phi["head.bias"].shape == (5,)
    if how == "zero":
        assert not phi["head.weight"].any()
    else:
        assert phi["head.weight"].abs().max() <= 1 / 6**0.5 and phi["head.weight"].std() > 0
    stacked = new_head(theta, 5, how, tasks=4, generator=torch.Generator().manual_seed(0))
    assert stacked["head.weight"].shape == (4, 5, 6)


def test_scratch_is_a_fresh_reproducible_initialisation():
    net, theta, x, y = tiny()
    a, b = scratch_params(net, theta, seed=3), scratch_params(net, theta, seed=3)
    assert changed(a, b) == set() and changed(theta, a) == set(theta)
    phi0 = start_params(net, theta, WAYS, options(init="scratch", head="keep"), torch.Generator().manual_seed(0))
    assert changed(theta, phi0) == set(theta)


def _episodes(tasks=4, shots=3, queries=2, seed=0):
    images = (torch.rand(12, 6, 28, 28, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8)
    return EpisodeSampler(images, WAYS, shots, queries, device="cpu").sample(
        tasks, generator=torch.Generator().manual_seed(seed))


def test_cross_validation_never_reads_the_query_set():
    net = Conv4(WAYS, channels=4, downsample="stride")
    theta = {k: v.detach() for k, v in init_params(net).items()}
    episodes = _episodes()
    poisoned = TaskBatch(episodes.x_tr, episodes.y_tr, torch.full_like(episodes.x_ts, float("nan")),
                         torch.zeros_like(episodes.y_ts))
    select = {"lr": [0.01, 0.3, 3.0], "steps": [1, 3]}
    clean = evaluate(net, theta, episodes, seed=0, select=select, folds=3)
    dirty = evaluate(net, theta, poisoned, seed=0, select=select, folds=3)
    assert torch.equal(clean["lr"], dirty["lr"]) and torch.equal(clean["steps"], dirty["steps"])
    assert torch.isfinite(clean["loss"]).all() and torch.isnan(dirty["loss"]).all()


def test_cross_validation_folds_and_choice():
    net, theta, x, y = tiny(shots=4)
    o = options(select={"lr": [1e-6, 0.5], "steps": [5, 20]}, folds=2)
    lr, steps = cross_validate(net, theta, x, y, WAYS, 4, o)
    assert float(lr) == 0.5  # a rate that does nothing cannot beat one that learns
    with pytest.raises(ValueError, match="at least 2 shots per class"):
        cross_validate(net, theta, x[::4], y[::4], WAYS, 1, o)


@pytest.mark.parametrize("opts", [dict(lr=0.1, steps=2), dict(lr=0.1, steps=2, unfreeze_every=1, init="scratch"),
                                  dict(select={"lr": [0.05, 0.2], "steps": [1, 2]}, folds=2)])
def test_vmap_over_episodes_equals_a_loop(opts):
    net = Conv4(WAYS, channels=4, downsample="stride")
    theta = {k: v.detach().to(F64) for k, v in init_params(net).items()}
    episodes = _episodes().to("cpu", dtype=F64)
    a = evaluate(net, theta, episodes, seed=2, execution="vmap", **opts)
    b = evaluate(net, theta, episodes, seed=2, execution="loop", **opts)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_pretraining_learns_the_source_classes():
    images = torch.zeros(4, 6, 28, 28, dtype=torch.uint8)
    for c in range(4):  # class c: a bright square in quadrant c
        images[c, :, (c // 2) * 14:(c // 2) * 14 + 10, (c % 2) * 14:(c % 2) * 14 + 10] = 255
    net = Conv4(4, channels=4, downsample="stride")
    theta, history = pretrain(net, images, steps=30, batch_size=16, lr=1e-2, holdout=1, progress=False)
    assert history.last()["holdout_accuracy"] == 1.0
    with pytest.raises(ValueError, match="4 source classes"):
        pretrain(Conv4(5, channels=4), images, steps=1, progress=False)


def test_bad_options_are_refused_with_a_clear_message():
    net, theta, x, y = tiny()
    with pytest.raises(ValueError, match=r"unknown fine-tuning option\(s\) \['learning_rate'\]; allowed: lr"):
        finetune(net, theta, x, y, learning_rate=0.1)
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="lr"):
            finetune(net, theta, x, y, lr=bad)
    with pytest.raises(ValueError, match="freeze names a layer 'body.7'.*'body.0', 'body.1', 'head'"):
        finetune(net, theta, x, y, freeze=["body.7"])
    with pytest.raises(ValueError, match="layer_lr names a layer 'neck'"):
        finetune(net, theta, x, y, layer_lr={"neck": 0.1})
    with pytest.raises(ValueError, match=r"decay factor must lie in \(0, 1\]"):
        finetune(net, theta, x, y, layer_lr=2.0)
    with pytest.raises(ValueError, match="head must be one of"):
        finetune(net, theta, x, y, head="new")
    with pytest.raises(ValueError, match="head='keep' needs a head with 5 outputs"):
        finetune(net, theta, x, y, ways=5, head="keep")
    with pytest.raises(ValueError, match="select must be a dict"):
        finetune(net, theta, x, y, select={"momentum": [0.9]})
    with pytest.raises(ValueError, match="steps"):
        finetune(net, theta, x, y, steps=-1)
    with pytest.raises(ValueError, match="same number of examples of each"):
        finetune(net, theta, x[:-1], y[:-1], select={"lr": [0.1]})
    with pytest.raises(TypeError, match="TaskBatch"):
        evaluate(net, theta, (x, y))
    with pytest.raises(ValueError, match="group 'tail' matches no parameter"):
        finetune(net, theta, x, y, groups=["body", "tail"])
    assert descend(net, theta, x, y, 0.1, [], {}) is theta  # zero steps: φ = θ


def test_folds_partition_the_training_set_class_by_class():
    from mlcourse.meta.finetune import _folds

    y = torch.tensor([2, 0, 1, 0, 2, 1, 1, 0, 2, 0, 1, 2])  # 3 classes, 4 shots each, shuffled
    folds = list(_folds(y, ways=3, shots=4, folds=3))
    held = torch.cat([h for _, h in folds])
    assert sorted(held.tolist()) == list(range(12))        # every example is held out exactly once
    for train_idx, held_idx in folds:
        assert set(train_idx.tolist()).isdisjoint(held_idx.tolist())
        assert len(train_idx) + len(held_idx) == 12
        counts = torch.bincount(y[held_idx], minlength=3)
        assert (counts == counts[0]).all()                 # class-balanced
        assert (torch.bincount(y[train_idx], minlength=3) > 0).all()
