"""Prototypical networks against independent references: a prototype classifier computed by hand
(loops over classes and queries, float64), float64 finite differences of the meta-objective, the
vmap path against the per-task loop, the linear classifier that squared-Euclidean prototypes are,
1-nearest-neighbour for one shot, and every option and bad input."""

import math

import pytest
import torch
from torch import nn

from mlcourse.meta.protonet import Conv4Embedding, ProtoNet, classify, negative_distances, prototypes
from mlcourse.nets import Conv4, forward
from mlcourse.tasks import EpisodeSampler, Task, TaskBatch

F64 = torch.float64


class Linear(nn.Module):
    """A small embedding without batch norm: flatten, then one linear map (and a tanh)."""

    def __init__(self, inputs=12, outputs=3, squash=True):
        super().__init__()
        self.layer = nn.Linear(inputs, outputs)
        self.squash = squash

    def forward(self, x):
        z = self.layer(x.flatten(1))
        return torch.tanh(z) if self.squash else z


def episodes(tasks=2, ways=3, shots=2, queries=2, size=(2, 2, 3), seed=0, dtype=F64):
    """Random inputs of ``size``, class by class, labels 0..ways−1 (as EpisodeSampler orders them)."""
    g = torch.Generator().manual_seed(seed)
    x_tr = torch.randn(tasks, ways * shots, *size, generator=g, dtype=dtype)
    x_ts = torch.randn(tasks, ways * queries, *size, generator=g, dtype=dtype)
    y_tr = torch.arange(ways).repeat_interleave(shots).expand(tasks, -1).clone()
    y_ts = torch.arange(ways).repeat_interleave(queries).expand(tasks, -1).clone()
    return TaskBatch(x_tr, y_tr, x_ts, y_ts)


def by_hand(embed, task: Task, distance="squared_euclidean"):
    """The prototype classifier of Snell et al. written out with loops: (prototypes, loss, accuracy)."""
    z_tr, z_ts = embed(task.x_tr), embed(task.x_ts)
    ways = int(task.y_tr.max()) + 1
    protos = []
    for k in range(ways):
        members = [z_tr[j] for j in range(len(task.y_tr)) if int(task.y_tr[j]) == k]
        total = members[0]
        for m in members[1:]:
            total = total + m
        protos.append(total / len(members))
    loss, correct = 0.0, 0
    for q in range(len(task.y_ts)):
        scores = []
        for c in protos:
            if distance == "squared_euclidean":
                scores.append(-sum((z_ts[q][d] - c[d]) ** 2 for d in range(len(c))))
            else:
                dot = sum(z_ts[q][d] * c[d] for d in range(len(c)))
                scores.append(dot / (z_ts[q].norm() * c.norm()))
        top = max(scores)
        log_norm = top + math.log(sum(math.exp(float(s - top)) for s in scores))
        loss -= float(scores[int(task.y_ts[q])]) - log_norm
        correct += int(max(range(ways), key=lambda k: float(scores[k])) == int(task.y_ts[q]))
    return torch.stack(protos), loss / len(task.y_ts), correct / len(task.y_ts)


@pytest.mark.parametrize("distance", ["squared_euclidean", "cosine"])
def test_prototypes_loss_and_accuracy_match_the_classifier_by_hand(distance):
    torch.manual_seed(0)
    net = Linear()
    protonet = ProtoNet(net, distance=distance, batch_statistics="separate")
    theta = protonet.init_params("cpu", F64)
    batch = episodes(tasks=3)
    metrics = protonet.evaluate(theta, batch)
    adapted = protonet.adapt(theta, batch)
    assert adapted.shape == (3, batch.shots, 3)   # one slot per possible label; 3 classes present
    fixed = {k: v.detach() for k, v in theta.items()}
    for i, task in enumerate(batch):
        protos, loss, accuracy = by_hand(lambda x: forward(net, fixed, x), task, distance)
        torch.testing.assert_close(adapted[i, :3].detach(), protos)
        assert torch.all(adapted[i, 3:] == 0)
        assert math.isclose(float(metrics["loss"][i]), loss, rel_tol=1e-10)
        assert math.isclose(float(metrics["accuracy"][i]), accuracy, rel_tol=1e-6)  # a float32 mean
    torch.testing.assert_close(protonet.adapt(theta, batch[1]), adapted[1])


