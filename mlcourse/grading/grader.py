"""Grading a class: every submission in its own sandbox, every score computed here.

For each submission the grader reads the answer cells (once, before anything runs), starts a
sandbox, runs the cells there one by one, then calls the answer's function of every assigned
exercise on the check's inputs. The reference's outputs were computed here, once, before any
sandbox started; the sandbox sends back plain values, and the comparison (:func:`judge`) runs
here. A cell or call that hangs or kills its sandbox is cut off at its timeout, the sandbox is
restarted and the good cells are run again, so the rest of the submission is still graded; a
submission that runs past ``timeout`` in all keeps what was checked by then.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from ..exercises.core import Exercise, Observation, build, case_lines, judge, observe, projection, summary
from . import assignment as assignment_file
from . import integrity, protocol, submissions
from .sandbox import Limits, Mode, Output, Sandbox, SandboxDied, _write_etc, become_subreaper, choose_mode, kill_orphans

STARTUP_S = 180          # the most a sandbox may take to start (importing torch on a busy machine)
MAX_RESTARTS = 6         # restarts of one submission's sandbox before the rest is given up
STATUSES = ("ok", "not attempted", "raised", "missing", "unreadable", "grader error")


@dataclass(frozen=True)
class Settings:
    cell_timeout: float = 300
    timeout: float = 1800
    quick: bool = True
    jobs: int = 1
    limits: Limits = Limits()


def check_settings(s: Settings) -> None:
    """Refuse settings that would silently mean something else (a clear error for each)."""
    for name, value in (("cell_timeout", s.cell_timeout), ("timeout", s.timeout)):
        if not (isinstance(value, (int, float)) and value > 0 and value < float("inf")):
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    if not (isinstance(s.jobs, int) and 1 <= s.jobs <= 256):
        raise ValueError(f"jobs must be a whole number from 1 to 256, got {s.jobs!r}")
    for name in ("memory_mb", "cpu_s", "processes", "file_mb", "scratch_mb", "output_kb", "open_files"):
        value = getattr(s.limits, name)
        if not (isinstance(value, int) and value > 0):
            raise ValueError(f"the limit {name} must be a positive whole number, got {value!r}")
    if s.limits.memory_mb < 512:
        raise ValueError(f"memory_mb must be at least 512 (torch alone needs about 600 MB), got {s.limits.memory_mb}")


# --- the check's side, prepared once -------------------------------------------------------------

@dataclass
class Prepared:
    """One case of an exercise: the reference's observation, and the request for the sandbox."""

    case: object
    expected: Observation | None
    request: dict


def prepare(ex: Exercise) -> list[Prepared]:
    prepared = []
    for case in ex.checked_cases():
        expected, weights = None, None
        if case.reference is not None:
            args, kwargs = build(case.args), build(case.kwargs)
            expected = observe(case.reference, args, kwargs, case.grad_wrt, None, case.derivatives)
            if expected.status != "ok" or expected.problem:
                raise RuntimeError(f"the reference of {ex.id} failed on {case.label!r}: "
                                   f"{expected.error or expected.problem}")
            weights = projection(expected.value) if case.grad_wrt else None
        request = {"op": "call", "function": ex.function, "args": tuple(case.args), "kwargs": dict(case.kwargs),
                   "grad_wrt": list(case.grad_wrt), "weights": weights,
                   "derivatives": list(case.derivatives) if case.derivatives else None, "seed": int(case.seed)}
        try:
            protocol.pack(request, allow_built=True)
        except protocol.ProtocolError as err:
            raise ValueError(f"{ex.id}, {case.label!r}: its inputs must be plain data ({err}); describe a "
                             "callable input with exercises.Built and a recipe") from None
        prepared.append(Prepared(case, expected, request))
    return prepared


