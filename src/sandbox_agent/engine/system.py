"""What the server asks of the operating system beyond processes and files."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource

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
