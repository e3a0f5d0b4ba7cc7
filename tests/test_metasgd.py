"""Meta-SGD beyond the MAML tests (tests/test_maml.py checks its rate gradients in both orders on
an MLP): the convolutional network against finite differences, the first iteration equal to
MAML's, the paper's random start of the rates, the per-layer summary, and bad options."""

import pytest
import torch

from mlcourse.meta.maml import MAML
from mlcourse.meta.metasgd import PREFIX, MetaSGD
from mlcourse.nets import MLP, Conv4
from mlcourse.tasks import EpisodeSampler, SinusoidFamily, TaskBatch

F64 = torch.float64


def episodes(tasks=2, size=16):
    torch.manual_seed(0)
    images = (torch.rand(10, 6, size, size) * 255).to(torch.uint8)
    b = EpisodeSampler(images, ways=3, shots=1, queries=2, device="cpu").sample(tasks)
    return TaskBatch(b.x_tr.double(), b.y_tr, b.x_ts.double(), b.y_ts)


def test_conv4_rate_gradients_match_finite_differences():
    torch.manual_seed(1)
    learner = MetaSGD(Conv4(3, channels=2, image_size=16), "cross_entropy", inner_lr=0.2, inner_steps=2,
                      rate_range=(0.05, 0.3))
    theta = learner.init_params("cpu", F64)
    batch = episodes()
    grads = learner.meta_gradient(theta, batch).grads
    eps = 1e-6
    with torch.no_grad():
        for k in [PREFIX + "features.0.0.weight", PREFIX + "features.3.1.bias", PREFIX + "head.weight", "head.bias"]:
            p = theta[k]
            for i in range(2):
                p.view(-1)[i] += eps
                up = float(learner.meta_loss(theta, batch)[0])
                p.view(-1)[i] -= 2 * eps
                down = float(learner.meta_loss(theta, batch)[0])
                p.view(-1)[i] += eps
                torch.testing.assert_close(grads[k].view(-1)[i], torch.tensor((up - down) / (2 * eps), dtype=F64),
                                           rtol=1e-4, atol=1e-8)


def test_constant_rates_give_maml_for_the_network_entries():
    net = MLP((1, 6, 6, 1))
    batch = SinusoidFamily().sample(3, 4, 5, device="cpu", dtype=F64, generator=torch.Generator().manual_seed(2))
    meta_sgd = MetaSGD(net, "mse", inner_lr=0.05, inner_steps=2)
    theta = meta_sgd.init_params("cpu", F64)
    network = {k: v for k, v in theta.items() if not k.startswith(PREFIX)}
    expected = MAML(net, "mse", inner_lr=0.05, inner_steps=2).meta_gradient(network, batch).grads
    got = meta_sgd.meta_gradient(theta, batch).grads
    for k in network:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-12, atol=1e-14)


def test_random_start_of_the_rates_and_the_layer_summary():
    torch.manual_seed(3)
    learner = MetaSGD(MLP(), "mse", inner_lr=0.01, rate_range=(0.005, 0.1))
    theta = learner.init_params("cpu")
    rates = MetaSGD.rates(theta)
    assert rates.keys() == {k for k in theta if not k.startswith(PREFIX)}
    values = torch.cat([r.flatten() for r in rates.values()])
    assert 0.005 <= float(values.min()) and float(values.max()) <= 0.1 and values.std() > 0.01
    summary = MetaSGD.layer_rates(theta)
    mean, low, high = summary["layers.2.weight"]
    assert low <= mean <= high and mean == pytest.approx(float(rates["layers.2.weight"].mean()))
    assert all(v.requires_grad and v.is_leaf for v in theta.values())
    # an explicit start overrides the range
    fixed = learner.init_params("cpu", inner_lr=0.02)
    assert all(torch.all(v == 0.02) for k, v in fixed.items() if k.startswith(PREFIX))


@pytest.mark.parametrize("rate_range,message", [
    ((0.1, 0.01), "low <= high"),
    ((0.0, 0.1), "positive"),
    (0.1, "must be \\(low, high\\)"),
])
def test_bad_rate_ranges(rate_range, message):
    with pytest.raises(ValueError, match=message):
        MetaSGD(MLP(), "mse", rate_range=rate_range)