def _observation(reply: dict) -> Observation:
    """The sandbox's reply as an Observation, each field checked for its type."""
    status = reply.get("status")
    if status not in STATUSES:
        return Observation("raised", error=f"the sandbox sent an unknown status {str(status)[:40]!r}")
    text = lambda key: reply.get(key)[:500] if isinstance(reply.get(key), str) else ""  # noqa: E731
    seen = Observation(status, value=reply.get("value"), error=text("error"), problem=text("problem") or None)
    for key in ("grads", "derivatives"):
        value = reply.get(key)
        if value is not None:
            import torch

            if not (isinstance(value, list) and all(v is None or isinstance(v, torch.Tensor) for v in value)):
                seen.problem = f"the sandbox sent malformed {key}"
            else:
                setattr(seen, key, value)
    return seen


# --- one submission ---------------------------------------------------------------------------

@dataclass
class Result:
    student: str
    notebook: str
    chapter: str = ""
    sha256: str = ""
    mode: str = ""
    status: str = "graded"
    scores: dict[str, float] = field(default_factory=dict)
    expected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    feedback: list[str] = field(default_factory=list)
    output: str = ""
    seconds: float = 0.0
    feedback_file: str = ""

    @property
    def total(self) -> float:
        names = self.expected or sorted(self.scores)
        return sum(min(1.0, max(0.0, self.scores.get(n, 0.0))) for n in names) / len(names) if names else 0.0


class _OutOfTime(Exception):
    pass


class _GiveUp(Exception):
    pass


