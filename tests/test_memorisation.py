"""The memorisation experiment of chapter 5: with fixed labels a class keeps its label in every
episode (non-mutually-exclusive tasks), with shuffled labels it does not; wrong support labels
are wrong everywhere and leave the queries alone; and the experiment runs at a tiny size and
returns what the chapter tabulates."""

import pytest
import torch

from mlcourse.experiments import maml as E
from mlcourse.tasks import EpisodeSampler


def _images(classes=12, per_class=4, size=8):
    torch.manual_seed(0)
    return torch.randint(0, 256, (classes, per_class, size, size), dtype=torch.uint8)


def _labels_of_classes(batch):
    """{dataset class: set of labels it carried} over all episodes of the batch."""
    seen = {}
    for classes, labels in zip(batch.params["classes"].tolist(), batch.y_tr.view(len(batch), -1).tolist()):
        for label, c in enumerate(classes):
            seen.setdefault(c, set()).add(label)
    return seen


def test_fixed_labels_give_a_class_the_same_label_in_every_episode():
    sampler = EpisodeSampler(_images(), ways=3, shots=1, queries=1, labels="fixed", device="cpu")
    batch = sampler.sample(200, generator=torch.Generator().manual_seed(1))
    seen = _labels_of_classes(batch)
    assert len(seen) == 12                              # every class was drawn
    assert all(len(labels) == 1 for labels in seen.values())
    for c, labels in seen.items():
        assert labels == {int(sampler.class_labels[c])}
    # Support and query examples of a class carry that one label.
    n = sampler.ways
    assert torch.equal(batch.y_tr, torch.arange(n).expand(200, n))
    assert torch.equal(batch.y_ts, torch.arange(n).expand(200, n))


def test_shuffled_labels_give_a_class_different_labels_across_episodes():
    sampler = EpisodeSampler(_images(), ways=3, shots=1, queries=1, device="cpu")
    seen = _labels_of_classes(sampler.sample(200, generator=torch.Generator().manual_seed(1)))
    assert all(len(labels) > 1 for labels in seen.values())


def test_the_split_samplers_fix_labels_in_meta_training_only(tmp_path):
    from mlcourse.tasks.omniglot import Omniglot

    images = torch.randint(0, 256, (1623, 20, 28, 28), dtype=torch.uint8)
    omniglot = Omniglot(images, ["a"], torch.zeros(1623, dtype=torch.long), ["a/c"] * 1623,
                        torch.ones(1623, dtype=torch.bool))
    samplers = E.omniglot_split_samplers(5, 1, 1, "cpu", omniglot=omniglot, rotations=False, labels="fixed",
                                         characters=30)
    assert samplers["train"].labels == "fixed" and samplers["train"].num_classes == 30
    assert samplers["val"].labels == samplers["test"].labels == "shuffled"
    assert (samplers["val"].num_classes, samplers["test"].num_classes) == (100, 423)
    with pytest.raises(ValueError, match="characters must be"):
        E.omniglot_split_samplers(5, 1, 1, "cpu", omniglot=omniglot, characters=2000)


def test_wrong_support_labels_are_all_wrong_and_keep_the_queries():
    sampler = EpisodeSampler(_images(), ways=4, shots=2, queries=1, device="cpu")
    batch = sampler.sample(50)
    wrong = E.wrong_support_labels(batch, torch.Generator().manual_seed(0))
    assert (wrong.y_tr != batch.y_tr).all()
    assert wrong.y_tr.min() >= 0 and wrong.y_tr.max() < 4
    assert torch.equal(wrong.y_ts, batch.y_ts) and torch.equal(wrong.x_tr, batch.x_tr)
    # One shift per episode: the classes stay distinguishable, only their names are wrong.
    assert ((wrong.y_tr - batch.y_tr) % 4 == ((wrong.y_tr - batch.y_tr) % 4)[:, :1]).all()


def test_memorisation_runs_at_a_tiny_size_and_returns_every_condition():
    from mlcourse.tasks.omniglot import Omniglot

    torch.manual_seed(0)
    images = torch.randint(0, 256, (1623, 20, 28, 28), dtype=torch.uint8)
    omniglot = Omniglot(images, ["a"], torch.zeros(1623, dtype=torch.long), ["a/c"] * 1623,
                        torch.ones(1623, dtype=torch.bool))
    s = E.MemorisationSettings.at("quick", iterations=2, tasks=2, channels=4, characters=10, test_episodes=6)
    result = E.memorisation(s, "cpu", omniglot=omniglot, progress=False)
    assert set(result["accuracy"]) == set(E.REGIMES) == set(result["new"]) == set(result["history"])
    for regime in E.REGIMES:
        assert set(result["accuracy"][regime]) == set(E.CONDITIONS)
        for values in [*result["accuracy"][regime].values(), result["new"][regime]]:
            assert values.shape == (6,) and ((values >= 0) & (values <= 1)).all()
        assert len(result["history"][regime].train) >= 1
    table = E.memorisation_table(result)
    assert table.count("\n") == 1 + len(E.REGIMES) and "fixed" in table and "shuffled" in table
    with pytest.raises(TypeError, match="MemorisationSettings"):
        E.memorisation(E.OmniglotSettings.at("quick"), "cpu", omniglot=omniglot)


def test_model_selection_keeps_the_best_validation_theta():
    from mlcourse.tasks.omniglot import Omniglot

    torch.manual_seed(0)
    images = torch.randint(0, 256, (1623, 20, 28, 28), dtype=torch.uint8)
    omniglot = Omniglot(images, ["a"], torch.zeros(1623, dtype=torch.long), ["a/c"] * 1623,
                        torch.ones(1623, dtype=torch.bool))
    s = E.OmniglotSettings.at("quick", iterations=4, tasks=2, channels=4, eval_every=1, val_episodes=4)
    samplers = E.omniglot_split_samplers(5, 1, 1, "cpu", omniglot=omniglot)
    learner, theta, history = E.train_omniglot_maml(s, "cpu", sampler=samplers["train"], progress=False,
                                                    validation=samplers["val"])
    assert [r["iteration"] for r in history.eval] == [1, 2, 3, 4]
    best = max(history.eval, key=lambda r: r["accuracy"])
    assert history.selected["accuracy"] == best["accuracy"]
    again = E.validation_accuracy(learner, samplers["val"], s.val_episodes)(theta)
    assert again["accuracy"] == pytest.approx(history.selected["accuracy"])
