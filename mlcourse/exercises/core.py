"""Checks for the coding exercises: run a student's function against the package's reference on
random inputs and print a verdict.

A chapter's check cell is one line, ``exercises.check("maml.adapt", adapt)``. The verdict lists
each case (what was checked: values, shapes, gradients), and for a failure the input, the
expected and the given output. It never shows the reference's code. A stub that still raises
``NotImplementedError`` is reported as "not attempted", with its hint. The last line is a
machine-readable record that :mod:`mlcourse.grade` collects from executed notebooks.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

MARKER = "[mlcourse-check]"


@dataclass
class Case:
    """One input for the student's function and the reference's answer.

    args, kwargs: the call. reference: a function of the same call that returns the right answer.
    grad_wrt: names of keyword arguments (or positions, as ints) holding tensors or dicts of tensors
        whose gradients must match too (the outputs are projected on fixed random weights).
    derivatives: (argument, order): also compare the derivatives of a tensor-valued function with
        respect to one tensor argument, up to that order (e.g. DiCE's Hessian).
    compare: a custom comparison (expected, given) -> error message or None.
    """

    label: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    reference: Callable | None = None
    grad_wrt: tuple = ()
    derivatives: tuple | None = None
    rtol: float = 1e-4
    atol: float = 1e-6
    compare: Callable[[Any, Any], str | None] | None = None


@dataclass
class Exercise:
    id: str
    chapter: str
    title: str
    function: str
    hint: str
    cases: Callable[[], Iterable[Case]]


EXERCISES: dict[str, Exercise] = {}


def exercise(id: str, chapter: str, title: str, function: str, hint: str):  # noqa: A002 - the natural name
    """Register a generator of :class:`Case` as the check of exercise ``id``."""

    def register(cases):
        if id in EXERCISES:
            raise ValueError(f"exercise {id!r} is registered twice.")
        EXERCISES[id] = Exercise(id, chapter, title, function, hint, cases)
        return cases

    return register


@dataclass
class Verdict:
    exercise: str
    passed: int
    total: int
    status: str  # "passed", "failed" or "not attempted"
    lines: list[str]

    def __str__(self) -> str:
        return "\n".join(self.lines)

    def _repr_pretty_(self, printer, cycle):  # shown as text when it is a cell's last value
        printer.text(str(self))


# --- describing values without revealing more than inputs and outputs ---------------------------

def describe(value, limit: int = 6) -> str:
    if isinstance(value, torch.Tensor):
        flat = value.detach().flatten()
        head = ", ".join(f"{float(v):.4g}" if value.is_floating_point() else str(int(v)) for v in flat[:limit])
        more = ", ..." if flat.numel() > limit else ""
        return f"tensor{tuple(value.shape)} {value.dtype}: [{head}{more}]"
    if isinstance(value, dict):
        shown = ", ".join(f"{k}: {describe(v, 3)}" for k, v in list(value.items())[:2])
        return "{" + shown + (f", ... ({len(value)} entries)" if len(value) > 2 else "") + "}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(describe(v, 3) for v in value) + ")"
    if callable(value):
        return getattr(value, "__name__", "a function")
    return repr(value)


def _leaves(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for k in sorted(value) for t in _leaves(value[k])]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _leaves(v)]
    if isinstance(value, (int, float)):
        return [torch.tensor(float(value))]
    return []


def _structure_error(expected, given) -> str | None:
    if isinstance(expected, dict):
        if not isinstance(given, dict):
            return f"expected a dict with keys {sorted(expected)}, got {type(given).__name__}"
        if set(expected) != set(given):
            return f"expected keys {sorted(expected)}, got {sorted(given)}"
        return next((e for k in expected if (e := _structure_error(expected[k], given[k]))), None)
    if isinstance(expected, (tuple, list)):
        if not isinstance(given, (tuple, list)) or len(given) != len(expected):
            return f"expected a sequence of {len(expected)} values, got {describe(given)}"
        return next((e for a, b in zip(expected, given) if (e := _structure_error(a, b))), None)
    if isinstance(expected, torch.Tensor):
        if not isinstance(given, torch.Tensor):
            return f"expected a tensor of shape {tuple(expected.shape)}, got {type(given).__name__}"
        if given.shape != expected.shape:
            return f"expected shape {tuple(expected.shape)}, got shape {tuple(given.shape)}"
    return None


def _values_error(expected, given, rtol, atol) -> str | None:
    for e, g in zip(_leaves(expected), _leaves(given)):
        g = g.to(e.dtype) if e.is_floating_point() else g
        if not torch.allclose(g.detach(), e.detach(), rtol=rtol, atol=atol, equal_nan=False):
            worst = (g.detach() - e.detach()).abs().max()
            return f"values differ (largest difference {float(worst):.3g})"
    return None


def _argument(case: Case, key):
    return case.args[key] if isinstance(key, int) else case.kwargs[key]


def _grads(case: Case, fn) -> list[torch.Tensor]:
    """Gradients of a fixed random projection of fn's outputs with respect to case.grad_wrt."""
    inputs = [t for key in case.grad_wrt for t in _leaves(_argument(case, key))]
    output = _leaves(fn(*case.args, **case.kwargs))
    generator = torch.Generator().manual_seed(0)
    total = sum((o * torch.randn(o.shape, generator=generator, dtype=o.dtype).to(o.device)).sum()
                for o in output if o.is_floating_point())
    return list(torch.autograd.grad(total, inputs, allow_unused=True))


def _derivatives_error(case: Case, fn) -> str | None:
    """Compare the derivatives of fn and the reference with respect to one argument, order by order."""
    key, orders = case.derivatives
    index = key if isinstance(key, int) else None

    def as_function(f):
        def call(value):
            args, kwargs = list(case.args), dict(case.kwargs)
            if index is None:
                kwargs[key] = value
            else:
                args[index] = value
            return f(*args, **kwargs)
        return call

    own, ref = as_function(fn), as_function(case.reference)
    point = _argument(case, key)
    for order in range(1, orders + 1):
        own, ref = torch.func.jacrev(own), torch.func.jacrev(ref)
        problem = _values_error(ref(point), own(point), case.rtol, case.atol)
        if problem:
            return f"derivative of order {order} differs: {problem}"
    return None


def check(exercise_id: str, fn: Callable, show: bool = True) -> Verdict:
    """Run exercise ``exercise_id``'s cases on ``fn`` and print (and return) the verdict."""
    from . import load_all

    load_all()
    if exercise_id not in EXERCISES:
        raise KeyError(f"unknown exercise {exercise_id!r}; known: {', '.join(sorted(EXERCISES))}.")
    ex = EXERCISES[exercise_id]
    lines = [f"Exercise {ex.id}: {ex.title}"]
    cases = list(ex.cases())
    passed, status = 0, None
    for case in cases:
        try:
            expected = case.reference(*case.args, **case.kwargs)
            given = fn(*case.args, **case.kwargs)
        except NotImplementedError as err:
            status = "not attempted"
            lines.append(f"  - not attempted: {fn.__name__} raises NotImplementedError ({err}).")
            lines.append(f"    Hint: {ex.hint}")
            break
        except Exception as err:  # the student's code failed: say where, not how the reference works
            where = traceback.extract_tb(err.__traceback__)[-1]
            lines.append(f"  ✗ {case.label}: {fn.__name__} raised {type(err).__name__}: {err} "
                         f"(line {where.lineno} of {where.name})")
            lines.append(f"      input: {describe(case.args)} {describe(case.kwargs) if case.kwargs else ''}".rstrip())
            continue
        if case.compare:   # a custom comparison checks structure and values itself
            problem = case.compare(expected, given)
        else:
            problem = _structure_error(expected, given) or _values_error(expected, given, case.rtol, case.atol)
        checked = "the checks pass" if case.compare else "shapes and values match"
        if problem is None and case.grad_wrt:
            ref_grads, own_grads = _grads(case, case.reference), _grads(case, fn)
            if any(g is None for g in own_grads):
                problem = "no gradient flows to some of the inputs (was something detached?)"
            else:
                problem = _values_error(ref_grads, own_grads, case.rtol, case.atol)
                problem = problem and f"gradients differ: {problem}"
            checked = "shapes, values and gradients match"
        if problem is None and case.derivatives:
            problem = _derivatives_error(case, fn)
            checked = f"values and derivatives up to order {case.derivatives[1]} match"
        if problem is None:
            passed += 1
            lines.append(f"  ✓ {case.label}: {checked}")
        else:
            lines.append(f"  ✗ {case.label}: {problem}")
            lines.append(f"      input:    {describe(case.args)} {describe(case.kwargs) if case.kwargs else ''}".rstrip())
            lines.append(f"      expected: {describe(expected)}")
            lines.append(f"      given:    {describe(given)}")
    total = len(cases)
    status = status or ("passed" if passed == total else "failed")
    lines.append(f"  {passed} of {total} checks passed.")
    lines.append(f"{MARKER} " + json.dumps({"exercise": ex.id, "passed": passed, "total": total, "status": status}))
    verdict = Verdict(ex.id, passed, total, status, lines)
    if show:
        print(verdict)
    return verdict
