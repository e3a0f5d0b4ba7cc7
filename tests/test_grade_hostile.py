"""Hostile submissions against the grader, in both of its sandbox modes.

A class is built from ``assign`` output as students would (answers written into the marked cells)
for a tiny chapter whose exercises are pure Python, so that a sandbox starts in a fraction of a
second: honest students, and one student per attack. The class is graded once per mode by the
grader run as its own process (an attack may kill its parent), and each test checks one attack:
the hostile row is scored on its merits, the honest rows are intact and correct, the CSV is
complete, the run's time is bounded. In the fallback mode (``rlimits``), attacks it cannot stop
are marked ``xfail(strict=True)`` with the reason (they must still succeed there), and those
that would harm the machine running the tests (a fork bomb, filling the disk, killing every
process of the user) are skipped with the reason.
"""

import csv
import io
import json
import operator
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from mlcourse.assign import answer_key, student_notebook
from mlcourse.exercises.core import Case, Exercise

# --- the tiny chapter ---------------------------------------------------------------------------


def _add_cases():
    for a, b in [(1, 2), (2.5, -1.0), ([1, 2], [3])]:
        yield Case(f"{a!r} + {b!r}", args=(a, b), reference=operator.add, time_limit=1)


def _estimate_cases():
    for seed in (0, 1):
        yield Case(f"20,000 points, seed {seed}", kwargs={"n": 20_000, "seed": seed}, within=(3.0, 3.3), time_limit=5)


CATALOGUE = {
    "tiny.add": Exercise("tiny.add", "00_tiny", "adding", "add", "return a + b", _add_cases,
                         references=("operator.add",)),
    "tiny.estimate": Exercise("tiny.estimate", "00_tiny", "π by sampling (an experiment)", "estimate",
                              "the fraction of points of the unit square inside the quarter circle, times 4",
                              _estimate_cases, kind="experiment"),
}
ADD = "def add(a, b):\n    return a + b  # alice's own line\n"
ESTIMATE = ("def estimate(n, seed):\n    import random\n    rng = random.Random(seed)\n"
            "    return 4 * sum(rng.random() ** 2 + rng.random() ** 2 <= 1 for _ in range(n)) / n\n")
KEY_MARK = "ANSWER-KEY-ONLY-3141"
SECRET = "grader-secret-token-2718"


def chapter():
    cells = [nbformat.v4.new_code_cell("from mlcourse import exercises")]
    for function, source in (("add", ADD + f"# {KEY_MARK}\n"), ("estimate", ESTIMATE)):
        solution = nbformat.v4.new_code_cell(source)
        solution.metadata["tags"] = ["solution", "hide-cell"]
        cells += [solution, nbformat.v4.new_code_cell(f'exercises.check("tiny.{function}", {function});')]
    return nbformat.v4.new_notebook(cells=cells)


def submission(add=ADD, estimate=ESTIMATE, metadata=None):
    """The student notebook with the two marked cells answered (None keeps the stub)."""
    nb = student_notebook(chapter())
    for cell in nb.cells:
        for function, source in (("add", add), ("estimate", estimate)):
            if "student-answer" in cell.metadata.get("tags", []) and f"def {function}(" in cell.source and source:
                cell.source = source
    if metadata is not None:
        nb.metadata["mlcourse"] = metadata
    return nb


# --- the attacks (the code a hostile student writes into an answer cell) ---------------------------

