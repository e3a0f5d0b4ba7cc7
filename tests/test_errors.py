"""Bad input gets a clear error that names what was given and what is allowed: the hostile and
careless inputs a review found, one test each."""

import pytest
import torch

from mlcourse.meta.imaml import IMAML
from mlcourse.meta.maml import MAML
from mlcourse.meta.reptile import Reptile
from mlcourse.nets import MLP, Conv4, forward
from mlcourse.tasks import SinusoidFamily, TaskBatch


def batch(tasks=2, shots=3):
    return SinusoidFamily().sample(tasks, shots, device="cpu", generator=torch.Generator().manual_seed(0))


def test_parameters_missing_an_entry_are_refused_not_filled_in():
    net = MLP((1, 4, 1))
    theta = MAML(net, "mse").init_params("cpu")
    del theta["layers.0.bias"]
    with pytest.raises(ValueError, match=r"missing \['layers.0.bias'\]"):
        forward(net, theta, torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"missing \['layers.0.bias'\]"):
        MAML(net, "mse").meta_gradient(theta, batch())
    extra = {**MAML(net, "mse").init_params("cpu"), "stray": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected \['stray'\]"):
        forward(net, extra, torch.zeros(2, 1))


@pytest.mark.parametrize("make", [lambda n: MAML(n, "mse"), lambda n: Reptile(n, "mse"),
                                  lambda n: IMAML(n, "mse", on_cg_failure="ignore")], ids=["MAML", "Reptile", "iMAML"])
def test_an_empty_theta_is_a_clear_error(make):
    with pytest.raises(ValueError, match="θ is empty"):
        make(MLP((1, 4, 1))).meta_gradient({}, batch())


def test_per_parameter_rates_must_cover_theta_and_be_tensors():
    maml = MAML(MLP((1, 4, 1)), "mse", inner_lr=0.1)
    theta = maml.init_params("cpu")
    rates = {k: torch.full_like(v, 0.1) for k, v in theta.items()}
    del rates["layers.2.weight"]
    with pytest.raises(ValueError, match=r"one entry per parameter; missing \['layers.2.weight'\]"):
        maml.adapt(theta, batch()[0], inner_lr=rates)
    with pytest.raises(TypeError, match=r"inner_lr \(α\)\['layers.0.bias'\] must be a tensor, got float"):
        maml.adapt(theta, batch()[0], inner_lr={**rates, "layers.2.weight": rates["layers.0.weight"][:1, :1],
                                                "layers.0.bias": 0.1})
    with pytest.raises(ValueError, match="does not broadcast"):
        maml.adapt(theta, batch()[0], inner_lr={k: torch.ones(7) for k in theta})
    with pytest.raises(ValueError, match=r"inner_lr \(α\) must be a positive finite number, got -0.5"):
        maml.adapt(theta, batch()[0], inner_lr=-0.5)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_parameters_need_a_floating_point_dtype(dtype):
    with pytest.raises(ValueError, match=f"floating-point dtype .* got {dtype}"):
        MAML(MLP(), "mse").init_params("cpu", dtype)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_a_gpu_asked_for_where_there_is_none():
    with pytest.raises(RuntimeError, match="'cuda' asked for, but this torch sees no CUDA GPU"):
        MAML(MLP(), "mse").init_params("cuda")
    with pytest.raises(ValueError, match="'tpu' is not a device"):
        MAML(MLP(), "mse").init_params("tpu")


@pytest.mark.parametrize("damping", ["x", float("inf"), float("nan"), -1.0, None])
def test_imaml_damping_must_be_a_finite_number(damping):
    with pytest.raises(ValueError, match=f"damping must be a finite number >= 0, got {damping!r}"):
        IMAML(MLP(), "mse", damping=damping)


def test_wrong_shaped_task_batches_get_errors_that_name_the_shapes():
    maml = MAML(MLP((1, 4, 1)), "mse")
    theta = maml.init_params("cpu")
    wide = TaskBatch(torch.zeros(2, 3, 2), torch.zeros(2, 3, 1), torch.zeros(2, 3, 2), torch.zeros(2, 3, 1))
    with pytest.raises(ValueError, match=r"MLP cannot read inputs of shape \(2,\).*\(2, 3, 2\)"):
        maml.meta_gradient(theta, wide)
    targets = TaskBatch(torch.zeros(2, 3, 1), torch.zeros(2, 3, 4), torch.zeros(2, 3, 1), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"predicts \(1,\) per example but the task batch's targets are \(4,\)"):
        maml.meta_gradient(theta, targets)
    conv = MAML(Conv4(5, channels=4), "cross_entropy")
    phi = conv.init_params("cpu")
    images = TaskBatch(torch.zeros(1, 5, 3, 28, 28), torch.arange(5)[None], torch.zeros(1, 5, 3, 28, 28),
                       torch.arange(5)[None])
    with pytest.raises(ValueError, match=r"Conv4 cannot read inputs of shape \(3, 28, 28\)"):
        conv.meta_gradient(phi, images)
    labels = TaskBatch(torch.zeros(1, 5, 1, 28, 28), torch.arange(5)[None] + 3, torch.zeros(1, 5, 1, 28, 28),
                       torch.arange(5)[None])
    with pytest.raises(ValueError, match=r"labels must lie in 0..4 \(the network has 5 outputs\), got 3..7"):
        conv.meta_gradient(phi, labels)
