import math

import pytest
import torch

from mlcourse.tasks import EpisodeSampler, SinusoidFamily, Task, TaskBatch


# --- TaskBatch -------------------------------------------------------------------------------

def _batch(n=4, k=3, q=5):
    return TaskBatch(torch.randn(n, k, 1), torch.randn(n, k, 1), torch.randn(n, q, 1), torch.randn(n, q, 1),
                     {"amplitude": torch.arange(n, dtype=torch.float32)})


def test_taskbatch_shapes_and_indexing():
    batch = _batch()
    assert (len(batch), batch.shots, batch.queries) == (4, 3, 5)
    task = batch[2]
    assert isinstance(task, Task) and task.x_tr.shape == (3, 1) and task.params["amplitude"] == 2
    sub = batch[1:3]
    assert isinstance(sub, TaskBatch) and len(sub) == 2
    assert torch.equal(sub.params["amplitude"], torch.tensor([1.0, 2.0]))
    picked = batch[torch.tensor([3, 0])]
    assert torch.equal(picked.x_ts[0], batch.x_ts[3])
    assert [t.params["amplitude"].item() for t in batch] == [0, 1, 2, 3]


def test_taskbatch_to_casts_floats_only():
    batch = TaskBatch(torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long),
                      torch.randn(2, 1, 4), torch.zeros(2, 1, dtype=torch.long))
    moved = batch.to("cpu", dtype=torch.float64)
    assert moved.x_tr.dtype == torch.float64 and moved.y_tr.dtype == torch.long


def test_taskbatch_stack_roundtrip():
    batch = _batch()
    again = TaskBatch.stack(list(batch))
    assert torch.equal(again.x_tr, batch.x_tr) and torch.equal(again.params["amplitude"], batch.params["amplitude"])


