"""Checks for the chapters' coding exercises (one module per chapter) and the tools around them:
:mod:`mlcourse.assign` writes student notebooks, :mod:`mlcourse.grade` grades a folder of them."""

import importlib

from .core import EXERCISES, MARKER, Case, Exercise, Verdict, check, exercise

CHAPTER_MODULES = ("tasks", "multitask", "transfer", "blackbox", "maml", "fomaml", "reptile", "imaml", "maml_rl")


def load_all() -> dict:
    """Import every chapter's checks so that they register; returns the registry."""
    for name in CHAPTER_MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return EXERCISES


__all__ = ["EXERCISES", "MARKER", "Case", "Exercise", "Verdict", "check", "exercise", "load_all"]
