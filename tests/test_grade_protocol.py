"""The grader's plain-data protocol (values survive; anything malformed is refused before use),
its integrity flags, and the experiment kind of exercise (a range check on a returned value)."""

import json
import math
import os
import struct

import pytest
import torch

from mlcourse import exercises
from mlcourse.exercises.core import EXERCISES, Case, Exercise, judge
from mlcourse.grading import integrity, protocol
from mlcourse.grading.calls import Built, Observation
from mlcourse.grading.submissions import AnswerCell, Submission, definitions_only, needed_imports


def roundtrip(value, **kwargs):
    frame = protocol.pack(value, allow_built=kwargs.get("allow_built", False))
    magic, header, payload = protocol.PREFIX.unpack(frame[:protocol.PREFIX.size])
    body = frame[protocol.PREFIX.size:]
    return protocol.unpack(body[:header], body[header:], **kwargs)


def test_values_survive_exactly():
    value = {"theta": {"w": torch.randn(3, 2, dtype=torch.float64, requires_grad=True),
                       "i": torch.arange(4), "b": torch.tensor([True, False]), "h": torch.ones(2, dtype=torch.bfloat16),
                       "empty": torch.zeros(0, 5)},
             "numbers": (1, 2.5, float("nan"), float("-inf"), None, True, "text"), 3: [[], {}]}
    back = roundtrip(value)
    assert set(back) == {"theta", "numbers", 3} and back[3] == [[], {}]
    for key, tensor in value["theta"].items():
        assert back["theta"][key].dtype == tensor.dtype and back["theta"][key].shape == tensor.shape
        assert torch.equal(back["theta"][key], tensor.detach())
    assert back["theta"]["w"].requires_grad and not roundtrip(value, grad_flags=False)["theta"]["w"].requires_grad
    numbers = back["numbers"]
    assert isinstance(numbers, tuple) and numbers[:2] == (1, 2.5) and math.isnan(numbers[2]) and numbers[3] == -math.inf
    assert numbers[4:] == (None, True, "text")


def test_callables_travel_as_recipes_only_where_allowed():
    loss = Built("maml.mlp_loss", sizes=[1, 4, 1])
    back = roundtrip({"loss": loss}, allow_built=True)["loss"]
    assert isinstance(back, Built) and back.recipe == "maml.mlp_loss" and back.params == {"sizes": [1, 4, 1]}
    with pytest.raises(protocol.ProtocolError, match="cannot be sent"):
        protocol.pack({"loss": loss})   # the sandbox never sends callables
    with pytest.raises(protocol.ProtocolError, match="unknown or malformed node"):
        protocol.unpack(*_frame({"$built": "maml.mlp_loss", "params": {"$dict": []}}))   # nor does the grader read them
    with pytest.raises(protocol.ProtocolError, match="cannot be sent"):
        protocol.pack(lambda x: x)


def _frame(body, tensors=(), payload=b""):
    return json.dumps({"body": body, "tensors": list(tensors)}).encode(), payload


@pytest.mark.parametrize("header, match", [
    (b"\x80\x04pickle", "not valid JSON"),
    (json.dumps([1, 2]).encode(), "body and a tensor table"),
    (json.dumps({"body": {"$set": [1]}, "tensors": []}).encode(), "unknown or malformed"),
    (json.dumps({"body": {"$list": [1], "$tuple": [2]}, "tensors": []}).encode(), "one tag"),
    (json.dumps({"body": {"$tensor": 0}, "tensors": []}).encode(), "unknown or malformed"),
    (b'{"body": NaN, "tensors": []}', "not valid JSON"),
    (json.dumps({"body": 2 ** 70, "tensors": []}).encode(), "64 bits"),
    (json.dumps({"body": {"$dict": [[1.5, 2]]}, "tensors": []}).encode(), "string or integer key"),
    (json.dumps({"body": "x" * 200_000, "tensors": []}).encode(), "longer than"),
    (json.dumps({"body": None, "tensors": [{"dtype": "object", "shape": [1], "requires_grad": False,
                                            "offset": 0, "nbytes": 8}]}).encode(), "dtype"),
    (json.dumps({"body": None, "tensors": [{"dtype": "float64", "shape": [3], "requires_grad": False,
                                            "offset": 0, "nbytes": 8}]}).encode(), "does not match"),
    (json.dumps({"body": None, "tensors": [{"dtype": "float64", "shape": [-1], "requires_grad": False,
                                            "offset": 0, "nbytes": 8}]}).encode(), "shape"),
    (json.dumps({"body": None, "tensors": [{"dtype": "float64", "shape": [1], "requires_grad": False,
                                            "offset": 4, "nbytes": 8}]}).encode(), "does not match"),
])
def test_malformed_frames_are_refused(header, match):
    with pytest.raises(protocol.ProtocolError, match=match):
        protocol.unpack(header, b"\0" * 8)