@pytest.mark.parametrize("make,message", [
    (lambda: TaskBatch(torch.randn(4, 3, 1), torch.randn(4, 2, 1), torch.randn(4, 5, 1), torch.randn(4, 5, 1)),
     "disagree on their leading dimensions"),
    (lambda: TaskBatch(torch.randn(4, 3, 1), torch.randn(4, 3, 1), torch.randn(3, 5, 1), torch.randn(3, 5, 1)),
     "D\\^tr holds 4 tasks but D\\^ts holds 3"),
    (lambda: TaskBatch(torch.randn(4, 3, 1), torch.randn(4, 3, 1), torch.randn(4, 5, 2), torch.randn(4, 5, 1)),
     "have different shapes"),
    (lambda: TaskBatch(torch.randn(3), torch.randn(3), torch.randn(3), torch.randn(3)),
     "at least 2 leading dimension"),
    (lambda: TaskBatch(torch.randn(4, 3, 1), torch.randn(4, 3, 1), torch.randn(4, 5, 1), torch.randn(4, 5, 1),
                       {"amplitude": torch.ones(3)}), "params\\['amplitude'\\]"),
])
def test_taskbatch_rejects_mismatches(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_taskbatch_index_out_of_range():
    with pytest.raises(IndexError, match="out of range for a batch of 4 tasks"):
        _batch()[4]


# --- Sinusoid family -------------------------------------------------------------------------

def test_sinusoid_shapes_ranges_and_function():
    family = SinusoidFamily()
    batch = family.sample(25, shots=10, queries=7, device="cpu")
    assert batch.x_tr.shape == (25, 10, 1) and batch.x_ts.shape == (25, 7, 1)
    a, b = batch.params["amplitude"], batch.params["phase"]
    assert a.shape == (25,) and ((0.1 <= a) & (a <= 5.0)).all() and ((0 <= b) & (b <= math.pi)).all()
    for x, y in [(batch.x_tr, batch.y_tr), (batch.x_ts, batch.y_ts)]:
        assert ((-5 <= x) & (x <= 5)).all()
        torch.testing.assert_close(y, a.view(-1, 1, 1) * torch.sin(x - b.view(-1, 1, 1)))


def test_sinusoid_distribution_matches_the_paper():
    batch = SinusoidFamily().sample(20_000, shots=5, device="cpu", dtype=torch.float64)
    a, b, x = batch.params["amplitude"], batch.params["phase"], batch.x_tr
    # Uniform ranges: mean and variance of U[lo, hi] are (lo+hi)/2 and (hi-lo)^2/12.
    assert abs(a.mean() - 2.55) < 0.05 and abs(a.var() - 4.9**2 / 12) < 0.1
    assert abs(b.mean() - math.pi / 2) < 0.03 and abs(x.mean()) < 0.05 and abs(x.var() - 100 / 12) < 0.1


def test_sinusoid_support_and_query_are_different_points_of_the_same_task():
    batch = SinusoidFamily().sample(50, shots=10, device="cpu")
    assert not torch.isin(batch.x_ts, batch.x_tr).any()


def test_sinusoid_generator_repeats_and_dtype():
    family = SinusoidFamily()
    one = family.sample(3, 4, device="cpu", dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    two = family.sample(3, 4, device="cpu", dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert one.x_tr.dtype == torch.float64 and torch.equal(one.x_tr, two.x_tr) and torch.equal(one.y_ts, two.y_ts)


@pytest.mark.parametrize("kwargs,message", [
    ({"num_tasks": 0, "shots": 5}, "num_tasks must be an int >= 1, got 0"),
    ({"num_tasks": 5, "shots": -1}, "shots must be an int >= 1, got -1"),
    ({"num_tasks": 5, "shots": 2.5}, "shots must be an int >= 1, got 2.5"),
    ({"num_tasks": 5, "shots": 5, "queries": 0}, "queries must be an int >= 1, got 0"),
])
def test_sinusoid_rejects_bad_counts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SinusoidFamily().sample(device="cpu", **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    ({"amplitude": (5.0, 0.1)}, r"amplitude range must be \(low, high\) with low <= high, got \(5.0, 0.1\)"),
    ({"amplitude": (0.1, float("inf"))}, "amplitude range must be finite, got \\(0.1, inf\\)"),
    ({"phase": (float("-inf"), 0.0)}, "phase range must be finite"),
    ({"x_range": (float("nan"), 1.0)}, "x range must be finite"),
    ({"amplitude": 5.0}, r"amplitude range must be a pair \(low, high\), got 5.0"),
    ({"amplitude": (0.1, 1.0, 5.0)}, r"amplitude range must be a pair \(low, high\), got \(0.1, 1.0, 5.0\)"),
    ({"amplitude": ("low", "high")}, "must be a pair of numbers"),
])
def test_sinusoid_rejects_bad_ranges(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SinusoidFamily(**kwargs)


def test_sinusoid_refuses_integer_dtypes_and_missing_devices():
    with pytest.raises(ValueError, match="dtype must be a floating-point torch dtype, got torch.int64"):
        SinusoidFamily().sample(3, 5, device="cpu", dtype=torch.int64)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="sees no CUDA GPU"):
            SinusoidFamily().sample(3, 5, device="cuda")


# --- Episodes --------------------------------------------------------------------------------

def _coded_images(classes=12, per_class=20, size=6):
    """Image [c, s] holds c in pixel (0, 0) and s in pixel (0, 1): episodes can be decoded."""
    images = torch.zeros(classes, per_class, size, size, dtype=torch.uint8)
    images[:, :, 0, 0] = torch.arange(classes).view(-1, 1)
    images[:, :, 0, 1] = torch.arange(per_class).view(1, -1)
    return images


def _decode(x):
    pixels = (x * 255).round().long()
    return pixels[..., 0, 0, 0], pixels[..., 0, 0, 1]   # class, sample


def test_episodes_are_consistent_and_disjoint():
    sampler = EpisodeSampler(_coded_images(), ways=5, shots=2, queries=3, device="cpu")
    batch = sampler.sample(64)
    assert batch.x_tr.shape == (64, 10, 1, 6, 6) and batch.y_tr.shape == (64, 10)
    assert batch.x_ts.shape == (64, 15, 1, 6, 6) and batch.y_ts.dtype == torch.int64
    cls_tr, smp_tr = _decode(batch.x_tr)
    cls_ts, smp_ts = _decode(batch.x_ts)
    classes = batch.params["classes"]
    for e in range(64):
        assert len(set(classes[e].tolist())) == 5                       # N distinct classes
        assert torch.equal(cls_tr[e], classes[e][batch.y_tr[e]])         # label j is class classes[j]
        assert torch.equal(cls_ts[e], classes[e][batch.y_ts[e]])
        for j in range(5):
            tr = set(smp_tr[e][batch.y_tr[e] == j].tolist())
            ts = set(smp_ts[e][batch.y_ts[e] == j].tolist())
            assert len(tr) == 2 and len(ts) == 3 and not tr & ts      # K + Q distinct images
    assert torch.equal(batch.y_tr[0], torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4]))


