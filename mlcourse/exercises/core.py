"""Checks for the exercises: run a student's function on inputs the check chooses and judge what it
returns, against the package's reference (function exercises) or against a range (experiment
exercises).

A chapter's check cell is one line, ``exercises.check("maml.adapt", adapt)``. The verdict lists
each case (what was checked: values, shapes, gradients, derivatives, a range), and for a failure
the input, the expected and the given output. It never shows the reference's code. A stub that
still raises ``NotImplementedError`` is reported as "not attempted", with its hint. The last line
is a short summary ("2 of 3 checks passed.").

The same cases serve the bulk grader (:mod:`mlcourse.grading`), which computes the reference in
its own process and runs the student's function in a sandbox. So everything a case passes to the
student's function is plain data: tensors, numbers, strings, lists, tuples, dicts of them, and
callables described by a :class:`Built` (a registered recipe and its plain parameters), which each
side rebuilds for itself. The work is split accordingly: ``observe`` (in
:mod:`mlcourse.grading.calls`) calls a function and collects its output, gradients and
derivatives; :func:`judge` compares two observations. The notebook runs both here; the grader
runs ``observe`` in the sandbox and :func:`judge` in its own process.

Writing an exercise (in ``mlcourse/exercises/<chapter>.py``)::

    @exercise("reptile.step", chapter="07_reptile", title="the Reptile update", function="reptile_step",
              hint="...", references=("mlcourse.meta.reptile.Reptile",))
    def reptile_step_cases():
        yield Case("5 tasks, β = 1", args=(theta, phis, 1.0), reference=reference)

    @experiment("maml.sinusoid_mse", chapter="05_maml", title="...", function="adapted_mse", hint="...")
    def sinusoid_mse_cases():
        yield Case("200 iterations, seed 0", kwargs={"iterations": 200, "seed": 0}, within=(0.0, 0.5))
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

from ..grading.calls import RECIPES, Built, Observation, build, leaves, observe, projection, recipe

__all__ = ["RECIPES", "Built", "Case", "EXERCISES", "Exercise", "Observation", "Verdict", "build", "check", "describe",
           "exercise", "experiment", "judge", "observe", "projection", "recipe"]

KINDS = ("function", "experiment")


# --- exercises and their cases -----------------------------------------------------------------

@dataclass
class Case:
    """One call of the student's function and what its result must satisfy.

    args, kwargs: the call, in plain data (callables as :class:`Built`).
    reference: a function of the same call that returns the right answer (function exercises).
    within: (low, high): the function must return a real number in this closed range (experiment
        exercises; no reference).
    grad_wrt: names of keyword arguments (or positions, as ints) holding tensors or dicts of tensors
        whose gradients must match too (the outputs are projected on fixed random weights).
    derivatives: (argument, order): also compare the derivatives of a tensor-valued function with
        respect to one tensor argument, up to that order (e.g. DiCE's Hessian).
    compare: a custom comparison (expected, given) -> error message or None.
    seed: the grader seeds torch's global generator with it before the call (for functions that
        draw random numbers).
    time_limit: seconds the grader allows this call (default: its ``--cell-timeout``).
    """

    label: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    reference: Callable | None = None
    within: tuple[float, float] | None = None
    grad_wrt: tuple = ()
    derivatives: tuple | None = None
    rtol: float = 1e-4
    atol: float = 1e-6
    compare: Callable[[Any, Any], str | None] | None = None
    seed: int = 0
    time_limit: float | None = None


@dataclass
class Exercise:
    id: str
    chapter: str
    title: str
    function: str
    hint: str
    cases: Callable[[], Iterable[Case]]
    kind: str = "function"
    # Qualified names of the package's own implementations of this exercise: an answer that uses
    # them is flagged for the teacher (an integrity matter, not scored).
    references: tuple[str, ...] = ()
    # Whether the grader must show the datasets ($MLCOURSE_DATA, read-only) to the sandbox.
    needs_data: bool = False

    def checked_cases(self) -> list[Case]:
        """The cases, each checked for being well formed for this kind of exercise."""
        cases = list(self.cases())
        if not cases:
            raise ValueError(f"exercise {self.id} has no cases.")
        for case in cases:
            if self.kind == "function" and (case.reference is None or case.within is not None):
                raise ValueError(f"{self.id}, {case.label!r}: a function exercise's case needs a reference, "
                                 "not a range.")
            if self.kind == "experiment":
                if case.reference is not None or case.within is None or case.grad_wrt or case.derivatives:
                    raise ValueError(f"{self.id}, {case.label!r}: an experiment's case has a range (within) only.")
                low, high = case.within
                if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                    raise ValueError(f"{self.id}, {case.label!r}: within must be finite (low, high), "
                                     f"got {case.within}.")
        return cases


EXERCISES: dict[str, Exercise] = {}


def exercise(id: str, chapter: str, title: str, function: str, hint: str,  # noqa: A002 - the natural name
             references: tuple[str, ...] = (), kind: str = "function", needs_data: bool = False):
    """Register a generator of :class:`Case` as the check of exercise ``id``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    if not function.isidentifier():
        raise ValueError(f"function must be a Python name, got {function!r}.")

    def register(cases):
        if id in EXERCISES:
            raise ValueError(f"exercise {id!r} is registered twice.")
        EXERCISES[id] = Exercise(id, chapter, title, function, hint, cases, kind, tuple(references), needs_data)
        return cases

    return register


