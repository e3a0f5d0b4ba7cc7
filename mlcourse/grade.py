"""Grade a class's submitted notebooks in sandboxes, into one CSV (and feedback files).

    python -m mlcourse.grade submissions/ --out scores.csv [--feedback feedback/] [--jobs 2]
        [--assignment answer-key/assignment.json | --chapter 05_maml] [--resume]

Every ``*.ipynb`` below the folder is one submission: ``submissions/alice/05_maml.ipynb`` (the
student is the folder) or ``submissions/alice.ipynb``. Only the answer cells run (the cells that
``mlcourse.assign`` marked), each submission in its own sandbox (bubblewrap; a weaker fallback
where it is missing), and the scores are computed by this process from what the answers'
functions return on the checks' inputs. The CSV has one row per submission, is rewritten
atomically after each, and ``--resume`` continues an interrupted run. See the teacher's guide.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .grading.sandbox import Limits


def _positive(what: str, kind=float, least=None):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a {what}, got {text!r}") from None
        if not (value > 0 and math.isfinite(value)) or (least is not None and value < least):
            floor = f"at least {least}" if least is not None else "more than 0"
            raise argparse.ArgumentTypeError(f"must be a {what} {floor}, got {text!r}")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mlcourse.grade", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="the submissions: one .ipynb per student, or one folder each")
    p.add_argument("--out", type=Path, default=Path("scores.csv"), help="the CSV file to write (default scores.csv)")
    p.add_argument("--feedback", type=Path, default=None, help="a folder for one feedback text file per submission")
    p.add_argument("--assignment", type=Path, default=None,
                   help="the assignment.json that mlcourse.assign wrote: which exercises to grade")
    p.add_argument("--chapter", default=None, help="grade every submission as this chapter (e.g. 05_maml); by "
                   "default a submission's chapter is its file name")
    p.add_argument("--jobs", type=_positive("whole number of parallel sandboxes", int), default=1,
                   help="submissions graded at once (default 1; about one per two CPU cores)")
    p.add_argument("--cell-timeout", type=_positive("number of seconds"), default=300,
                   help="seconds one answer cell or one checked call may run (default 300)")
    p.add_argument("--timeout", type=_positive("number of seconds"), default=1800,
                   help="seconds one submission may run in all (default 1800)")
    p.add_argument("--memory", type=_positive("number of MiB", int, least=512), default=Limits.memory_mb,
                   help=f"address space of each sandboxed process, MiB (default {Limits.memory_mb})")
    p.add_argument("--max-processes", type=_positive("whole number", int), default=Limits.processes,
                   help=f"processes and threads a sandbox may run (default {Limits.processes})")
    p.add_argument("--max-output", type=_positive("number of KiB", int), default=Limits.output_kb,
                   help=f"output kept per submission, KiB (default {Limits.output_kb})")
    p.add_argument("--sandbox", choices=("auto", "bwrap", "rlimits"), default="auto",
                   help="bwrap: bubblewrap or fail; rlimits: the weaker fallback; auto (default): bwrap where it works")
    p.add_argument("--full", action="store_true", help="run at the book's scale rather than the quick scale")
    p.add_argument("--resume", action="store_true", help="keep the rows of an existing --out CSV whose notebooks "
                   "did not change, and grade the rest")
    p.add_argument("--force", action="store_true", help="replace an existing --out CSV")
    return p


def main(argv=None) -> None:
    from .grading.grader import grade_folder
    from .grading.submissions import find

    p = parser()
    args = p.parse_args(argv)
    if not args.folder.is_dir():
        p.error(f"{args.folder} is not a folder (give the folder that holds the submissions)")
    if args.out.is_dir():
        p.error(f"--out must name a CSV file, and {args.out} is a folder (try {args.out / 'scores.csv'})")
    if not args.out.parent.is_dir():
        p.error(f"--out: the folder {args.out.parent} does not exist")
    if args.feedback is not None and args.feedback.exists() and not args.feedback.is_dir():
        p.error(f"--feedback must name a folder, and {args.feedback} is a file")
    if args.assignment is not None and not args.assignment.is_file():
        p.error(f"--assignment: {args.assignment} is not a file")
    if args.resume and args.force:
        p.error("--resume keeps earlier rows and --force replaces them: choose one")
    if args.out.exists() and not (args.resume or args.force):
        p.error(f"{args.out} exists: --resume continues that run (grading only what it lacks), --force grades "
                "everything again")
    if not find(args.folder):
        p.error(f"no submissions: {args.folder} holds no *.ipynb file (one per student, or one folder each)")
    limits = Limits(memory_mb=args.memory, processes=args.max_processes, output_kb=args.max_output,
                    cpu_s=int(max(args.timeout, 60)) + 60)
    try:
        results = grade_folder(args.folder, args.out, args.cell_timeout, args.timeout, not args.full, args.feedback,
                               jobs=args.jobs, sandbox=args.sandbox, limits=limits, chapter=args.chapter,
                               assignment=args.assignment, resume=args.resume, force=args.force,
                               progress=sys.stderr.isatty(), reap_orphans=True)
    except KeyboardInterrupt:
        print(f"interrupted: the rows graded so far are in {args.out}; run again with --resume to finish",
              file=sys.stderr)
        sys.exit(130)
    except (ValueError, FileExistsError, RuntimeError) as err:
        p.error(str(err))
    failed = sum(r.status != "graded" for r in results)
    print(f"{len(results)} submissions graded into {args.out}" + (f" ({failed} not fully graded: see their notes)"
                                                                   if failed else ""))


if __name__ == "__main__":
    main()
