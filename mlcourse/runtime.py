"""Where and how big: the device, the seed and the scale of every experiment.

Every chapter starts with the same three lines::

    from mlcourse import runtime
    runtime.seed(0)
    device = runtime.device()

and picks its sizes with :func:`scale`, so that ``MLCOURSE_QUICK=1`` (set by the tests) shrinks
every experiment to about a minute on two CPU cores while a reader gets the book's scale.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

_DEVICES = ("cpu", "cuda", "mps")


def device() -> torch.device:
    """The device every tensor of the course lives on: cuda, else mps, else cpu.

    ``MLCOURSE_DEVICE`` overrides the choice (``cpu``, ``cuda``, ``cuda:1`` or ``mps``).
    """
    wanted = os.environ.get("MLCOURSE_DEVICE", "").strip()
    if wanted:
        kind = wanted.split(":")[0]
        if kind not in _DEVICES:
            raise ValueError(
                f"MLCOURSE_DEVICE={wanted!r} is not a device; use one of "
                f"{', '.join(_DEVICES)} (optionally with an index, e.g. cuda:0)."
            )
        if kind == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"MLCOURSE_DEVICE={wanted!r} but this torch sees no CUDA GPU.")
        if kind == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"MLCOURSE_DEVICE={wanted!r} but MPS is not available here.")
        return torch.device(wanted)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed(n: int) -> torch.Generator:
    """Seed python, numpy and torch (all CUDA devices too); returns a CPU generator seeded with n."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"seed must be a non-negative int, got {n!r}.")
    random.seed(n)
    np.random.seed(n % 2**32)
    torch.manual_seed(n)  # also seeds every CUDA device
    return torch.Generator().manual_seed(n)


def quick() -> bool:
    """True under ``MLCOURSE_QUICK=1``: every experiment runs at its smallest, test-sized scale."""
    return _quick_flag()


def _quick_flag() -> bool:
    value = os.environ.get("MLCOURSE_QUICK", "0").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"MLCOURSE_QUICK={value!r}; use 1 (quick) or 0 (the book's scale).")


def scale(quick: T, full: T) -> T:  # noqa: A002 - the name reads well at call sites
    """``quick`` under MLCOURSE_QUICK=1, else ``full``: ``steps = scale(quick=100, full=20_000)``."""
    return quick if _quick_flag() else full


def data_dir() -> Path:
    """Where datasets live: ``$MLCOURSE_DATA``, else a per-user cache folder."""
    if os.environ.get("MLCOURSE_DATA"):
        return Path(os.environ["MLCOURSE_DATA"]).expanduser()
    return cache_dir() / "data"


def cache_dir() -> Path:
    """A writable per-user folder for derived files (decoded datasets): ``$MLCOURSE_CACHE``,
    else ``$XDG_CACHE_HOME/mlcourse``, else ``~/.cache/mlcourse``."""
    if os.environ.get("MLCOURSE_CACHE"):
        return Path(os.environ["MLCOURSE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlcourse"


def describe() -> str:
    """One line for the top of a chapter: device, torch version and scale."""
    dev = device()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    return f"device: {name} | torch {torch.__version__} | scale: {'quick' if quick() else 'book'}"
