"""Checks for the chapters' exercises (one module per chapter) and the tools around them:
:mod:`mlcourse.assign` writes student notebooks, :mod:`mlcourse.grade` grades a class of them in
sandboxes (see :mod:`mlcourse.grading`)."""

import importlib

from .core import (EXERCISES, RECIPES, Built, Case, Exercise, Observation, Verdict, check, exercise, experiment,
                   judge, observe, recipe)

CHAPTER_MODULES = ("tasks", "multitask", "transfer", "blackbox", "maml", "fomaml", "reptile", "imaml", "maml_rl",
                   "maml_family", "metric")


def load_all() -> dict:
    """Import every chapter's checks so that they register; returns the registry."""
    for name in CHAPTER_MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return EXERCISES


__all__ = ["EXERCISES", "RECIPES", "Built", "Case", "Exercise", "Observation", "Verdict", "check", "exercise",
           "experiment", "judge", "load_all", "observe", "recipe"]
