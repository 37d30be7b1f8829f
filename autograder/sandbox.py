"""The grader's side of the sandbox: start, talk to, time out and restart a worker.

A :class:`Sandbox` holds one submission. Each request has a wall-clock limit; a worker
that times out, crashes, exits or answers garbage is killed with its whole process group
and started afresh (the submission is loaded again) for the next request, so one bad
call costs only the test that made it.

Isolation is bubblewrap's (``bwrap``): the worker's file system is built from an
allow-list (:func:`allowed_paths`: the interpreter, its libraries and the virtual
environment, read-only), so the grader's files, the reference solutions, the hidden tests,
other copies of the course and other students' work do not exist for it. Inside, the
worker runs ``autograder/launcher.py`` (per-worker containment, then ``exec``) and
``autograder/worker.py`` from a private copy of those files. Where bwrap cannot set this up,
:class:`Sandbox` refuses (:class:`SandboxUnavailable`) unless told to run unisolated.
"""

from __future__ import annotations

import atexit
import importlib.util
import itertools
import json
import multiprocessing.util
import socket
import os
import select
import shutil
import site
import signal
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


def course_library() -> Path | None:
    """The ``bnlab`` package, which the chapters' notebooks import and students have (from the
    student kit): in the repository or installed. The notebooks' chapter cells keep their imports
    when graded, so the worker must find it as the student did."""
    spec = importlib.util.find_spec("bnlab")
    return Path(spec.origin).parent if spec and spec.origin else None


def _make_lib(tmp: Path) -> Path:
    """A private, read-only copy of the sandbox-side code under ``tmp``, with the course library's
    modules (not its recorded results)."""
    lib = tmp / "lib"
    shutil.copytree(PACKAGE / "ops", lib / "ops", ignore=shutil.ignore_patterns("__pycache__"))
    for name in LIB_FILES:
        shutil.copy(PACKAGE / name, lib / name)
    library = course_library()
    if library is not None:
        (lib / "bnlab").mkdir()
        for module in library.glob("*.py"):
            shutil.copy(module, lib / "bnlab" / module.name)
    for path in [lib, *lib.rglob("*")]:
        os.chmod(path, 0o555 if path.is_dir() else 0o444)
    return lib


# ---------------------------------------------------------------------------- isolation

class SandboxUnavailable(RuntimeError):
    """Student code cannot be isolated on this machine; the message says why and what to do."""


LIB_MOUNT = "/sandbox"      # where the worker sees its copy of the sandbox-side code
WORKDIR = "/tmp/work"       # the worker's working directory inside the sandbox
LAUNCH_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # of bwrap and the launcher
SYSTEM_LIBRARIES = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/local/lib", "/usr/local/lib64", "/etc/ld.so.cache")
TOP_LEVEL_LINKS = ("/lib", "/lib64", "/lib32")  # merged /usr: symbolic links into /usr


def user_site_dirs() -> list[str]:
    """The user's site-packages where ``pip install --user`` put packages (a student's kit and
    its dependencies), if it exists: bound read-only, and put on the worker's ``sys.path``."""
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    return [os.path.realpath(user_site)] if user_site and os.path.isdir(user_site) else []


