import pytest
import torch
from torch import nn

from mlcourse.nets import MLP, BatchNorm, Conv4, count_params, forward, init_params


def test_mlp_is_the_paper_network():
    net = MLP()
    assert [m.out_features for m in net.modules() if isinstance(m, nn.Linear)] == [40, 40, 1]
    assert forward(net, init_params(net, "cpu"), torch.randn(7, 1)).shape == (7, 1)


@pytest.mark.parametrize("downsample,size", [("maxpool", 28), ("stride", 28), ("maxpool", 84)])
def test_conv4_shapes(downsample, size):
    net = Conv4(ways=5, image_size=size, downsample=downsample)
    theta = init_params(net, "cpu")
    assert forward(net, theta, torch.rand(3, 1, size, size)).shape == (3, 5)
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == 4


@pytest.mark.parametrize("activation,expected", [("relu", torch.relu), ("tanh", torch.tanh)])
def test_the_task_batched_forward_is_the_per_task_forward(activation, expected):
    net = MLP((1, 6, 5, 2), activation=activation).double()
    theta = {k: torch.randn(3, *v.shape, dtype=torch.float64) for k, v in init_params(net, "cpu").items()}
    x = torch.randn(3, 4, 1, dtype=torch.float64)
    batched = net.forward_tasks(theta, x)
    for i in range(3):
        torch.testing.assert_close(batched[i], forward(net, {k: v[i] for k, v in theta.items()}, x[i]))
    w, b = theta["layers.0.weight"][0], theta["layers.0.bias"][0]
    hidden = expected(x[0] @ w.T + b)
    torch.testing.assert_close(hidden, net.layers[1](x[0] @ w.T + b))


def test_forward_uses_the_given_parameters_not_the_modules():
    net = MLP((2, 3, 1))
    theta = {k: torch.zeros_like(v) for k, v in init_params(net, "cpu").items()}
    assert torch.equal(forward(net, theta, torch.randn(4, 2)), torch.zeros(4, 1))


def test_batch_norm_uses_batch_statistics_only():
    bn, reference = BatchNorm(4), nn.BatchNorm2d(4, track_running_stats=False)
    x = torch.randn(6, 4, 5, 5, dtype=torch.float64) * 3 + 1
    torch.testing.assert_close(bn.double()(x), reference.double()(x))
    assert not list(bn.buffers())


def test_init_params_are_fresh_leaves():
    net = MLP()
    theta = init_params(net, "cpu", torch.float64)
    assert all(p.is_leaf and p.requires_grad and p.dtype == torch.float64 for p in theta.values())
    assert count_params(theta) == 1 * 40 + 40 + 40 * 40 + 40 + 40 + 1
    theta["layers.0.weight"].data.zero_()
    assert net.layers[0].weight.abs().sum() > 0   # the module's own tensors are untouched


def test_stateful_networks_are_refused():
    with pytest.raises(ValueError, match="track_running_stats=False"):
        init_params(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), "cpu")


@pytest.mark.parametrize("make,message", [
    (lambda: MLP((1,)), "needs an input and an output size"),
    (lambda: MLP((1, 0, 1)), "layer size must be an int >= 1, got 0"),
    (lambda: MLP(activation="sigmoid"), r"activation must be one of \('relu', 'tanh'\), got 'sigmoid'"),
    (lambda: Conv4(downsample="avg"), "downsample must be 'maxpool' or 'stride'"),
    (lambda: Conv4(image_size=8), "too small"),
])
def test_bad_networks(make, message):
    with pytest.raises(ValueError, match=message):
        make()