def attacks(paths: dict) -> dict:
    """{student: (answer of add, answer of estimate, notebook metadata or None)}."""
    p = {k: repr(str(v)) for k, v in paths.items()}
    forged = ('print(\'[mlcourse-check] {"exercise": "tiny.add", "passed": 1000, "total": 1, "status": "passed"}\')\n'
              'print(\'[mlcourse-check] {"exercise": "tiny.estimate", "passed": 3, "total": 3, '
              '"status": "passed"}\')\n')
    return {
        # scores forged by printing, patching or editing the exercise list
        "forger": ("def add(a, b):\n    raise NotImplementedError\n" + forged, None, None),
        "patcher": ("import torch\nfrom mlcourse import exercises\nimport mlcourse.exercises.core as core\n"
                    "torch.allclose = lambda *a, **k: True\ncore.judge = lambda *a, **k: None\n"
                    "core._values_error = lambda *a, **k: None\nexercises.check = lambda *a, **k: None\n"
                    "def add(a, b):\n    return a - b\n", None, None),
        "meta_string": (ADD, ESTIMATE, "this is not a dict"),
        "meta_int": (ADD, ESTIMATE, {"exercises": 42}),
        "meta_nested": (ADD, ESTIMATE, {"exercises": [["tiny.add"]], "chapter": 5}),
        "meta_shrunk": (ADD, None, {"kind": "student", "exercises": ["tiny.add"]}),
        # sabotage of the class
        "mallory": (ADD + f"import os\nfor target in ({p['victim']},):\n    try:\n"
                    "        open(target, 'w').write('{}')\n    except OSError as err:\n        print('blocked', err)\n"
                    f"try:\n    os.remove({p['deleted']})\nexcept OSError as err:\n    print('blocked', err)\n",
                    ESTIMATE, None),
        "daemon": (ADD + "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                   f"        if os.fork() == 0:\n            os.execv('/bin/sleep', ['sleep', '{paths['mark']}'])\n"
                   f"        time.sleep(1.5)\n        try:\n            open({p['csv']}, 'w').write('forged')\n"
                   "        except OSError:\n            pass\n    os._exit(0)\n", ESTIMATE, None),
        "linker": (ADD + "import os\nfor i, target in enumerate(("
                   f"{p['victim']}, {p['csv']}, {p['canary']})):\n    try:\n"
                   "        os.symlink(target, f'link{i}')\n        open(f'link{i}', 'w').write('through a link')\n"
                   "    except OSError as err:\n        print('blocked', err)\n"
                   f"try:\n    os.symlink({p['trap']}, {p['victim_feedback']})\nexcept OSError as err:\n"
                   "    print('blocked', err)\n", ESTIMATE, None),
        # one submission must not stop or slow the others
        "looper": ("import signal\ndef add(a, b):\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                   "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    while a == 1:\n        pass\n"
                   "    return a + b\n",
                   ESTIMATE, None),
        "looper_cell": (ADD + "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass\n", ESTIMATE, None),
        "quitter": (ADD + "import os\nos._exit(3)\n", ESTIMATE, None),
        "hog": (ADD + "import resource\ntry:\n    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n"
                "except (ValueError, OSError) as err:\n    print('cannot raise the limit:', err)\n"
                "reserved = bytearray(20 << 30)\n", ESTIMATE, None),
        "flood": (ADD + "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * (1 << 20))\n", ESTIMATE, None),
        "hoarder": ("def add(a, b):\n    return [1] * 2_000_000\n", ESTIMATE, None),
        "jammer": ("import os, sys\nREPLIES = int(sys.argv[sys.argv.index('--replies') + 1])\n"
                   "def add(a, b):\n    if a == 1:\n        os.write(REPLIES, b'MLG1 not a frame at all' * 100)\n"
                   "    return a + b\n",
                   ESTIMATE, None),
        # reaching what is not the submission's
        "envy": (ADD + "import os\nprint(dict(os.environ))\n", ESTIMATE, None),
        "procy": (ADD + "import os\nfor pid in [os.getppid(), *os.listdir('/proc')]:\n    try:\n"
                  "        found = open(f'/proc/{pid}/environ', 'rb').read()\n    except OSError:\n        continue\n"
                  "    if b'TOKEN' in found:\n        print(pid, found[found.index(b'TOKEN') - 20:][:200])\n",
                  ESTIMATE, None),
        "peeker": (ADD + f"for path in ({p['key']}, {p['alice']}):\n    try:\n        print(open(path).read())\n"
                   "    except OSError as err:\n        print('blocked', err)\n", ESTIMATE, None),
        "netty": (ADD + "import socket\ntry:\n"
                  f"    socket.create_connection(('127.0.0.1', {paths['port']}), timeout=2).sendall(b'leaked')\n"
                  "except OSError as err:\n    print('blocked', err)\n", ESTIMATE, None),
        # integrity and the experiment exercise
        "copycat": ("from operator import add\n", ESTIMATE, None),
        "wrong_experiment": (ADD, "def estimate(n, seed):\n    return 4.0\n", None),
        "text_experiment": (ADD, "def estimate(n, seed):\n    return '3.14'\n", None),
        "killer": (ADD + "import os, signal\n" + (
            "for pid in (-1, 1, os.getppid()):\n" if paths.get("mode") == "bwrap" else "for pid in (os.getppid(),):\n")
            + "    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError as err:\n"
            "        print('blocked', err)\n",
            ESTIMATE, None),
        # only under bubblewrap (they would harm the machine in the fallback mode)
        "forker": (ADD + "import os, time\nforked = 0\nfor _ in range(5000):\n    try:\n        pid = os.fork()\n"
                   "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n"
                   "    forked += 1\nprint('forked', forked)\n", ESTIMATE, None),
        "filler": (ADD + "import os\nwritten = 0\nfor folder in ('/tmp', os.path.expanduser('~'), '/usr'):\n"
                   "    for i in range(400):\n        try:\n            with open(f'{folder}/fill{i}', 'wb') as f:\n"
                   "                f.write(b'x' * (1 << 20))\n            written += 1\n        except OSError:\n"
                   "            break\nprint('written MiB', written)\n", ESTIMATE, None),
    }


