"""The grader's side of the sandbox: start, talk to, time out and restart a worker.

A :class:`Sandbox` holds one submission. Each request has a wall-clock limit; a worker
that times out, crashes, exits or answers garbage is killed with its whole process group
and started afresh (the submission is loaded again) for the next request, so one bad
call costs only the test that made it.

The worker runs ``autograder/launcher.py`` (isolation, then ``exec``) and
``autograder/worker.py`` from a private copy in a temporary directory; the grader's own
files, the reference solutions and the hidden tests are hidden from it (see
``launcher.py``).
"""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import protocol

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
LIB_FILES = ("launcher.py", "worker.py", "protocol.py")
SANDBOX_UID_BASE = 200_000
_counter = itertools.count()


@dataclass
class Limits:
    """Per-submission limits."""

    timeout_s: float = 10.0        # wall clock per request
    load_timeout_s: float = 30.0   # wall clock to start and run the submission's top level
    memory_mb: int = 3072          # address space
    processes: int = 64            # processes and threads of the sandbox's uid
    file_mb: int = 16              # largest file the submission may write
    workdir_mb: int = 64           # its private working directory (a tmpfs)
    cpu_s: int = 600               # CPU seconds for the worker's whole life


class SubmissionError(Exception):
    """The submission failed a request: an exception, a timeout, a crash or a bad answer.

    ``kind`` is ``"exception"``, ``"timeout"``, ``"crash"``, ``"missing"`` or
    ``"protocol"``; ``message`` says what happened in words a student understands.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


class _DeadlineReader:
    """A binary reader of a pipe that raises TimeoutError past a deadline."""

    def __init__(self, fd: int, deadline: float):
        self.fd, self.deadline = fd, deadline

    def read(self, n: int) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        ready, _, _ = select.select([self.fd], [], [], remaining)
        if not ready:
            raise TimeoutError
        return os.read(self.fd, min(n, 1 << 20))


def _inaccessible_ancestors(path: Path) -> list[str]:
    """Directories on the way to ``path`` that an unprivileged user cannot enter."""
    out = []
    for parent in list(path.parents)[::-1]:
        try:
            mode = parent.stat().st_mode
        except OSError:
            continue
        if not mode & stat.S_IXOTH:
            out.append(str(parent))
    return out


@dataclass
class Sandbox:
    """One submission in its own unprivileged, isolated worker process.

    Parameters
    ----------
    cells : list of (name, source)
        The submission's code, in order: one chunk for a ``.py`` file, one per code cell
        for a notebook. ``name`` appears in tracebacks (``"cell 3"``, ``"ex.py"``).
    limits : Limits
    hide : list of paths
        Directories to hide from the worker besides the project (submissions, outputs).
    """

    cells: list
    limits: Limits = field(default_factory=Limits)
    hide: list = field(default_factory=list)

    def __post_init__(self):
        self._process: subprocess.Popen | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="bngrade-"))
        os.chmod(self._tmp, 0o711)
        self._lib = self._tmp / "lib"
        shutil.copytree(PACKAGE / "ops", self._lib / "ops", ignore=shutil.ignore_patterns("__pycache__"))
        for name in LIB_FILES:
            shutil.copy(PACKAGE / name, self._lib / name)
        for path in [self._lib, *self._lib.rglob("*")]:
            os.chmod(path, 0o555 if path.is_dir() else 0o444)
        self.uid = SANDBOX_UID_BASE + (os.getpid() % 100_000) * 8 + next(_counter) % 8
        self.load_info: dict | None = None
        self.load_error: SubmissionError | None = None
        self.restarts = 0
        self._current_cell: int | None = None
        self.skipped: dict[int, str] = {}  # cells that never finished, and why

    # ------------------------------------------------------------------ lifecycle

    def _config(self, workdir: Path) -> dict:
        python = Path(sys.executable)
        venv = Path(sys.prefix)
        base = Path(os.path.realpath(sys.base_prefix))
        expose = [str(venv), str(base), str(self._lib)]
        cover = [str(ROOT), *map(str, self.hide), "/tmp", "/var/tmp", "/dev/shm"]
        for path in (venv, base):
            cover += _inaccessible_ancestors(path)
        return {
            "python": str(python),
            "worker": str(self._lib / "worker.py"),
            "workdir": str(workdir),
            "uid": self.uid,
            "gid": self.uid,
            "cover": cover,
            "expose": expose,
            "limits": {
                "memory_mb": self.limits.memory_mb,
                "processes": self.limits.processes,
                "file_mb": self.limits.file_mb,
                "workdir_mb": self.limits.workdir_mb,
                "cpu_s": self.limits.cpu_s,
            },
            "env": {
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "HOME": str(workdir),
                "TMPDIR": str(workdir),
                "LANG": "C.UTF-8",
                "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
                "MPLBACKEND": "Agg",
                "PYTHONHASHSEED": "0",
            },
        }

    def _start(self) -> None:
        workdir = self._tmp / f"work{self.restarts}"  # a private tmpfs, made by the launcher
        config = self._config(workdir)
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-B", str(self._lib / "launcher.py"), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            close_fds=True,
        )
        self.restarts += 1
        cells = [{"name": name, "source": source} for name, source in self.cells]
        try:
            info = self._exchange(
                {"op": "load", "cells": cells, "skip": sorted(self.skipped)},
                self.limits.load_timeout_s,
                during="while running the submission's top-level code",
            )
        except SubmissionError as err:
            running = self._current_cell
            if (err.kind in ("timeout", "crash") and running is not None
                    and 0 <= running < len(self.cells) and running not in self.skipped
                    and len(self.skipped) < 3):
                # That cell never finished: skip it and load the rest again.
                self.skipped[running] = f"{self.cells[running][0]}: {err.message}; the cell was skipped"
                return self._start()
            self.load_error = err
            self.kill()
            raise
        self.load_info = info
        self.load_error = None

    def kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()  # the launcher kills the worker's namespace and reaps it
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream:
                stream.close()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ requests

    def _exchange(self, message: dict, timeout: float, during: str) -> object:
        process = self._process
        self._current_cell = None
        try:
            process.stdin.write(protocol.encode(message))
            process.stdin.flush()
            reader = _DeadlineReader(process.stdout.fileno(), time.monotonic() + timeout)
            answer = protocol.read_message(reader)
            while isinstance(answer, dict) and set(answer) == {"cell"} and type(answer["cell"]) is int:
                self._current_cell = answer["cell"]  # progress through a notebook's cells
                answer = protocol.read_message(reader)
        except TimeoutError:
            self.kill()
            raise SubmissionError(
                "timeout",
                f"no answer within {timeout:g} s {during}: an infinite loop, or far too slow",
            ) from None
        except (EOFError, BrokenPipeError, OSError):
            detail = self._death_reason(process)
            self.kill()
            raise SubmissionError("crash", f"the submission's process ended {during}: {detail}") from None
        except protocol.ProtocolError as err:
            self.kill()
            raise SubmissionError("protocol", f"unreadable answer {during} ({err}); did the submission write to the grader's channel?") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
            self.kill()
            raise SubmissionError("protocol", f"malformed answer {during}")
        if answer["ok"]:
            return answer.get("value")
        kind = "missing" if answer.get("kind") == "MissingName" else "exception"
        raise SubmissionError(kind, str(answer.get("error", "unknown error")))

    @staticmethod
    def _death_reason(process: subprocess.Popen) -> str:
        try:
            code = process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "it stopped answering"
        stderr = b""
        try:
            stderr = process.stderr.read(2000) or b""
        except (OSError, ValueError):
            pass
        if code < 0:
            name = signal.Signals(-code).name
            hint = {"SIGKILL": " (killed: memory or CPU limit, or it killed itself)",
                    "SIGSEGV": " (segmentation fault)", "SIGXCPU": " (CPU time limit)"}.get(name, "")
            return f"signal {name}{hint}"
        if code == 70:
            return "the sandbox could not be set up: " + stderr.decode(errors="replace").strip()
        return f"exit status {code} (os._exit or a fatal error)"

    def request(self, op: str, *args, timeout: float | None = None, **kwargs) -> object:
        """Run operation ``op`` on the submission; raise :class:`SubmissionError` on failure."""
        if self._process is None:
            self._start()
        return self._exchange(
            {"op": op, "args": list(args), "kwargs": kwargs},
            timeout or self.limits.timeout_s,
            during=f"in {op.split('.')[-1]}({', '.join(a for a in args[:1] if isinstance(a, str))})",
        )

    def loaded(self) -> dict:
        """Start the worker if needed; the load answer (names defined, sandbox mode)."""
        if self._process is None:
            self._start()
        return self.load_info