def grade_submission(sub: submissions.Submission, exercises: list[Exercise], prepared: dict[str, list[Prepared]],
                     settings: Settings, mode: Mode, workdir: Path, live: set, data: Path | None = None,
                     chapter: str = "") -> Result:
    """Grade one submission (already read) in its own sandbox; never raises for what it does."""
    began = time.monotonic()
    result = Result(sub.student, sub.relative, chapter, sub.sha256, mode.name, expected=[e.id for e in exercises])
    result.notes += sub.notes
    if sub.error:
        result.status, result.mode = sub.status, ""
        result.notes.append(sub.error)
        return result
    result.flags = integrity.flags(sub, exercises)
    output = Output(settings.limits.output_kb << 10)
    deadline = began + settings.timeout
    imports = submissions.needed_imports(sub)
    cells = [c for c in sub.cells if submissions.defines(c, {ex.function for ex in exercises})]
    skipped = [str(c.index) for c in sub.cells if c not in cells]
    if skipped:
        many = len(skipped) > 1
        result.notes.append(f"answer cell{'s' if many else ''} {', '.join(skipped)} define{'' if many else 's'} no "
                            f"function and {'were' if many else 'was'} not run (experiments and written answers are "
                            "for the teacher to read)")
    cells = ([submissions.AnswerCell(-1, "\n".join(imports))] if imports else []) + cells
    state = {"box": None, "good": [], "restarts": 0}
    preload = (any(protocol.needs_torch(p.request) for ex in exercises for p in prepared[ex.id])
               or submissions.imports_torch(cells))

    def limit(seconds: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _OutOfTime
        return min(seconds, left)

    def lost(err: SandboxDied) -> None:
        state["box"].kill()
        state["box"] = None
        state["restarts"] += 1

    def execute(cell, replay: bool) -> bool:
        """Run one cell; False when it hung or ended the sandbox (it is then left out)."""
        try:
            reply = state["box"].request({"op": "exec", "name": cell.name, "source": cell.source},
                                         limit(settings.cell_timeout))
        except SandboxDied as err:
            what = (f"ran longer than {settings.cell_timeout:g} s and was killed" if err.timed_out
                    else f"ended the sandbox ({err})")
            result.notes.append(f"{cell.name} {what}{' when run again' if replay else ''}; it is left out")
            lost(err)
            if cell in state["good"]:
                state["good"].remove(cell)
            return False
        if reply["status"] != "ok" and not replay:
            result.notes.append(f"{cell.name} raised {str(reply.get('error'))[:300]}")
        return True

    def ensure() -> Sandbox:
        while state["box"] is None:
            if state["restarts"] > MAX_RESTARTS:
                raise _GiveUp(f"the sandbox was restarted {MAX_RESTARTS} times; what was left is not graded")
            startup = limit(STARTUP_S)
            box = Sandbox(mode, settings.limits, workdir, settings.quick, data, output, live, preload)
            try:
                box.request(None, startup)
            except SandboxDied as err:
                box.kill()
                raise _GiveUp(f"the sandbox did not start ({err}): {output.text()[-300:]}") from None
            state["box"] = box
            for cell in list(state["good"]):
                if not execute(cell, replay=True):
                    break
        return state["box"]

    pending = {(ex.id, i) for ex in exercises for i in range(len(prepared[ex.id]))}
    try:
        for cell in cells:
            ensure()
            if execute(cell, replay=False):
                state["good"].append(cell)
            elif (fallback := submissions.definitions_only(cell)) is not None:
                ensure()
                if execute(fallback, replay=False):
                    state["good"].append(fallback)
                    result.notes.append(f"{cell.name}: its functions were defined without the rest of the cell")
        for ex in exercises:
            result.feedback.append(f"Exercise {ex.id}: {ex.title}")
            passed, status = 0, None
            for index, p in enumerate(prepared[ex.id]):
                pending.discard((ex.id, index))
                label = p.case.label
                try:
                    box = ensure()
                    reply = box.request(p.request, limit(p.case.time_limit or settings.cell_timeout))
                except SandboxDied as err:
                    what = (f"ran longer than {p.case.time_limit or settings.cell_timeout:g} s and was killed"
                            if err.timed_out else f"ended the sandbox ({err})")
                    result.feedback.append(f"  ✗ {label}: {ex.function} {what}")
                    lost(err)
                    continue
                given = _observation(reply)
                if given.status in ("not attempted", "missing"):
                    status = "not attempted"
                    reason = (f"{ex.function} raises NotImplementedError ({given.error})"
                              if given.status == "not attempted" else given.error)
                    result.feedback += [f"  - not attempted: {reason[:300]}.", f"    Hint: {ex.hint}"]
                    pending -= {(ex.id, i) for i in range(index, len(prepared[ex.id]))}
                    break
                if given.status == "grader error":
                    result.notes.append(f"{ex.id}, {label}: {given.error}")
                problem = judge(p.case, p.expected, given)
                passed += problem is None
                result.feedback += case_lines(p.case, ex.function, p.expected, given, problem)
            total = len(prepared[ex.id])
            result.scores[ex.id] = passed / total
            result.feedback.append(summary(ex, passed, total, status or ("passed" if passed == total else "failed")))
    except _OutOfTime:
        result.status = "timed out"
        result.notes.append(f"the submission ran longer than {settings.timeout:g} s in all (--timeout); "
                            "what was not checked by then scores 0")
    except _GiveUp as err:
        result.status = "error"
        result.notes.append(str(err))
    finally:
        if state["box"] is not None:
            state["box"].finish()
    for exercise_id, index in sorted(pending):
        result.scores.setdefault(exercise_id, 0.0)
        result.feedback.append(f"  - {exercise_id}, {prepared[exercise_id][index].case.label}: "
                               f"not checked ({result.status})")
    result.output = output.text()
    result.seconds = time.monotonic() - began
    return result


# --- the CSV and the feedback files -------------------------------------------------------------

FIXED = ["student", "notebook", "chapter", "status"]
TRAILING = ["score", "flags", "notes", "sandbox", "seconds", "sha256", "feedback"]


def csv_text(results: list[Result], exercises: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*FIXED, *exercises, *TRAILING])
    for r in results:
        scores = [f"{min(1.0, max(0.0, r.scores[e])):.2f}" if e in r.scores else ("0.00" if e in r.expected else "")
                  for e in exercises]
        writer.writerow([r.student, r.notebook, r.chapter, r.status, *scores, f"{r.total:.2f}", "; ".join(r.flags),
                         "; ".join(r.notes), r.mode, f"{r.seconds:.1f}", r.sha256, r.feedback_file])
    return buffer.getvalue()


