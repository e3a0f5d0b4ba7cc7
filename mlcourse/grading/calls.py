"""Calling a function on a case's inputs and observing what it gives.

Shared by the notebook's checks (everything in one process) and the sandbox's worker (the
student's side of a grading run). It imports torch only when a value needs it, so that a
sandbox starts in a fraction of a second and pays for torch only if the answer uses it.

A case's callable inputs travel as :class:`Built`: a recipe name and plain parameters, rebuilt
by the recipe registered under that name (in the chapter's check module) wherever it is needed.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable

RECIPES: dict[str, Callable] = {}


def recipe(name: str):
    """Register ``builder(**params) -> callable`` under ``name`` ("<chapter module>.<name>"), so
    that a :class:`Built` naming it can be rebuilt from its parameters in any process."""
    module = name.split(".")[0]

    def register(builder):
        if name in RECIPES and RECIPES[name] is not builder:
            raise ValueError(f"recipe {name!r} is registered twice.")
        if name.count(".") != 1 or not module.isidentifier():
            raise ValueError(f"a recipe is named '<chapter module>.<name>', got {name!r}.")
        RECIPES[name] = builder
        return builder

    return register


class Built:
    """A callable input of a case, as plain data: the recipe that builds it and its parameters
    (tensors, numbers, strings, lists, dicts). ``Built("maml.mlp_loss", sizes=[1, 40, 40, 1])``."""

    def __init__(self, recipe_name: str, /, **params):
        self.recipe = recipe_name
        self.params = params

    def build(self) -> Callable:
        module = self.recipe.split(".")[0]
        if self.recipe not in RECIPES and module.isidentifier():
            importlib.import_module(f"mlcourse.exercises.{module}")   # registers the chapter's recipes
        if self.recipe not in RECIPES:
            raise KeyError(f"unknown recipe {self.recipe!r}; known: {', '.join(sorted(RECIPES))}.")
        return RECIPES[self.recipe](**build(self.params))

    def __repr__(self) -> str:
        return f"Built({self.recipe!r}, {', '.join(self.params)})"


def build(value):
    """``value`` with every :class:`Built` replaced by the callable it describes."""
    if isinstance(value, Built):
        return value.build()
    if isinstance(value, dict):
        return {k: build(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(build(v) for v in value)
    return value


def is_tensor(value) -> bool:
    torch = sys.modules.get("torch")   # no tensor exists before torch is imported
    return torch is not None and isinstance(value, torch.Tensor)


def leaves(value) -> list:
    """The tensors of a nested value in a fixed order (dicts by sorted key); Python numbers
    become 0-d tensors."""
    if is_tensor(value):
        return [value]
    if isinstance(value, dict):
        try:
            keys = sorted(value)
        except TypeError:   # keys of mixed types: the structure check reports the dict
            keys = list(value)
        return [t for k in keys for t in leaves(value[k])]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in leaves(v)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        import torch

        return [torch.tensor(float(value))]
    return []


@dataclass
class Observation:
    """What one call of a function gave: its value, and where asked, the gradients of a fixed
    projection of the value with respect to some inputs and its derivatives with respect to one."""

    status: str                      # "ok", "not attempted", "raised", "missing", "unreadable", "grader error"
    value: Any = None
    grads: list | None = None        # one per input leaf; None where no gradient flows
    derivatives: list | None = None  # order 1, 2, ...
    problem: str | None = None       # why gradients or derivatives could not be taken
    error: str = ""                  # for "raised" and "not attempted": what the function said


def projection(value) -> list:
    """The fixed random weights on which a value's floating-point leaves are projected to a scalar
    whose gradient is compared (a gradient check of a vector output in one backward pass)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return [torch.randn(o.shape, generator=generator, dtype=o.dtype)
            for o in leaves(value) if o.is_floating_point()]


def _argument(args, kwargs, key):
    return args[key] if isinstance(key, int) else kwargs[key]


def where(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return ""
    return f" (line {frames[-1].lineno} of {frames[-1].name})"


def observe(fn: Callable, args: tuple, kwargs: dict, grad_wrt: tuple = (), weights: list | None = None,
            derivatives: tuple | None = None) -> Observation:
    """Call ``fn(*args, **kwargs)`` and collect what the judge needs. The function's errors are
    caught and described; nothing it raises escapes (but KeyboardInterrupt and SystemExit, which
    belong to whoever runs the check)."""
    try:
        value = fn(*args, **kwargs)
    except NotImplementedError as err:
        return Observation("not attempted", error=str(err)[:500])
    except Exception as err:  # the student's code failed: say where, not how the reference works
        return Observation("raised", error=f"{type(err).__name__}: {str(err)[:300]}{where(err)}")
    result = Observation("ok", value=value)
    if grad_wrt:
        try:
            import torch

            inputs = [t for key in grad_wrt for t in leaves(_argument(args, kwargs, key))]
            outputs = [o for o in leaves(value) if o.is_floating_point()]
            weights = projection(value) if weights is None else weights
            if len(outputs) != len(weights) or any(o.shape != w.shape for o, w in zip(outputs, weights)):
                result.problem = "the output's structure differs from the expected one"
            else:
                total = sum((o * w.to(o.dtype)).sum() for o, w in zip(outputs, weights))
                if not is_tensor(total) or not total.requires_grad:
                    result.problem = "no gradient flows to the inputs (was something detached?)"
                else:
                    result.grads = [None if g is None else g.detach() for g in
                                    torch.autograd.grad(total, inputs, allow_unused=True)]
        except Exception as err:
            result.problem = f"gradients could not be taken: {type(err).__name__}: {str(err)[:200]}"
    if derivatives:
        try:
            result.derivatives = _derivatives(fn, args, kwargs, *derivatives)
        except Exception as err:
            result.problem = f"derivatives could not be taken: {type(err).__name__}: {str(err)[:200]}"
    if is_tensor(value):
        result.value = value.detach()
    return result


def _derivatives(fn, args, kwargs, key, orders) -> list:
    """The derivatives of fn with respect to one argument, order 1 to ``orders`` (jacrev on jacrev)."""
    import torch

    def call(point):
        new_args, new_kwargs = list(args), dict(kwargs)
        if isinstance(key, int):
            new_args[key] = point
        else:
            new_kwargs[key] = point
        return fn(*new_args, **new_kwargs)

    point = _argument(args, kwargs, key).detach()
    found, f = [], call
    for _ in range(orders):
        f = torch.func.jacrev(f)
        found.append(f(point).detach())
    return found
