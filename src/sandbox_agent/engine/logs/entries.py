"""A log as numbered entries: the ``/v1/processes`` view of ``combined.log``.

Each complete line of ``combined.log`` is one entry: its ``sequence`` is the line's
1-based number in the log (so it grows across stdout and stderr, and stays the same
across restarts of the server: the file is durable and only ever appended to; a capped
log counts the lines of the generations it dropped too, so numbers go on growing), its
``stream`` the ``[stdout] ``/``[stderr] `` tag, its ``timestamp_ms`` the line's
timestamp, its ``data`` the line's bytes after the tag, newline included.

Line numbers need counting from the start of the file; a ``LineIndex`` per log remembers
where it counted before, so each read only counts the lines written since the last one.
Reads for a tail go backwards from the end and hold only the lines they return.
"""

from __future__ import annotations

import bisect
import calendar
import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ...supervisor.ondisk import STREAM_TAGS, TIMESTAMP_PREFIX_LEN
from . import store
from .feed import Keepalive, Segment

_BLOCK = 64 * 1024
#: A point is remembered at most every this many bytes of counting (and at the end).
_INDEX_STEP = 1024 * 1024
_MAX_POINTS = 4096
_TAG_LEN = len(STREAM_TAGS["stdout"])
_TAGS = {tag: name for name, tag in STREAM_TAGS.items()}

#: The streams an entry read may select. ``pty``: a terminal's output (see ``read``).
ENTRY_STREAMS = ("combined", "stdout", "stderr", "pty")


@dataclass(frozen=True, slots=True)
class Entry:
    sequence: int
    stream: str
    timestamp_ms: int
    data: bytes


@dataclass(slots=True)
class Entries:
    """Follow event: entries as they are (a terminal's output chunks)."""

    entries: list[Entry]


@dataclass(slots=True)
class Batch:
    """Follow event: the entries of ``segment``, whose first line has number ``first_line``."""

    segment: Segment
    first_line: int

    @property
    def entries(self) -> list[Entry]:
        key = ("entries", self.first_line)
        cached: list[Entry] | None = self.segment.cache.get(key)  # type: ignore[assignment]
        if cached is None:
            cached = parse(self.segment.raw, self.first_line)
            self.segment.cache[key] = cached  # type: ignore[assignment]
        return cached


@dataclass(slots=True)
class Skipped:
    """Follow event: the entries after ``after`` up to ``last`` were dropped (a capped log)
    before they could be given."""

    after: int
    last: int


@dataclass(slots=True)
class Ended:
    """Follow event: the process exited and every entry up to ``last_line`` was given."""

    last_line: int
    state: dict[str, Any]


class LineIndex:
    """Known ``(byte offset, lines before it)`` points of one log, to count from the nearest."""

    def __init__(self) -> None:
        self._offsets = [0]
        self._lines = [0]
        self._lock = threading.Lock()  # reads run in worker threads

    def rebase(self, offset: int, lines: int) -> None:
        """The log now starts at ``offset``, with ``lines`` before it (older lines were
        dropped): forget the points before it, and count from there."""
        with self._lock:
            if offset <= self._offsets[0]:
                return
            i = bisect.bisect_right(self._offsets, offset)
            self._offsets[:i] = [offset]
            self._lines[:i] = [lines]

    def nearest(self, offset: int) -> tuple[int, int]:
        with self._lock:
            i = bisect.bisect_right(self._offsets, offset) - 1
            return self._offsets[i], self._lines[i]

    def add(self, offset: int, lines: int) -> None:
        with self._lock:
            i = bisect.bisect_left(self._offsets, offset)
            if i < len(self._offsets) and self._offsets[i] == offset:
                return
            # Keep the points sparse, except the last one (where the next count starts).
            if (
                i == len(self._offsets) > 1
                and offset - self._offsets[-1] < _INDEX_STEP
                and self._offsets[-1] - self._offsets[-2] < _INDEX_STEP
            ):
                self._offsets[-1], self._lines[-1] = offset, lines
                return
            if len(self._offsets) >= _MAX_POINTS and i < len(self._offsets):
                return  # many reads at scattered places: count from the nearest instead
            self._offsets.insert(i, offset)
            self._lines.insert(i, lines)

    def lines_before(self, view: store.LogView, offset: int) -> int:
        """The number of lines before ``offset`` (a line boundary) in the log ``view``."""
        start, lines = self.nearest(offset)
        while start < offset:
            chunk = view.pread(min(offset - start, _INDEX_STEP), start)
            if not chunk:
                break
            lines += chunk.count(b"\n")
            start += len(chunk)
        self.add(start, lines)
        return lines

    def offset_after(self, view: store.LogView, line: int, end: int) -> tuple[int, int]:
        """Byte offset just past line ``line`` (or ``end`` if the log has fewer), and the
        number of lines before that offset. A dropped line: where the log starts now."""
        with self._lock:
            i = max(0, bisect.bisect_right(self._lines, line) - 1)
            start, lines = self._offsets[i], self._lines[i]
        while start < end and lines < line:
            chunk = view.pread(min(end - start, _BLOCK), start)
            if not chunk:
                break
            found = chunk.count(b"\n")
            if lines + found < line:
                lines += found
                start += len(chunk)
                continue
            idx = -1
            for _ in range(line - lines):
                idx = chunk.index(b"\n", idx + 1)
            start += idx + 1
            lines = line
        self.add(start, lines)
        return start, lines


@functools.lru_cache(maxsize=256)
def _epoch_seconds(stamp: bytes) -> int:
    # stamp: b"[2026-01-30T12:32:45"
    return calendar.timegm(
        (int(stamp[1:5]), int(stamp[6:8]), int(stamp[9:11]), int(stamp[12:14]), int(stamp[15:17]), int(stamp[18:20]))
    )


