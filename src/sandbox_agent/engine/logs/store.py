"""Reading the log files: complete lines, tails from the end, timestamp stripping.

The supervisor only ever appends whole lines (``[<ts>] ...\\n``), but a reader can catch
a write half done, so every read here stops at the last newline it sees. Offsets are
byte positions in one file; the offset just past a line is that line's event id.
"""

from __future__ import annotations

import os
import re

from ...supervisor.ondisk import TIMESTAMP_PATTERN, TIMESTAMP_PREFIX_LEN

_BLOCK = 64 * 1024
_STAMP = re.compile(b"^" + TIMESTAMP_PATTERN, re.MULTILINE)

__all__ = [
    "PIECE_BYTES",
    "LogRead",
    "complete_end",
    "count_lines",
    "decode",
    "read_lines",
    "read_range",
    "strip_timestamp",
    "strip_timestamps",
    "tail_start",
]


def complete_end(fd: int, size: int) -> int:
    """Offset just past the last complete line among the first ``size`` bytes."""
    pos = size
    while pos > 0:
        start = max(0, pos - _BLOCK)
        block = os.pread(fd, pos - start, start)
        nl = block.rfind(b"\n")
        if nl != -1:
            return start + nl + 1
        pos = start
    return 0


def tail_start(fd: int, end: int, lines: int) -> int:
    """Offset where the last ``lines`` lines before ``end`` begin, reading from the end.

    ``end`` must be a line boundary. Reads only as many blocks as those lines span.
    """
    if lines <= 0:
        return end
    pos = end
    # The newline that ends the line *before* the first wanted one is number lines+1
    # counting back from the end, the final newline at end-1 being number 1.
    wanted = lines + 1
    while pos > 0:
        start = max(0, pos - _BLOCK)
        block = os.pread(fd, pos - start, start)
        found = block.count(b"\n")
        if found >= wanted:
            idx = len(block)
            for _ in range(wanted):
                idx = block.rindex(b"\n", 0, idx)
            return start + idx + 1
        wanted -= found
        pos = start
    return 0


def read_range(fd: int, start: int, end: int) -> bytes:
    chunks = []
    while start < end:
        chunk = os.pread(fd, min(end - start, 16 * 1024 * 1024), start)
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
    log that grows or is deleted meanwhile reads the same; the open file keeps the data.
    Memory stays at one piece, whatever the size of the log. Blocking: run ``next`` off
    the event loop.
    """

    def __init__(self, path: str, tail: int | None, strip: bool) -> None:
        self.strip = strip
        self.lines = 0
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._fd = None
            self.start = self.end = self._pos = 0
            return
        try:
            self.end = complete_end(self._fd, os.fstat(self._fd).st_size)
            self.start = 0 if tail is None else tail_start(self._fd, self.end, tail)
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
        if self._fd is None or self._pos >= self.end:
            return None
        data = os.pread(self._fd, min(PIECE_BYTES, self.end - self._pos), self._pos)
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
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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
