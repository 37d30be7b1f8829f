"""A fork server for sandboxed workers: import NumPy and PyTorch once, fork a worker per submission.

Started by ``launcher.py`` inside the sandbox (``launcher.py`` says what it holds), still
privileged there. fd 0 is a SOCK_SEQPACKET socket to the grader. Each request is a JSON
configuration (uid, working directory, limits, environment) with three descriptors: the
worker's request pipe, its answer pipe and a status pipe. The zygote forks; the child
takes a private mount namespace with its own tmpfs working directory, then goes through
the same containment as a directly launched worker (``launcher.contain_and_confine``: PID
namespace and ``/proc`` of its own, reaper, its own uid, limits) and runs ``worker.main``. Starting a worker this
way costs a fork instead of an interpreter start and the imports (seconds with PyTorch).
"""

import json
import os
import signal
import socket
import sys

LIB = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, LIB)

import launcher  # noqa: E402


def child(config, fds):
    """In the forked child: become one sandboxed worker (never returns)."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    requests, answers, status = fds
    os.dup2(requests, 0)
    os.dup2(answers, 1)
    os.close(requests)
    os.close(answers)
    if config["mode"] == "bwrap":
        launcher.private_mounts()
    launcher.make_workdir(config)
    launcher.contain_and_confine(config, status_fd=status)
    os.environ.clear()
    os.environ.update(config["env"], BNGRADE_SANDBOX=config["mode"])
    import worker

    worker.main()
    os._exit(0)


def _signal_child(pid, signum):
    """Signal ``pid`` if it is a child of this zygote (a worker's reaper), else nothing."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            parent = int(f.read().rsplit(")", 1)[1].split()[1])
        if parent == os.getpid():
            os.kill(int(pid), int(signum))
    except (OSError, ValueError, IndexError):
        pass


def main():
    channel = socket.socket(fileno=0)
    launcher.add_site_dirs()
    import numpy  # noqa: F401  - the point of the zygote: imported once, shared by every fork

    for module in ("torch", "matplotlib.pyplot"):  # chapters import them; matplotlib builds its font cache
        try:
            __import__(module)
        except ImportError:
            pass
    launcher._libc.prctl(launcher.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # every child and orphan is reaped at once
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(channel, 1 << 16, 3)
        except OSError:
            return
        if not message:
            return
        request = json.loads(message)
        if "signal" in request:  # the grader's kill of a worker: pids are numbered in here
            _signal_child(request["pid"], request["signal"])
            for fd in fds:
                os.close(fd)
            continue
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            channel.send(b'{"error": "expected three descriptors"}')
            continue
        pid = os.fork()
        if pid == 0:
            try:
                channel.close()
                child(request, fds)
            finally:
                os._exit(1)
        for fd in fds:
            os.close(fd)
        channel.send(json.dumps({"pid": pid}).encode())


if __name__ == "__main__":
    main()
