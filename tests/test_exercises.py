"""The exercises: every check passes on the chapter's solution, reports a stub as not attempted
with its hint, and fails a deliberately wrong implementation; student notebooks hold no solution."""

import ast
import math
import re
from pathlib import Path

import nbformat
import pytest
import torch
from torch.func import grad

from mlcourse import exercises
from mlcourse.assign import answer_key, checked_exercises, is_solution, student_notebook

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
EXERCISES = exercises.load_all()
# What a solution cell may rely on without importing it: the notebooks import these at the top.
PREAMBLE = "import math\nimport torch\nfrom torch import nn\nimport torch.nn.functional as F\n"


def _notebook(chapter: str):
    return nbformat.read(ROOT / "chapters" / f"{chapter}.ipynb", as_version=4)


def _solution_function(ex):
    """The chapter's solution of exercise ``ex``, executed on its own."""
    for cell in _notebook(ex.chapter).cells:
        if is_solution(cell) and cell.cell_type == "code" and f"def {ex.function}(" in cell.source:
            namespace = {}
            exec(compile(PREAMBLE + cell.source, f"<{ex.chapter} solution>", "exec"), namespace)
            return namespace[ex.function]
    raise AssertionError(f"no solution cell of {ex.chapter} defines {ex.function}")


def _stub_function(ex):
    """The stub that the student notebook holds instead of the solution."""
    for cell in student_notebook(_notebook(ex.chapter)).cells:
        if cell.cell_type == "code" and f"def {ex.function}(" in cell.source:
            namespace = {}
            exec(cell.source, namespace)
            return namespace[ex.function]
    raise AssertionError(f"the student notebook of {ex.chapter} has no stub for {ex.function}")


# Deliberately wrong implementations: each must fail its check.
def _wrong_sinusoids(n, k):
    phase = 2 * math.pi * torch.rand(n, 1, 1)       # phases beyond π
    x = -5 + 10 * torch.rand(n, k, 1)
    return x, (0.1 + 4.9 * torch.rand(n, 1, 1)) * torch.sin(x - phase)


def _wrong_adapt(loss, theta, x, y, alpha, steps):      # the inner step with the wrong sign
    phi = theta
    for _ in range(steps):
        g = grad(loss)(phi, x, y)
        phi = {k: phi[k] + (alpha[k] if isinstance(alpha, dict) else alpha) * g[k] for k in phi}
    return phi


def _wrong_fo_gradient(loss, theta, x_tr, y_tr, x_ts, y_ts, alpha, steps):   # taken at θ, not at φ
    return grad(loss)({k: v.detach() for k, v in theta.items()}, x_ts, y_ts)


def _wrong_episodes(images, episodes, ways, shots, queries):   # the same first N classes in every episode
    picks = torch.rand(episodes, ways, images.shape[1]).argsort(dim=2)[:, :, :shots + queries]
    chosen = images[torch.arange(ways)[None, :, None], picks]
    labels = torch.arange(ways).view(1, ways, 1).expand(episodes, ways, shots + queries)
    return (chosen[:, :, :shots].flatten(1, 2), labels[:, :, :shots].flatten(1),
            chosen[:, :, shots:].flatten(1, 2), labels[:, :, shots:].flatten(1))


def _wrong_cka(x, y):                                   # forgets to centre the features
    return (y.T @ x).pow(2).sum() / ((x.T @ x).norm() * (y.T @ y).norm())


def _wrong_attention(support_x, support_y, query_x, classes, beta):   # dot products of unnormalised vectors
    a = torch.softmax(beta * query_x @ support_x.transpose(1, 2), dim=-1)
    return a @ torch.nn.functional.one_hot(support_y, classes).to(a.dtype)


def _wrong_cg(matvec, b, steps):                       # forgets to update the search direction
    x = {k: torch.zeros_like(v) for k, v in b.items()}
    r = dict(b)
    for _ in range(steps):
        ar = matvec(r)
        alpha = sum((r[k] * r[k]).sum() for k in r) / sum((r[k] * ar[k]).sum() for k in r)
        x = {k: x[k] + alpha * r[k] for k in x}
        r = {k: r[k] - alpha * ar[k] for k in r}
    return x