def read_csv(path: Path) -> list[Result]:
    """The rows of an earlier run's CSV (for --resume)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if fields[:len(FIXED)] != FIXED or fields[-len(TRAILING):] != TRAILING:
            raise ValueError(f"{path} is not a CSV written by mlcourse.grade (its columns are {fields[:6]}...)")
        exercises = fields[len(FIXED):-len(TRAILING)]
        rows = []
        for row in reader:
            r = Result(row["student"], row["notebook"], row["chapter"], row["sha256"], row["sandbox"], row["status"],
                       notes=[n for n in row["notes"].split("; ") if n],
                       flags=[n for n in row["flags"].split("; ") if n],
                       feedback_file=row["feedback"])
            r.scores = {e: float(row[e]) for e in exercises if row.get(e)}
            r.expected = list(r.scores)
            r.seconds = float(row["seconds"] or 0)
            rows.append(r)
        return rows


def feedback_name(relative: bytes) -> str:
    """A feedback file name of its own for each submission path: readable, and never shared
    (``a/b_c.ipynb`` and ``a_b/c.ipynb`` differ by the hash of the path)."""
    text = relative.decode("utf-8", "backslashreplace").removesuffix(".ipynb")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace(os.sep, "__")).strip("._")[:80] or "submission"
    return f"{slug}-{hashlib.sha256(relative).hexdigest()[:10]}.txt"


def feedback_text(r: Result) -> str:
    lines = [f"{r.student}: {r.notebook}", f"score {r.total:.2f} ({r.status}; sandbox: {r.mode or 'none'})", "",
             *r.feedback]
    if r.flags:
        lines += ["", "For the teacher, integrity:", *(f"  - {f}" for f in r.flags)]
    if r.notes:
        lines += ["", "Notes:", *(f"  - {n}" for n in r.notes)]
    if r.output.strip():
        lines += ["", "What your code printed:", r.output.rstrip()]
    return "\n".join(lines) + "\n"


# --- a class ----------------------------------------------------------------------------------

def _data_folder() -> Path | None:
    from ..runtime import data_dir

    try:
        folder = Path(data_dir()).resolve()
    except Exception:
        return None
    return folder if folder.is_dir() else None


def grade_folder(folder: Path, out: Path, cell_timeout: float = 300, timeout: float = 1800, quick: bool = True,
                 feedback: Path | None = None, *, jobs: int = 1, sandbox: str = "auto", limits: Limits = Limits(),
                 chapter: str | None = None, assignment: Path | None = None, resume: bool = False,
                 force: bool = False, progress: bool = False, catalogue: dict | None = None,
                 reap_orphans: bool = False, log=print) -> list[Result]:
    """Grade every notebook below ``folder`` into the CSV ``out`` (and feedback files); returns the
    rows. ``catalogue`` replaces the package's exercises (tests); ``reap_orphans`` makes this
    process a child subreaper that kills whatever the answers leave behind (for a process that
    runs nothing else, like the command line); the rest is as in the command line."""
    from ..exercises import load_all

    settings = Settings(cell_timeout, timeout, quick, jobs, limits)
    check_settings(settings)
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise ValueError(f"the submissions folder {folder} is not a folder")
    if out.is_dir():
        raise ValueError(f"--out must name a CSV file, and {out} is a folder")
    if feedback is not None and Path(feedback).exists() and not Path(feedback).is_dir():
        raise ValueError(f"--feedback must name a folder, and {feedback} is a file")
    if out.exists() and not (resume or force):
        raise FileExistsError(f"{out} exists: --resume continues that run (grading only what it lacks), "
                              "--force grades everything again")
    catalogue = load_all() if catalogue is None else catalogue
    plan = assignment_file.load(assignment, catalogue) if assignment is not None else None
    if chapter is not None and not (chapter in (plan or {}) or any(e.chapter == chapter for e in catalogue.values())):
        raise ValueError(f"unknown chapter {chapter!r}; known: "
                         f"{', '.join(sorted(plan or {e.chapter for e in catalogue.values()}))}")
    found = submissions.find(folder)
    if not found:
        raise ValueError(f"no submissions: {folder} holds no *.ipynb file (one per student, or one folder each)")

    chapters = sorted(plan) if plan is not None else sorted({e.chapter for e in catalogue.values()})
    jobs_of = {}
    for sub in found:
        name = chapter or (chapters[0] if plan is not None and len(chapters) == 1 else sub.stem)
        if name not in chapters:
            sub.status, sub.error = "not graded", (
                f"{sub.stem!r} is not a chapter of {'the assignment' if plan is not None else 'the course'} "
                f"({', '.join(chapters)}): name the file after its chapter, or grade with --chapter")
            name = ""
        ids = (plan[name]["exercises"] if plan is not None else
               [e.id for e in catalogue.values() if e.chapter == name]) if name else []
        submissions.read(sub, set(plan[name]["answer_cells"]) if plan is not None and name else set())
        jobs_of[sub.path] = (sub, name, [catalogue[i] for i in ids])   # (the real path: two may look alike)

    needed = {ex.id: ex for _, _, exs in jobs_of.values() for ex in exs}
    prepared = {i: prepare(ex) for i, ex in needed.items()}
    columns = [i for i in catalogue if i in needed]

    done: dict[str, Result] = {}
    if resume and out.exists():
        shown = {}
        for path, job in jobs_of.items():
            shown.setdefault(job[0].relative, []).append(path)
        for row in read_csv(out):
            paths = shown.get(row.notebook, [])
            match = jobs_of[paths[0]] if len(paths) == 1 else None
            if match and match[0].sha256 == row.sha256 and row.status not in ("error",) and \
                    all(e.id in row.scores for e in match[2]):
                row.expected = [e.id for e in match[2]]
                done[paths[0]] = row
                columns += [e for e in row.scores if e not in columns]
        if done:
            log(f"resuming: {len(done)} of {len(jobs_of)} submissions already graded in {out}")

    if reap_orphans:   # orphans of the answers come to this process, which kills them
        become_subreaper()
    workdir = Path(tempfile.mkdtemp(prefix="mlcourse-grade-"))
    live: set = set()
    lock = threading.Lock()
    try:
        _write_etc(workdir / "etc")
        mode = choose_mode(sandbox, root=workdir)
        log(mode.notice())
        data = _data_folder() if any(ex.needs_data for ex in needed.values()) else None

        def finish(result: Result, sub: submissions.Submission) -> None:
            with lock:
                if feedback is not None:
                    Path(feedback).mkdir(parents=True, exist_ok=True)
                    result.feedback_file = feedback_name(os.fsencode(sub.path.relative_to(folder)))
                    assignment_file.write_atomically(Path(feedback) / result.feedback_file, feedback_text(result))
                done[sub.path] = result
                ordered = [done[k] for k in jobs_of if k in done]
                assignment_file.write_atomically(out, csv_text(ordered, columns))

        todo = [(sub, name, exs) for key, (sub, name, exs) in jobs_of.items() if key not in done]
        bar = _progress(len(jobs_of), len(done), progress)
        with ThreadPoolExecutor(max_workers=settings.jobs, thread_name_prefix="grade") as pool:
            futures = {pool.submit(grade_submission, sub, exs, prepared, settings, mode, workdir, live, data, name): sub
                       for sub, name, exs in todo}
            try:
                remaining = set(futures)
                while remaining:
                    finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                    for future in finished:
                        sub = futures[future]
                        try:
                            result = future.result()
                        except Exception as err:  # a bug of ours must not cost the class its grades
                            result = Result(sub.student, sub.relative, jobs_of[sub.path][1], sub.sha256, mode.name,
                                            "error",
                                            notes=[f"the grader failed on this submission: {type(err).__name__}: "
                                                   f"{err}"])
                        finish(result, sub)
                        if reap_orphans and mode.name == "rlimits":
                            kill_orphans()
                        bar(result)
            except BaseException:
                for future in futures:
                    future.cancel()
                for box in list(live):
                    box.kill()
                raise
        if not done:
            assignment_file.write_atomically(out, csv_text([], columns))
        return [done[k] for k in jobs_of if k in done]
    finally:
        for box in list(live):
            box.kill()
        if reap_orphans:
            kill_orphans()
        shutil.rmtree(workdir, ignore_errors=True)


def _progress(total: int, already: int, show: bool):
    if not show:
        return lambda result: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=already, unit="submission", desc="grading", dynamic_ncols=True)

    def update(result: Result) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{result.student[:16]} {result.total:.2f}")
        if bar.n >= total:
            bar.close()
    return update
