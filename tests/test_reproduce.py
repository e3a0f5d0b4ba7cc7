import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlcourse import reproduce
from mlcourse.experiments import Experiment
from mlcourse.settings import Settings


@dataclass(frozen=True)
class TinySettings(Settings):
    iterations: int = 60_000
    SCALES = {"book": {"iterations": 600}, "quick": {"iterations": 3}}


def test_experiments_register():
    experiments = reproduce.discover()
    for name in ["maml-sinusoid", "maml-omniglot-5w1s", "maml-omniglot-5w5s", "fomaml-omniglot-5w1s",
                 "reptile-omniglot-5w1s", "reptile-omniglot-5w5s"]:
        assert name in experiments


def test_quick_run_writes_a_record_with_provenance(tmp_path, monkeypatch):
    seen = []

    def tiny(settings, device):
        seen.append(settings)
        return {"metrics": {"mse": {"value": 0.5, "ci95": 0.1, "paper": None, "unit": "MSE"}}}

    monkeypatch.setitem(reproduce.EXPERIMENTS, "tiny", Experiment("tiny", tiny, "Tiny", "finn2017maml", 0, TinySettings))
    record = reproduce.run("tiny", "quick", "cpu", out=tmp_path)
    saved = json.loads((tmp_path / "tiny.json").read_text())
    assert saved == record and seen[0].iterations == 3
    assert saved["settings"] == {"scale": "quick", "iterations": 3} and saved["scale"] == "quick"
    assert saved["provenance"]["device"] == "cpu" and saved["provenance"]["torch"]
    assert saved["provenance"]["command"] == "python -m mlcourse.reproduce tiny --scale quick"
    shorter = reproduce.run("tiny", "paper", "cpu", out=tmp_path, iterations=34_000)
    assert shorter["scale"] == "paper settings, 34,000 of 60,000 iterations"


def test_every_name_and_flag_is_checked_before_anything_runs(monkeypatch, capsys):
    ran = []
    monkeypatch.setitem(reproduce.EXPERIMENTS, "tiny",
                        Experiment("tiny", lambda s, d: ran.append(s) or {"metrics": {}}, "Tiny", "x", 0, TinySettings))
    for argv, message in [(["tiny", "nope"], "unknown experiment 'nope'"),
                          (["tiny", "--iterations", "0"], "iterations must be an int >= 1, got 0"),
                          (["tiny", "--device", "tpu"], "'tpu' is not a device"),
                          (["tiny", "--scale", "huge"], "invalid choice: 'huge'")]:
        with pytest.raises(SystemExit):
            reproduce.main(argv)
        assert message in capsys.readouterr().err
    assert not ran


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_a_gpu_asked_for_without_one_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(reproduce.EXPERIMENTS, "tiny",
                        Experiment("tiny", lambda s, d: {"metrics": {}}, "Tiny", "x", 0, TinySettings))
    with pytest.raises(SystemExit):
        reproduce.main(["tiny", "--device", "cuda"])
    assert "sees no CUDA GPU" in capsys.readouterr().err


def test_maml_sinusoid_at_quick_scale(tmp_path):
    record = reproduce.run("maml-sinusoid", "quick", "cpu", out=tmp_path)
    assert set(record["metrics"]) == {"mse_after_1_step", "mse_after_10_steps"}
    assert record["metrics"]["mse_after_1_step"]["value"] > 0


def test_unknown_experiment_and_scale():
    with pytest.raises(KeyError, match="unknown experiment 'nope'"):
        reproduce.run("nope")
    with pytest.raises(ValueError, match="scale must be one of"):
        reproduce.run("maml-sinusoid", scale="huge")


def test_the_gpu_session_script_at_cpu_smoke_scale(tmp_path, capsys):
    """The GPU session's script end to end on the CPU: checks, one run continued and packed; the
    pack unpacks into the state and records folders, and the next session finds the run finished."""
    import sys
    import tarfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import gpu_session

    out, state, records = tmp_path / "out", tmp_path / "state", tmp_path / "records"
    records.mkdir()
    gpu_session.main(["--cpu-smoke", "--out", str(out), "--state", str(state), "--budget", "400", "--reserve", "5"])
    log = (out / "session.log").read_text()
    assert "[correctness] Reptile" in log and "[speed] MAML-TRPO navigation" in log
    assert "maml-sinusoid: finished" in log
    assert sorted(p.name for p in out.iterdir()) == ["maml-sinusoid.tar", "session.log"]
    with tarfile.open(out / "maml-sinusoid.tar") as tar:
        names = set(tar.getnames())
    assert {"checkpoints/maml-sinusoid/stage0.pt", "checkpoints/maml-sinusoid/run.json",
            "results/maml-sinusoid.json", "results/maml-sinusoid.theta.pt"} <= names
    fresh = tmp_path / "next"
    gpu_session.main(["--unpack", str(out), "--state", str(fresh), "--records", str(records)])
    assert (records / "maml-sinusoid.theta.pt").exists()
    gpu_session.main(["--cpu-smoke", "--skip-checks", "--out", str(tmp_path / "out2"), "--state", str(fresh)])
    assert "maml-sinusoid: already finished" in (tmp_path / "out2" / "session.log").read_text()
