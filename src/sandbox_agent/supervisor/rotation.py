"""Capped logs: a log that reached half its cap becomes ``<log>.1``. Standard library only.

A log capped at ``maxLogBytes`` keeps two generations of at most half the cap each: the
file being written and the one before it (``ROTATED_SUFFIX``). Offsets and line numbers
stay *logical* (counted from the first byte the process ever wrote), so event ids and
entry sequences go on growing across rotations; the state record's ``logs`` says where
each generation starts (``ondisk.LOG_GENERATION``).

A rotation of ``X``, each step of which a SIGKILL may cut short:

1. ``X.new`` is created, empty;
2. ``X.1.tmp`` is linked to ``X`` and takes the place of ``X.1`` (``_replace``): the
   oldest generation goes, and ``X`` and ``X.1`` are for a moment the same file;
3. ``X.new`` is renamed over ``X``: the path ``X`` always names a file, and nothing is
   written to the old one after this;
4. the state record is replaced with the new generation's inode, base and line count.

A reader tells the generations apart by inode (``engine/logs/store.py``, ``LogView``):
after step 3 and before step 4, ``X.1`` has the inode the record gives for the current
file, so the new ``X`` starts where ``X.1`` ends. One rotation is never begun before the
record of the previous one is on disk, so a reader never has two unrecorded steps to guess.
"""

from __future__ import annotations

import os

from .ondisk import ROTATED_SUFFIX, close_aside

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_COUNT_READ = 1024 * 1024
#: libc's ``renameat2``, handed over by the launcher before it forks
#: (``supervisor.prepare``, ``use_renameat2``); None: plain renames.
_renameat2: Any = None
_AT_FDCWD = -100
#: renameat2's RENAME_EXCHANGE.
_EXCHANGE = 2


def use_renameat2(function: Any) -> None:
    """Replace ``X.1`` by exchanging names with ``function`` (libc's ``renameat2``)."""
    global _renameat2
    _renameat2 = function


def _replace(source: str, target: str) -> None:
    """Put the file ``source`` names at ``target`` in one step, and remove what ``target``
    named (``source`` is a name of its own for the current log).

    A rename over an existing file makes ext4 write the renamed file's data out at once
    (``auto_da_alloc``: a file replaced by a rename must not be found empty after a
    crash). Here that file is the whole generation just finished, 32 MiB under the
    default cap, which under bulk output the next rotation deletes a fraction of a second
    later, so that it never needed writing: the forced writes cost a bulk writer nearly
    half of its rate here. Exchanging the two names (``RENAME_EXCHANGE``), then
    removing ``source``, which now names the old generation, is as atomic for a reader
    (``target`` names one file or the other at every moment) and forces no write. Where
    the exchange fails (no ``target`` yet, or a filesystem or kernel without it), a rename.
    """
    exchange = _renameat2
    names = (os.fsencode(source), os.fsencode(target))
    if exchange is not None and exchange(_AT_FDCWD, names[0], _AT_FDCWD, names[1], _EXCHANGE) == 0:
        try:
            os.unlink(source)
        except OSError:
            pass  # the next rotation removes it first (it is a leftover of this one)
        return
    os.rename(source, target)


def count_newlines(path: str) -> int:
    """The number of lines in the file at ``path`` (its newlines), read in pieces."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        count = 0
        while chunk := os.read(fd, _COUNT_READ):
            count += chunk.count(b"\n")
        return count
    finally:
        os.close(fd)


class Generations:
    """The generations of one log file: where the current one starts, and how to rotate it.

    ``record(name, info)`` stores ``info`` as ``state["logs"][name]`` and replaces the state
    record; it returns False if that write failed (a full disk): then no rotation is begun
    until it succeeds, so that a reader is never two rotations behind the record.
    """

    __slots__ = ("base", "count_lines", "extra", "info", "lines", "name", "path", "record", "unrecorded")

    def __init__(self, path: str, record: Callable[[str, dict[str, Any]], bool], count_lines: bool) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.record = record
        self.count_lines = count_lines
        #: Bytes and lines before the current file.
        self.base = 0
        self.lines = 0
        self.info: dict[str, Any] | None = None
        self.unrecorded = False
        #: More fields the record gives the current generation (see ``rotate``).
        self.extra: dict[str, Any] = {}

    def rotate(self, fd: int, size: int, newlines: int | None = None, extra: dict[str, Any] | None = None) -> int:
        """Make the file ``fd`` (``size`` bytes) the previous generation; return the new
        file's descriptor, or -1 if it cannot be done now (the caller writes on).

        ``newlines``: how many the file holds, if the writer knows (else the file is read
        to count them, when lines are counted). ``extra``: more fields for the new
        generation's record (pty.idx: ``start``), kept in its ``prev`` after the next
        rotation."""
        if self.unrecorded:
            assert self.info is not None
            if not self.record(self.name, self.info):
                return -1
            self.unrecorded = False
        path = self.path
        try:
            if not self.count_lines:
                lines = 0
            else:
                lines = self.lines + (newlines if newlines is not None else count_newlines(path))
            new = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError:
            return -1
        # Held open across step 2, the generation that goes is freed when this is closed,
        # in a thread of its own: freeing a large file takes tens of milliseconds (its
        # pages and blocks), which would stall the writing, and the command behind it.
        try:
            dropped = os.open(path + ROTATED_SUFFIX, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            dropped = -1
        try:
            link = path + ROTATED_SUFFIX + ".tmp"
            try:
                os.unlink(link)
            except FileNotFoundError:
                pass
            os.link(path, link)
            _replace(link, path + ROTATED_SUFFIX)
            os.rename(path + ".new", path)
        except OSError:
            os.close(new)
            try:
                os.unlink(path + ".new")
            except OSError:
                pass
            return -1
        finally:
            if dropped >= 0:
                close_aside(dropped)
        prev: dict[str, Any] = {"ino": os.fstat(fd).st_ino, "base": self.base, **self.extra}
        if self.count_lines:
            prev["lines"] = self.lines
        self.base += size
        self.lines = lines
        info: dict[str, Any] = {"ino": os.fstat(new).st_ino, "base": self.base}
        if self.count_lines:
            info["lines"] = lines
        self.extra = dict(extra or {})
        info.update(self.extra)
        info["prev"] = prev
        self.info = info
        self.unrecorded = not self.record(self.name, info)
        return new