def experiment(id: str, chapter: str, title: str, function: str, hint: str,  # noqa: A002
               references: tuple[str, ...] = (), needs_data: bool = False):
    """Register an experiment exercise: each case calls the student's function with the inputs it
    names (a seed, a number of iterations, ...) and passes when the returned number lies in the
    case's ``within`` range."""
    return exercise(id, chapter, title, function, hint, references, "experiment", needs_data)


@dataclass
class Verdict:
    exercise: str
    passed: int
    total: int
    status: str  # "passed", "failed" or "not attempted"
    lines: list[str]

    @property
    def score(self) -> float:
        return self.passed / self.total if self.total else 0.0

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
        return "(" + ", ".join(describe(v, 3) for v in value[:8]) + (", ..." if len(value) > 8 else "") + ")"
    if isinstance(value, Built):
        return f"a function ({value.recipe.split('.')[-1]})"
    if callable(value):
        return getattr(value, "__name__", "a function")
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _structure_error(expected, given) -> str | None:
    if isinstance(expected, dict):
        if not isinstance(given, dict):
            return f"expected a dict with keys {sorted(expected)}, got {type(given).__name__}"
        if set(expected) != set(given):
            return f"expected keys {sorted(expected)}, got {sorted(map(str, given))[:10]}"
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
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if isinstance(given, bool) or not isinstance(given, (int, float, torch.Tensor)):
            return f"expected a number, got {type(given).__name__}"
        if isinstance(given, torch.Tensor) and given.numel() != 1:
            return f"expected a number, got a tensor of shape {tuple(given.shape)}"
    return None


def _values_error(expected, given, rtol, atol) -> str | None:
    expected, given = leaves(expected), leaves(given)
    if len(expected) != len(given):
        return f"expected {len(expected)} numbers or tensors, got {len(given)}"
    for e, g in zip(expected, given):
        e, g = e.detach().cpu(), g.detach().cpu()
        if g.shape != e.shape and g.numel() == e.numel() == 1:
            g = g.reshape(e.shape)
        if g.shape != e.shape:
            return f"expected shape {tuple(e.shape)}, got shape {tuple(g.shape)}"
        if g.dtype != e.dtype:   # compare in the wider of the two types
            common = torch.promote_types(e.dtype, g.dtype)
            e, g = e.to(common), g.to(common)
        if not torch.allclose(g, e, rtol=rtol, atol=atol, equal_nan=False):
            worst = (g.double() - e.double()).abs().max() if g.numel() else torch.tensor(0.0)
            return f"values differ (largest difference {float(worst):.3g})"
    return None


