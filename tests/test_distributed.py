"""The meta-batch split over 2 gloo processes gives the update of one process holding the whole
meta-batch, for MAML, Reptile, iMAML and MAML-RL (TRPO), and a distributed run checkpoints on
rank 0 and resumes on every rank."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mlcourse import distributed, train
from mlcourse.meta.imaml import IMAML
from mlcourse.meta.maml import MAML
from mlcourse.meta.reptile import Reptile
from mlcourse.nets import MLP
from mlcourse.tasks import SinusoidFamily

TASKS = 5        # split 3 + 2: unequal shares are weighted
STEPS = 3


def _learner(kind):
    net = MLP((1, 8, 8, 1))
    if kind == "maml":
        return MAML(net, "mse", inner_lr=0.01), "adam"
    if kind == "reptile":
        return Reptile(net, "mse", inner_lr=0.02, inner_steps=3), "sgd"
    return IMAML(net, "mse", lam=2.0, inner_lr=0.01, inner_steps=4, cg_steps=3, on_cg_failure="ignore"), "adam"


def _slice(n: int) -> slice:
    """The tasks of this process in a meta-batch of n: what share() gives it, in rank order."""
    counts = [n // distributed.world_size() + (1 if r < n % distributed.world_size() else 0)
              for r in range(distributed.world_size())]
    start = sum(counts[:distributed.rank()])
    assert distributed.share(n) == counts[distributed.rank()]
    return slice(start, start + counts[distributed.rank()])


def supervised(kind: str) -> dict:
    """θ after STEPS meta-updates on fixed batches; under torch.distributed, each process steps on its share."""
    torch.manual_seed(0)
    learner, which = _learner(kind)
    theta = learner.init_params("cpu")
    # SGD: Adam's first steps divide by |g|, which turns the rounding of near-zero entries into ±lr.
    optimizer = torch.optim.SGD(theta.values(), lr=0.5 if which == "sgd" else 0.05, momentum=0.5)
    for i in range(STEPS):
        batch = SinusoidFamily().sample(TASKS, 5, device="cpu", generator=torch.Generator().manual_seed(i))
        learner.step(theta, optimizer, batch[_slice(TASKS)])
    return {k: v.detach().clone() for k, v in theta.items()}


def rl() -> dict:
    from mlcourse.rl.maml_rl import MAMLRL
    from mlcourse.rl.navigation import Navigation2D
    from mlcourse.rl.policy import GaussianPolicy
    from mlcourse.rl.trpo import TRPO

    env = Navigation2D(horizon=8, device="cpu")
    torch.manual_seed(0)
    learner = MAMLRL(env, GaussianPolicy(2, 2, hidden=(8,)), inner_lr=0.1, trajectories=3)
    theta = learner.init_params()
    # The Fisher of so few trajectories is nearly singular: with the paper's damping (1e-5) ten CG steps
    # amplify the rounding of the all-reduce's sum (1e-16 in float64) to 1e-4 in θ; damping 0.1 keeps the
    # system well conditioned, so the comparison tests the reductions rather than CG's stability.
    trpo = TRPO(max_kl=0.01, cg_damping=0.1, line_search="sequential")
    for i in range(2):
        # Every process samples the whole meta-batch's trajectories from one seed and keeps its tasks.
        g = torch.Generator().manual_seed(100 + i)
        batch = learner.sample(theta, env.sample_tasks(4, generator=g), generator=g)
        learner.step(theta, trpo, batch[_slice(4)])
    return {k: v.detach().clone() for k, v in theta.items()}


def fit_run(folder, iterations, stop_at=None):
    """A distributed train.fit of MAML on sinusoids with checkpoints (rank 0 writes, all resume)."""
    torch.manual_seed(0)
    learner, _ = _learner("maml")
    theta = learner.init_params("cpu")
    optimizer = torch.optim.Adam(theta.values(), lr=1e-2)
    family = SinusoidFamily()
    state = {"theta": theta, "optimizer": optimizer}
    step = lambda it: learner.step(theta, optimizer, family.sample(distributed.share(TASKS), 5, device="cpu"))  # noqa
    path = os.path.join(folder, f"fit-{iterations}-{stop_at}.pt")
    if stop_at is not None:
        train.fit(step, stop_at, checkpoint=path, state=state, progress=False, log_every=2, checkpoint_every=2)
    train.fit(step, iterations, checkpoint=path, state=state, progress=False, log_every=2, checkpoint_every=2)
    return {k: v.detach().clone() for k, v in theta.items()}


def _worker(rank, world, folder):
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        results = {kind: supervised(kind) for kind in ("maml", "reptile", "imaml")}
        results["maml-rl"] = rl()
        results["fit"] = fit_run(folder, 6)
        results["fit-resumed"] = fit_run(folder, 6, stop_at=3)
        results["caught"] = drifting()
        torch.save(results, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gloo")
    mp.spawn(_worker, args=(2, str(folder)), nprocs=2, join=True)
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("kind", ["maml", "reptile", "imaml", "maml-rl"])
def test_two_processes_take_the_single_process_step(two_processes, kind):
    single = rl() if kind == "maml-rl" else supervised(kind)
    for rank in range(2):
        got = two_processes[rank][kind]
        for k in single:
            torch.testing.assert_close(got[k], single[k], rtol=1e-5, atol=1e-6, msg=f"{kind} rank {rank} {k}")
    start = _learner("maml")[0].init_params("cpu") if kind != "maml-rl" else None
    if start is not None:  # the check can fail: θ moved
        assert any(not torch.allclose(single[k], start[k]) for k in single)


def test_a_distributed_run_resumes_on_every_process(two_processes):
    a, b = two_processes
    for k in a["fit"]:
        assert torch.equal(a["fit"][k], b["fit"][k])                  # every process holds the same θ
        assert torch.equal(a["fit-resumed"][k], a["fit"][k])          # and resuming changes nothing, bit for bit
        assert torch.equal(b["fit-resumed"][k], b["fit"][k])


def test_share_and_weights_in_one_process():
    assert distributed.share(7) == 7 and distributed.world_size() == 1
    tree = {"g": torch.ones(2)}
    assert distributed.average(tree) is tree
    with pytest.raises(ValueError, match="int >= 1 of tasks"):
        distributed.share(0)


def test_unaveraged_training_is_caught(two_processes):
    """Processes that step without averaging drift apart; fit says so at the next log."""
    assert two_processes[0]["caught"].startswith("θ differs between the processes")


def drifting() -> str:
    theta = {"w": torch.zeros(2, requires_grad=True)}

    def step(it):
        with torch.no_grad():
            theta["w"] += distributed.rank() + 1.0  # no all-reduce: each process moves its own way
        return {"loss": torch.tensor(1.0)}

    try:
        train.fit(step, 4, log_every=2, state={"theta": theta}, progress=False)
    except RuntimeError as err:
        return str(err)
    return "not caught"