WRONG = {
    "tasks.sample_sinusoids": _wrong_sinusoids,
    "multitask.uncertainty": lambda losses, log_var: (torch.exp(-log_var) * losses + log_var).mean(),  # no ½
    "multitask.linear_heads": lambda features, weight, bias: torch.einsum("mnd,mod->mno", features, weight),  # no bias
    "transfer.discriminative_rates": lambda theta, alpha, decay: {k: alpha for k in theta},   # no decay
    "blackbox.lrua_write": lambda memory, usage, read_before, key, alpha: memory + read_before.transpose(1, 2) @ key,
    "blackbox.instance_accuracy": lambda logits, y, k: (logits.argmax(-1) == y).float().mean(1),   # every step
    "maml.adapt": _wrong_adapt,
    "fomaml.gradient": _wrong_fo_gradient,
    "reptile.step": lambda theta, phis, beta: {k: theta[k] - beta * (phis[k] - theta[k]).mean(0) for k in theta},
    "imaml.cg": _wrong_cg,
    "maml_rl.dice": lambda logp, adv, mask: (logp * adv * mask).sum() / mask.sum(),   # plain surrogate: wrong Hessian
    "transfer.one_step_head": lambda features, y, ways, alpha: (   # forgets to subtract the mean of all features
        alpha / ways * torch.stack([features[y == c].mean(0) for c in range(ways)]),
        torch.zeros(ways, dtype=features.dtype)),
    "metric.prototype_logits": lambda z_tr, y_tr, z_ts, ways: -torch.cdist(   # the distance, not its square
        z_ts, torch.stack([z_tr[y_tr == k].mean(0) for k in range(ways)])),
    "metric.linear_head": lambda z_tr, y_tr, ways: (lambda c: (c, -c.pow(2).sum(-1)))(   # w = c, not 2c
        torch.stack([z_tr[y_tr == k].mean(0) for k in range(ways)])),
    "tasks.sample_episodes": _wrong_episodes,
    "maml_family.linear_cka": _wrong_cka,
    "maml_family.msl_weights": lambda steps, progress: [1 / steps] * steps,      # no annealing
    "blackbox.attention_classifier": _wrong_attention,
    # Experiments: a number a run that went wrong would return.
    "tasks.noise_floor_ratio": lambda p, k, seed: 0.1,                  # the excess error without σ²
    "multitask.target_loss": lambda model, shift, seed: 0.01,           # as if one network fitted the target
    "reptile.toy_distance": lambda k, iterations: 1.0,                  # θ at the centre for every k
    "maml_family.cavia_mse": lambda context, iterations, seed: 4.2,     # predicting zero everywhere
    "blackbox.first_instance_accuracy": lambda episodes, seed: 0.2,     # chance among five labels
}


def test_every_exercise_has_a_wrong_implementation_here():
    assert set(WRONG) == set(EXERCISES)


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_check_passes_the_solution(exercise_id, capsys):
    verdict = exercises.check(exercise_id, _solution_function(EXERCISES[exercise_id]))
    assert verdict.status == "passed", str(verdict)
    out = capsys.readouterr().out
    # The verdict ends with a sentence for the student, never with a machine-readable record.
    assert out.strip().splitlines()[-1].strip() == f"{verdict.total} of {verdict.total} checks passed. Well done."
    assert "{" not in out.strip().splitlines()[-1] and "[mlcourse-check]" not in out


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_check_reports_the_stub_with_its_hint(exercise_id):
    ex = EXERCISES[exercise_id]
    stub = _stub_function(ex)
    with pytest.raises(NotImplementedError, match=re.escape(ex.hint[:20])):
        stub(*next(iter(ex.cases())).args)
    verdict = exercises.check(exercise_id, stub, show=False)
    assert verdict.status == "not attempted" and verdict.passed == 0
    assert any("Hint:" in line for line in verdict.lines)


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_check_fails_a_wrong_implementation_and_shows_expected_and_given(exercise_id):
    verdict = exercises.check(exercise_id, WRONG[exercise_id], show=False)
    assert verdict.status == "failed" and verdict.passed < verdict.total, str(verdict)
    text = str(verdict)
    assert "✗" in text and (("expected" in text and "given:" in text) or "raised" in text or "differs" in text)


