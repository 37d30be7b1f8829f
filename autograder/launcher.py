"""Start a sandboxed worker: contain this process, then exec the worker's interpreter.

Run by the grader as ``python -I -B launcher.py CONFIG_JSON`` with the standard library
only (no third-party import happens before the containment is in place), in one of two
modes (``config["mode"]``):

``"bwrap"``
    Inside bubblewrap (``sandbox.bwrap_command``), which has already built this process's
    file system from an allow-list (the interpreter, its libraries and the virtual
    environment, read-only; an empty ``/tmp``; a minimal ``/dev``; this directory at
    ``/sandbox``) and given it new network, IPC, UTS, cgroup and PID namespaces (and a
    user namespace when the grader is not root). Nothing else of the machine is in it.
    Then, per worker:

    1. *Working directory.* A fresh, size-limited tmpfs owned by the worker.
    2. *Processes.* A new PID namespace with the worker as its process 1 and its own
       ``/proc``: when it dies (or the launcher, its parent, is killed) every process it
       started dies with it, and it sees no other process, not even another worker.
    3. *Privileges.* As root: the sandbox's own uid/gid (one per submission), no
       supplementary groups. Always: no new privileges.
    4. *Limits.* Address space, processes, file size, open files, CPU time, no core
       files; a new session (so that the grader can kill the whole group).
    5. ``exec`` the interpreter in isolated mode (``-I``) on ``worker.py``.

``"none"``
    The instructor asked for no isolation (``--no-sandbox``: trusted code only). Steps 4
    and 5 only, as the grader's own user, in a plain private working directory.
"""

import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)  # the interpreter's own C library: no search, no subprocess


def add_site_dirs():
    """Put the user's site-packages (``BNGRADE_SITE_DIRS``: ``pip install --user``) on ``sys.path``;
    the interpreter runs isolated (``-I``), which leaves them out."""
    import site

    for directory in filter(None, os.environ.get("BNGRADE_SITE_DIRS", "").split(os.pathsep)):
        site.addsitedir(directory)


def _check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def unshare(flags):
    _check(_libc.unshare(flags), "unshare")


def mount(source, target, fstype, flags, data=None):
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def private_mounts():
    """A mount namespace of this process's own (mounts made from here on stay in it)."""
    unshare(CLONE_NEWNS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def make_workdir(config):
    """The worker's working directory, owned by the worker.

    Sandboxed: a fresh tmpfs of ``workdir_mb``, so nothing the submission writes reaches a
    disk or outlives it. Unsandboxed: a plain directory in the grader's temporary folder.
    """
    owner = (config["uid"], config["gid"]) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    os.makedirs(config["workdir"], mode=0o700, exist_ok=True)
    if config["mode"] == "bwrap":
        mount("bngrade-work", config["workdir"], "tmpfs", MS_NOSUID | MS_NODEV,
              f"mode=0700,size={config['limits']['workdir_mb']}m,uid={owner[0]},gid={owner[1]}")


def drop_privileges(uid, gid):
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise OSError("could not drop privileges")


def set_limits(limits):
    def limit(resource_id, value):
        try:
            resource.setrlimit(resource_id, (value, value))
        except (ValueError, OSError):
            soft, hard = resource.getrlimit(resource_id)
            resource.setrlimit(resource_id, (min(value, hard) if hard != resource.RLIM_INFINITY else value, hard))

    limit(resource.RLIMIT_AS, limits["memory_mb"] << 20)
    limit(resource.RLIMIT_NPROC, limits["processes"])
    limit(resource.RLIMIT_FSIZE, limits["file_mb"] << 20)
    limit(resource.RLIMIT_NOFILE, 256)
    limit(resource.RLIMIT_CORE, 0)
    limit(resource.RLIMIT_CPU, limits["cpu_s"])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails instead of killing


def wait_and_mirror(child, sandboxed, status_fd=None):
    """In the launcher: wait for the worker and end the same way (exit status or signal).

    SIGTERM from the grader kills the worker. Sandboxed, the launcher is a child subreaper:
    when the worker (process 1 of its namespace) dies, the kernel kills everything else in
    the namespace and hands those processes to the launcher, which reaps them all before
    it exits, so nothing is left behind, not even a zombie. Unsandboxed, the worker's
    process group is killed. With ``status_fd`` (zygote mode) the worker's end is written
    there as ``exit N`` or ``signal N``.
    """
    for fd in (0, 1):
        os.close(fd)  # only the worker talks to the grader
    signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGKILL))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    if sandboxed:
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
    else:
        try:
            os.killpg(child, signal.SIGKILL)
        except OSError:
            pass
    if status_fd is not None:
        end = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
        os.write(status_fd, end.encode())
        os._exit(0)
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def contain_and_confine(config, status_fd=None):
    """From here on, this process is the worker: PID namespace, privileges, limits.

    The calling process forks; the parent stays behind as the worker's reaper
    (:func:`wait_and_mirror`) and never returns.
    """
    parent = os.getpid()
    sandboxed = config["mode"] == "bwrap"
    if sandboxed:
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        unshare(CLONE_NEWPID)
    child = os.fork()
    if child:
        wait_and_mirror(child, sandboxed, status_fd)
    if status_fd is not None:
        os.close(status_fd)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent and not os.path.exists(f"/proc/{parent}"):
        os._exit(1)  # the reaper died before the death signal was armed
    if sandboxed:
        # A /proc of this PID namespace only: no other process, not even another worker.
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        if os.geteuid() == 0:
            drop_privileges(config["uid"], config["gid"])
    os.chdir(config["workdir"])
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.setsid()
    set_limits(config["limits"])


def main():
    config = json.loads(sys.argv[1])
    env = dict(config["env"], BNGRADE_SANDBOX=config["mode"])
    if config.get("zygote"):
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.execve(config["python"], [config["python"], "-I", "-B", config["zygote"]], env)
    make_workdir(config)
    contain_and_confine(config)
    os.execve(config["python"], [config["python"], "-I", "-B", config["worker"]], env)


if __name__ == "__main__":
    try:
        main()
    except OSError as err:
        print(f"sandbox: the worker could not be contained ({err})", file=sys.stderr)
        sys.exit(70)
