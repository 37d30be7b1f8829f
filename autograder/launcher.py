"""Start a sandboxed worker: isolate this process, then exec the worker's interpreter.

Run by the grader as ``python -I launcher.py CONFIG_JSON`` with the standard library
only (no third-party import happens before the isolation is in place). In order:

1. *Namespaces.* As root: new mount, network, IPC and UTS namespaces. As another user:
   a new user namespace maps the user onto itself, then the same. Without either the
   worker runs *degraded* (it says so in its first answer).
2. *Hiding.* In the new mount namespace every path of ``cover`` (the project, the
   submissions, the grader's output, and directories on the way to the interpreter that
   an unprivileged user could not enter) is covered by an empty tmpfs, and every path of
   ``expose`` (the interpreter and the virtual environment) is bound back, read-only.
   The reference solutions and the hidden tests are then not in the worker's file system
   at all.
3. *Processes.* A new PID namespace: the worker is its process 1, so when it dies (or
   the launcher, its parent, is killed) every process it started dies with it, also
   ones that left its session or process group.
4. *Privileges.* As root: drop to the sandbox's own uid/gid (one per submission, so that
   submissions cannot signal one another), no supplementary groups, no new privileges.
5. *Limits.* Address space, processes, file size, open files, CPU time, no core files;
   a new session (so that the grader can kill the whole group); killed with its parent.
6. ``exec`` the interpreter in isolated mode (``-I``) on ``worker.py``.
"""

import ctypes
import ctypes.util
import json
import os
import resource
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


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


def enter_namespaces():
    """New namespaces; returns 'root', 'userns' or raises OSError."""
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    if os.geteuid() == 0:
        unshare(flags)
        return "root"
    uid, gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWUSER | flags)
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")
    return "userns"


def hide_and_expose(cover, expose):
    """Cover each path of ``cover`` with an empty tmpfs; bind ``expose`` back read-only.

    Each exposed directory is held open (``O_PATH``) before the covers go on, then bound
    back from that handle.
    """
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    handles = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
               for path in expose if os.path.isdir(path)]
    for path in sorted(set(cover), key=len):
        if os.path.isdir(path):
            mount("bngrade-cover", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
    for path, handle in handles:
        os.makedirs(path, exist_ok=True)
        mount(f"/proc/self/fd/{handle}", path, None, MS_BIND | MS_REC)
        os.close(handle)
        try:
            mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_REC)
        except OSError:
            pass  # read-only is defence in depth; the files are not writable by the sandbox uid anyway


def mount_workdir(config):
    """A fresh tmpfs as working directory: nothing the submission writes reaches a disk."""
    owner = (config["uid"], config["gid"]) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    os.makedirs(config["workdir"], exist_ok=True)
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


def wait_and_mirror(child, status_fd=None):
    """In the launcher: wait for the worker and end the same way (exit status or signal).

    SIGTERM from the grader kills the worker. The launcher is a child subreaper: when the
    worker (process 1 of its namespace) dies, the kernel kills everything else in the
    namespace and hands those processes to the launcher, which reaps them all before it
    exits, so nothing is left behind, not even a zombie. With ``status_fd`` (zygote mode)
    the worker's end is written there as ``exit N`` or ``signal N``.
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
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    if status_fd is not None:
        end = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
        os.write(status_fd, end.encode())
        os._exit(0)
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def isolate(config):
    """Namespaces and hidden files for a worker or a zygote; returns (mode, problem)."""
    mode, problem = "degraded", ""
    try:
        mode = enter_namespaces()
        hide_and_expose(config["cover"], config["expose"])
    except OSError as err:
        problem = str(err)
        if mode == "root":  # as root, isolation must work: refuse to run unisolated
            print(f"sandbox: isolation failed as root ({err})", file=sys.stderr)
            sys.exit(70)
        mode = "degraded"
    return mode, problem


def contain_and_confine(config, mode, status_fd=None):
    """From here on, this process is the worker: PID namespace, privileges, limits.

    The calling process forks; the parent stays behind as the worker's reaper
    (:func:`wait_and_mirror`) and never returns.
    """
    parent = os.getpid()
    if mode != "degraded":
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        unshare(CLONE_NEWPID)
        child = os.fork()
        if child:
            wait_and_mirror(child, status_fd)
    if status_fd is not None:
        os.close(status_fd)
    if os.geteuid() == 0:
        drop_privileges(config["uid"], config["gid"])
    os.makedirs(config["workdir"], exist_ok=True)  # degraded mode: a plain directory
    os.chdir(config["workdir"])
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if mode != "degraded" and os.getppid() == 0 and not os.path.exists(f"/proc/{parent}"):
        os._exit(1)  # the reaper died before the death signal was armed
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.setsid()
    set_limits(config["limits"])


def main():
    config = json.loads(sys.argv[1])
    mode, problem = isolate(config)
    if config.get("zygote"):
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        env = dict(config["env"], BNGRADE_SANDBOX=mode, BNGRADE_SANDBOX_PROBLEM=problem)
        os.execve(config["python"], [config["python"], "-I", "-B", config["zygote"]], env)
    if mode != "degraded":
        mount_workdir(config)
    contain_and_confine(config, mode)
    env = dict(config["env"], BNGRADE_SANDBOX=mode, BNGRADE_SANDBOX_PROBLEM=problem)
    os.execve(config["python"], [config["python"], "-I", "-B", config["worker"]], env)


if __name__ == "__main__":
    main()