def allowed_paths() -> list[str]:
    """What the worker may read, all read-only: the interpreter, its libraries, the venv.

    Nothing else of the machine exists in the worker's file system: no ``/home``,
    ``/root``, ``/srv``, ``/etc`` (beyond the dynamic linker's cache), no other copy of the
    course, no ``/usr/bin`` (no shell, no tools).
    """
    paths = [p for p in SYSTEM_LIBRARIES if os.path.exists(p)]
    # The venv and the interpreter's installation (pyenv, conda...); a system interpreter's
    # prefix is /usr or /usr/local, whose libraries are already there.
    prefixes = {os.path.abspath(sys.prefix), os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    paths += [p for p in prefixes if p not in ("/", "/usr", "/usr/local")]
    paths.append(os.path.realpath(sys.executable))
    paths += user_site_dirs()
    paths = sorted(set(paths), key=lambda p: (p.count("/"), p))
    # A path inside another already allowed adds nothing.
    return [p for i, p in enumerate(paths) if not any(p.startswith(q.rstrip("/") + "/") for q in paths[:i])]


def interpreter() -> str:
    """The path that runs this interpreter inside the sandbox: the venv's own (so that its
    ``pyvenv.cfg`` is found), normalized; else the real file (``/usr/bin/python3`` is a link)."""
    path = os.path.abspath(sys.executable)
    if any(path.startswith(p.rstrip("/") + "/") for p in allowed_paths()):
        return path
    return os.path.realpath(sys.executable)


def bwrap_command(lib: Path) -> list[str]:
    """``bwrap`` and its arguments: an allow-list file system and new namespaces.

    The file system starts empty; the paths of :func:`allowed_paths` are bound read-only,
    ``lib`` at ``/sandbox``; ``/tmp`` is an empty tmpfs, ``/dev`` minimal (null, zero,
    random...), ``/proc`` that of the new PID namespace. New network (loopback only),
    IPC, UTS, cgroup and PID namespaces; a user namespace when not root. The launcher keeps
    the capabilities it needs inside to set up each worker (a tmpfs, a PID namespace, a
    uid of its own), then drops them with its privileges.
    """
    command = ["bwrap", "--die-with-parent", "--new-session", "--unshare-net", "--unshare-ipc",
               "--unshare-uts", "--unshare-pid", "--unshare-cgroup-try", "--hostname", "sandbox"]
    if os.geteuid() != 0:
        command.append("--unshare-user")
    command += ["--cap-add", "ALL"]
    # The empty /tmp, /dev and /proc first: a venv under /tmp (a fresh clone there) is then
    # bound into the new /tmp instead of being covered by it.
    command += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in TOP_LEVEL_LINKS:
        if os.path.islink(path):
            command += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            command += ["--ro-bind", path, path]
    made = set()
    for path in allowed_paths():
        # bwrap would make the missing parents mode 0700: unusable by the worker's uid.
        for parent in list(Path(path).parents)[-2::-1]:
            if str(parent) not in made and str(parent) not in (*TOP_LEVEL_LINKS, "/tmp"):
                made.add(str(parent))
                command += ["--perms", "0755", "--dir", str(parent)]
        command += ["--ro-bind", path, path]
    command += ["--ro-bind", str(lib), LIB_MOUNT, "--chdir", "/", "--"]
    return command


_availability: dict[int, str] = {}


def unavailable_reason() -> str:
    """Why student code cannot be isolated here ("" when it can). Probed once per process."""
    key = os.getpid()
    if key not in _availability:
        _availability[key] = _probe()
    return _availability[key]


def _probe() -> str:
    if not sys.platform.startswith("linux"):
        return f"the sandbox needs Linux (this is {sys.platform})"
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    tmp = Path(tempfile.mkdtemp(prefix="bngrade-probe-"))
    try:
        os.chmod(tmp, 0o711)
        lib = _make_lib(tmp)
        probe = [interpreter(), "-I", "-B", "-c", "import sys; sys.path.insert(0, %r); import launcher" % LIB_MOUNT]
        result = subprocess.run(bwrap_command(lib) + probe, capture_output=True, text=True, timeout=60,
                                env=LAUNCH_ENV)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bwrap could not be run ({err})"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        return f"bwrap cannot set up the sandbox here ({lines[-1] if lines else f'exit {result.returncode}'})"
    return ""


def require_isolation(sandboxed: bool = True) -> str:
    """The isolation mode to use: ``"bwrap"``, or ``"none"`` when ``sandboxed`` is False.

    Raises :class:`SandboxUnavailable` (with what to do) when isolation was asked for and
    cannot be set up: untrusted code is never run unisolated by default.
    """
    if not sandboxed:
        return "none"
    reason = unavailable_reason()
    if reason:
        raise SandboxUnavailable(f"cannot isolate student code: {reason}. Grading untrusted code without "
                                 f"isolation is refused; pass --no-sandbox only for code you trust")
    return "bwrap"


# Settings of the numerical libraries that pass from the grader's environment to the worker:
# student code computes with the kernels the grader's own computations use (PyTorch's CPU
# kernels are chosen by ATEN_CPU_CAPABILITY; some processors need OPENBLAS_CORETYPE).
NUMERIC_ENV = ("ATEN_CPU_CAPABILITY", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "NPY_DISABLE_CPU_FEATURES")


def _worker_env(workdir) -> dict:
    site_dirs = user_site_dirs()
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
        **({"BNGRADE_SITE_DIRS": os.pathsep.join(site_dirs)} if site_dirs else {}),
    }


def _launch_command(lib: Path, mode: str, config: dict) -> list[str]:
    """The command that starts ``launcher.py`` with ``config``, in the sandbox or not.

    ``config`` names the sandbox-side files relative to the copy of the code; here they
    become paths as the launcher sees them (``/sandbox`` inside bwrap).
    """
    seen = Path(LIB_MOUNT) if mode == "bwrap" else lib
    python = interpreter() if mode == "bwrap" else sys.executable
    config = dict(config, mode=mode, python=python,
                  **{key: str(seen / config[key]) for key in ("worker", "zygote") if key in config})
    prefix = bwrap_command(lib) if mode == "bwrap" else []
    return [*prefix, python, "-I", "-B", str(seen / "launcher.py"), json.dumps(config)]


