"""The registered experiments: the papers' results that ``python -m mlcourse.reproduce`` re-runs.

Each module holds the experiments of one chapter: their settings (a :class:`mlcourse.settings.Settings`
dataclass with the paper's, the book's and the quick scale's values), the training and evaluation
functions the chapter calls at the book's scale, and the registered runs at every scale::

    @experiment("maml-sinusoid", title="...", paper="finn2017maml", gpu_minutes=2, settings=SinusoidSettings)
    def maml_sinusoid(settings: SinusoidSettings, device) -> dict:
        ...
        return {"metrics": {"mse_after_1_step": {"value": 0.4, "ci95": 0.05, "paper": None, "unit": "MSE"}},
                "notes": "..."}

:mod:`mlcourse.reproduce` adds the settings, the provenance and the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..settings import Settings


@dataclass
class Experiment:
    name: str
    run: Callable[[Settings, torch.device], dict]
    title: str
    paper: str                # citation key of the paper whose number is reproduced
    gpu_minutes: float        # expected wall time at the paper's scale on one modern GPU
    settings: type[Settings]  # the experiment's settings; .at(scale) gives each scale's values


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(name: str, title: str, paper: str, gpu_minutes: float, settings: type[Settings]):
    """Register ``fn(settings, device) -> dict`` as a reproducible experiment called ``name``."""
    if not (isinstance(settings, type) and issubclass(settings, Settings)):
        raise TypeError(f"experiment {name!r}: settings must be a Settings dataclass, got {settings!r}.")

    def register(fn):
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is registered twice.")
        EXPERIMENTS[name] = Experiment(name, fn, title, paper, gpu_minutes, settings)
        return fn

    return register


# The chapters' experiment modules register themselves on import (after `experiment` exists).
from . import blackbox, imaml, maml, maml_family, maml_rl, metric, reptile  # noqa: E402,F401
