"""The MAML-RL reproduction experiments run end to end at quick scale and write their records."""

import json

import pytest

from mlcourse import reproduce


def test_navigation_experiment_quick(tmp_path):
    record = reproduce.run("maml-rl-navigation", "quick", "cpu", out=tmp_path)
    saved = json.loads((tmp_path / "maml-rl-navigation.json").read_text())
    assert saved["metrics"]["return_after_1_step"]["paper"] == -20.3
    for name in ("return_after_1_step", "return_before_adaptation", "pretrained_after_1_step",
                 "random_init_after_1_step"):
        assert record["metrics"][name]["value"] < 0 and record["metrics"][name]["ci95"] >= 0


@pytest.mark.parametrize("kind", ["velocity", "direction"])
def test_cheetah_experiments_quick(tmp_path, kind):
    pytest.importorskip("mujoco")
    record = reproduce.run(f"maml-rl-cheetah-{kind}", "quick", "cpu", out=tmp_path)
    assert record["settings"]["horizon"] == 10 and "return_after_1_step" in record["metrics"]