def number(value) -> float | None:
    """A real number from a Python number or a one-element real tensor, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value.detach().reshape(()))
    return None


# --- judging what a function gave -----------------------------------------------------------

def judge(case: Case, expected: Observation | None, given: Observation) -> str | None:
    """Why ``given`` fails the case (a sentence), or None when it passes. ``expected`` is the
    reference's observation (None for an experiment's range check)."""
    if given.status != "ok":
        return given.error or given.status
    if case.within is not None:
        value = number(given.value)
        low, high = case.within
        if value is None:
            return f"expected a number, got {describe(given.value)}"
        if not math.isfinite(value):
            return f"returned {value}, expected a finite value in [{low:g}, {high:g}]"
        if not low <= value <= high:
            return f"returned {value:.4g}, outside the expected range [{low:g}, {high:g}]"
        return None
    if case.compare:   # a custom comparison checks structure and values itself
        try:
            problem = case.compare(expected.value, given.value)
        except Exception as err:
            problem = f"the returned value could not be checked ({type(err).__name__}: {str(err)[:120]})"
    else:
        problem = _structure_error(expected.value, given.value) or _values_error(
            expected.value, given.value, case.rtol, case.atol)
    if problem is None and case.grad_wrt:
        if given.problem or given.grads is None:
            problem = given.problem or "no gradients were returned"
        elif len(given.grads) != len(expected.grads):
            problem = f"expected gradients for {len(expected.grads)} inputs, got {len(given.grads)}"
        elif any(g is None for g in given.grads):
            problem = "no gradient flows to some of the inputs (was something detached?)"
        else:
            problem = _values_error(expected.grads, given.grads, case.rtol, case.atol)
            problem = problem and f"gradients differ: {problem}"
    if problem is None and case.derivatives:
        if given.problem or given.derivatives is None:
            problem = given.problem or "no derivatives were returned"
        else:
            for order, (e, g) in enumerate(zip(expected.derivatives, given.derivatives), start=1):
                if (problem := _structure_error(e, g) or _values_error(e, g, case.rtol, case.atol)):
                    problem = f"derivative of order {order} differs: {problem}"
                    break
            if problem is None and len(given.derivatives) != len(expected.derivatives):
                problem = f"expected derivatives up to order {len(expected.derivatives)}"
    return problem


def passed_line(case: Case, given: Observation) -> str:
    if case.within is not None:
        return f"returned {number(given.value):.4g}, in the expected range [{case.within[0]:g}, {case.within[1]:g}]"
    if case.derivatives:
        return f"values and derivatives up to order {case.derivatives[1]} match"
    if case.grad_wrt:
        return "shapes, values and gradients match"
    return "the checks pass" if case.compare else "shapes and values match"


def case_lines(case: Case, function: str, expected: Observation | None, given: Observation,
               problem: str | None) -> list[str]:
    """The verdict's lines for one case that was run (passed or failed)."""
    if problem is None:
        return [f"  ✓ {case.label}: {passed_line(case, given)}"]
    shown_input = f"{describe(case.args)} {describe(case.kwargs) if case.kwargs else ''}".rstrip()
    if given.status == "raised":
        return [f"  ✗ {case.label}: {function} raised {given.error}", f"      input: {shown_input}"]
    lines = [f"  ✗ {case.label}: {problem}", f"      input:    {shown_input}"]
    if expected is not None:
        lines.append(f"      expected: {describe(expected.value)}")
    if given.status == "ok":
        lines.append(f"      given:    {describe(given.value)}")
    return lines


def summary(ex: Exercise, passed: int, total: int, status: str) -> str:
    """The verdict's last line: a sentence for the reader, not a record for a machine."""
    if status == "not attempted":
        return f"  0 of {total} checks passed: not attempted yet."
    return f"  {passed} of {total} checks passed." + (" Well done." if passed == total else "")


def _fresh(value):
    """A copy of a case's inputs for the student's function, so that changing them in place
    changes nothing for the reference or the next case."""
    if isinstance(value, torch.Tensor):
        copy_ = value.detach().clone()
        return copy_.requires_grad_(value.requires_grad) if copy_.is_floating_point() else copy_
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_fresh(v) for v in value)
    return copy.copy(value) if isinstance(value, (set, bytearray)) else value


def check(exercise_id: str, fn: Callable, show: bool = True) -> Verdict:
    """Run exercise ``exercise_id``'s cases on ``fn`` and print (and return) the verdict."""
    from . import load_all

    load_all()
    if exercise_id not in EXERCISES:
        raise KeyError(f"unknown exercise {exercise_id!r}; known: {', '.join(sorted(EXERCISES))}.")
    ex = EXERCISES[exercise_id]
    name = getattr(fn, "__name__", ex.function)
    lines = [f"Exercise {ex.id}: {ex.title}"]
    cases = ex.checked_cases()
    passed, status = 0, None
    for case in cases:
        args, kwargs = build(case.args), build(case.kwargs)
        expected, weights = None, None
        if case.reference is not None:
            expected = observe(case.reference, args, kwargs, case.grad_wrt, None, case.derivatives)
            if expected.status != "ok" or expected.problem:
                raise RuntimeError(f"the reference of {ex.id} failed on {case.label!r}: "
                                   f"{expected.error or expected.problem}")
            weights = projection(expected.value) if case.grad_wrt else None
        given = observe(fn, _fresh(args), _fresh(kwargs), case.grad_wrt, weights, case.derivatives)
        if given.status == "not attempted":
            status = "not attempted"
            lines.append(f"  - not attempted: {name} raises NotImplementedError ({given.error}).")
            lines.append(f"    Hint: {ex.hint}")
            break
        problem = judge(case, expected, given)
        passed += problem is None
        lines += case_lines(case, name, expected, given, problem)
    total = len(cases)
    status = status or ("passed" if passed == total else "failed")
    lines.append(summary(ex, passed, total, status))
    verdict = Verdict(ex.id, passed, total, status, lines)
    if show:
        print(verdict)
    return verdict
