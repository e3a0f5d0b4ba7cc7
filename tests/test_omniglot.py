import io
import urllib.error
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from mlcourse.tasks import EpisodeSampler, OmniglotError, load_omniglot
from mlcourse.tasks import omniglot as omniglot_module


@pytest.fixture
def private_cache(monkeypatch, tmp_path):
    """Tests that load zips from temporary folders keep their caches out of the user's."""
    monkeypatch.setenv("MLCOURSE_CACHE", str(tmp_path / "cache"))


def test_full_dataset(omniglot):
    assert omniglot.images.shape == (1623, 20, 28, 28) and omniglot.images.dtype == torch.uint8
    assert len(omniglot.alphabets) == 50 and int(omniglot.background.sum()) == 964
    # Strokes are bright on a dark page: most pixels are paper.
    assert omniglot.images.float().mean() < 60 and omniglot.images.max() == 255
    assert omniglot.characters[0] == "Alphabet_of_the_Magi/character01"


@pytest.mark.parametrize("kind,sizes", [("maml", (1100, 100, 423)), ("alphabet", (964, None, None))])
def test_splits_are_disjoint_and_cover_everything(omniglot, kind, sizes):
    split = omniglot.split(kind)
    parts = [set(split[name].tolist()) for name in ("train", "val", "test")]
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    assert set().union(*parts) == set(range(1623))
    assert all(expected is None or len(p) == expected for p, expected in zip(parts, sizes))
    if kind == "alphabet":   # whole alphabets go to one split
        alphabet_sets = [set(omniglot.alphabet[list(p)].tolist()) for p in parts]
        assert not alphabet_sets[1] & alphabet_sets[2] and not alphabet_sets[0] & alphabet_sets[1]


def test_maml_split_is_reproducible(omniglot):
    assert torch.equal(omniglot.split("maml")["test"], omniglot.split("maml", seed=1)["test"])
    assert not torch.equal(omniglot.split("maml")["test"], omniglot.split("maml", seed=2)["test"])


def test_unknown_split(omniglot):
    with pytest.raises(ValueError, match="unknown split 'lake'"):
        omniglot.split("lake")


def test_episodes_on_real_data(omniglot):
    sampler = EpisodeSampler(omniglot.images[omniglot.split()["train"]], ways=5, shots=1, queries=19,
                             rotations=True, device="cpu")
    assert sampler.num_classes == 4400
    batch = sampler.sample(4)
    assert batch.x_tr.shape == (4, 5, 1, 28, 28) and 0 <= batch.x_tr.min() and batch.x_tr.max() <= 1
    with pytest.raises(ValueError, match="K=1 shots plus Q=20 queries"):
        EpisodeSampler(omniglot.images, ways=5, shots=1, queries=20, device="cpu")


def test_second_load_reads_the_cache(omniglot_dir, monkeypatch, omniglot):
    load_omniglot(omniglot_dir, device="cpu")   # makes sure the cache exists

    def no_decoding(*args):
        raise AssertionError("decoded the zip again although a cache exists")

    monkeypatch.setattr(omniglot_module, "_read_zip", no_decoding)
    again = load_omniglot(omniglot_dir, device="cpu")
    assert torch.equal(again.images, omniglot.images)


def _zip_with(path, entries):
    with zipfile.ZipFile(path, "w") as archive:
        for name in entries:
            buffer = io.BytesIO()
            Image.fromarray(np.zeros((105, 105), dtype=np.uint8)).save(buffer, format="PNG")
            archive.writestr(name, buffer.getvalue())


def test_missing_zip_offline_names_file_address_and_folder(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(omniglot_module.urllib.request, "urlopen", offline)
    with pytest.raises(OmniglotError) as err:
        load_omniglot(tmp_path, device="cpu")
    text = str(err.value)
    assert "images_background.zip" in text and omniglot_module.BASE_URL in text and str(tmp_path) in text
    assert not list(tmp_path.glob("*.part"))


def test_download_with_wrong_md5_is_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(omniglot_module.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"not a zip"))
    with pytest.raises(OmniglotError, match="md5 is .* expected 68d2efa1b9178cc56df9314c21c6e718"):
        load_omniglot(tmp_path, device="cpu")
    assert not list(tmp_path.iterdir())


def test_missing_without_download(tmp_path):
    with pytest.raises(OmniglotError, match="images_background.zip is missing"):
        load_omniglot(tmp_path, device="cpu", download=False)