def test_deep_and_large_values_are_refused_both_ways():
    deep = []
    for _ in range(50):
        deep = [deep]
    with pytest.raises(protocol.ProtocolError, match="levels deep"):
        protocol.pack(deep)
    with pytest.raises(protocol.ProtocolError, match="numbers, strings and containers"):
        protocol.pack([0] * 300_000)
    body = {"$list": []}
    for _ in range(50):
        body = {"$list": [body]}
    with pytest.raises(protocol.ProtocolError, match="too large or too deeply nested"):
        protocol.unpack(*_frame(body))


def test_frames_announcing_too_much_are_refused_before_reading():
    read, write = os.pipe()
    try:
        os.write(write, struct.pack(">4sIQ", protocol.MAGIC, 10, 1 << 40))
        with pytest.raises(protocol.ProtocolError, match="more than allowed"):
            protocol.receive(read, deadline=None)
        os.write(write, b"EVIL" + b"\0" * 12)
        with pytest.raises(protocol.ProtocolError, match="magic"):
            protocol.receive(read, deadline=None)
    finally:
        os.close(read)
        os.close(write)


def test_a_silent_sender_times_out():
    import time

    read, write = os.pipe()
    try:
        with pytest.raises(protocol.Timeout):
            protocol.receive(read, deadline=time.monotonic() + 0.2)
    finally:
        os.close(read)
        os.close(write)


def _submission(*sources, imports=()):
    sub = Submission(path=None, relative="s.ipynb", student="s")
    sub.cells = [AnswerCell(i, s) for i, s in enumerate(sources)]
    sub.imports = list(imports)
    return sub


@pytest.mark.parametrize("source, imports", [
    ("from mlcourse.meta.functional import sgd_steps\ndef adapt(*a):\n    return sgd_steps(*a)\n", ()),
    ("import mlcourse.meta.functional as F\ndef adapt(*a):\n    return F.sgd_steps(*a)\n", ()),
    ("def adapt(*a):\n    return functional.sgd_steps(*a)\n", ("from mlcourse.meta import functional",)),
    ("def adapt(*a):\n    from mlcourse.meta.maml import MAML\n    return MAML\n", ()),
    ("def adapt(*a):\n    import importlib\n    m = importlib.import_module('mlcourse.meta.functional')\n"
     "    return getattr(m, 'sgd_steps')(*a)\n", ()),
])
def test_using_the_reference_is_flagged(source, imports):
    flags = integrity.flags(_submission(source, imports=imports), [exercises.load_all()["maml.adapt"]])
    assert len(flags) == 1 and flags[0].startswith("maml.adapt: the answer uses the package's own implementation")


def test_honest_answers_are_not_flagged():
    honest = ("def adapt(loss, theta, x, y, alpha, steps):\n    from torch.func import grad\n    phi = theta\n"
              "    for _ in range(steps):\n        g = grad(loss)(phi, x, y)\n"
              "        phi = {k: phi[k] - alpha * g[k] for k in phi}\n    return phi\n")
    chapter_imports = ("from mlcourse.meta.maml import MAML", "from mlcourse.nets import MLP, forward")
    assert integrity.flags(_submission(honest, imports=chapter_imports), [exercises.load_all()["maml.adapt"]]) == []
    rates = ("def discriminative_rates(theta, alpha, decay):\n"
             "    from mlcourse.meta.finetune_options import layer_groups\n    return layer_groups(theta)\n")
    assert integrity.flags(_submission(rates), [exercises.load_all()["transfer.discriminative_rates"]]) == []


