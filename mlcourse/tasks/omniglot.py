"""Omniglot (Lake et al. 2015): 1,623 handwritten characters of 50 alphabets, 20 drawers each.

:func:`load_omniglot` reads the two official zips from ``$MLCOURSE_DATA/omniglot/`` (downloading
them, with an md5 check, when missing), checks their contents, resizes every image to 28×28 once
and returns all of it as one uint8 tensor ``[1623, 20, 28, 28]`` on the device, strokes bright.
Decoding 32,460 PNGs takes seconds, so the decoded tensor is cached in an ``.npz`` in the user
cache folder (:func:`mlcourse.runtime.cache_dir`); later loads read the cache after checking it
(shape, character names, a digest of its pixels), and decode again, with a warning, when it is
truncated, foreign or stale. A zip already in place is checked by its contents rather than its
bytes: when it is first decoded, a digest of every decoded image (with its path) must match the
official image set's, so a changed or swapped PNG is found even in a re-packed zip.

:meth:`Omniglot.split` gives the class splits of the papers: ``"maml"`` (all characters shuffled
with seed 1: 1,100 meta-train, 100 meta-val, 423 meta-test, as in Finn et al.'s code) and
``"alphabet"`` (background alphabets for meta-training, evaluation alphabets halved into
meta-val and meta-test).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import urllib.request  # noqa: F401 - tests replace urlopen here to simulate the network
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import runtime
from .download import DataError, array_digest, download, load_cached, save_arrays

BASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
# name: (md5 of the official file, alphabets, characters)
ZIPS = {
    "images_background.zip": ("68d2efa1b9178cc56df9314c21c6e718", 30, 964),
    "images_evaluation.zip": ("6b91aef0f799c5bb55b94e3f2daec811", 20, 659),
}
# sha256 over the official images in path order: each PNG's path below the top folder, then its
# decoded 105×105 pixels (8-bit). It depends on the images only, not on how the zip was packed.
IMAGES_DIGEST = {
    "images_background.zip": "1172c636734a347a343ec697dd97c7bf8cf9a0b8585fdc3f06c8e276f3633ecf",
    "images_evaluation.zip": "e1b2a8d6437057220f345d4babf2b6003a519611bfc141e4d792ed155011bc21",
}
DRAWERS = 20
CACHE_VERSION = 2


class OmniglotError(DataError):
    """A missing, corrupt or unexpected Omniglot file."""


@dataclass
class Omniglot:
    """All of Omniglot on one device.

    images: uint8 ``[characters, 20, size, size]``, 255 on strokes, 0 on paper.
    alphabets: alphabet names; ``alphabet[c]`` is the index of character c's alphabet.
    characters: ``"Alphabet/characterNN"`` for each character.
    background: True for the characters of ``images_background.zip``.
    """

    images: torch.Tensor
    alphabets: list[str]
    alphabet: torch.Tensor
    characters: list[str]
    background: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device) -> Omniglot:
        return Omniglot(self.images.to(device), self.alphabets, self.alphabet.to(device), self.characters,
                        self.background.to(device))

    def split(self, kind: str = "maml", seed: int = 1) -> dict[str, torch.Tensor]:
        """Disjoint character indices for ``train``, ``val`` and ``test`` (meta-train/val/test)."""
        n = len(self)
        if kind == "maml":
            order = list(range(n))
            random.Random(seed).shuffle(order)
            order = torch.tensor(order, device=self.images.device)
            return {"train": order[:1100], "val": order[1100:1200], "test": order[1200:]}
        if kind == "alphabet":
            background = torch.nonzero(self.background).flatten()
            evaluation_alphabets = sorted({int(a) for a in self.alphabet[~self.background]})
            val_alphabets = torch.tensor(evaluation_alphabets[::2], device=self.alphabet.device)
            is_val = (~self.background) & torch.isin(self.alphabet, val_alphabets)
            is_test = (~self.background) & ~is_val
            return {"train": background, "val": torch.nonzero(is_val).flatten(),
                    "test": torch.nonzero(is_test).flatten()}
        raise ValueError(f"unknown split {kind!r}; allowed: 'maml' or 'alphabet'.")


def _download(name: str, folder: Path) -> Path:
    return download(BASE_URL + name, folder, name, ZIPS[name][0], error=OmniglotError)


def _read_zip(path: Path, size: int):
    """Decode one official zip: images [characters, 20, size, size] and their names, checked."""
    from PIL import Image  # matplotlib's dependency; imported here to keep `import mlcourse` light

    md5, n_alphabets, n_characters = ZIPS[path.name]
    try:
        archive = zipfile.ZipFile(path)
        pngs = sorted(n for n in archive.namelist() if n.endswith(".png"))
    except (zipfile.BadZipFile, OSError) as err:
        raise OmniglotError(f"{path} is not a readable zip ({err}); delete it so that it is downloaded again.") from None
    groups: dict[str, list[str]] = {}
    for name in pngs:
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != path.stem:
            raise OmniglotError(
                f"{path}: unexpected entry {name!r}; the official layout is {path.stem}/<Alphabet>/characterNN/<id>_<drawer>.png."
            )
        groups.setdefault(f"{parts[1]}/{parts[2]}", []).append(name)
    alphabets = sorted({c.split("/")[0] for c in groups})
    bad = {c: len(files) for c, files in groups.items() if len(files) != DRAWERS}
    if len(alphabets) != n_alphabets or len(groups) != n_characters or bad:
        raise OmniglotError(
            f"{path} holds {len(alphabets)} alphabets and {len(groups)} characters"
            f"{f', and characters without {DRAWERS} drawers: {dict(list(bad.items())[:3])}' if bad else ''}; "
            f"the official file has {n_alphabets} alphabets and {n_characters} characters of {DRAWERS} drawers each. "
            f"Delete it so that it is downloaded again (official md5 {md5})."
        )
    characters = sorted(groups)
    images = np.empty((len(characters), DRAWERS, size, size), dtype=np.uint8)
    digest = hashlib.sha256()
    try:
        for c, character in enumerate(characters):
            for d, name in enumerate(groups[character]):
                image = Image.open(io.BytesIO(archive.read(name))).convert("L")
                digest.update(name.split("/", 1)[1].encode())
                digest.update(np.asarray(image).tobytes())
                # Lanczos resampling from 105×105, as the MAML code's resize; invert so strokes are bright.
                images[c, d] = 255 - np.asarray(image.resize((size, size), Image.LANCZOS))
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise OmniglotError(f"{path} is corrupt ({err}); delete it so that it is downloaded again.") from None
    if digest.hexdigest() != IMAGES_DIGEST[path.name]:
        raise OmniglotError(
            f"{path} has the official layout but its images differ from the official Omniglot images (digest "
            f"{digest.hexdigest()[:16]}..., expected {IMAGES_DIGEST[path.name][:16]}...): a PNG was changed, replaced "
            f"or swapped. Delete it so that it is downloaded again (official md5 {md5}).")
    return images, characters


def _cache_path(zip_path: Path, size: int) -> Path:
    # Keyed by the zip's place, size and time, so a replaced zip is decoded again. The cache lives
    # in the user's cache folder: data folders may be shared or read-only.
    stat = zip_path.stat()
    place = hashlib.md5(str(zip_path.resolve()).encode()).hexdigest()[:8]
    name = f"{zip_path.stem}_{size}px_{place}_{stat.st_size}_{stat.st_mtime_ns}_v{CACHE_VERSION}.npz"
    return runtime.cache_dir() / "omniglot" / name


def _check_cache(arrays: dict, zip_name: str, size: int) -> str | None:
    """Why a decoded cache cannot be trusted, or None if it holds what decoding would give."""
    _, _, n_characters = ZIPS[zip_name]
    missing = {"images", "characters", "images_digest", "source_digest"} - set(arrays)
    if missing:
        return f"missing {sorted(missing)}"
    images, characters = arrays["images"], arrays["characters"]
    if images.dtype != np.uint8 or images.shape != (n_characters, DRAWERS, size, size):
        return (f"holding {images.dtype} images of shape {images.shape}, not uint8 "
                f"{(n_characters, DRAWERS, size, size)}")
    if characters.shape != (n_characters,):
        return f"naming {characters.shape[0] if characters.ndim else 0} characters, not {n_characters}"
    if str(arrays["source_digest"]) != IMAGES_DIGEST[zip_name]:
        return "decoded from images other than the official ones"
    if str(arrays["images_digest"]) != array_digest(images):
        return "damaged (its pixels do not match the digest it was saved with)"
    return None


def _load_one(zip_path: Path, size: int):
    cache = _cache_path(zip_path, size)
    saved = load_cached(cache, lambda arrays: _check_cache(arrays, zip_path.name, size))
    if saved is not None:
        return saved["images"], [str(c) for c in saved["characters"]]
    images, characters = _read_zip(zip_path, size)
    try:
        save_arrays(cache, images=images, characters=np.array(characters), images_digest=np.array(array_digest(images)),
                    source_digest=np.array(IMAGES_DIGEST[zip_path.name]))
    except OSError:
        pass  # a cache we cannot write only costs time on the next load
    return images, characters


def load_omniglot(root: str | os.PathLike | None = None, size: int = 28, device=None,
                  download: bool = True) -> Omniglot:
    """All 1,623 Omniglot characters as one uint8 tensor on ``device``.

    root: the folder holding the two zips (default ``$MLCOURSE_DATA/omniglot``).
    size: side of the resized images (28 as in the MAML setting).
    download: fetch a missing zip from the official address (md5-checked).
    """
    if not isinstance(size, int) or not 4 <= size <= 105:
        raise ValueError(f"size must be an int in [4, 105] (the originals are 105×105), got {size!r}.")
    folder = Path(root).expanduser() if root is not None else runtime.data_dir() / "omniglot"
    device = runtime.device() if device is None else torch.device(device)
    all_images, all_characters, background = [], [], []
    for name in ZIPS:
        path = folder / name
        if not path.exists():
            if not download:
                raise OmniglotError(f"{path} is missing; download {BASE_URL + name} and put it in {folder}.")
            path = _download(name, folder)
        images, characters = _load_one(path, size)
        all_images.append(images)
        all_characters += characters
        background += [name == "images_background.zip"] * len(characters)
    alphabets = sorted({c.split("/")[0] for c in all_characters})
    index = {a: i for i, a in enumerate(alphabets)}
    return Omniglot(
        images=torch.from_numpy(np.concatenate(all_images)).to(device),
        alphabets=alphabets,
        alphabet=torch.tensor([index[c.split("/")[0]] for c in all_characters], device=device),
        characters=all_characters,
        background=torch.tensor(background, device=device),
    )