def test_corrupt_zip(tmp_path, private_cache):
    (tmp_path / "images_background.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(OmniglotError, match="not a readable zip"):
        load_omniglot(tmp_path, device="cpu")


def test_zip_with_wrong_contents(tmp_path, private_cache):
    _zip_with(tmp_path / "images_background.zip",
              [f"images_background/Latin/character01/0001_{d:02d}.png" for d in range(1, 21)])
    with pytest.raises(OmniglotError, match="holds 1 alphabets and 1 characters; the official file has 30"):
        load_omniglot(tmp_path, device="cpu")


def test_zip_with_missing_drawers(tmp_path, private_cache):
    _zip_with(tmp_path / "images_background.zip",
              [f"images_background/Latin/character01/0001_{d:02d}.png" for d in range(1, 5)])
    with pytest.raises(OmniglotError, match="characters without 20 drawers"):
        load_omniglot(tmp_path, device="cpu")


def test_bad_size():
    with pytest.raises(ValueError, match="size must be an int in \\[4, 105\\]"):
        load_omniglot(size=200)


# --- the decoded cache and the images' digest ---------------------------------------------------

def _fake_decoder(calls):
    def read(path, size):
        calls.append(path.name)
        _, _, n = omniglot_module.ZIPS[path.name]
        return np.full((n, 20, size, size), 7, dtype=np.uint8), [f"Alphabet/character{i:04d}" for i in range(n)]
    return read


@pytest.fixture
def cached_evaluation_zip(tmp_path, monkeypatch, private_cache):
    """A placeholder images_evaluation.zip, a decoder that counts its calls, and the cache it writes."""
    zip_path = tmp_path / "images_evaluation.zip"
    zip_path.write_bytes(b"the decoder is replaced; the cache is keyed by this file's place and time")
    calls = []
    monkeypatch.setattr(omniglot_module, "_read_zip", _fake_decoder(calls))
    omniglot_module._load_one(zip_path, 28)
    assert calls == ["images_evaluation.zip"]
    return zip_path, omniglot_module._cache_path(zip_path, 28), calls


def test_a_good_cache_is_read_without_decoding(cached_evaluation_zip):
    zip_path, cache, calls = cached_evaluation_zip
    images, characters = omniglot_module._load_one(zip_path, 28)
    assert calls == ["images_evaluation.zip"] and images.shape == (659, 20, 28, 28) and len(characters) == 659


def _rewrite(cache, **changes):
    with np.load(cache, allow_pickle=False) as saved:
        arrays = {k: saved[k] for k in saved.files}
    arrays.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del arrays[k]
    np.savez(cache, **arrays)


@pytest.mark.parametrize("damage,reason", [
    (lambda c: c.write_bytes(c.read_bytes()[:1000]), "unreadable"),
    (lambda c: c.write_bytes(b""), "unreadable"),
    (lambda c: np.savez(c, something=np.zeros(3)), "missing"),
    (lambda c: _rewrite(c, images=np.zeros((974, 20, 28, 28), np.uint8)), "974, 20, 28, 28"),
    (lambda c: _rewrite(c, characters=np.array(["a"] * 600)), "naming 600 characters, not 659"),
    (lambda c: _rewrite(c, images=np.full((659, 20, 28, 28), 9, np.uint8)), "damaged"),
    (lambda c: _rewrite(c, source_digest=np.array("0" * 64)), "images other than the official ones"),
], ids=["truncated", "empty", "foreign", "wrong-shape", "wrong-names", "changed-pixels", "other-source"])
def test_a_bad_cache_is_named_in_a_warning_and_decoded_again(cached_evaluation_zip, damage, reason):
    from mlcourse.tasks.download import CacheWarning

    zip_path, cache, calls = cached_evaluation_zip
    damage(cache)
    with pytest.warns(CacheWarning, match=f"{cache.name}.*{reason}"):
        images, _ = omniglot_module._load_one(zip_path, 28)
    assert calls == ["images_evaluation.zip"] * 2 and images.shape == (659, 20, 28, 28)
    assert omniglot_module._load_one(zip_path, 28)[0].shape == (659, 20, 28, 28)   # the rebuilt cache is good
    assert len(calls) == 2


def test_a_swapped_png_is_found_when_the_zip_is_first_decoded(omniglot_dir, tmp_path, monkeypatch, private_cache):
    """A re-packed zip with the official layout and counts, but two images exchanged. (Two characters of
    the real evaluation set stand for the whole set, whose digest is computed here independently.)"""
    import hashlib

    source = zipfile.ZipFile(omniglot_dir / "images_evaluation.zip")
    names = sorted(n for n in source.namelist() if n.endswith(".png"))[:40]   # two characters, 20 drawers each
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.split("/", 1)[1].encode())
        digest.update(np.asarray(Image.open(io.BytesIO(source.read(name))).convert("L")).tobytes())
    monkeypatch.setitem(omniglot_module.ZIPS, "images_evaluation.zip", ("-", 1, 2))
    monkeypatch.setitem(omniglot_module.IMAGES_DIGEST, "images_evaluation.zip", digest.hexdigest())

    def pack(folder, swap=()):
        folder.mkdir()
        with zipfile.ZipFile(folder / "images_evaluation.zip", "w") as out:
            for name in names:
                out.writestr(name, source.read(dict(zip(swap, reversed(swap))).get(name, name)))
        return folder / "images_evaluation.zip"

    images, characters = omniglot_module._read_zip(pack(tmp_path / "same"), 28)
    assert images.shape == (2, 20, 28, 28) and len(characters) == 2
    with pytest.raises(OmniglotError, match="images differ from the official Omniglot images"):
        omniglot_module._read_zip(pack(tmp_path / "swapped", swap=(names[0], names[-1])), 28)
