"""Reading the log files: complete lines, tails from the end, timestamp stripping.

The supervisor only ever appends whole lines (``[<ts>] ...\\n``), but a reader can catch
a write half done, so every read here stops at the last newline it sees.

A capped log has two generations on disk (``supervisor/rotation.py``): a ``LogView``
opens both and reads them as one, at *logical* offsets (bytes the process ever wrote to
that log), so that offsets stay the same across rotations. The offset just past a line is
that line's event id; offsets before ``LogView.start`` were dropped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from ...supervisor.ondisk import ROTATED_SUFFIX, TIMESTAMP_PATTERN, TIMESTAMP_PREFIX_LEN, read_state

_BLOCK = 64 * 1024
_STAMP = re.compile(b"^" + TIMESTAMP_PATTERN, re.MULTILINE)
_OPEN_ATTEMPTS = 8

__all__ = [
    "PIECE_BYTES",
    "LogRead",
    "LogView",
    "Part",
    "complete_end",
    "count_lines",
    "decode",
    "generation_record",
    "read_lines",
    "read_range",
    "strip_timestamp",
    "strip_timestamps",
    "tail_start",
]


@dataclass
class Part:
    """One generation of a log, open for reading."""

    fd: int
    ino: int
    #: Logical offset of its first byte, and the number of lines before it (combined.log).
    base: int
    lines: int
    #: Its size, fixed once it is the previous generation; -1 for the one being written.
    size: int = -1


class LogView:
    """The kept generations of one log, read as one file at logical offsets.

    ``LogView.open(path)`` opens the current file, then the previous generation, and
    checks the path still names the file it opened (else a rotation came between: it opens
    again). Which logical offset each file starts at comes from the state record, matched
    by inode (see ``rotation.py``), so a view is right at every step of a rotation. The open
    files keep their data whatever the supervisor renames or removes meanwhile.
    """

    def __init__(self, parts: list[Part]) -> None:
        self.parts = parts

    @classmethod
    def from_fd(cls, fd: int) -> LogView:
        """One file that was never rotated (the caller keeps ``fd``: do not close the view)."""
        return cls([Part(fd, os.fstat(fd).st_ino, 0, 0)])

    @classmethod
    def open(cls, path: str, *, lines: bool = False) -> LogView:
        """The generations of the log at ``path``; FileNotFoundError if there is none.

        ``lines``: the line counts of the generations matter (combined.log's entry
        sequences), so count them where the state record does not give them.
        """
        for attempt in range(_OPEN_ATTEMPTS):
            cur = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            prev = -1
            try:
                try:
                    prev = os.open(path + ROTATED_SUFFIX, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    pass
                cur_ino = os.fstat(cur).st_ino
                try:
                    stable = os.stat(path).st_ino == cur_ino
                except FileNotFoundError:
                    stable = False
                if stable or attempt == _OPEN_ATTEMPTS - 1:
                    return cls(_resolve(path, cur, cur_ino, prev, lines))
            except BaseException:
                os.close(cur)
                if prev != -1:
                    os.close(prev)
                raise
            os.close(cur)
            if prev != -1:
                os.close(prev)
        raise AssertionError("unreachable")

    @property
    def start(self) -> int:
        """The oldest logical offset kept: everything before it was dropped."""
        return self.parts[0].base

    @property
    def start_lines(self) -> int:
        """The number of lines before ``start`` (dropped lines), where counted."""
        return self.parts[0].lines

    @property
    def current(self) -> Part:
        return self.parts[-1]

    def size(self) -> int:
        """The logical end of what is written (complete lines or not)."""
        cur = self.parts[-1]
        return cur.base + os.fstat(cur.fd).st_size

    def pread(self, n: int, offset: int) -> bytes:
        """Up to ``n`` bytes at logical ``offset`` (not before ``start``), across generations."""
        if offset < self.start:
            raise ValueError(f"offset {offset} was dropped from the log (it starts at {self.start})")
        chunks = []
        for part in self.parts:
            if n <= 0:
                break
            if part.size >= 0:
                end = part.base + part.size
                if offset >= end:
                    continue
                want = min(n, end - offset)
            else:
                want = n
            chunk = os.pread(part.fd, want, offset - part.base)
            chunks.append(chunk)
            n -= len(chunk)
            offset += len(chunk)
            if len(chunk) < want:
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def dup(self) -> LogView:
        parts = []
        try:
            for part in self.parts:
                parts.append(Part(os.dup(part.fd), part.ino, part.base, part.lines, part.size))
        except BaseException:
            LogView(parts).close()
            raise
        return LogView(parts)

    def close(self) -> None:
        for part in self.parts:
            if part.fd >= 0:
                os.close(part.fd)
                part.fd = -1


def _generation(value: Any) -> tuple[int, int, int] | None:
    """``(ino, base, lines)`` of a generation in the state record, or None if unusable."""
    if not isinstance(value, dict):
        return None
    fields = [value.get("ino"), value.get("base"), value.get("lines", 0)]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in fields):
        return None
    return fields[0], fields[1], fields[2]


def _count(fd: int) -> int:
    count = 0
    pos = 0
    while chunk := os.pread(fd, 1024 * 1024, pos):
        count += chunk.count(b"\n")
        pos += len(chunk)
    return count


def _resolve(path: str, cur: int, cur_ino: int, prev: int, lines: bool) -> list[Part]:
    """The generations of ``path`` with their logical bases (see ``rotation.py``)."""
    if prev == -1:
        return [Part(cur, cur_ino, 0, 0)]  # never rotated
    entry = _state_logs(path).get(os.path.basename(path))
    info = _generation(entry)
    prev_stat = os.fstat(prev)
    if prev_stat.st_ino == cur_ino:
        # Mid-rotation: both names are the current file for a moment; the older one is gone.
        os.close(prev)
        if info is not None and info[0] == cur_ino:
            return [Part(cur, cur_ino, info[1], info[2])]
        return [Part(cur, cur_ino, 0, 0)]
    previous = Part(prev, prev_stat.st_ino, 0, 0, prev_stat.st_size)
    if info is not None and info[0] == cur_ino:
        current = Part(cur, cur_ino, info[1], info[2])
        before = _generation(entry.get("prev")) if isinstance(entry, dict) else None
        if before is not None and before[0] == previous.ino:
            previous.base, previous.lines = before[1], before[2]
        else:
            previous.base = max(0, current.base - previous.size)
            previous.lines = max(0, current.lines - (_count(prev) if lines else 0))
        return [previous, current]
    # The record is one rotation behind (or there is none yet): the previous file is the
    # one it names as current (or the first), and the current one starts where it ends.
    if info is not None:
        previous.base, previous.lines = info[1], info[2]
    counted = previous.lines + (_count(prev) if lines else 0)
    return [previous, Part(cur, cur_ino, previous.base + previous.size, counted)]


def generation_record(path: str, ino: int) -> dict[str, Any] | None:
    """What the state record says of the generation of the log at ``path`` whose inode is
    ``ino`` (the current one or the one before), or None if it names no such file."""
    entry = _state_logs(path).get(os.path.basename(path))
    if isinstance(entry, dict):
        for info in (entry, entry.get("prev")):
            if isinstance(info, dict) and info.get("ino") == ino:
                return info
    return None


def _state_logs(path: str) -> dict[str, Any]:
    try:
        logs = read_state(os.path.dirname(path)).get("logs")
    except (OSError, ValueError):
        return {}
    return logs if isinstance(logs, dict) else {}


def complete_end(view: LogView, size: int) -> int:
    """Logical offset just past the last complete line among the bytes before ``size``."""
    pos = size
    floor = view.start
    while pos > floor:
        start = max(floor, pos - _BLOCK)
        block = view.pread(pos - start, start)
        nl = block.rfind(b"\n")
        if nl != -1:
            return start + nl + 1
        pos = start
    return floor


def tail_start(view: LogView, end: int, lines: int) -> int:
    """Offset where the last ``lines`` lines before ``end`` begin, reading from the end.

    ``end`` must be a line boundary. Reads only as many blocks as those lines span; never
    before ``view.start``.
    """
    if lines <= 0:
        return end
    pos = end
    floor = view.start
    # The newline that ends the line *before* the first wanted one is number lines+1
    # counting back from the end, the final newline at end-1 being number 1.
    wanted = lines + 1
    while pos > floor:
        start = max(floor, pos - _BLOCK)
        block = view.pread(pos - start, start)
        found = block.count(b"\n")
        if found >= wanted:
            idx = len(block)
            for _ in range(wanted):
                idx = block.rindex(b"\n", 0, idx)
            return start + idx + 1
        wanted -= found
        pos = start
    return floor


def read_range(view: LogView, start: int, end: int) -> bytes:
    chunks = []
    while start < end:
        chunk = view.pread(min(end - start, 16 * 1024 * 1024), start)
        if not chunk:
            break
        chunks.append(chunk)
        start += len(chunk)
    return b"".join(chunks)


def strip_timestamp(text: str) -> str:
    """One decoded line without its leading ``[<ts>] `` (the line as it is if it has none)."""
    if text[TIMESTAMP_PREFIX_LEN - 2 : TIMESTAMP_PREFIX_LEN] == "] ":
        return text[TIMESTAMP_PREFIX_LEN:]
    return text


def strip_timestamps(data: bytes) -> bytes:
    """Remove the leading ``[<ts>] `` of every line (the ``[stdout] `` tag stays)."""
    return _STAMP.sub(b"", data)


def count_lines(data: bytes) -> int:
    return data.count(b"\n")


def decode(data: bytes) -> str:
    """Log bytes as text: invalid UTF-8 becomes U+FFFD, never an error."""
    return data.decode("utf-8", "replace")


#: A log read hands out its lines in pieces of about this size (whole lines each).
PIECE_BYTES = 1024 * 1024


class LogRead:
    """The complete lines of a log as they were when it was opened, read piece by piece.

    The range is fixed at open (complete lines up to the end, or the last ``tail``), so a
    log that grows, rotates or is deleted meanwhile reads the same; the open files keep
    the data. Without ``tail``, the range starts at the oldest line kept.
    Memory stays at one piece, whatever the size of the log. Blocking: run ``next`` off
    the event loop.
    """

    def __init__(self, path: str, tail: int | None, strip: bool) -> None:
        self.strip = strip
        self.lines = 0
        try:
            self._view: LogView | None = LogView.open(path)
        except FileNotFoundError:
            self._view = None
            self.start = self.end = self._pos = 0
            return
        try:
            view = self._view
            self.end = complete_end(view, view.size())
            self.start = view.start if tail is None else tail_start(view, self.end, tail)
        except BaseException:
            self.close()
            raise
        self._pos = self.start

    @property
    def size(self) -> int:
        """Bytes in the range (before any stripping)."""
        return self.end - self.start

    def next(self) -> str | None:
        """The next piece as text (whole lines), or None at the end; counts ``lines``."""
        if self._view is None or self._pos >= self.end:
            return None
        data = self._view.pread(min(PIECE_BYTES, self.end - self._pos), self._pos)
        if not data:
            return None
        cut = data.rfind(b"\n")
        if cut != -1 and self._pos + len(data) < self.end:
            data = data[: cut + 1]  # whole lines: never a character cut in two
        self._pos += len(data)
        if self.strip:
            data = strip_timestamps(data)
        self.lines += count_lines(data)
        return decode(data)

    def close(self) -> None:
        if self._view is not None:
            self._view.close()
            self._view = None


def read_lines(path: str, tail: int | None, strip: bool) -> tuple[str, int]:
    """The complete lines of a log (the last ``tail`` of them), as text and a count."""
    reader = LogRead(path, tail, strip)
    try:
        pieces = []
        while (piece := reader.next()) is not None:
            pieces.append(piece)
    finally:
        reader.close()
    return "".join(pieces), reader.lines