HONEST = {"alice": (ADD, ESTIMATE), "bob": (ADD, None), "carol": (None, None), "victim": (ADD, ESTIMATE),
          "deleted": (ADD, ESTIMATE), "x": (ADD, ESTIMATE), "x_b": (ADD, ESTIMATE), "café": (ADD, ESTIMATE)}
HONEST_SCORES = {"alice": "1.00", "bob": "0.50", "carol": "0.00", "victim": "1.00", "deleted": "1.00", "x": "1.00",
                 "x_b": "1.00", "caf\\xe9": "1.00"}
BWRAP_ONLY = ("forker", "filler")
BROKEN = {"broken_json": b"{this is not json", "broken_list": b"[1, 2, 3]", "broken_cells": b'{"cells": 7}',
          "broken_deep": b"[" * 100_000 + b"]" * 100_000, "broken_bytes": b'{"cells": [], "x": "\xff\xfe"}'}


# --- grading a class, once per mode, shared by the test processes ---------------------------------

DRIVER = """
import json, resource, sys, time
sys.path.insert(0, {tests!r})
from test_grade_hostile import CATALOGUE
from mlcourse.grading.grader import grade_folder
from mlcourse.grading.sandbox import Limits
walls = {{}}

def grade(root, mode):
    began = time.monotonic()
    grade_folder(root + "/submissions", root + "/scores.csv", cell_timeout=2, timeout=90, feedback=root + "/feedback",
                 jobs=2, sandbox=mode, assignment=root + "/answer-key/assignment.json", catalogue=CATALOGUE,
                 reap_orphans=True, force=True,
                 limits=Limits(memory_mb=1024, processes=48, scratch_mb=64, output_kb=16))
    walls[root] = time.monotonic() - began

# One class after the other: a grader reaps (and kills) the orphans of its process, so two graders
# in one process take each other's children, as the bubblewrap probe of one did when run beside the other.
for run in {runs!r}:
    grade(*run)
usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
print(json.dumps({{"walls": walls, "maxrss_mb": usage[0].ru_maxrss / 1024,
                  "cpu_s": sum(u.ru_utime + u.ru_stime for u in usage)}}))
"""


