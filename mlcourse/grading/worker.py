"""The grader's agent inside a submission's sandbox (run as a script, never imported by the grader).

    python -I -B worker.py --package-root DIR --requests FD --replies FD [limits]

It lowers its own limits first (memory, CPU time, processes, file size, open files, no core
dumps), then answers the grader's requests one at a time, in plain data (see ``protocol``):
``exec`` runs one answer cell in the answer's namespace; ``call`` calls the answer's function on
the inputs the grader sent (rebuilding described callables from the package's recipes) and
returns what it gave, with gradients and derivatives where asked; ``bye`` ends it. The student's
code runs in this process and may change anything here, including this file's functions: that
only changes what is sent back, which the grader validates and judges in its own process.
"""

import argparse
import builtins
import os
import resource
import sys

LIMITS = {"memory": "RLIMIT_AS", "cpu": "RLIMIT_CPU", "processes": "RLIMIT_NPROC", "file_size": "RLIMIT_FSIZE",
          "open_files": "RLIMIT_NOFILE"}


def lower_limits(args) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for option, name in LIMITS.items():
        value = getattr(args, option)
        if value is None:
            continue
        kind = getattr(resource, name)
        _, hard = resource.getrlimit(kind)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))


def die_with_parent() -> None:
    """Be killed if the grader dies (a second line of defence; the sandbox has its own)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))   # PR_SET_PDEATHSIG
    except Exception:   # not Linux, or no libc: the sandbox's own kill still applies
        pass


def without_magics(source: str) -> str:
    """IPython's line magics and shell escapes (``%time``, ``!pip``) are not Python: skip them."""
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        lines.append(line[:len(line) - len(stripped)] + "pass  # skipped by the grader: " + stripped[:40]
                     if stripped.startswith(("%", "!")) else line)
    return "\n".join(lines)


def describe_error(err: BaseException) -> str:
    import traceback

    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename.startswith("<answer")]
    where = f" (line {frames[-1].lineno} of {frames[-1].filename[1:-1]})" if frames else ""
    return f"{type(err).__name__}: {str(err)[:300]}{where}"


def import_light(package_root: str):
    """The grader's modules, imported without running mlcourse/__init__.py, which imports torch
    (seconds of CPU): an answer that uses torch imports it itself, and only then is it paid for."""
    import types

    sys.path.insert(0, package_root)
    sys.modules["mlcourse"] = stub = types.ModuleType("mlcourse")
    stub.__path__ = [os.path.join(package_root, "mlcourse")]
    from mlcourse.grading import calls, protocol

    del sys.modules["mlcourse"]   # the answer's own `import mlcourse` gets the real package
    return calls, protocol


def serve(package_root: str, requests: int, replies: int, preload: bool) -> None:
    calls, protocol = import_light(package_root)
    if preload:   # the checks send tensors: pay for torch before the clock of the first call starts
        import torch  # noqa: F401

    namespace = {"__name__": "__answer__", "__builtins__": builtins}
    protocol.send(replies, {"status": "ready", "python": sys.version.split()[0]})
    while True:
        request = protocol.receive(requests, allow_built=True)
        op = request.get("op") if isinstance(request, dict) else None
        if op == "bye":
            return
        if op == "exec":
            try:
                exec(compile(without_magics(request["source"]), f"<{request['name']}>", "exec"), namespace)
                reply = {"status": "ok"}
            except BaseException as err:   # SystemExit and KeyboardInterrupt too: the cell failed, not us
                reply = {"status": "raised", "error": describe_error(err)}
        elif op == "call":
            fn = namespace.get(request["function"])
            if not callable(fn):
                reply = {"status": "missing", "error": f"the answer cells define no function {request['function']}"}
            else:
                try:
                    args, kwargs = calls.build(request["args"]), calls.build(request["kwargs"])
                except Exception as err:
                    reply = {"status": "grader error", "error": f"an input could not be rebuilt: {err}"}
                else:
                    if "torch" in sys.modules:   # for answers that draw random numbers
                        sys.modules["torch"].manual_seed(request["seed"])
                    try:
                        seen = calls.observe(fn, args, kwargs, tuple(request["grad_wrt"]), request["weights"],
                                       tuple(request["derivatives"]) if request["derivatives"] else None)
                    except BaseException as err:
                        seen = calls.Observation("raised", error=describe_error(err))
                    reply = {"status": seen.status, "value": seen.value, "grads": seen.grads,
                             "derivatives": seen.derivatives, "problem": seen.problem, "error": seen.error}
        else:
            reply = {"status": "grader error", "error": f"unknown request {op!r}"}
        try:
            protocol.send(replies, reply)
        except protocol.ProtocolError as err:
            protocol.send(replies, {"status": "unreadable", "error": f"the function returned something the grader "
                                    f"cannot read: {err} (return tensors, numbers, lists, tuples or dicts)"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--package-root", required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--replies", type=int, required=True)
    parser.add_argument("--import-torch", action="store_true")
    for option in LIMITS:
        parser.add_argument("--" + option.replace("_", "-"), type=int, default=None)
    args = parser.parse_args()
    lower_limits(args)
    die_with_parent()
    serve(args.package_root, args.requests, args.replies, args.import_torch)


if __name__ == "__main__":
    main()
