"""The metric-based chapter's experiments: settings at every scale (the paper's as defaults), the
registered reproduction, test episodes fixed by a seed (so runs are compared on the same
episodes), the raw-pixel baseline as 1-nearest-neighbour, and the training runs end to end at
the quick scale through the learner interface."""

import pytest
import torch

from mlcourse import reproduce
from mlcourse.experiments import EXPERIMENTS
from mlcourse.experiments import metric as E
from mlcourse.meta.protonet import ProtoNet
from mlcourse.settings import SCALES
from mlcourse.tasks import EpisodeSampler


def test_settings_exist_at_every_scale_with_the_papers_values_as_defaults():
    for scale in SCALES:
        settings = E.ProtoNetSettings.at(scale)
        assert settings.scale == scale and settings.table().startswith("| setting |")
        assert settings.train_ways in settings.compare_ways    # the main run is one of the comparison's
    paper = E.ProtoNetSettings.at("paper")
    assert paper == E.ProtoNetSettings()
    assert (paper.train_ways, paper.test_ways, paper.shots, paper.queries) == (60, 5, 1, 5)
    assert (paper.channels, paper.lr, paper.halve_every, paper.distance) == (64, 1e-3, 2000, "squared_euclidean")
    assert paper.test_episodes == 1000
    with pytest.raises(ValueError, match="distance must be one of"):
        E.ProtoNetSettings(distance="manhattan")
    with pytest.raises(ValueError, match="episodes"):
        E.ProtoNetSettings.at("quick", episodes=0)


def test_the_reproduction_is_registered_with_the_papers_number(capsys):
    exp = EXPERIMENTS["protonet-omniglot-5w1s"]
    assert exp.paper == "snell2017prototypical" and exp.settings is E.ProtoNetSettings
    assert E.PAPER_ACCURACY[5, 1] == 98.8
    reproduce.main(["--list"])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("protonet-omniglot-5w1s"))
    assert "GPU-min" in line
    assert reproduce.settings_for("protonet-omniglot-5w1s", "paper").train_ways == 60


def _images(classes=12, per_class=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(classes, per_class, 28, 28, generator=g) * 255).to(torch.uint8)


def test_a_seeded_sampler_gives_every_run_the_same_episodes():
    sampler = EpisodeSampler(_images(), 5, 1, 3, device="cpu")
    a, b = E.SeededSampler(sampler, 7), E.SeededSampler(sampler, 7)
    for _ in range(2):
        x, y = a.sample(4), b.sample(4)
        assert torch.equal(x.x_tr, y.x_tr) and torch.equal(x.x_ts, y.x_ts) and torch.equal(x.y_ts, y.y_ts)
    assert not torch.equal(E.SeededSampler(sampler, 8).sample(4).x_tr, E.SeededSampler(sampler, 7).sample(4).x_tr)


def test_prototypes_of_pixels_with_one_shot_are_the_nearest_neighbour():
    batch = EpisodeSampler(_images(), 5, 1, 4, device="cpu").sample(30, generator=torch.Generator().manual_seed(1))
    nearest = torch.cdist(batch.x_ts.flatten(2), batch.x_tr.flatten(2)).argmin(-1)
    expected = (torch.gather(batch.y_tr, 1, nearest) == batch.y_ts).float().mean(1)
    assert torch.equal(E.pixel_accuracy(batch), expected)
    # with several shots it is the nearest class mean, not the nearest example
    batch = EpisodeSampler(_images(), 3, 4, 2, device="cpu").sample(5)
    means = batch.x_tr.flatten(2).view(5, 3, 4, -1).mean(2)
    expected = (torch.cdist(batch.x_ts.flatten(2), means).argmin(-1) == batch.y_ts).float().mean(1)
    assert torch.equal(E.pixel_accuracy(batch), expected)


def test_the_learner_is_the_papers_prototypical_network():
    settings = E.ProtoNetSettings.at("paper")
    protonet = E.learner(settings)
    assert isinstance(protonet, ProtoNet) and protonet.distance == "squared_euclidean"
    assert protonet.batch_statistics == "episode"
    theta = protonet.init_params("cpu")
    z = protonet.embed(theta, torch.rand(3, 1, 28, 28))
    assert z.shape == (3, 64)    # the paper's 64-dimensional embedding
    assert E.learner(settings, "cosine").distance == "cosine"


def test_runs_end_to_end_at_the_quick_scale_on_the_same_test_episodes(omniglot):
    settings = E.ProtoNetSettings.at("quick")
    runs = E.compare_ways(settings, "cpu", omniglot=omniglot)
    assert [r.train_ways for r in runs] == list(settings.compare_ways)
    for run in runs:
        its, values = run.curve
        assert its[0] == 0 and its[-1] == settings.episodes and len(its) == len(values) >= 3
        assert all(0 <= v <= 1 for v in values)
        assert run.test.shape == (settings.test_episodes,) and run.seconds > 0
        assert 0 <= run.mean_ci[0] <= 1
    cosine = E.train_protonet(settings, "cpu", distance="cosine", omniglot=omniglot)
    assert cosine.distance == "cosine" and cosine.test.shape == (settings.test_episodes,)
    # the same seed gives the same run: training and test episodes are reproducible
    again = E.train_protonet(settings, "cpu", train_ways=runs[0].train_ways, omniglot=omniglot)
    assert torch.equal(again.test, runs[0].test)
    pixels = E.pixel_baseline(settings, "cpu", omniglot=omniglot)
    assert pixels.shape == (settings.test_episodes,) and 0.2 < float(pixels.mean()) < 0.9


def test_the_registered_run_returns_a_record_at_the_quick_scale(omniglot, monkeypatch):
    monkeypatch.setattr(E, "load_omniglot", lambda device=None: omniglot)
    record = E.protonet_omniglot(E.ProtoNetSettings.at("quick"), "cpu")
    accuracy = record["metrics"]["accuracy"]
    assert accuracy["paper"] == 98.8 and accuracy["unit"] == "%" and 0 <= accuracy["value"] <= 100
    assert record["test_tasks"] == E.ProtoNetSettings.at("quick").test_episodes