def test_meta_gradient_matches_finite_differences():
    torch.manual_seed(1)
    protonet = ProtoNet(Linear(), batch_statistics="separate")
    theta = protonet.init_params("cpu", F64)
    batch = episodes(tasks=2)
    analytic = protonet.meta_gradient(theta, batch).grads
    eps = 1e-6
    with torch.no_grad():
        for name, p in theta.items():
            numeric = torch.zeros_like(p)
            for i in range(p.numel()):
                p.view(-1)[i] += eps
                up = float(protonet.meta_loss(theta, batch)[0])
                p.view(-1)[i] -= 2 * eps
                down = float(protonet.meta_loss(theta, batch)[0])
                p.view(-1)[i] += eps
                numeric.view(-1)[i] = (up - down) / (2 * eps)
            torch.testing.assert_close(analytic[name], numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("batch_statistics", ["episode", "separate"])
def test_vmap_and_loop_agree_with_batch_norm(batch_statistics):
    torch.manual_seed(2)
    net = Conv4Embedding(channels=4)
    images = (torch.rand(8, 6, 28, 28, generator=torch.Generator().manual_seed(3)) * 255).to(torch.uint8)
    batch = EpisodeSampler(images, 3, 2, 2, device="cpu").sample(3).to("cpu", F64)
    results = {}
    for execution in ("vmap", "loop"):
        protonet = ProtoNet(net, batch_statistics=batch_statistics, execution=execution)
        theta = protonet.init_params("cpu", F64)
        results[execution] = (protonet.meta_gradient(theta, batch), protonet.evaluate(theta, batch),
                              protonet.adapt(theta, batch))
    (grads_v, metrics_v), eval_v, protos_v = results["vmap"]
    (grads_l, metrics_l), eval_l, protos_l = results["loop"]
    for k in grads_v:
        torch.testing.assert_close(grads_v[k], grads_l[k], rtol=1e-9, atol=1e-12)
    for k in metrics_v:
        torch.testing.assert_close(metrics_v[k], metrics_l[k])
        torch.testing.assert_close(eval_v[k], eval_l[k])
    torch.testing.assert_close(protos_v, protos_l)


def test_batch_statistics_decide_which_images_are_normalised_together():
    torch.manual_seed(3)
    batch = episodes(tasks=2, size=(1, 28, 28))
    net = Conv4Embedding(channels=4)
    episode, separate = ProtoNet(net, batch_statistics="episode"), ProtoNet(net, batch_statistics="separate")
    theta = episode.init_params("cpu", F64)
    task = batch[0]
    # "separate": the prototypes are those of D^tr embedded alone; "episode": of D^tr embedded with D^ts.
    alone = forward(net, theta, task.x_tr)
    together = forward(net, theta, torch.cat([task.x_tr, task.x_ts]))[:len(task.x_tr)]
    torch.testing.assert_close(separate.adapt(theta, task), prototypes(alone, task.y_tr)[0])
    torch.testing.assert_close(episode.adapt(theta, task), prototypes(together, task.y_tr)[0])
    assert not torch.allclose(separate.adapt(theta, task), episode.adapt(theta, task))
    # Without batch norm the two are the same computation.
    linear = Linear(inputs=784)
    theta = ProtoNet(linear).init_params("cpu", F64)
    a = ProtoNet(linear, batch_statistics="episode").evaluate(theta, batch)["loss"]
    b = ProtoNet(linear, batch_statistics="separate").evaluate(theta, batch)["loss"]
    torch.testing.assert_close(a, b)


def test_squared_euclidean_prototypes_are_a_linear_classifier():
    # −‖z − c_k‖² = 2 c_k·z − ‖c_k‖² − ‖z‖²: the last term is the same for every class, so the
    # softmax is that of a linear layer with weights 2 c_k and biases −‖c_k‖².
    g = torch.Generator().manual_seed(4)
    z_tr, z_ts = torch.randn(6, 5, generator=g, dtype=F64), torch.randn(7, 5, generator=g, dtype=F64)
    y_tr = torch.tensor([0, 0, 1, 1, 2, 2])
    c, _ = prototypes(z_tr, y_tr, slots=3)
    linear = z_ts @ (2 * c).T - c.pow(2).sum(-1)
    logits = classify(z_tr, y_tr, z_ts)[:, :3]
    torch.testing.assert_close(torch.log_softmax(logits, -1), torch.log_softmax(linear, -1))
    direct = -torch.cdist(z_ts, c).pow(2)
    torch.testing.assert_close(negative_distances(z_ts, c), direct)


def test_one_shot_on_raw_pixels_is_the_nearest_neighbour():
    images = (torch.rand(12, 8, 28, 28, generator=torch.Generator().manual_seed(5)) * 255).to(torch.uint8)
    batch = EpisodeSampler(images, 5, 1, 3, device="cpu").sample(20, generator=torch.Generator().manual_seed(6))
    nearest = torch.cdist(batch.x_ts.flatten(2), batch.x_tr.flatten(2)).argmin(-1)
    knn = (torch.gather(batch.y_tr, 1, nearest) == batch.y_ts).float().mean(1)
    for i, task in enumerate(batch):
        logits = classify(task.x_tr.flatten(1), task.y_tr, task.x_ts.flatten(1))
        assert float((logits.argmax(-1) == task.y_ts).float().mean()) == float(knn[i])


def test_labels_absent_from_the_support_set_get_no_probability():
    z_tr = torch.randn(4, 3, dtype=F64)
    y_tr = torch.tensor([0, 0, 2, 2])                      # label 1 has no shot, 3 does not exist
    logits = classify(z_tr, y_tr, torch.randn(5, 3, dtype=F64))
    p = torch.softmax(logits, -1)
    assert torch.all(p[:, [1, 3]] == 0) and torch.allclose(p.sum(-1), torch.ones(5, dtype=F64))


def test_one_theta_serves_any_number_of_ways():
    torch.manual_seed(6)
    protonet = ProtoNet(Conv4Embedding(channels=4))
    theta = protonet.init_params("cpu")
    images = (torch.rand(25, 4, 28, 28) * 255).to(torch.uint8)
    for ways in (3, 20):
        batch = EpisodeSampler(images, ways, 1, 2, device="cpu").sample(2)
        assert protonet.evaluate(theta, batch)["accuracy"].shape == (2,)
        assert protonet.adapt(theta, batch).shape == (2, ways, 4)
    # more ways than the embedding has dimensions is fine too (nothing is sized by the ways)
    assert protonet.meta_gradient(theta, batch).metrics["loss"].shape == (2,)


def test_training_lowers_the_query_loss():
    torch.manual_seed(7)
    protonet = ProtoNet(Linear(inputs=12, outputs=4))
    theta = protonet.init_params("cpu", F64)
    # Classes whose inputs differ in the first coordinates only: a good embedding reads those.
    g = torch.Generator().manual_seed(8)

    def sample():
        means = torch.randn(4, 3, 1, generator=g, dtype=F64) * 3
        x = torch.randn(4, 3, 4, 12, generator=g, dtype=F64)
        x[..., :1] += means.unsqueeze(-1)
        y = torch.arange(3).repeat_interleave(2).expand(4, -1)
        return TaskBatch(x[:, :, :2].reshape(4, 6, 12), y, x[:, :, 2:].reshape(4, 6, 12), y.clone())

    test = sample()
    before = protonet.evaluate(theta, test)["loss"].mean()
    optimizer = torch.optim.Adam(theta.values(), lr=0.05)
    for _ in range(60):
        protonet.step(theta, optimizer, sample())
    assert protonet.evaluate(theta, test)["loss"].mean() < 0.7 * before


def test_bad_options_and_inputs_are_named():
    net = Linear()
    with pytest.raises(ValueError, match="distance must be one of"):
        ProtoNet(net, distance="euclid")
    with pytest.raises(ValueError, match="batch_statistics must be one of"):
        ProtoNet(net, batch_statistics="running")
    with pytest.raises(ValueError, match="no task-batched form"):
        ProtoNet(net, execution="batched")
    with pytest.raises(ValueError, match="execution must be"):
        ProtoNet(net, execution="fast")
    with pytest.raises(TypeError, match="embedding network"):
        ProtoNet(lambda x: x)
    with pytest.raises(ValueError, match="buffers"):
        ProtoNet(nn.Sequential(nn.Flatten(), nn.BatchNorm1d(12)))
    with pytest.raises(ValueError, match="distance must be one of"):
        negative_distances(torch.ones(2, 3), torch.ones(2, 3), "manhattan")
    protonet = ProtoNet(net)
    theta = protonet.init_params("cpu", F64)
    batch = episodes()
    with pytest.raises(ValueError, match="without steps"):
        protonet.adapt(theta, batch, steps=1)
    with pytest.raises(ValueError, match="without steps"):
        protonet.evaluate(theta, batch, steps=3)
    with pytest.raises(ValueError, match="θ is empty"):
        protonet.evaluate({}, batch)
    with pytest.raises(ValueError, match="holds torch.float32 inputs but θ is torch.float64"):
        protonet.evaluate(theta, batch.to("cpu", torch.float32))
    with pytest.raises(ValueError, match="cannot read inputs of shape"):
        protonet.evaluate(theta, episodes(size=(5,)))
    with pytest.raises(ValueError, match="integer class labels"):
        protonet.evaluate(theta, TaskBatch(batch.x_tr, batch.y_tr.double(), batch.x_ts, batch.y_ts))
    with pytest.raises(ValueError, match="query labels must be integer"):
        protonet.evaluate(theta, TaskBatch(batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts.double()))
    with pytest.raises(ValueError, match="support labels must be class indices in 0..5"):
        protonet.evaluate(theta, TaskBatch(batch.x_tr, batch.y_tr + 4, batch.x_ts, batch.y_ts))
    missing = batch.y_tr.clone()
    missing[1, 2:4] = 0                                    # task 1 loses its shots of label 1
    with pytest.raises(ValueError, match="task 1 has a query of label 1 but no support example"):
        protonet.meta_gradient(theta, TaskBatch(batch.x_tr, missing, batch.x_ts, batch.y_ts))
    with pytest.raises(ValueError, match="query labels must be among the support labels"):
        protonet.evaluate(theta, TaskBatch(batch.x_tr, batch.y_tr, batch.x_ts, batch.y_ts + 9))
    with pytest.raises(TypeError, match="expected a TaskBatch"):
        protonet.meta_gradient(theta, batch[0])
    with pytest.raises(TypeError, match="expected a Task"):
        protonet.check_task(theta, batch)
    wrong_net = ProtoNet(Conv4(5))  # a classifier's logits would do, but a scalar per image would not
    assert wrong_net.evaluate(wrong_net.init_params("cpu"), episodes(size=(1, 28, 28), dtype=torch.float32))
    scalar = ProtoNet(nn.Sequential(nn.Flatten(0), nn.Linear(24, 1)))
    with pytest.raises(ValueError, match="must map \\[examples, ...\\] inputs to \\[examples, D\\]"):
        scalar.evaluate(scalar.init_params("cpu", F64), episodes())


def test_the_contract_in_full():
    torch.manual_seed(9)
    protonet = ProtoNet(Conv4Embedding(channels=4))
    theta = protonet.init_params("cpu")
    assert all(v.is_leaf and v.requires_grad for v in theta.values())
    images = (torch.rand(10, 6, 28, 28) * 255).to(torch.uint8)
    batch = EpisodeSampler(images, 4, 1, 3, device="cpu").sample(3)
    grads, metrics = protonet.meta_gradient(theta, batch)
    assert grads.keys() == theta.keys()
    for k, g in grads.items():
        assert g.shape == theta[k].shape and torch.isfinite(g).all() and not g.requires_grad
        assert g.abs().max() > 0, f"{k} receives no gradient"
    assert metrics["loss"].shape == metrics["accuracy"].shape == (3,)
    before = {k: v.detach().clone() for k, v in theta.items()}
    means = protonet.step(theta, torch.optim.SGD(theta.values(), lr=0.1), batch)
    assert set(means) == {"loss", "accuracy"} and all(v.dim() == 0 for v in means.values())
    assert all(not torch.equal(before[k], theta[k].detach()) for k in theta)
    per_task = protonet.evaluate(theta, batch)
    assert not per_task["loss"].requires_grad and per_task["accuracy"].shape == (3,)