def test_a_crashing_implementation_is_reported_not_raised():
    verdict = exercises.check("reptile.step", lambda theta, phis, beta: theta["missing"], show=False)
    assert verdict.status == "failed" and "raised KeyError" in str(verdict)


def test_the_check_never_shows_the_reference_code():
    text = str(exercises.check("maml.adapt", _wrong_adapt, show=False))
    assert "sgd_steps" not in text and "def " not in text and "lambda" not in text


def test_unknown_exercise():
    with pytest.raises(KeyError, match="unknown exercise 'maml.nope'"):
        exercises.check("maml.nope", print)


def _code_lines(source: str) -> set[str]:
    """Lines that carry a solution: not blank, not comments, not signatures or docstrings."""
    lines = set()
    for line in source.splitlines():
        stripped = line.split("  #")[0].strip()   # a trailing comment does not make a line new
        if stripped and not stripped.startswith(("#", "def ", '"""', "import ", "from ")) and len(stripped) > 12:
            lines.add(stripped)
    return lines


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_student_notebook_holds_no_solution(path):
    chapter = nbformat.read(path, as_version=4)
    student = student_notebook(chapter)
    # Lines of the solutions that the chapter does not also show in its text (where it teaches them).
    taught = set().union(*(_code_lines(c.source) for c in chapter.cells if not is_solution(c)))
    solution_lines = set().union(*(_code_lines(c.source) for c in chapter.cells if is_solution(c))) - taught
    assert solution_lines
    student_text = "\n".join(c.source for c in student.cells)
    # A line that the exercise's own statement quotes is a hint, not a leak.
    stated = "\n".join(c.source for c in chapter.cells if not is_solution(c))
    leaked = [line for line in solution_lines if line in student_text and line not in stated]
    assert not leaked, f"solution lines left in the student notebook: {leaked[:3]}"
    assert not any(is_solution(c) for c in student.cells)
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    # The check cells stay, so that students see their verdicts.
    assert checked_exercises(student) == checked_exercises(chapter) and checked_exercises(chapter)
    assert student.metadata["mlcourse"]["exercises"] == sorted(set(checked_exercises(chapter).values()))
    for cell in student.cells:
        if "student-answer" in cell.metadata.get("tags", []) and cell.cell_type == "code":
            ast.parse(cell.source)   # every stub is valid Python
    key = answer_key(chapter)
    assert sum(is_solution(c) for c in key.cells) == sum(is_solution(c) for c in chapter.cells)
    assert not any("hide-cell" in c.metadata.get("tags", []) for c in key.cells if is_solution(c))


def test_every_chapter_has_a_checked_coding_exercise():
    chapters = {ex.chapter for ex in EXERCISES.values()}
    assert chapters == {p.stem for p in CHAPTERS}


def test_assign_command_writes_student_notebooks_and_keys(tmp_path):
    from mlcourse import assign

    assign.main(["--all", "--out", str(tmp_path / "students"), "--answer-key", str(tmp_path / "keys")])
    assert sorted(p.name for p in (tmp_path / "students").glob("*.ipynb")) == [p.name for p in CHAPTERS]
    assert sorted(p.name for p in (tmp_path / "keys").glob("*.ipynb")) == [p.name for p in CHAPTERS]
    nb = nbformat.read(tmp_path / "students" / "05_maml.ipynb", as_version=4)
    assert nb.metadata["mlcourse"] == {"kind": "student", "exercises": ["maml.adapt"], "chapter": "05_maml"}
