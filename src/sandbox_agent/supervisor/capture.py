"""A child's output, turned into timestamped log lines. Standard library only.

Each ``Stream`` reads one pipe and writes complete lines to its own log and, through the
``CombinedWriter``, to combined.log. A line without its newline is written out once it
waited ``PARTIAL_DELAY``; an endless line is cut every ``MAX_LINE`` bytes.
"""

from __future__ import annotations

import _thread
import os

from .ondisk import STREAM_TAGS, Clock
from .rotation import Generations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: One read from a pipe. An endless line is cut at MAX_LINE; keeping reads no larger
#: means only a line that started in an earlier read can exceed it.
#: Reads start at READ_SIZE and grow to BULK_READ_SIZE while the pipe keeps filling
#: them: a chatty process is read in small pieces, a bulk writer in large ones (fewer
#: wake-ups and writes per byte).
READ_SIZE = 64 * 1024
BULK_READ_SIZE = 1024 * 1024
#: An endless line is cut into lines of this many bytes.
MAX_LINE = 64 * 1024
#: How long a line without its newline waits before it is written out as it is.
PARTIAL_DELAY = 0.1
PIPE_SIZE = 1024 * 1024


class LogFile:
    """One log file, written line by line, that survives failed writes in a readable state.

    A full or broken disk must not block the child, so output that cannot be written is
    dropped; but what follows it must not be glued to a line cut in half. After a failed
    write the next one starts on a line of its own with a marker line that says how many
    bytes of log were lost and why, then goes on.

    With ``generations`` (a capped log), a file that would grow past ``half`` bytes is
    rotated first (``rotation.py``); a write is split at line boundaries to that end.
    """

    __slots__ = ("exact", "fd", "generations", "half", "lost", "newlines", "reason", "size", "torn")

    def __init__(self, fd: int, generations: Generations | None = None, half: int = 0) -> None:
        self.fd = fd
        #: Bytes of log not written since the last write that succeeded.
        self.lost = 0
        #: The file ends in the middle of a line (a write failed part way).
        self.torn = False
        self.reason = ""
        self.generations = generations
        #: Rotate before the file passes this many bytes (0: never).
        self.half = half if generations is not None else 0
        self.size = os.fstat(fd).st_size if self.half else 0
        #: The newlines in the current file, while ``exact`` (all of its writes whole):
        #: a rotation then need not read the file to count its lines.
        self.newlines = 0
        self.exact = self.size == 0

    def write(self, lines: bytes, prefix: bytes, lead: bytes = b"", end: int = -1) -> None:
        """Write complete lines, each after ``prefix``: ``lead`` (the start of the first
        line, no newline in it), then ``lines`` up to ``end`` (all of it if -1), which ends
        in a newline.

        One ``replace`` and one ``writev``, with no other copy of the data: ``lead`` and
        ``lines`` are not joined, and what the replace adds after ``end`` (the prefix the
        last newline gains, and the start of a line still to come) is cut by view.
        """
        replaced = lines.replace(b"\n", b"\n" + prefix)
        after = len(lines) - end if end != -1 else 0
        stamped = memoryview(replaced)[: len(replaced) - after - len(prefix)]
        if self.half and self.size + len(prefix) + len(lead) + len(stamped) > self.half:
            self._write_rotating(lead + lines[: len(lines) - after], prefix)
            return
        # Each newline gained one prefix: the count comes with the replace.
        self._write(lead, stamped, prefix, (len(replaced) - len(lines)) // len(prefix))

    def _write_rotating(self, lines: bytes, prefix: bytes) -> None:
        """Write ``lines`` in pieces that fit the current file, rotating between them."""
        assert self.generations is not None
        start = 0
        while start < len(lines):
            cut = _fit(lines, start, self.half - self.size, len(prefix))
            if cut == -1:
                if self.size and not self.torn:
                    fd = self.generations.rotate(self.fd, self.size, self.newlines if self.exact else None)
                    if fd != -1:
                        os.close(self.fd)
                        self.fd, self.size = fd, 0
                        self.newlines, self.exact = 0, True
                        continue
                # A fresh file and a line longer than it may hold, or no rotation for
                # now (a full disk): write the line, or all the rest, as it is.
                cut = lines.find(b"\n", start) if not self.size else len(lines) - 1
            piece = lines[start : cut + 1]
            replaced = piece.replace(b"\n", b"\n" + prefix)
            self._write(b"", memoryview(replaced)[: -len(prefix)], prefix, (len(replaced) - len(piece)) // len(prefix))
            start = cut + 1

    def _write(self, lead: bytes, stamped: memoryview, prefix: bytes, newlines: int) -> None:
        """Write ``lead`` and ``stamped`` (``newlines`` lines) after ``prefix``, with the
        marker of a loss before them if there was one."""
        head = prefix
        if self.lost or self.torn:
            head = (
                (b"\n" if self.torn else b"")
                + prefix
                + b"[sandbox-agent: %d bytes of log lost: %s]\n" % (self.lost, self.reason.encode())
                + prefix
            )
        parts = (head, lead, stamped) if lead else (head, stamped)
        total = len(head) + len(lead) + len(stamped)
        written = 0
        try:
            written = os.writev(self.fd, parts)
            while written < total:  # only on a signal or a filling disk
                written += os.write(self.fd, b"".join(parts)[written:])
        except OSError as exc:
            self.size += written
            self.reason = exc.strerror or type(exc).__name__
            if written >= len(head):  # the marker is out: only these lines are short
                self.lost = total - written
            else:
                self.lost += len(prefix) + len(lead) + len(stamped)
            if written:
                # The file now ends wherever the write stopped: inside a line, most likely.
                self.torn = b"".join(parts)[written - 1 : written] != b"\n"
                self.exact = False  # a rotation counts this file's lines
            return
        self.size += total
        self.newlines += newlines if head is prefix else newlines + head.count(b"\n")
        self.lost = 0
        self.torn = False


def _fit(lines: bytes, start: int, room: int, prefix_len: int) -> int:
    """Index of the newline that ends the longest run of lines from ``start`` whose
    stamped size fits in ``room``; -1 if not even the first line fits."""
    limit = room
    while limit > 0:
        cut = lines.rfind(b"\n", start, start + limit)
        if cut == -1:
            return -1
        need = cut + 1 - start + prefix_len * lines.count(b"\n", start, cut + 1)
        if need <= room:
            return cut
        limit = cut - start - (need - room)
    return -1


class Stream:
    """One output pipe of the child, turned into timestamped log lines."""

    __slots__ = ("combined", "fd", "log", "name", "pending", "pending_since", "read_size", "tag")

    def __init__(self, name: str, fd: int, log: LogFile, combined: CombinedWriter) -> None:
        self.name = name
        self.fd = fd
        self.log = log
        self.combined = combined
        self.tag = STREAM_TAGS[name]
        self.pending = b""
        self.pending_since = 0.0
        self.read_size = READ_SIZE

    def feed(self, chunk: bytes, now: float, clock: Clock) -> None:
        lead = self.pending
        if len(lead) + len(chunk) > MAX_LINE and _has_long_line(lead, chunk):
            self._feed_cutting(lead + chunk, now, clock)
            return
        last = chunk.rfind(b"\n")
        if last == -1:
            if not lead:
                self.pending_since = now
            self.pending = lead + chunk if lead else chunk
            return
        # The lines go out without joining the line begun earlier to this chunk, or
        # slicing the chunk at its last newline: with bulk output, both were copies of
        # the whole read.
        self.emit(chunk, clock.prefix(now), lead, last + 1)
        self.pending = chunk[last + 1 :]
        self.pending_since = now

    def _feed_cutting(self, data: bytes, now: float, clock: Clock) -> None:
        """``feed`` of what holds a line longer than MAX_LINE (``data``: all of it, the
        line begun earlier included)."""
        continued = bool(self.pending)
        data, start = self._cut_long_lines(data, now, clock)
        continued = continued and start == 0
        last = data.rfind(b"\n", start)
        if last == -1:
            if not continued:
                self.pending_since = now
            self.pending = data[start:] if start else data
            return
        self.emit(data[start : last + 1] if start else data[: last + 1], clock.prefix(now))
        self.pending = data[last + 1 :]
        self.pending_since = now

    def _cut_long_lines(self, data: bytes, now: float, clock: Clock) -> tuple[bytes, int]:
        """Write out every line of ``data`` longer than MAX_LINE as MAX_LINE pieces.

        Looks at one window of MAX_LINE + 1 bytes at a time: a window without a newline
        is a piece to cut, so a megabyte of short lines costs sixteen searches, not one
        per line. Returns ``data`` and the offset where what is not yet written starts.
        """
        start = pos = 0
        while len(data) - pos > MAX_LINE:
            newline = data.rfind(b"\n", pos, pos + MAX_LINE + 1)
            if newline != -1:
                pos = newline + 1
                continue
            prefix = clock.prefix(now)
            if pos > start:
                self.emit(data[start:pos], prefix)
            self.emit(data[pos : pos + MAX_LINE] + b"\n", prefix)
            pos += MAX_LINE
            start = pos
        return data, start

    def flush_partial(self, now: float, clock: Clock) -> None:
        if self.pending:
            self.emit(self.pending + b"\n", clock.prefix(now))
            self.pending = b""

    def emit(self, lines: bytes, prefix: bytes, lead: bytes = b"", end: int = -1) -> None:
        """Write complete lines to both logs: ``lead`` (the start of the first line), then
        ``lines`` up to ``end`` (all of it if -1), which ends in a newline.

        The hot path of capture: each log gets one ``replace`` and one ``writev``, with
        no other copy of the data (``LogFile.write``).
        """
        self.combined.submit(lines, prefix + self.tag, lead, end)
        self.log.write(lines, prefix, lead, end)


def _has_long_line(lead: bytes, chunk: bytes) -> bool:
    """Whether ``lead + chunk`` (``lead`` holds no newline) has a line longer than MAX_LINE,
    the unfinished last one included, looked at one window of MAX_LINE + 1 bytes at a time
    as ``Stream._cut_long_lines`` does, without joining the two."""
    pos = -len(lead)  # where the current line starts, as an offset into chunk
    while len(chunk) - pos > MAX_LINE:
        newline = chunk.rfind(b"\n", max(pos, 0), max(pos + MAX_LINE + 1, 0))
        if newline == -1:
            return True
        pos = newline + 1
    return False


class CombinedWriter:
    """Writes combined.log, in a second thread when the output is heavy.

    Both logs are written in full, so a heavy producer makes us write more than twice
    what it wrote; the kernel work of those writes (page allocation, copies) is most of
    the cost, and two threads spread it over two cores. The thread starts only at the
    first large chunk, so that a quiet process never pays for its stack, and at most
    one chunk is in flight, so the order of lines and the memory held stay as they were.
    """

    THREADED_FROM = 16 * 1024

    def __init__(self, log: LogFile) -> None:
        self.log = log
        self.job: tuple[bytes, bytes, bytes, int] | None = None
        self.work: Any = None  # _thread locks, created with the thread
        self.done: Any = None

    def submit(self, lines: bytes, prefix: bytes, lead: bytes = b"", end: int = -1) -> None:
        if self.done is not None:
            self.done.acquire()  # the previous chunk is written: the order holds
        if len(lines) < self.THREADED_FROM:
            if self.done is not None:
                self.done.release()
            self.log.write(lines, prefix, lead, end)
            return
        if self.work is None:
            self.work = _thread.allocate_lock()
            self.work.acquire()
            self.done = _thread.allocate_lock()
            self.done.acquire()
            _thread.start_new_thread(self._run, ())
        self.job = (lines, prefix, lead, end)
        self.work.release()

    def flush(self) -> None:
        """Wait until every submitted chunk is on disk."""
        if self.done is not None:
            self.done.acquire()
            self.done.release()

    def _run(self) -> None:
        while True:
            self.work.acquire()
            job, self.job = self.job, None
            if job is not None:
                self.log.write(*job)
            self.done.release()
