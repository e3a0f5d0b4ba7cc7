import pytest
import torch

from mlcourse import train


def _problem(seed=0):
    torch.manual_seed(seed)
    theta = {"w": torch.randn(3, requires_grad=True)}
    optimizer = torch.optim.Adam(theta.values(), lr=0.1)
    target = torch.tensor([1.0, -2.0, 0.5])

    def step(it):
        optimizer.zero_grad()
        loss = (theta["w"] - target).pow(2).sum()
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}

    return theta, optimizer, step


def test_history_logs_means_and_evaluations():
    theta, optimizer, step = _problem()
    history = train.fit(step, 50, log_every=10, evaluate=lambda it: {"w0": float(theta["w"][0].detach())}, eval_every=20,
                        progress=False)
    iterations, losses = history.curve("loss")
    assert list(iterations) == [10, 20, 30, 40, 50] and losses[-1] < losses[0]
    assert [r["iteration"] for r in history.eval] == [20, 40, 50]
    assert history.seconds > 0


def test_resume_from_checkpoint_equals_an_uninterrupted_run(tmp_path):
    theta, optimizer, step = _problem()
    train.fit(step, 60, progress=False)
    uninterrupted = theta["w"].detach().clone()

    theta, optimizer, step = _problem()
    path = tmp_path / "run.pt"
    train.fit(step, 30, checkpoint=path, state={"theta": theta, "optimizer": optimizer}, progress=False)
    theta, optimizer, step = _problem(seed=1)   # a fresh process would start from other numbers
    history = train.fit(step, 60, checkpoint=path, state={"theta": theta, "optimizer": optimizer}, progress=False,
                        log_every=10)
    torch.testing.assert_close(theta["w"].detach(), uninterrupted)
    assert history.train[-1]["iteration"] == 60


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    train.save_atomically({"a": 1}, path)

    def broken_save(obj, f):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(train.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        train.save_atomically({"a": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"a": 1}


def test_divergence_reports_the_first_bad_iteration():
    def step(it):
        return {"loss": torch.tensor(float("nan") if it >= 37 else 1.0)}

    with pytest.raises(train.DivergenceError, match="at iteration 37. try a smaller step"):
        train.fit(step, 100, log_every=50, progress=False, hint="try a smaller step")


def test_bad_arguments():
    with pytest.raises(ValueError, match="iterations must be an int >= 0"):
        train.fit(lambda it: {}, -1, progress=False)
    with pytest.raises(ValueError, match="a checkpoint needs state"):
        train.fit(lambda it: {}, 1, checkpoint="x.pt", progress=False)
    with pytest.raises(TypeError, match="cannot checkpoint 'n' of type int"):
        train._state_dict({"n": 3})


def test_select_keeps_the_parameters_of_the_best_validation_score():
    theta = {"w": torch.zeros(1, requires_grad=True)}
    scores = {10: 0.5, 20: 0.9, 30: 0.7}
    seen = {}

    def step(it):
        with torch.no_grad():
            theta["w"] += 1.0
        return {"loss": torch.tensor(1.0)}

    def evaluate(it):
        seen[it] = float(theta["w"])
        return {"val_accuracy": scores[it]}

    history = train.fit(step, 30, evaluate=evaluate, eval_every=10, state={"theta": theta}, progress=False,
                        select=("val_accuracy", "max"))
    assert history.selected == {"iteration": 20, "val_accuracy": 0.9}
    assert float(theta["w"]) == seen[20] == 20.0       # θ is the one evaluated at iteration 20


def test_select_needs_evaluations_and_parameters():
    with pytest.raises(ValueError, match="needs evaluate"):
        train.fit(lambda it: {}, 1, select=("accuracy", "max"), progress=False)
    with pytest.raises(ValueError, match="select must be"):
        train.fit(lambda it: {}, 1, select=("accuracy", "best"), evaluate=lambda it: {}, state={"t": {}},
                  progress=False)


def test_options_supply_the_state_of_a_loop_written_elsewhere(tmp_path):
    theta, optimizer, step = _problem()
    with train.options(state={"theta": theta, "optimizer": optimizer}):
        train.fit(step, 10, checkpoint=tmp_path / "run.pt", progress=False)
    saved = train.load_safely(tmp_path / "run.pt")
    assert saved["iteration"] == 10 and set(saved["state"]) == {"theta", "optimizer"}


def test_under_a_checkpointing_policy_every_fit_gets_a_stage_file(tmp_path):
    policy = train.Checkpointing(tmp_path, identity={"experiment": "x", "settings": {}})
    with train.checkpointing(policy), pytest.warns(RuntimeWarning, match="was given no state"):
        train.fit(lambda it: {}, 3, progress=False, desc="unsaved")
    assert policy.stages == [{"desc": "unsaved", "iterations": 3, "checkpointed": False}]
    policy.stages.clear()
    theta, optimizer, step = _problem()
    with train.checkpointing(policy):
        train.fit(step, 4, state={"theta": theta, "optimizer": optimizer}, progress=False, desc="first")
        train.fit(step, 2, state={"theta": theta}, progress=False, desc="second")
    assert (tmp_path / "stage0.pt").exists() and (tmp_path / "stage1.pt").exists()
    assert [s["desc"] for s in policy.stages] == ["first", "second"]
    assert torch.equal(policy.stages[1]["params"]["theta"]["w"], theta["w"].detach())
    with train.checkpointing(train.Checkpointing(tmp_path)), pytest.raises(train.CheckpointError, match="--resume"):
        train.fit(step, 4, state={"theta": theta, "optimizer": optimizer}, progress=False)


def test_loading_keeps_the_optimiser_state_tensors_in_place(tmp_path):
    """A step captured as a CUDA graph reads the optimiser's state tensors at fixed addresses."""
    theta, optimizer, step = _problem()
    train.fit(step, 5, checkpoint=tmp_path / "run.pt", state={"theta": theta, "optimizer": optimizer},
              progress=False)
    theta2, optimizer2, step2 = _problem(seed=3)
    step2(0)  # the optimiser has state now, as after a capture's warm-up steps
    p = theta2["w"]
    addresses = {k: v.data_ptr() for k, v in optimizer2.state[p].items()}
    train._load_state({"theta": theta2, "optimizer": optimizer2},
                      train.load_safely(tmp_path / "run.pt")["state"])
    assert {k: v.data_ptr() for k, v in optimizer2.state[p].items()} == addresses
    assert torch.equal(optimizer2.state[p]["exp_avg"], optimizer.state[theta["w"]]["exp_avg"])
    assert torch.equal(theta2["w"], theta["w"]) and p.data_ptr() == theta2["w"].data_ptr()


def test_random_states_round_trip():
    import random

    import numpy as np

    state = train.random_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(())))
    train.set_random_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == a
