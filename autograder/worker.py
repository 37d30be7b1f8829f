"""The sandboxed side: load one submission and answer the grader's requests.

Runs as ``python -I worker.py`` after ``launcher.py`` has isolated the process. The
protocol channel is the process's original stdin/stdout, moved to private descriptors;
the submission's own prints go to ``stdout.txt`` in the working directory. Requests:

``{"op": "load", "cells": [{"source": str, "name": str}, ...], "skip": [int]}``
    execute the cells in order as module ``submission``, each on its own (an error in
    one cell is reported and the next cell still runs, as in a notebook); before each
    cell send ``{"cell": i}`` so the grader knows which cell never finished; answer the
    names defined and the errors of the cells.
``{"op": OPERATION, "args": [...], "kwargs": {...}}``
    run an operation of ``ops.py`` on the submission's namespace; answer its result.

Every answer is ``{"ok": True, "value": ...}`` or ``{"ok": False, "error": str,
"kind": str}``. The grader trusts none of it beyond its shape: scores are computed in
the grader from the returned arrays.
"""

import os
import sys
import traceback
import types

LIB = os.path.dirname(os.path.abspath(__file__))


def _private_channel():
    """Move the protocol off fds 0/1 and point 0/1/2 at harmless places."""
    read_fd, write_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    log = os.open("stdout.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    return os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb")


def _short_traceback(err: BaseException) -> str:
    """The exception with only the submission's frames (the grader's are noise)."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith("/")]
    lines = traceback.format_list(frames[-5:])
    lines += traceback.format_exception_only(type(err), err)
    return "".join(lines).rstrip()[-4000:]


def _run_cells(submission, cells, skip, outbox, protocol):
    """Execute each cell in the module's namespace; return ``{index: error}`` of failed cells."""
    errors = {}
    for index, cell in enumerate(cells):
        if index in skip:
            continue
        protocol.write_message(outbox, {"cell": index})
        try:
            exec(compile(cell["source"], cell["name"], "exec"), submission.__dict__)
        except SystemExit as err:
            errors[str(index)] = f"{cell['name']}: the code called sys.exit({err.code!r}); the rest of the cell was skipped"
        except BaseException as err:  # noqa: BLE001
            errors[str(index)] = _short_traceback(err)
    return errors


def main():
    sys.path.insert(0, LIB)
    inbox, outbox = _private_channel()
    import launcher

    launcher.add_site_dirs()
    import numpy as np  # noqa: F401  (imported before the submission can interfere)

    import ops
    import protocol

    submission = types.ModuleType("submission")
    sandbox = os.environ.get("BNGRADE_SANDBOX", "unknown")
    while True:
        try:
            request = protocol.read_message(inbox)
        except EOFError:
            return
        op = request.get("op") if isinstance(request, dict) else None
        try:
            if op == "load":
                sys.modules["submission"] = submission
                errors = _run_cells(submission, request["cells"], set(request.get("skip", ())),
                                    outbox, protocol)
                names = sorted(k for k in submission.__dict__ if not k.startswith("_"))
                value = {"names": names, "errors": errors, "sandbox": sandbox,
                         "problem": os.environ.get("BNGRADE_SANDBOX_PROBLEM", "")}
            else:
                function = ops.OPERATIONS[op]
                value = ops.to_wire(function(submission.__dict__, *request.get("args", ()),
                                             **request.get("kwargs", {})))
            answer = {"ok": True, "value": value}
        except SystemExit as err:
            answer = {"ok": False, "kind": "SystemExit",
                      "error": f"the submission called sys.exit({err.code!r})"}
        except ops.MissingName as err:
            answer = {"ok": False, "kind": "MissingName", "error": str(err)}
        except BaseException as err:  # noqa: BLE001 - every failure goes back as a message
            answer = {"ok": False, "kind": type(err).__name__, "error": _short_traceback(err)}
        try:
            protocol.write_message(outbox, answer)
        except protocol.ProtocolError as err:
            protocol.write_message(outbox, {"ok": False, "kind": "ProtocolError", "error": str(err)})


if __name__ == "__main__":
    main()