def test_the_answers_get_the_imports_they_rely_on():
    sub = _submission("def f(x):\n    return forward(np.zeros(1), math.pi)\n",
                      imports=("from mlcourse.nets import MLP, forward", "import numpy as np", "import json"))
    assert needed_imports(sub) == ["from mlcourse.nets import MLP, forward", "import numpy as np", "import math"]
    cell = AnswerCell(3, "import os\ndef f():\n    return 1\nwhile True:\n    pass\n")
    kept = definitions_only(cell)
    assert kept.source == "import os\n\ndef f():\n    return 1" and kept.name == "answer cell 3 (its definitions only)"


# --- the experiment kind -----------------------------------------------------------------------

def _mc_pi(n, seed):
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(n, 2, generator=generator)
    return 4 * (points.pow(2).sum(1) <= 1).double().mean()


@pytest.fixture
def experiment(monkeypatch):
    """An experiment exercise registered for one test (the way a chapter author writes one)."""
    def cases():
        yield Case("10,000 points", kwargs={"n": 10_000, "seed": 0}, within=(3.0, 3.3))
        yield Case("40,000 points", kwargs={"n": 40_000, "seed": 1}, within=(3.05, 3.25))

    monkeypatch.setitem(EXERCISES, "test.pi", Exercise("test.pi", "00_test", "π by sampling", "estimate_pi",
                                                        "count the points inside the quarter circle", cases,
                                                        kind="experiment"))
    return EXERCISES["test.pi"]


def test_an_experiment_check_passes_a_value_in_range(experiment, capsys):
    verdict = exercises.check("test.pi", _mc_pi)
    assert verdict.status == "passed" and verdict.score == 1.0
    assert "in the expected range [3, 3.3]" in capsys.readouterr().out


def test_an_experiment_check_fails_a_value_out_of_range_or_not_a_number(experiment):
    verdict = exercises.check("test.pi", lambda n, seed: 2 * _mc_pi(n, seed), show=False)
    assert verdict.passed == 0 and "outside the expected range" in str(verdict)
    for bad in ("3.14", float("nan"), torch.ones(3), None):
        assert exercises.check("test.pi", lambda n, seed, bad=bad: bad, show=False).passed == 0
    stub = exercises.check("test.pi", lambda n, seed: (_ for _ in ()).throw(NotImplementedError("later")), show=False)
    assert stub.status == "not attempted"


def test_an_experiment_case_has_a_range_and_no_reference():
    bad = Exercise("t.x", "00", "t", "f", "h", lambda: iter([Case("c", reference=abs, within=(0, 1))]),
                   kind="experiment")
    with pytest.raises(ValueError, match="range"):
        bad.checked_cases()
    with pytest.raises(ValueError, match="finite"):
        Exercise("t.y", "00", "t", "f", "h", lambda: iter([Case("c", within=(1, 0))]),
                 kind="experiment").checked_cases()


def test_judge_scores_only_what_it_received():
    case = Case("c", within=(0.0, 1.0))
    assert judge(case, None, Observation("ok", value=0.5)) is None
    assert judge(case, None, Observation("ok", value=torch.tensor([0.5]))) is None
    assert "outside" in judge(case, None, Observation("ok", value=1.5))
    assert judge(case, None, Observation("raised", error="ValueError: no")) == "ValueError: no"


# --- choosing the sandbox --------------------------------------------------------------------------

def test_bwrap_installed_but_refused_falls_back_and_says_why(tmp_path, monkeypatch):
    from mlcourse.grading.sandbox import choose_mode

    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    mode = choose_mode()
    assert mode.name == "rlimits" and "setting up uid map: Permission denied" in mode.reason
    assert "sandbox: rlimits only" in mode.notice() and "does not isolate" in mode.notice()
    with pytest.raises(RuntimeError, match="--sandbox bwrap was asked for, but bwrap failed"):
        choose_mode("bwrap")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert choose_mode().reason == "bwrap is not installed"