def parse_line(line: bytes) -> tuple[str, int, bytes]:
    """``(stream, timestamp_ms, data)`` of one ``combined.log`` line (newline included)."""
    try:
        ms = _epoch_seconds(line[:20]) * 1000 + int(line[21:24])
    except ValueError:
        return "stdout", 0, line  # not a line the supervisor wrote: shown as it is
    stream = _TAGS.get(line[TIMESTAMP_PREFIX_LEN : TIMESTAMP_PREFIX_LEN + _TAG_LEN])
    if stream is None:
        return "stdout", ms, line[TIMESTAMP_PREFIX_LEN:]
    return stream, ms, line[TIMESTAMP_PREFIX_LEN + _TAG_LEN :]


def parse(raw: bytes, first_line: int) -> list[Entry]:
    """The entries of complete lines ``raw`` whose first line is number ``first_line``."""
    entries = []
    start = 0
    sequence = first_line
    while start < len(raw):
        end = raw.find(b"\n", start)
        if end == -1:
            end = len(raw) - 1
        stream, ms, data = parse_line(raw[start : end + 1])
        entries.append(Entry(sequence, stream, ms, data))
        sequence += 1
        start = end + 1
    return entries


#: What an entry follow yields.
FollowEvent = Batch | Entries | Skipped | Ended | Keepalive


def _wanted(stream: str, selected: str) -> bool:
    return selected == "combined" or stream == selected


def read(path: str, index: LineIndex, *, stream: str, since: int, tail: int | None, max_bytes: int) -> list[Entry]:
    """The entries of ``stream`` after sequence ``since``; the last ``tail`` of them if given.

    At most ``max_bytes`` of data: a read without ``tail`` gives the oldest entries that
    fit (a caller pages on with ``since`` = the last sequence it got), a read with ``tail``
    the newest. An entry bigger than the whole budget is skipped, as the original drops it.
    """
    if stream == "pty":
        return []  # a pipe process writes no terminal output
    try:
        view = open_view(path, index)
    except FileNotFoundError:
        return []
    try:
        end = store.complete_end(view, view.size())
        if tail is None:
            return _forward(view, index, end, stream, since, max_bytes)
        return _backward(view, index, end, stream, since, tail, max_bytes)
    finally:
        view.close()


def open_view(path: str, index: LineIndex) -> store.LogView:
    """The generations of combined.log at ``path``; ``index`` learns where the log starts."""
    view = store.LogView.open(path, lines=True)
    index.rebase(view.start, view.start_lines)
    return view


def _forward(view: store.LogView, index: LineIndex, end: int, stream: str, since: int, max_bytes: int) -> list[Entry]:
    offset, line = index.offset_after(view, max(since, view.start_lines), end)
    entries: list[Entry] = []
    budget = max_bytes
    while offset < end:
        chunk = view.pread(min(end - offset, _INDEX_STEP), offset)
        last = chunk.rfind(b"\n")
        if last == -1:
            break
        chunk = chunk[: last + 1]
        for entry in parse(chunk, line + 1):
            if not _wanted(entry.stream, stream) or len(entry.data) > max_bytes:
                continue
            if len(entry.data) > budget:
                return entries
            budget -= len(entry.data)
            entries.append(entry)
        offset += len(chunk)
        line += chunk.count(b"\n")
    return entries


def _backward(
    view: store.LogView, index: LineIndex, end: int, stream: str, since: int, tail: int, max_bytes: int
) -> list[Entry]:
    sequence = index.lines_before(view, end)  # the number of the last line
    found: list[Entry] = []
    budget = max_bytes
    for line in _lines_backward(view, end):
        if sequence <= since or len(found) >= tail:
            break
        stream_name, ms, data = parse_line(line)
        if _wanted(stream_name, stream) and len(data) <= max_bytes:
            if len(data) > budget:
                break
            budget -= len(data)
            found.append(Entry(sequence, stream_name, ms, data))
        sequence -= 1
    found.reverse()
    return found


def _lines_backward(view: store.LogView, end: int) -> Iterator[bytes]:
    """The complete lines before ``end`` (a line boundary), last first, read from the end
    back to the oldest line kept."""
    pos = end
    floor = view.start
    carry = b""  # the end of a line whose start is further up, newline included
    while pos > floor:
        start = max(floor, pos - _BLOCK)
        block = view.pread(pos - start, start) + carry
        pos = start
        pieces = block.split(b"\n")  # the block ends with a newline: the last piece is b""
        for piece in reversed(pieces[1:-1]):
            yield piece + b"\n"
        carry = pieces[0] + b"\n"
        if pos == floor and block:
            yield carry


def locate(path: str, index: LineIndex, *, stream: str, since: int, tail: int | None) -> tuple[int, int]:
    """Where a follow's replay starts: ``(byte offset, lines before it)``.

    The replay is then every entry of ``stream`` from there on (after ``since``); with
    ``tail`` it starts at the ``tail``-th last of them.
    """
    try:
        view = open_view(path, index)
    except FileNotFoundError:
        return 0, 0  # nothing written yet (the follow creates the file)
    try:
        end = store.complete_end(view, view.size())
        if tail is None:
            return index.offset_after(view, max(since, view.start_lines), end)
        sequence = index.lines_before(view, end)
        offset = end
        matched = 0
        for line in _lines_backward(view, end):
            if sequence <= since or matched >= tail:
                break
            if stream == "combined" or parse_line(line)[0] == stream:
                matched += 1
            offset -= len(line)
            sequence -= 1
        return offset, sequence
    finally:
        view.close()
