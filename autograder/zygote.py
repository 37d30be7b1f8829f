"""A fork server for sandboxed workers: import NumPy and PyTorch once, fork a worker per submission.

Started by ``launcher.py`` (already isolated: its own mount and network namespaces, the
project hidden), still privileged. fd 0 is a SOCK_SEQPACKET socket to the grader. Each
request is a JSON configuration (uid, limits, environment) with three descriptors: the
worker's request pipe, its answer pipe and a status pipe. The zygote forks; the child
takes a private mount namespace with its own tmpfs working directory, then goes through
the same containment as a directly launched worker (``launcher.contain_and_confine``: PID
namespace, reaper, its own uid, limits) and runs ``worker.main``. Starting a worker this
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

WORKDIR = "/tmp/work"


def child(config, fds, mode, problem):
    """In the forked child: become one sandboxed worker (never returns)."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    requests, answers, status = fds
    os.dup2(requests, 0)
    os.dup2(answers, 1)
    os.close(requests)
    os.close(answers)
    config = dict(config, workdir=WORKDIR)
    if mode != "degraded":
        launcher.unshare(launcher.CLONE_NEWNS)
        launcher.mount(None, "/", None, launcher.MS_REC | launcher.MS_PRIVATE)
        launcher.mount_workdir(config)
    launcher.contain_and_confine(config, mode, status_fd=status)
    os.environ.clear()
    os.environ.update(config["env"], BNGRADE_SANDBOX=mode, BNGRADE_SANDBOX_PROBLEM=problem)
    import worker

    worker.main()
    os._exit(0)


def main():
    channel = socket.socket(fileno=0)
    mode = os.environ.get("BNGRADE_SANDBOX", "degraded")
    problem = os.environ.get("BNGRADE_SANDBOX_PROBLEM", "")
    import numpy  # noqa: F401  - the point of the zygote: imported once, shared by every fork

    for module in ("torch", "matplotlib.pyplot"):  # chapters import them; matplotlib builds its font cache
        try:
            __import__(module)
        except ImportError:
            pass
    launcher._libc.prctl(launcher.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # every child and orphan is reaped at once
    os.makedirs(WORKDIR, exist_ok=True)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(channel, 1 << 16, 3)
        except OSError:
            return
        if not message:
            return
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            channel.send(b'{"error": "expected three descriptors"}')
            continue
        pid = os.fork()
        if pid == 0:
            try:
                channel.close()
                child(json.loads(message), fds, mode, problem)
            finally:
                os._exit(1)
        for fd in fds:
            os.close(fd)
        channel.send(json.dumps({"pid": pid}).encode())


if __name__ == "__main__":
    main()