def test_labels_are_shuffled_per_episode():
    sampler = EpisodeSampler(_coded_images(classes=5), ways=5, shots=1, queries=1, device="cpu")
    classes = sampler.sample(2000).params["classes"]
    # With 5 classes every episode uses all of them: only the label order differs, uniformly.
    counts = torch.bincount(classes[:, 0], minlength=5).float()
    assert (counts > 300).all() and (counts < 500).all()


def test_rotations_are_new_classes():
    images = _coded_images(classes=3, size=6)
    images[:, :, 5, 0] = 200   # a mark in the bottom-left corner shows the rotation
    sampler = EpisodeSampler(images, ways=12, shots=1, queries=1, rotations=True, device="cpu")
    assert sampler.num_classes == 12
    batch = sampler.sample(10)
    for e in range(10):
        for j, c in enumerate(batch.params["classes"][e].tolist()):
            k, base = divmod(c, 3)
            got = (batch.x_tr[e, j, 0] * 255).round().to(torch.uint8)
            source = torch.rot90(images[base], k, dims=(-2, -1))
            assert any(torch.equal(got, s) for s in source)


def test_rotations_per_class_turn_whole_classes_of_distinct_characters():
    """The MAML code's augmentation: N distinct characters, each class turned by its own quarter turns."""
    images = _coded_images(classes=6, size=6)
    images[:, :, 5, 0] = 200   # a mark in the bottom-left corner shows the rotation
    sampler = EpisodeSampler(images, ways=5, shots=2, queries=2, rotations="per_class", device="cpu")
    assert sampler.num_classes == 6
    batch = sampler.sample(200)
    turns = batch.params["rotations"]
    assert turns.shape == (200, 5) and set(turns.unique().tolist()) == {0, 1, 2, 3}
    for e in range(20):
        classes = batch.params["classes"][e]
        assert len(set(classes.tolist())) == 5                      # a character never meets its rotation
        for x, y in ((batch.x_tr[e], batch.y_tr[e]), (batch.x_ts[e], batch.y_ts[e])):
            for image, label in zip(x, y):
                got = (image[0] * 255).round().to(torch.uint8)
                source = torch.rot90(images[classes[label]], int(turns[e, label]), dims=(-2, -1))
                assert any(torch.equal(got, s) for s in source)   # every image of a class, the same turn


def test_any_number_of_channels():
    images = (torch.rand(8, 5, 3, 4, 4) * 255).to(torch.uint8)      # e.g. RGB images
    batch = EpisodeSampler(images, ways=3, shots=2, queries=1, device="cpu").sample(4)
    assert batch.x_tr.shape == (4, 6, 3, 4, 4) and batch.x_ts.shape == (4, 3, 3, 4, 4)
    labels, classes = batch.y_tr[0], batch.params["classes"][0]
    first = (batch.x_tr[0, 0] * 255).round().to(torch.uint8)
    assert any(torch.equal(first, im) for im in images[classes[labels[0]]])
    with pytest.raises(ValueError, match="rotations must be False, True / 'as_classes' or 'per_class'"):
        EpisodeSampler(images, ways=3, shots=1, rotations="sometimes", device="cpu")


