"""Reading and following a tty process's raw output: pty.log and its index pty.idx.

Each chunk the supervisor read from the terminal is an entry: its 1-based sequence,
the millisecond time it was read, and its bytes. The index has one fixed-size record per
chunk (``supervisor/ondisk.py``), so an entry is found by sequence with two ``pread``s
and no scan. A ``PtyFeed`` is the one reader of a followed terminal: it learns of new
chunks when pty.idx grows, and each follower is just the next sequence it wants.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ...supervisor.ondisk import PTY_INDEX, PTY_INDEX_RECORD, PTY_LOG, unpack_pty_records
from .feed import KEEPALIVE_INTERVAL, Keepalive

#: The most a follower reads at once, so that one that fell far behind stays responsive.
_FOLLOW_READ_BYTES = 256 * 1024


@dataclass(frozen=True)
class PtyEntry:
    """One chunk of terminal output."""

    sequence: int
    timestamp_ms: int
    data: bytes


@dataclass
class PtyReplay:
    """The most recent output before the follow started (``replay`` bytes at most)."""

    data: bytes


@dataclass
class PtyChunks:
    entries: list[PtyEntry]


@dataclass
class PtyExit:
    state: dict[str, Any]


PtyEvent = PtyReplay | PtyChunks | PtyExit | Keepalive


class PtyFiles:
    """pty.log and pty.idx of one process, open for reading; FileNotFoundError without a tty."""

    def __init__(self, directory: str) -> None:
        self.log_fd = os.open(os.path.join(directory, PTY_LOG), os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.idx_fd = os.open(os.path.join(directory, PTY_INDEX), os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            os.close(self.log_fd)
            raise

    def close(self) -> None:
        os.close(self.log_fd)
        os.close(self.idx_fd)

    def count(self) -> int:
        """How many complete entries there are."""
        return os.fstat(self.idx_fd).st_size // PTY_INDEX_RECORD

    def end_of(self, sequence: int) -> int:
        """The offset in pty.log where entry ``sequence`` ends (0 for sequence 0)."""
        if sequence <= 0:
            return 0
        raw = os.pread(self.idx_fd, PTY_INDEX_RECORD, (sequence - 1) * PTY_INDEX_RECORD)
        return unpack_pty_records(raw)[0][0]

    def entries(self, first: int, last: int, max_bytes: int | None = None) -> list[PtyEntry]:
        """Entries ``first`` to ``last`` (inclusive), stopping once ``max_bytes`` are taken
        (always at least one entry)."""
        if first > last:
            return []
        before = max(first - 2, 0)
        raw = os.pread(self.idx_fd, (last - before) * PTY_INDEX_RECORD, before * PTY_INDEX_RECORD)
        records = unpack_pty_records(raw)
        start = records.pop(0)[0] if first > 1 else 0
        if max_bytes is not None:
            keep = 1
            while keep < len(records) and records[keep][0] - start <= max_bytes:
                keep += 1
            records = records[:keep]
        if not records:
            return []
        data = os.pread(self.log_fd, records[-1][0] - start, start)
        entries = []
        offset = start
        for sequence, (end, timestamp_ms) in enumerate(records, first):
            entries.append(PtyEntry(sequence, timestamp_ms, data[offset - start : end - start]))
            offset = end
        return entries

    def tail_bytes(self, nbytes: int, upto_sequence: int | None = None) -> bytes:
        """The last ``nbytes`` of output (up to the end of entry ``upto_sequence``)."""
        end = self.end_of(self.count() if upto_sequence is None else upto_sequence)
        start = max(end - nbytes, 0)
        return os.pread(self.log_fd, end - start, start) if end > start else b""


def read_entries(directory: str, since: int | None, tail: int | None, max_bytes: int | None) -> list[PtyEntry]:
    """Entries after sequence ``since``, the last ``tail`` of them, at most ``max_bytes`` of data."""
    try:
        files = PtyFiles(directory)
    except FileNotFoundError:
        return []  # no tty
    try:
        count = files.count()
        first = (since or 0) + 1
        if tail is not None:
            if tail == 0:
                return []
            first = max(first, count - tail + 1)
        return files.entries(first, count, max_bytes)
    finally:
        files.close()


def read_tail(directory: str, nbytes: int) -> bytes:
    try:
        files = PtyFiles(directory)
    except FileNotFoundError:
        return b""
    try:
        return files.tail_bytes(nbytes)
    finally:
        files.close()


class PtyFeed:
    """The one reader of a followed terminal; ``LogWatcher`` wakes it when pty.idx grows."""

    def __init__(self, directory: str) -> None:
        self.files = PtyFiles(directory)
        #: What the watcher watches: the index is written after the data.
        self.path = os.path.join(directory, PTY_INDEX)
        self.watch: int | None = None
        self.rewatch = False
        self.count = self.files.count()
        self.wakers: set[asyncio.Event] = set()
        self.users = 0
        self.exit_state: dict[str, Any] | None = None
        self.closed = False

    def catch_up(self) -> None:
        if self.closed:
            return
        count = self.files.count()
        if count > self.count:
            self.count = count
            self.wake()

    def finish(self, state: dict[str, Any]) -> None:
        self.catch_up()
        self.exit_state = state
        self.wake()

    def wake(self) -> None:
        for event in self.wakers:
            event.set()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.files.close()
            self.wake()


async def follow_pty(
    feed: PtyFeed, *, since: int | None, replay: int | None, keepalive: float = KEEPALIVE_INTERVAL
) -> AsyncIterator[PtyEvent]:
    """Events for one follower: the replay (if asked), new chunks as they come, the exit.

    Without ``since``, only output after the moment of the call is sent (after the
    replay of the most recent ``replay`` bytes); with it, every entry after ``since``.
    """
    waker = asyncio.Event()
    feed.wakers.add(waker)
    try:
        feed.catch_up()
        next_sequence = feed.count + 1 if since is None else since + 1
        if replay:
            yield PtyReplay(feed.files.tail_bytes(replay, next_sequence - 1))
        while not feed.closed:
            if next_sequence <= feed.count:
                entries = feed.files.entries(next_sequence, feed.count, _FOLLOW_READ_BYTES)
                next_sequence = entries[-1].sequence + 1
                yield PtyChunks(entries)
                continue
            if feed.exit_state is not None:
                yield PtyExit(feed.exit_state)
                return
            waker.clear()
            try:
                async with asyncio.timeout(keepalive):
                    await waker.wait()
            except TimeoutError:
                yield Keepalive()
    finally:
        feed.wakers.discard(waker)
