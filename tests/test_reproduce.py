import json

import pytest

from mlcourse import reproduce


def test_experiments_register():
    experiments = reproduce.discover()
    for name in ["maml-sinusoid", "maml-omniglot-5w1s", "maml-omniglot-5w5s", "fomaml-omniglot-5w1s",
                 "reptile-omniglot-5w1s", "reptile-omniglot-5w5s"]:
        assert name in experiments


def test_quick_run_writes_a_record_with_provenance(tmp_path, monkeypatch):
    def tiny(scale, device):
        return {"metrics": {"mse": {"value": 0.5, "ci95": 0.1, "paper": None, "unit": "MSE"}}, "settings": {"a": 1}}

    monkeypatch.setitem(reproduce.EXPERIMENTS, "tiny", reproduce.Experiment("tiny", tiny, "Tiny", "finn2017maml", 0))
    monkeypatch.setattr(reproduce, "discover", lambda: reproduce.EXPERIMENTS)
    record = reproduce.run("tiny", "quick", "cpu", out=tmp_path)
    saved = json.loads((tmp_path / "tiny.json").read_text())
    assert saved == record
    assert saved["provenance"]["device"] == "cpu" and saved["provenance"]["torch"]
    assert saved["provenance"]["command"] == "python -m mlcourse.reproduce tiny --scale quick"


def test_maml_sinusoid_at_quick_scale(tmp_path):
    record = reproduce.run("maml-sinusoid", "quick", "cpu", out=tmp_path)
    assert set(record["metrics"]) == {"mse_after_1_step", "mse_after_10_steps"}
    assert record["metrics"]["mse_after_1_step"]["value"] > 0


def test_unknown_experiment_and_scale():
    with pytest.raises(KeyError, match="unknown experiment 'nope'"):
        reproduce.run("nope")
    with pytest.raises(ValueError, match="scale must be one of"):
        reproduce.run("maml-sinusoid", scale="huge")