@pytest.mark.parametrize("kwargs,error,message", [
    ({"ways": 13, "shots": 1}, ValueError, "13-way episodes need 13 classes but this split has 12"),
    ({"ways": 5, "shots": 15, "queries": 6}, ValueError, "each class has 20 images, but K=15 shots plus Q=6"),
    ({"ways": 5, "shots": 0}, ValueError, "shots \\(K\\) must be an int >= 1, got 0"),
    ({"ways": 0, "shots": 1}, ValueError, "ways \\(N\\) must be an int >= 1, got 0"),
])
def test_impossible_episodes_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        EpisodeSampler(_coded_images(), device="cpu", **kwargs)


def test_episode_sampler_needs_uint8_images():
    with pytest.raises(TypeError, match="uint8 tensor"):
        EpisodeSampler(torch.rand(5, 20, 28, 28), ways=5, shots=1, device="cpu")


# --- Fixed labels: non-mutually-exclusive tasks (the memorisation setting) ---------------------

def _labels_seen(batch):
    """{dataset class: set of labels it was given} over the batch, read from the images themselves."""
    seen = {}
    for x, y in ((batch.x_tr, batch.y_tr), (batch.x_ts, batch.y_ts)):
        classes, _ = _decode(x)
        for c, label in zip(classes.flatten().tolist(), y.flatten().tolist()):
            seen.setdefault(c, set()).add(label)
    return seen


def test_fixed_labels_give_every_class_one_label_across_episodes():
    sampler = EpisodeSampler(_coded_images(classes=12), ways=5, shots=2, queries=1, labels="fixed", device="cpu")
    batch = sampler.sample(500)
    seen = _labels_seen(batch)
    assert set(seen) == set(range(12))                            # every class is drawn ...
    for c, labels in seen.items():
        assert labels == {int(sampler.class_labels[c])}           # ... always with its own label
    assert sorted(torch.bincount(sampler.class_labels).tolist()) == [2, 2, 2, 3, 3]   # 12 classes dealt to 5 labels
    for e in range(50):                                           # still N distinct classes, K + Q images each
        assert len(set(batch.params["classes"][e].tolist())) == 5
        assert torch.equal(sampler.class_labels[batch.params["classes"][e]], torch.arange(5))


def test_shuffled_labels_are_not_fixed():
    sampler = EpisodeSampler(_coded_images(classes=12), ways=5, shots=2, queries=1, device="cpu")
    assert sampler.labels == "shuffled" and sampler.class_labels is None
    seen = _labels_seen(sampler.sample(500))
    assert all(labels == set(range(5)) for labels in seen.values())   # each class carries every label


def test_fixed_labels_with_rotations_and_seed():
    images = _coded_images(classes=6)
    a = EpisodeSampler(images, ways=5, shots=1, rotations="per_class", labels="fixed", label_seed=1, device="cpu")
    b = EpisodeSampler(images, ways=5, shots=1, rotations="per_class", labels="fixed", label_seed=1, device="cpu")
    c = EpisodeSampler(images, ways=5, shots=1, rotations="as_classes", labels="fixed", label_seed=2, device="cpu")
    assert torch.equal(a.class_labels, b.class_labels) and c.class_labels.shape == (24,)
    batch = a.sample(100)
    assert torch.equal(a.class_labels[batch.params["classes"]], torch.arange(5).expand(100, 5))
    assert "labels='fixed'" in repr(a)
    with pytest.raises(ValueError, match="labels must be 'shuffled' or 'fixed', got 'sorted'"):
        EpisodeSampler(images, ways=5, shots=1, labels="sorted", device="cpu")
