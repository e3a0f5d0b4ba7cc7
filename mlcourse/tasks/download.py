"""What every dataset of the package needs: a download verified by its md5, files written
atomically, and a cache of decoded arrays that is checked before it is trusted.

A new dataset is one module that calls these (see :mod:`mlcourse.tasks.omniglot`): where its
files live (:func:`mlcourse.runtime.data_dir`), their official addresses and md5s, and how to
decode them into one uint8 tensor ``[classes, per_class, (C,) H, W]`` for the episode sampler.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np


class DataError(RuntimeError):
    """A missing, corrupt or unexpected data file."""


class CacheWarning(UserWarning):
    """A cached file was unreadable or did not match what it should hold, and was rebuilt."""


def md5sum(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, folder: Path, name: str, md5: str, error: type[DataError] = DataError) -> Path:
    """Fetch ``url`` into ``folder/name``: into a ``.part`` file first, checked against ``md5``,
    then moved in place, so a broken download never looks like a finished one. Without a network
    the error names the file, the address and the folder to put it in."""
    part = folder / (name + ".part")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
    except (urllib.error.URLError, OSError) as err:
        part.unlink(missing_ok=True)
        raise error(
            f"the data file {name} is missing and could not be downloaded from {url} ({err}). "
            f"Download it by hand and put it in {folder} (or point MLCOURSE_DATA at a folder that holds it)."
        ) from None
    got = md5sum(part)
    if got != md5:
        part.unlink()
        raise error(f"downloaded {url} but its md5 is {got}, expected {md5}; the file was deleted.")
    os.replace(part, folder / name)
    return folder / name


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to a temporary file beside ``path``, then a rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz.part", delete=False) as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


def array_digest(array: np.ndarray) -> str:
    """sha256 of an array's shape, dtype and bytes."""
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def load_cached(path: Path, check: Callable[[dict], str | None]) -> dict | None:
    """The arrays of the cache file ``path`` if it exists, is readable (no pickles) and ``check``
    accepts it (returns None; else the reason it is wrong). A bad cache gets a warning that names
    it and the reason, and None is returned so the caller decodes again."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {k: saved[k] for k in saved.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        reason = f"unreadable ({type(err).__name__}: {err})"
    else:
        reason = check(arrays)
        if reason is None:
            return arrays
    warnings.warn(f"the cached file {path} is {reason}; it is rebuilt from the original data.", CacheWarning,
                  stacklevel=3)
    return None