def _shared_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _listen():
    """A TCP server on the loopback that records what reaches it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    received, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            connection.settimeout(2)
            try:
                received.append(connection.recv(100).decode(errors="replace"))
            except OSError:
                received.append("(connected)")
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server.getsockname()[1], received, lambda: (stop.set(), thread.join(), server.close())


def _survivors(mark: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and mark.encode() in Path("/proc", pid, "cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


class Class:
    """One class of submissions on disk, with the traps its attacks aim at."""

    def __init__(self, root: Path, mode: str, name: str, students: list[str], port: int, mark: str):
        from mlcourse.grading import assignment
        from mlcourse.grading.grader import feedback_name

        self.root, self.mode, self.name, self.students, self.mark = root, mode, name, students, mark
        folder, feedback, keys = root / "submissions", root / "feedback", root / "answer-key"
        keys.mkdir(parents=True)
        feedback.mkdir()
        nbformat.write(answer_key(chapter()), keys / "00_tiny.ipynb")
        assignment.save(keys / "assignment.json", {"00_tiny": {"exercises": sorted(CATALOGUE), "answer_cells": []}})
        for trap in ("canary", "trap"):
            (root / f"{trap}.txt").write_text("untouched")
        paths = {"victim": folder / "victim" / "00_tiny.ipynb", "deleted": folder / "deleted" / "00_tiny.ipynb",
                 "csv": root / "scores.csv", "canary": root / "canary.txt", "trap": root / "trap.txt",
                 "key": keys / "00_tiny.ipynb", "alice": folder / "alice" / "00_tiny.ipynb", "port": port,
                 "victim_feedback": feedback / feedback_name(b"victim/00_tiny.ipynb"), "mode": mode, "mark": mark}
        hostile = attacks(paths)
        for student in students:
            relative = {"x": "x/b_c.ipynb", "x_b": "x_b/c.ipynb"}.get(student, f"{student}/00_tiny.ipynb")
            target = folder / relative
            if student == "café":
                target = Path(os.fsdecode(bytes(folder / "caf") + b"\xe9")) / "00_tiny.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            if student in BROKEN:
                target.write_bytes(BROKEN[student])
            elif student == "broken_huge":
                with open(target, "wb") as f:
                    f.truncate(70 << 20)   # a sparse file: large, and costs no disk
            elif student == "broken_cell":
                raw = json.loads(nbformat.writes(submission()))
                raw["cells"].insert(1, {"cell_type": "code", "source": 42, "metadata": {}, "outputs": []})
                target.write_text(json.dumps(raw))
            else:
                add, estimate, *meta = HONEST.get(student) or hostile[student]
                nbformat.write(submission(add, estimate, meta[0] if meta else None), target)
        self.before = {s: paths[s].read_bytes() for s in ("victim", "deleted") if paths[s].exists()}
        self.paths = paths

    def result(self, done, walls, received) -> dict:
        root, victim = self.root, self.paths["victim"]
        survivors = _survivors(self.mark)
        for pid in survivors:   # leave the machine clean even when the test fails
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        text = (root / "scores.csv").read_text() if (root / "scores.csv").exists() else ""
        if text.startswith("student,"):
            rows = {row["student"]: row for row in csv.DictReader(io.StringIO(text))}
        else:   # a CSV rewritten by someone else (or none at all)
            rows = {"__not_the_graders__": {"text": text[:200]}} if text else {}
        files = {student: root / "feedback" / row["feedback"] for student, row in rows.items() if row.get("feedback")}
        texts = {student: path.read_text(errors="replace") for student, path in files.items() if path.is_file()}
        stats = next((json.loads(line) for line in reversed(done.stdout.splitlines()) if line.startswith("{")), {})
        return {"mode": self.mode, "name": self.name, "rows": rows, "feedback": texts, "received": received,
                "survivors": survivors, "wall": walls.get(str(root), float("inf")), "rc": done.returncode,
                "stdout": done.stdout[-3000:], "stderr": done.stderr[-3000:], "stats": stats,
                "expected": len(self.students),
                "victim_on_disk": victim.exists() and victim.read_bytes() == self.before.get("victim"),
                "deleted_on_disk": self.paths["deleted"].exists(),
                "canary": (root / "canary.txt").read_text(), "trap": (root / "trap.txt").read_text(),
                "feedback_files": sorted(p.name for p in (root / "feedback").iterdir())}


def _runs(bwrap: bool) -> dict:
    """The classes to grade: the whole school in each mode (under bubblewrap with the attack on
    the grader's life too); in the fallback, that attack in a class of its own (it succeeds)."""
    every = list(attacks({k: "" for k in ("victim", "deleted", "csv", "canary", "trap", "key", "alice", "port",
                                          "victim_feedback", "mark")}))
    school = [*HONEST, *BROKEN, "broken_huge", "broken_cell"]
    runs = {("rlimits", "school"): school + [s for s in every if s not in (*BWRAP_ONLY, "killer")],
            ("rlimits", "killers"): ["alice", "killer"]}
    if bwrap:
        runs[("bwrap", "school")] = school + every
    return runs


def _grade_all(shared: Path, bwrap: bool) -> None:
    """Every class graded at once by two grader processes: one for the schools, one for the class
    whose attack kills its grader. Results go to JSON files for every test process to read."""
    classes, servers = {}, {}
    for i, ((mode, name), students) in enumerate(_runs(bwrap).items()):
        root = shared / f"hostile-{mode}-{name}"
        shutil.rmtree(root, ignore_errors=True)
        servers[mode, name] = _listen()   # one server per class: what reaches it came from that class
        classes[mode, name] = Class(root, mode, name, students, servers[mode, name][0], f"4242.{i}{os.getpid()}")
    env = dict(os.environ, MLCOURSE_GRADER_TOKEN=SECRET, OMP_NUM_THREADS="1")
    groups = [[k for k in classes if k[1] != "killers"], [k for k in classes if k[1] == "killers"]]
    drivers = [subprocess.Popen([sys.executable, "-c", DRIVER.format(
        tests=str(Path(__file__).parent), runs=[(str(classes[k].root), k[0]) for k in group])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for group in groups]
    outputs = [d.communicate(timeout=300) for d in drivers]
    time.sleep(2)   # what a detached process would do once the grader has exited
    for _, _, stop in servers.values():
        stop()
    for group, driver, (out, err) in zip(groups, drivers, outputs):
        done = subprocess.CompletedProcess(driver.args, driver.returncode, out, err)
        stats = next((json.loads(line) for line in reversed(out.splitlines()) if line.startswith("{")), {})
        for key in group:
            result = classes[key].result(done, stats.get("walls", {}), servers[key][1])
            (shared / f"hostile-{key[0]}-{key[1]}.json").write_text(json.dumps(result))


def graded_class(tmp_path_factory, mode: str, name: str) -> dict:
    """Grade every class once (in whichever test process comes first) and share the results."""
    from filelock import FileLock

    from mlcourse.grading.sandbox import choose_mode

    shared = _shared_dir(tmp_path_factory)
    with FileLock(str(shared / "hostile.lock")):
        if not (shared / "hostile-done").exists():
            _grade_all(shared, choose_mode().name == "bwrap")
            (shared / "hostile-done").write_text("")
    return json.loads((shared / f"hostile-{mode}-{name}.json").read_text())


@pytest.fixture(scope="module")
def mode(request):
    if request.param == "bwrap":
        from mlcourse.grading.sandbox import choose_mode

        chosen = choose_mode()
        if chosen.name != "bwrap":
            pytest.skip(f"bubblewrap does not work here: {chosen.reason}")
    return request.param


@pytest.fixture(scope="module")
def school(tmp_path_factory, mode):
    return graded_class(tmp_path_factory, mode, "school")


@pytest.fixture(scope="module")
def killers(tmp_path_factory, mode):
    return graded_class(tmp_path_factory, mode, "school" if mode == "bwrap" else "killers")


def modes(fallback: str = "stops", reason: str = ""):
    """Parametrize a test over both modes; ``fallback``: "stops" (must pass there too),
    "xfail" (the fallback cannot stop it: it must fail there) or "skip" (too harmful to try)."""
    marks = {"stops": (), "xfail": (pytest.mark.xfail(strict=True, reason=reason),),
             "skip": (pytest.mark.skip(reason=reason),)}[fallback]
    return pytest.mark.parametrize("mode", ["bwrap", pytest.param("rlimits", marks=marks)], indirect=True)


def intact(run, *hostile):
    """The honest rows are correct, every submission has a row, the run took a bounded time."""
    rows = run["rows"]
    assert run["rc"] == 0, run["stderr"]
    assert len(rows) == run["expected"], sorted(rows)
    for student, score in HONEST_SCORES.items():
        if student in rows or run["name"] == "school":
            assert rows[student]["score"] == score and rows[student]["status"] == "graded", (student, rows[student])
            assert rows[student]["sandbox"] == run["mode"]
    assert run["wall"] < 150, run["wall"]
    return [rows[h] for h in hostile]


# --- the tests -----------------------------------------------------------------------------------

@modes()
def test_forged_check_lines_score_nothing(school):
    forger, = intact(school, "forger")
    assert forger["score"] == "0.00" and forger["tiny.add"] == "0.00" and forger["tiny.estimate"] == "0.00"


@modes()
def test_patching_torch_and_the_checks_in_the_sandbox_changes_no_score(school):
    patcher, = intact(school, "patcher")
    assert patcher["tiny.add"] == "0.00" and "values differ" in school["feedback"]["patcher"]


@modes()
def test_the_exercise_list_comes_from_the_assignment_not_the_notebook(school):
    for student in ("meta_string", "meta_int", "meta_nested"):
        row, = intact(school, student)
        assert row["score"] == "1.00", row
    shrunk, = intact(school, "meta_shrunk")
    assert shrunk["tiny.add"] == "1.00" and shrunk["tiny.estimate"] == "0.00" and shrunk["score"] == "0.50"


@modes()
def test_scores_are_fractions_of_checks_between_0_and_1(school):
    intact(school)
    for row in school["rows"].values():
        for column in ("tiny.add", "tiny.estimate", "score"):
            assert row[column] == "" or 0.0 <= float(row[column]) <= 1.0


@modes()
def test_overwriting_and_deleting_classmates_changes_no_grade(school):
    mallory, = intact(school, "mallory")
    assert mallory["score"] == "1.00"
    if school["mode"] == "bwrap":   # not even the files: they are not in the sandbox
        assert school["victim_on_disk"] and school["deleted_on_disk"]
        assert "blocked" in school["feedback"]["mallory"]


@modes()
def test_a_detached_process_neither_survives_nor_rewrites_the_csv(school):
    daemon, = intact(school, "daemon")
    assert daemon["score"] == "1.00"
    assert school["survivors"] == []


@modes()
def test_writing_through_symbolic_links(school):
    linker, = intact(school, "linker")
    assert linker["score"] == "1.00" and school["rows"]["victim"]["score"] == "1.00"
    assert school["trap"] == "untouched"   # the grader replaces a link planted at a feedback file, never follows it
    if school["mode"] == "bwrap":   # and the links lead nowhere: the targets are not in the sandbox
        assert school["canary"] == "untouched" and school["victim_on_disk"]


@modes()
def test_loops_that_ignore_signals_are_killed_and_the_rest_graded(school):
    looper, looper_cell = intact(school, "looper", "looper_cell")
    assert looper["tiny.add"] == "0.67" and looper["tiny.estimate"] == "1.00"   # the cases after the loop pass
    assert "ran longer than 1 s and was killed" in school["feedback"]["looper"]
    assert looper_cell["score"] == "1.00" and "longer than 2 s and was killed" in looper_cell["notes"]
    assert float(looper["seconds"]) < 30 and float(looper_cell["seconds"]) < 30


@modes()
def test_a_submission_that_exits_its_sandbox(school):
    quitter, = intact(school, "quitter")
    assert quitter["score"] == "1.00" and "ended the sandbox" in quitter["notes"]


@modes()
def test_memory_is_capped_and_the_cap_cannot_be_raised(school):
    hog, = intact(school, "hog")
    assert hog["score"] == "1.00" and "MemoryError" in hog["notes"]
    assert "cannot raise the limit" in school["feedback"]["hog"]


@modes()
def test_huge_output_is_capped_in_feedback_and_in_the_graders_memory(school):
    flood, = intact(school, "flood")
    assert flood["score"] == "1.00"
    assert len(school["feedback"]["flood"]) < 40_000 and "more bytes of output not kept" in school["feedback"]["flood"]
    assert school["stats"]["maxrss_mb"] < 1500, school["stats"]


@modes()
def test_huge_and_malformed_replies_fail_only_their_own_case(school):
    hoarder, jammer = intact(school, "hoarder", "jammer")
    assert hoarder["tiny.add"] == "0.00" and hoarder["tiny.estimate"] == "1.00"
    assert "cannot read" in school["feedback"]["hoarder"]
    assert jammer["tiny.add"] == "0.67" and jammer["tiny.estimate"] == "1.00"
    assert "broke the protocol" in school["feedback"]["jammer"]


@modes()
def test_malformed_notebooks_get_a_row_with_a_reason(school):
    intact(school)
    rows = school["rows"]
    for student in [*BROKEN, "broken_huge"]:
        assert rows[student]["status"] == "invalid notebook" and rows[student]["score"] == "0.00", rows[student]
        assert rows[student]["notes"]
    assert rows["broken_cell"]["score"] == "1.00" and "malformed source" in rows["broken_cell"]["notes"]


@modes()
def test_names_that_are_not_utf8_and_names_that_would_collide(school):
    intact(school)
    rows = school["rows"]
    assert rows["caf\\xe9"]["notebook"] == "caf\\xe9/00_tiny.ipynb"
    assert rows["x"]["feedback"] != rows["x_b"]["feedback"]
    assert len(school["feedback_files"]) == len(rows)


@modes()
def test_the_graders_environment_is_not_the_submissions(school):
    envy, = intact(school, "envy")
    assert envy["score"] == "1.00" and "MLCOURSE_QUICK" in school["feedback"]["envy"]
    assert SECRET not in school["feedback"]["envy"]


@modes("xfail", "without a PID namespace the grader's /proc/<pid>/environ is readable by the same user")
def test_reading_proc_of_the_grader(school):
    procy, = intact(school, "procy")
    assert procy["score"] == "1.00"
    assert SECRET not in school["feedback"]["procy"]


@modes("xfail", "without a mount namespace every file the grader can read is readable")
def test_reading_other_submissions_and_the_answer_key(school):
    peeker, = intact(school, "peeker")
    assert peeker["score"] == "1.00"
    assert KEY_MARK not in school["feedback"]["peeker"] and "alice's own line" not in school["feedback"]["peeker"]


@modes("xfail", "without a network namespace the network is reachable")
def test_no_network(school):
    netty, = intact(school, "netty")
    assert netty["score"] == "1.00"
    assert school["received"] == []


@modes()
def test_calling_the_reference_is_flagged_not_scored(school):
    copycat, alice = intact(school, "copycat", "alice")
    assert copycat["tiny.add"] == "1.00" and "operator.add" in copycat["flags"]
    assert alice["flags"] == ""


@modes()
def test_experiments_are_range_checked(school):
    wrong, text = intact(school, "wrong_experiment", "text_experiment")
    assert wrong["tiny.estimate"] == "0.00"
    assert "outside the expected range [3, 3.3]" in school["feedback"]["wrong_experiment"]
    assert text["tiny.estimate"] == "0.00" and "expected a number" in school["feedback"]["text_experiment"]
    assert "in the expected range" in school["feedback"]["alice"]


@modes("skip", "a fork bomb without a sandbox would exhaust the machine's processes")
def test_forking_is_capped(school):
    forker, = intact(school, "forker")
    assert forker["score"] == "1.00"
    forked = int(school["feedback"]["forker"].split("forked ")[1].split()[0])
    assert forked < 5000 and (forked < 48 or os.geteuid() != 0)   # (an ordinary user's cap counts their processes)


@modes("skip", "filling the disk without a sandbox would fill the machine's disk")
def test_filling_the_disk_is_capped(school):
    filler, = intact(school, "filler")
    assert filler["score"] == "1.00"
    written = int(school["feedback"]["filler"].split("written MiB ")[1].split()[0])
    assert written <= 2 * 64


@modes("xfail", "without a PID namespace a submission can kill the grader (its parent)")
def test_killing_the_grader(killers):
    killer, = intact(killers, "killer")
    assert killer["score"] == "1.00"


@modes()
def test_the_csv_records_the_mode_of_every_row(school):
    intact(school)
    graded = [r for r in school["rows"].values() if r["status"] != "invalid notebook"]
    assert {r["sandbox"] for r in graded} == {school["mode"]}
    notice = "sandbox: bubblewrap" if school["mode"] == "bwrap" else "sandbox: rlimits only"
    assert notice in school["stdout"]
