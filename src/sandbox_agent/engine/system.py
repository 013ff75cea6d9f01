"""What the server asks of the operating system beyond processes and files."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource

from .._exceptions import ServiceUnavailable

_PR_SET_CHILD_SUBREAPER = 36


def children() -> list[int]:
    """The pids of this process's children."""
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as f:
                pids.extend(int(pid) for pid in f.read().split())
    return pids


def become_subreaper() -> None:
    """Orphans below us come to us rather than to init, which in a container may never
    reap them. Linux only; elsewhere nothing changes."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def raise_fd_limit() -> None:
    """Every running process costs the server a pidfd: allow as many as the system lets us."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


#: File descriptors a start must find free: the supervisor's pidfd, a follower or two,
#: and room for the server to answer requests meanwhile.
FD_HEADROOM = 16


def out_of_fds(exc: OSError) -> ServiceUnavailable | None:
    """The 503 to answer with when ``exc`` is a shortage of file descriptors."""
    if exc.errno not in (errno.EMFILE, errno.ENFILE):
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return ServiceUnavailable(
        f"the server is out of file descriptors ({exc.strerror}; its limit is {soft}). Try again once "
        "processes have exited or followers have closed, or raise the limit (ulimit -n) it starts with"
    )


def check_fd_headroom(needed: int = FD_HEADROOM) -> None:
    """ServiceUnavailable (503) unless ``needed`` descriptors can be had now.

    Checked before a start creates anything: out of descriptors, the server would start
    a process it could not watch. Taking them is the only exact test of the process's
    limit; duplicating one kept open is a quarter of the cost of opening a file (about
    15 against 60 microseconds here for 16), and it is on every start's path.
    """
    global _probe_fd
    probes: list[int] = []
    try:
        if _probe_fd < 0:
            _probe_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        for _ in range(needed):
            probes.append(os.dup(_probe_fd))
    except OSError as exc:
        error = out_of_fds(exc)
        if error is None:
            raise
        raise error from None
    finally:
        for fd in probes:
            os.close(fd)


#: A descriptor of /dev/null, kept open for ``check_fd_headroom`` to duplicate.
_probe_fd = -1