class _Worker:
    """A worker forked by the zygote, with the interface of ``subprocess.Popen`` we use.

    ``pid`` is the worker's reaper as the zygote numbers it (inside the sandbox's PID
    namespace), so signals go through the zygote.
    """

    def __init__(self, zygote: "_Zygote", pid: int, requests: int, answers: int, status: int):
        self._zygote = zygote
        self.pid = pid
        self.stdin = os.fdopen(requests, "wb")
        self.stdout = os.fdopen(answers, "rb")
        self.stderr = None
        self._status = status
        self.returncode: int | None = None

    def terminate(self):
        if self.returncode is None:
            self._zygote.signal(self.pid, signal.SIGTERM)  # its reaper kills the worker's namespace

    def kill(self):
        if self.returncode is None:
            self._zygote.signal(self.pid, signal.SIGKILL)

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
    """A fork server (``zygote.py``), started in the sandbox once, that starts workers in milliseconds."""

    def __init__(self, mode: str):
        _remove_orphaned_zygote_dirs()
        self._tmp = Path(tempfile.mkdtemp(prefix=f"bngrade-zygote-{os.getpid()}-"))
        os.chmod(self._tmp, 0o711)
        lib = _make_lib(self._tmp)
        config = {"zygote": "zygote.py", "env": _worker_env(WORKDIR)}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            _launch_command(lib, mode, config),
            stdin=theirs, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=LAUNCH_ENV, close_fds=True,
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
        return _Worker(self, reply["pid"], request_w, answer_r, status_r)

    def signal(self, pid: int, signum: int) -> None:
        """Send ``signum`` to the zygote's child ``pid`` (no answer)."""
        try:
            self.channel.send(json.dumps({"signal": int(signum), "pid": int(pid)}).encode())
        except OSError:
            pass  # the zygote is gone, and its children with it

    def close(self):
        self.channel.close()
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self._tmp, ignore_errors=True)


_zygotes: dict[tuple, _Zygote] = {}


def _remove_orphaned_zygote_dirs() -> None:
    """Remove the folders of zygotes whose grader process is gone without closing them (a
    process that ends with ``os._exit``, as pool and test workers do, skips ``atexit``)."""
    for path in Path(tempfile.gettempdir()).glob("bngrade-zygote-*-*"):
        pid = path.name.split("-")[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # another user's grader, alive


def _zygote(mode: str) -> _Zygote | None:
    """This process's zygote (None where disabled)."""
    if os.environ.get("BNGRADE_ZYGOTE", "1") == "0":
        return None
    key = (os.getpid(), mode)
    zygote = _zygotes.get(key)
    if zygote is None or zygote.process.poll() is not None:
        for other in [k for k in _zygotes if k[0] == os.getpid()]:
            _zygotes.pop(other).close()  # one zygote per process at a time
        zygote = _zygotes[key] = _Zygote(mode)
        # multiprocessing's workers (grade-all --jobs N) end with os._exit, which skips atexit
        # but runs these finalizers (registered here: a forked worker starts with none).
        multiprocessing.util.Finalize(None, _close_zygotes, exitpriority=10)
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
    sandboxed : bool
        False runs the worker without isolation (``--no-sandbox``: trusted code only).
        True (the default) raises :class:`SandboxUnavailable` where isolation cannot be
        set up.
    """

    cells: list
    limits: Limits = field(default_factory=Limits)
    sandboxed: bool = True

    def __post_init__(self):
        self.mode = require_isolation(self.sandboxed)
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

    def _config(self) -> dict:
        # Inside the sandbox every worker has its own /tmp/work (a tmpfs in its own mount
        # namespace); without isolation, a fresh directory of this sandbox's.
        workdir = WORKDIR if self.mode == "bwrap" else str(self._tmp / f"work{self.restarts}")
        return dict(
            worker="worker.py",
            workdir=workdir,
            uid=self.uid,
            gid=self.uid,
            mode=self.mode,
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
        zygote = _zygote(self.mode)
        if zygote is not None:
            try:
                return zygote.spawn(self._config())
            except OSError:
                pass  # fall back to a direct launch
        return subprocess.Popen(
            _launch_command(self._lib, self.mode, self._config()),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=LAUNCH_ENV,
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
