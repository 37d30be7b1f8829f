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

import atexit
import itertools
import json
import socket
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
LIB_FILES = ("launcher.py", "worker.py", "protocol.py", "zygote.py")
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


def _make_lib(tmp: Path) -> Path:
    """A private, read-only copy of the sandbox-side code under ``tmp``."""
    lib = tmp / "lib"
    shutil.copytree(PACKAGE / "ops", lib / "ops", ignore=shutil.ignore_patterns("__pycache__"))
    for name in LIB_FILES:
        shutil.copy(PACKAGE / name, lib / name)
    for path in [lib, *lib.rglob("*")]:
        os.chmod(path, 0o555 if path.is_dir() else 0o444)
    return lib


def _isolation_config(lib: Path, hide: list) -> dict:
    """What to hide from a worker and what to leave it (the interpreter, the venv, ``lib``)."""
    venv = Path(sys.prefix)
    base = Path(os.path.realpath(sys.base_prefix))
    cover = [str(ROOT), *map(str, hide), "/tmp", "/var/tmp", "/dev/shm"]
    for path in (venv, base):
        cover += _inaccessible_ancestors(path)
    return {
        "python": str(Path(sys.executable)),
        "worker": str(lib / "worker.py"),
        "cover": cover,
        "expose": [str(venv), str(base), str(lib)],
    }


# Settings of the numerical libraries that pass from the grader's environment to the worker:
# student code computes with the kernels the grader's own computations use (PyTorch's CPU
# kernels are chosen by ATEN_CPU_CAPABILITY; some processors need OPENBLAS_CORETYPE).
NUMERIC_ENV = ("ATEN_CPU_CAPABILITY", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "NPY_DISABLE_CPU_FEATURES")


def _worker_env(workdir) -> dict:
    return {
        **{name: os.environ[name] for name in NUMERIC_ENV if name in os.environ},
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "PYTHONHASHSEED": "0",
    }


class _Worker:
    """A worker forked by the zygote, with the interface of ``subprocess.Popen`` we use."""

    def __init__(self, pid: int, requests: int, answers: int, status: int):
        self.pid = pid
        self.stdin = os.fdopen(requests, "wb")
        self.stdout = os.fdopen(answers, "rb")
        self.stderr = None
        self._status = status
        self.returncode: int | None = None

    def terminate(self):
        try:
            os.kill(self.pid, signal.SIGTERM)  # its reaper kills the worker's namespace
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is not None:
            return self.returncode
        ready, _, _ = select.select([self._status], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired("sandbox worker", timeout)
        text = os.read(self._status, 64).decode(errors="replace").split()
        os.close(self._status)
        if len(text) == 2 and text[1].lstrip("-").isdigit():
            self.returncode = -int(text[1]) if text[0] == "signal" else int(text[1])
        else:
            self.returncode = -signal.SIGKILL  # the reaper itself was killed
        return self.returncode


class _Zygote:
    """A fork server (``zygote.py``), isolated once, that starts workers in milliseconds."""

    def __init__(self, hide: list):
        self._tmp = Path(tempfile.mkdtemp(prefix="bngrade-zygote-"))
        os.chmod(self._tmp, 0o711)
        lib = _make_lib(self._tmp)
        config = dict(_isolation_config(lib, hide), zygote=str(lib / "zygote.py"), env=_worker_env("/tmp/work"))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-B", str(lib / "launcher.py"), json.dumps(config)],
            stdin=theirs, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, close_fds=True,
        )
        theirs.close()
        self.channel = ours

    def spawn(self, config: dict) -> _Worker:
        request_r, request_w = os.pipe()
        answer_r, answer_w = os.pipe()
        status_r, status_w = os.pipe()
        try:
            socket.send_fds(self.channel, [json.dumps(config).encode()], [request_r, answer_w, status_w])
            self.channel.settimeout(60)
            reply = json.loads(self.channel.recv(4096) or b"{}")
        finally:
            for fd in (request_r, answer_w, status_w):
                os.close(fd)
        if "pid" not in reply:
            for fd in (request_w, answer_r, status_r):
                os.close(fd)
            raise OSError(f"the zygote did not start a worker ({reply})")
        return _Worker(reply["pid"], request_w, answer_r, status_r)

    def close(self):
        self.channel.close()
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self._tmp, ignore_errors=True)


_zygotes: dict[tuple, _Zygote] = {}


def _zygote(hide: list) -> _Zygote | None:
    """This process's zygote for these hidden paths (None where disabled)."""
    if os.environ.get("BNGRADE_ZYGOTE", "1") == "0":
        return None
    key = (os.getpid(), tuple(sorted(map(str, hide))))
    zygote = _zygotes.get(key)
    if zygote is None or zygote.process.poll() is not None:
        for other in [k for k in _zygotes if k[0] == os.getpid()]:
            _zygotes.pop(other).close()  # one zygote per process at a time
        zygote = _zygotes[key] = _Zygote(hide)
    return zygote


@atexit.register
def _close_zygotes():
    for key in [k for k in _zygotes if k[0] == os.getpid()]:
        _zygotes.pop(key).close()


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
        self._process: subprocess.Popen | _Worker | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="bngrade-"))
        os.chmod(self._tmp, 0o711)
        self._lib = _make_lib(self._tmp)
        self.uid = SANDBOX_UID_BASE + (os.getpid() % 100_000) * 8 + next(_counter) % 8
        self.load_info: dict | None = None
        self.load_error: SubmissionError | None = None
        self.restarts = 0
        self._retried = False
        self._current_cell: int | None = None
        self.skipped: dict[int, str] = {}  # cells that never finished, and why

    # ------------------------------------------------------------------ lifecycle

    def _config(self, workdir) -> dict:
        return dict(
            _isolation_config(self._lib, self.hide),
            workdir=str(workdir),
            uid=self.uid,
            gid=self.uid,
            limits={
                "memory_mb": self.limits.memory_mb,
                "processes": self.limits.processes,
                "file_mb": self.limits.file_mb,
                "workdir_mb": self.limits.workdir_mb,
                "cpu_s": self.limits.cpu_s,
            },
            env=_worker_env(workdir),
        )

    def _launch(self):
        """A worker from this process's zygote, or else a freshly launched interpreter."""
        zygote = _zygote(self.hide)
        if zygote is not None:
            try:
                return zygote.spawn(self._config("/tmp/work"))
            except OSError:
                pass  # fall back to a direct launch
        workdir = self._tmp / f"work{self.restarts}"  # a private tmpfs, made by the launcher
        return subprocess.Popen(
            [sys.executable, "-I", "-B", str(self._lib / "launcher.py"), json.dumps(self._config(workdir))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            close_fds=True,
        )

    def _start(self) -> None:
        self._process = self._launch()
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
            if err.kind in ("crash", "protocol") and running is None and not self._retried:
                # The worker died before any of the submission's code ran: not the
                # student's doing (an overloaded machine, a failed fork); start once more.
                self._retried = True
                return self._start()
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
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
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
    def _death_reason(process) -> str:
        try:
            code = process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "it stopped answering"
        stderr = b""
        try:
            stderr = (process.stderr.read(2000) or b"") if process.stderr else b""
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
