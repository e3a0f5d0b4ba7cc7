"""Every learner meets the one interface of mlcourse.meta.learner, in every mode: θ is one flat
dict, the meta-gradient has an entry for every entry of θ and every one of them receives a
gradient, the per-task metrics have one value per task, a step moves θ, and evaluation keeps no
graph. (Each learner's own test file checks the values against finite differences or a closed
form.)"""

import pytest
import torch

from mlcourse.evaluation import evaluate
from mlcourse.meta.anil import ANIL
from mlcourse.meta.cavia import CAVIA, ContextConv4
from mlcourse.meta.imaml import IMAML
from mlcourse.meta.learner import GradientLearner, Learner, MetaGradient
from mlcourse.meta.maml import MAML
from mlcourse.meta.mamlpp import MAMLPlusPlus
from mlcourse.meta.metasgd import MetaSGD
from mlcourse.meta.protonet import Conv4Embedding, ProtoNet
from mlcourse.meta.reptile import Reptile
from mlcourse.nets import MLP, Conv4
from mlcourse.tasks import EpisodeSampler, SinusoidFamily

F64 = torch.float64


def sinusoid_learners():
    return {
        "MAML": MAML(MLP((1, 8, 8, 1)), "mse", inner_lr=0.05, inner_steps=2),
        "first-order MAML": MAML(MLP((1, 8, 8, 1)), "mse", inner_lr=0.05, inner_steps=2, first_order=True),
        "Meta-SGD": MetaSGD(MLP((1, 8, 8, 1)), "mse", inner_lr=0.05, inner_steps=2),
        "first-order Meta-SGD": MetaSGD(MLP((1, 8, 8, 1)), "mse", inner_lr=0.05, inner_steps=2, first_order=True),
        "Reptile": Reptile(MLP((1, 8, 8, 1)), "mse", inner_lr=0.05, inner_steps=3),
        "Reptile (Adam, minibatches)": Reptile(MLP((1, 8, 8, 1)), "mse", inner_lr=0.01, inner_steps=3, inner_batch=2,
                                               inner_optimizer="adam"),
        "iMAML": IMAML(MLP((1, 8, 8, 1)), "mse", lam=2.0, inner_lr=0.05, inner_steps=10, on_cg_failure="ignore"),
        "ANIL": ANIL(MLP((1, 8, 8, 1)), "mse", inner_lr=0.05, inner_steps=2),
        "MAML++ (MSL, LSLR)": MAMLPlusPlus(MLP((1, 8, 8, 1)), "mse", inner_lr=0.05, inner_steps=2, per_step_bn=False),
    }


@pytest.mark.parametrize("name", list(sinusoid_learners()))
def test_the_contract_on_sinusoids(name):
    torch.manual_seed(0)
    learner = sinusoid_learners()[name]
    assert isinstance(learner, GradientLearner) and isinstance(learner, Learner)
    theta = learner.init_params("cpu", F64)
    assert all(v.is_leaf and v.requires_grad and v.dtype == F64 for v in theta.values())
    batch = SinusoidFamily().sample(4, 5, 6, device="cpu", dtype=F64, generator=torch.Generator().manual_seed(1))
    result = learner.meta_gradient(theta, batch)
    assert isinstance(result, MetaGradient)
    grads, metrics = result
    assert grads.keys() == theta.keys()
    for k, g in grads.items():
        assert g.shape == theta[k].shape and torch.isfinite(g).all() and not g.requires_grad
        assert g.abs().max() > 0, f"{name}: {k} receives no gradient"
    assert metrics["loss"].shape == (4,) and all(v.shape[0] == 4 for v in metrics.values())
    before = {k: v.detach().clone() for k, v in theta.items()}
    means = learner.step(theta, torch.optim.SGD(theta.values(), lr=0.1), batch)
    assert set(means) == set(metrics) and all(v.dim() == 0 for v in means.values())
    assert all(not torch.equal(before[k], theta[k].detach()) for k in theta)
    per_task = learner.evaluate(theta, batch)
    assert per_task["loss"].shape == (4,) and not per_task["loss"].requires_grad
    curve = learner.adaptation_curve(theta, batch, 3)
    assert curve["loss"].shape == (4, 4)
    phi = learner.adapt(theta, batch)
    net_keys = {k for k in theta if not k.startswith("lr/")}
    assert phi.keys() == net_keys and all(phi[k].shape == (4, *theta[k].shape) for k in net_keys)
    one = learner.adapt(theta, batch[0])
    assert all(one[k].shape == theta[k].shape for k in net_keys)


@pytest.mark.parametrize("make", [
    lambda: MAML(Conv4(3, channels=4), "cross_entropy", inner_lr=0.4, inner_steps=1, test_steps=2),
    lambda: MetaSGD(Conv4(3, channels=4), "cross_entropy", inner_lr=0.4, inner_steps=1),
    lambda: Reptile(Conv4(3, channels=4), "cross_entropy", inner_lr=0.01, inner_steps=2, inner_optimizer="adam"),
    lambda: IMAML(Conv4(3, channels=4), "cross_entropy", inner_steps=3, on_cg_failure="ignore"),
    lambda: CAVIA(ContextConv4(3, context=4, channels=4), "cross_entropy", inner_lr=1.0, inner_steps=2),
    lambda: ANIL(Conv4(3, channels=4), "cross_entropy", inner_lr=0.4, inner_steps=2),
    lambda: MAMLPlusPlus(Conv4(3, channels=4), "cross_entropy", inner_lr=0.4, inner_steps=2),
    lambda: ProtoNet(Conv4Embedding(channels=4)),
], ids=["MAML", "Meta-SGD", "Reptile", "iMAML", "CAVIA", "ANIL", "MAML++", "ProtoNet"])
def test_the_contract_on_episodes_and_one_evaluation_for_all(make):
    torch.manual_seed(0)
    learner = make()
    images = (torch.rand(10, 6, 28, 28) * 255).to(torch.uint8)
    sampler = EpisodeSampler(images, ways=3, shots=1, queries=2, device="cpu")
    theta = learner.init_params("cpu")
    grads, metrics = learner.meta_gradient(theta, sampler.sample(2))
    assert grads.keys() == theta.keys() and {"loss", "accuracy"} <= metrics.keys()
    result = evaluate(learner, theta, sampler, tasks=5, chunk=2)
    assert result["accuracy"].shape == (5,) and ((0 <= result["accuracy"]) & (result["accuracy"] <= 1)).all()


def test_evaluation_refuses_what_is_not_a_learner():
    with pytest.raises(TypeError, match="expected a Learner"):
        evaluate(object(), {}, None, 3)
