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
        try:
            return check_device(wanted)
        except (ValueError, RuntimeError) as err:
            raise type(err)(f"MLCOURSE_DEVICE={wanted!r}: {err}") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_device(wanted) -> torch.device:
    """``wanted`` as a torch.device if this machine has it, else an error saying what it has."""
    try:
        dev = torch.device(wanted)
    except (RuntimeError, TypeError):
        raise ValueError(f"{wanted!r} is not a device; use one of {', '.join(_DEVICES)} "
                         "(optionally with an index, e.g. cuda:0).") from None
    if dev.type not in _DEVICES:
        raise ValueError(f"{wanted!r} is not a device the course runs on; use one of {', '.join(_DEVICES)}.")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {wanted!r} asked for, but this torch sees no CUDA GPU "
                               f"(torch {torch.__version__}); use 'cpu'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {wanted!r} asked for, but there are {torch.cuda.device_count()} CUDA GPU(s).")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {wanted!r} asked for, but MPS is not available here; use 'cpu'.")
    return dev


FLOAT_TYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_dtype(dtype):
    """``dtype`` if it is None or a floating-point torch dtype (parameters must be differentiable)."""
    if dtype is not None and dtype not in FLOAT_TYPES:
        raise ValueError(f"parameters need a floating-point dtype ({', '.join(map(str, FLOAT_TYPES))}), got {dtype!r}.")
    return dtype


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
