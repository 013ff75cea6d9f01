"""What /proc says of a process tree: its members, their CPU time and memory, and the TCP
ports they listen on. Blocking reads: callers run them off the event loop.

One ``scan`` reads ``/proc/<pid>/stat`` of every process on the machine once (the parent
links are only there); the trees of all managed processes are then cut from it: a sampling
round reads one small file per process on the machine, plus the descriptors of the
managed trees.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

#: Clock ticks per second, for CPU times in /proc/<pid>/stat.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
#: The state of a listening socket in /proc/net/tcp.
_LISTEN = "0A"


@dataclass(frozen=True)
class Stat:
    ppid: int
    #: utime + stime, in clock ticks.
    cpu_ticks: int
    rss_bytes: int


def read_stat(pid: int) -> Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return Stat(int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[21]) * _PAGE)
    except (IndexError, ValueError):
        return None


def scan() -> dict[int, Stat]:
    """Every process on the machine (that can still be read) by pid."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None:
                found[int(name)] = stat
    return found


def children_map(stats: dict[int, Stat]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    return children


def tree(root: int, children: dict[int, list[int]]) -> list[int]:
    """``root`` and its descendants (those still linked to it by their parents)."""
    members = [root]
    i = 0
    while i < len(members):
        members.extend(children.get(members[i], ()))
        i += 1
    return members


def socket_inodes(pids: Iterable[int]) -> set[int]:
    """The inodes of the sockets open in ``pids``."""
    inodes = set()
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def listening(pid: int) -> dict[int, int]:
    """Socket inode -> port of every TCP socket listening in the network namespace of ``pid``."""
    found = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}", "rb") as f:
                lines = f.read().decode("ascii", "replace").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN:
                found[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return found


def net_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def tree_ports(root: int, members: list[int], sockets: dict[str | None, dict[int, int]] | None = None) -> list[int]:
    """The TCP ports that ``members`` (the tree of ``root``) listen on, sorted.

    ``sockets``: listening sockets already read, by network namespace (a sampling round
    reads each namespace's tables once).
    """
    inodes = socket_inodes(members)
    if not inodes:
        return []
    if sockets is None:
        table = listening(root)
    else:
        ns = net_namespace(root)
        if ns not in sockets:
            sockets[ns] = listening(root)
        table = sockets[ns]
    return sorted({table[inode] for inode in inodes if inode in table})


def listens_on(root: int, port: int) -> bool:
    """Whether the tree of ``root`` listens on TCP ``port``: the cheap check first (is
    anything in its namespace listening there?), the tree only then."""
    table = listening(root)
    if port not in table.values():
        return False
    members = tree(root, children_map(scan()))
    return port in {table[inode] for inode in socket_inodes(members) if inode in table}
