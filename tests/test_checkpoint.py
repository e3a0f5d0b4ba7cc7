"""Runs survive interruption: a reproduction killed with SIGKILL and resumed, or run in budgeted
chunks, ends with exactly the θ of an uninterrupted run; checkpoints of other runs, truncated,
foreign or booby-trapped files are refused with errors that name the file."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mlcourse import records, reproduce, train

ROOT = Path(__file__).resolve().parents[1]

# A registered experiment small enough for a test: MAML on sinusoids (tiny MLP) then Reptile on the
# same family, two training stages with evaluations and model selection in the first, a learning
# rate schedule and a generator in the second. Each step sleeps a little so a kill lands mid-run.
EXPERIMENT = '''
import os
import time
from dataclasses import dataclass

import torch

from mlcourse import distributed, train
from mlcourse.experiments import EXPERIMENTS, Experiment
from mlcourse.meta.maml import MAML
from mlcourse.meta.reptile import Reptile
from mlcourse.nets import MLP
from mlcourse.settings import Settings
from mlcourse.tasks import SinusoidFamily


@dataclass(frozen=True)
class TinySettings(Settings):
    iterations: int = 40
    tasks: int = 4
    SCALES = {"book": {"tasks": 6}, "quick": {}}


def run(s, device):
    pause = float(os.environ.get("TINY_SLEEP", "0"))
    family = SinusoidFamily()
    maml = MAML(MLP((1, 8, 1)), "mse", inner_lr=0.01)
    theta = maml.init_params(device)
    opt = torch.optim.Adam(theta.values(), lr=1e-2)

    def step(it):
        time.sleep(pause)
        return maml.step(theta, opt, family.sample(distributed.share(s.tasks), 5, device=device))

    val = family.sample(8, 5, device=device, generator=torch.Generator().manual_seed(9))
    history = train.fit(step, s.iterations, log_every=7,
                        evaluate=lambda it: {"mse": float(maml.evaluate(theta, val)["loss"].mean())}, eval_every=10, select=("mse", "min"), state={"theta": theta, "optimizer": opt},
                        desc="maml", progress=False)
    reptile = Reptile(MLP((1, 8, 1)), "mse", inner_lr=0.02, inner_steps=2, inner_batch=3)
    phi = reptile.init_params(device)
    sgd = torch.optim.SGD(phi.values(), lr=1.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(sgd, lambda it: 1 - it / s.iterations)
    generator = torch.Generator().manual_seed(5)

    def reptile_step(it):
        time.sleep(pause)
        batch = family.sample(distributed.share(s.tasks), 5, device=device, generator=generator)
        metrics = reptile.step(phi, sgd, batch)
        schedule.step()
        return metrics

    train.fit(reptile_step, s.iterations, log_every=5, progress=False, desc="reptile",
              state={"theta": phi, "optimizer": sgd, "schedule": schedule, "generator": generator})
    return {"metrics": {"mse": {"value": history.selected["mse"], "ci95": None, "paper": None, "unit": "MSE"}},
            "best": history.selected["iteration"]}


EXPERIMENTS.setdefault("tiny", Experiment("tiny", run, "Tiny", "finn2017maml", 0, TinySettings))
'''


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """The tiny experiment registered here and importable by subprocesses."""
    (tmp_path / "tiny_experiment.py").write_text(EXPERIMENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("tiny_experiment", None)
    import tiny_experiment  # noqa: F401

    yield tmp_path
    reproduce.EXPERIMENTS.pop("tiny", None)


def _theta(path):
    stages = records._read_theta(path)["stages"]
    return [s["params"]["theta"] for s in stages]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k  # bit for bit


def _cli(tmp_path, *args):
    code = f"import sys, tiny_experiment; from mlcourse import reproduce; reproduce.main({list(args)!r})"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1", "TINY_SLEEP": "0.02"}
    return subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigkill_then_resume_ends_with_the_uninterrupted_theta(tiny):
    reference = reproduce.run("tiny", "quick", "cpu", out=tiny / "ref", checkpoint_dir=tiny / "ref-ck")
    flags = ["tiny", "--scale", "quick", "--device", "cpu", "--out", "out", "--checkpoint-dir", "ck",
             "--checkpoint-every", "3"]
    # The same run in another process, slowed down by a pause in each step, is killed once it has
    # written a checkpoint.
    proc = _cli(tiny, *flags)
    stage = tiny / "ck" / "tiny" / "stage0.pt"
    deadline = time.monotonic() + 120
    while not stage.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    if proc.returncode != -signal.SIGKILL:
        pytest.skip("the run finished before it could be killed (a very fast machine)")
    saved = train.load_safely(stage)
    assert 0 < saved["iteration"] < 40
    record = reproduce.run("tiny", "quick", "cpu", out=tiny / "out", checkpoint_dir=tiny / "ck", resume=True)
    _same(_theta(tiny / "out" / "tiny.theta.pt"), _theta(tiny / "ref" / "tiny.theta.pt"))
    assert json.loads((tiny / "out" / "tiny.json").read_text()) == record
    assert record["metrics"] == reference["metrics"] and record["best"] == reference["best"]
    log = record["provenance"]["chunk_log"]
    assert [c["status"] for c in log] == ["interrupted", "finished"] and record["provenance"]["chunks"] == 2


def test_budgeted_chunks_compose_into_one_run(tiny, monkeypatch):
    reference = reproduce.run("tiny", "quick", "cpu", out=tiny / "ref", checkpoint_dir=tiny / "ref-ck")
    # Each chunk gets a budget of two iterations' worth of clock: the clock advances one minute per call.
    clock = iter(range(10**6))
    monkeypatch.setattr(train.time, "monotonic", lambda: 60.0 * next(clock))
    chunks = 0
    while True:
        chunks += 1
        try:
            record = reproduce.run("tiny", "quick", "cpu", out=tiny / "out", checkpoint_dir=tiny / "ck",
                                   resume=chunks > 1, checkpoint_minutes=1e9, budget_minutes=15)
            break
        except train.BudgetSpent as stop:
            assert stop.iteration < stop.iterations
        assert chunks < 100
    assert chunks > 3 and record["provenance"]["chunks"] == chunks
    assert record["metrics"] == reference["metrics"]
    _same(_theta(tiny / "out" / "tiny.theta.pt"), _theta(tiny / "ref" / "tiny.theta.pt"))
    statuses = [c["status"] for c in record["provenance"]["chunk_log"]]
    assert statuses == ["budget spent"] * (chunks - 1) + ["finished"]


def test_the_cli_stops_at_the_budget_with_its_own_exit_status(tiny, monkeypatch, capsys):
    clock = iter(range(10**6))
    monkeypatch.setattr(train.time, "monotonic", lambda: 60.0 * next(clock))
    with pytest.raises(SystemExit) as stop:
        reproduce.main(["tiny", "--scale", "quick", "--device", "cpu", "--out", str(tiny / "out"),
                        "--checkpoint-dir", str(tiny / "ck"), "--budget-minutes", "3"])
    assert stop.value.code == reproduce.EXIT_BUDGET_SPENT
    assert "continue with --resume" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # the checkpoints are not overwritten by a run without --resume
        reproduce.main(["tiny", "--scale", "quick", "--device", "cpu", "--checkpoint-dir", str(tiny / "ck")])
    assert "--resume" in capsys.readouterr().err


def test_resuming_another_run_is_refused(tiny):
    with pytest.raises(train.BudgetSpent):
        reproduce.run("tiny", "quick", "cpu", out=tiny / "out", checkpoint_dir=tiny / "ck", budget_minutes=1e-9)
    folder = tiny / "ck" / "tiny"
    with pytest.raises(ValueError, match=r"other settings \(scale: 'quick' in the checkpoint, 'book' now, tasks: 4"):
        reproduce.check_resume("tiny", reproduce.settings_for("tiny", "book"), True, False, tiny / "ck")
    with pytest.raises(train.CheckpointError, match="stage0.pt was written with other settings"):
        train.fit(lambda it: {}, 40, state=_tiny_state(), checkpoint=folder / "stage0.pt", progress=False,
                  identity={"experiment": "tiny", "settings": {"scale": "book"}})
    with pytest.raises(train.CheckpointError, match="is a checkpoint of 'tiny', not of 'other'"):
        train.fit(lambda it: {}, 40, state=_tiny_state(), checkpoint=folder / "stage0.pt", progress=False,
                  identity={"experiment": "other", "settings": {}})


def _tiny_state():
    from mlcourse.meta.maml import MAML
    from mlcourse.nets import MLP

    theta = MAML(MLP((1, 8, 1)), "mse").init_params("cpu")
    return {"theta": theta, "optimizer": torch.optim.Adam(theta.values(), lr=1e-2)}


def _quadratic(seed=0):
    torch.manual_seed(seed)
    theta = {"w": torch.randn(3, requires_grad=True)}
    optimizer = torch.optim.Adam(theta.values(), lr=0.1)

    def step(it):
        optimizer.zero_grad()
        loss = (theta["w"] - torch.randn(3)).pow(2).sum()
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}

    return theta, optimizer, step


def test_fewer_iterations_than_done_are_refused(tmp_path):
    theta, optimizer, step = _quadratic()
    path = tmp_path / "run.pt"
    train.fit(step, 30, checkpoint=path, state={"theta": theta, "optimizer": optimizer}, progress=False)
    with pytest.raises(train.CheckpointError, match=r"run.pt has done 30 iterations, more than the 20 asked"):
        train.fit(step, 20, checkpoint=path, state={"theta": theta, "optimizer": optimizer}, progress=False)


def test_truncated_foreign_and_mismatched_files_are_refused(tmp_path):
    theta, optimizer, step = _quadratic()
    path = tmp_path / "run.pt"
    train.fit(step, 10, checkpoint=path, state={"theta": theta, "optimizer": optimizer}, progress=False)
    whole = path.read_bytes()
    state = {"theta": theta, "optimizer": optimizer}
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(train.CheckpointError, match=r"run.pt is not a readable checkpoint \(truncated"):
        train.fit(step, 20, checkpoint=path, state=state, progress=False)
    torch.save({"model": torch.zeros(3)}, path)
    with pytest.raises(train.CheckpointError, match="run.pt is not an mlcourse checkpoint"):
        train.fit(step, 20, checkpoint=path, state=state, progress=False)
    path.write_bytes(whole)
    bigger = {"w": torch.zeros(4, requires_grad=True)}
    with pytest.raises(train.CheckpointError, match=r"theta\['w'\] is torch.float32 \(3,\) in the checkpoint, "
                                                    r"torch.float32 \(4,\) here"):
        train.fit(step, 20, checkpoint=path, state={"theta": bigger}, progress=False)
    double = {"w": torch.zeros(3, dtype=torch.float64, requires_grad=True)}
    with pytest.raises(train.CheckpointError, match="torch.float64"):
        train.fit(step, 20, checkpoint=path, state={"theta": double}, progress=False)
    with pytest.raises(train.CheckpointError, match="holds no \\['schedule'\\]"):
        train.fit(step, 20, checkpoint=path, progress=False,
                  state={**state, "schedule": torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)})
    before = theta["w"].detach().clone()
    assert torch.equal(theta["w"].detach(), before)  # nothing was loaded from the refused files


class _Booby:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['MLCOURSE_BOOBY'], 'w').write('ran')",))


def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "code-ran"
    monkeypatch.setenv("MLCOURSE_BOOBY", str(marker))
    path = tmp_path / "run.pt"
    torch.save({"format": train.FORMAT, "version": train.VERSION, "payload": _Booby()}, path)
    theta, optimizer, step = _quadratic()
    with pytest.raises(train.CheckpointError, match="refused to load .*run.pt: it holds objects other than tensors"):
        train.fit(step, 5, checkpoint=path, state={"theta": theta}, progress=False)
    with pytest.raises(train.CheckpointError, match="refused"):
        records._read_theta(path)
    assert not marker.exists()
    # The same payload unpickled without the guard does run: the test would notice a guard that stopped working.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_no_unguarded_torch_load_in_the_package():
    for path in (ROOT / "mlcourse").rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"


def test_stored_theta_is_found_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCOURSE_RESULTS", str(tmp_path))
    theta = {"w": torch.arange(3.0), "b": torch.zeros(2)}
    records.save_theta(tmp_path / "demo.theta.pt", "demo", [{"desc": "maml", "params": {"theta": theta}},
                                                          {"desc": "baseline", "params": {"theta": theta}}])
    assert records.theta_stages("demo") == ["maml", "baseline"]
    with pytest.raises(ValueError, match="holds 2 trained models"):
        records.load_theta("demo")
    got = records.load_theta("demo", stage="baseline", like={"w": torch.zeros(3), "b": torch.ones(2)})
    assert torch.equal(got["w"], theta["w"])
    with pytest.raises(ValueError, match=r"θ\['w'\] is torch.float32 \(3,\), the model's is torch.float32 \(4,\)"):
        records.load_theta("demo", stage=0, like={"w": torch.zeros(4), "b": torch.zeros(2)})
    assert records.load_theta("never-stored") is None
    assert records.stored_weights_bytes(tmp_path) == (tmp_path / "demo.theta.pt").stat().st_size
