"""Reading and following a tty process's raw output: pty.log and its index pty.idx.

Each chunk the supervisor read from the terminal is an entry: its 1-based sequence,
the millisecond time it was read, and its bytes. The index has one fixed-size record per
chunk (``supervisor/ondisk.py``), so an entry is found by sequence with two ``pread``s
and no scan. A ``PtyFeed`` is the one reader of a followed terminal: it learns of new
chunks when pty.idx grows, and each follower is just the next sequence it wants.

Capped, both files rotate together (``supervisor/terminal.py``, ``PtyRecorder``); each is
read as a ``store.LogView`` at logical offsets, so sequences and offsets never go back.
An entry is kept while its record and where it starts are: the oldest kept is found from
the two views (``PtyFiles.first``), and a follower behind it gets a ``PtyGap``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ...supervisor.ondisk import PTY_INDEX, PTY_INDEX_RECORD, PTY_LOG, unpack_pty_records
from .feed import KEEPALIVE_INTERVAL, Keepalive
from .store import LogView, generation_record

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
class PtyGap:
    """The entries after ``after`` up to ``last`` were dropped (a capped log) before this
    follower got them; it goes on at ``last + 1``."""

    after: int
    last: int


@dataclass
class PtyExit:
    state: dict[str, Any]


PtyEvent = PtyReplay | PtyChunks | PtyGap | PtyExit | Keepalive


class PtyFiles:
    """pty.log and pty.idx of one process, open for reading; FileNotFoundError without a tty.

    ``count`` is the last sequence whose bytes the open files hold: the index is opened
    (or reopened, ``update``) and counted before pty.log, and every record names bytes
    written before it, so they are in pty.log's view, or were dropped before it opened.
    """

    def __init__(self, directory: str) -> None:
        self.idx_path = os.path.join(directory, PTY_INDEX)
        self.log_path = os.path.join(directory, PTY_LOG)
        self.idx = LogView.open(self.idx_path)
        self.count = self.idx.size() // PTY_INDEX_RECORD
        try:
            self.log = LogView.open(self.log_path)
        except BaseException:
            self.idx.close()
            raise
        self._first: int | None = None
        self._oldest: tuple[int, int | None] | None = None

    def close(self) -> None:
        self.idx.close()
        self.log.close()

    def update(self) -> bool:
        """Take in new records, and the files' rotations since the last look; True if
        pty.idx was rotated (what a watcher watches is another file now)."""
        rotated = _rotated(self.idx_path, self.idx)
        if rotated:
            self.idx = _reopen(self.idx_path, self.idx)
            self._oldest = None
        self.count = self.idx.size() // PTY_INDEX_RECORD
        if _rotated(self.log_path, self.log):
            self.log = _reopen(self.log_path, self.log)
            self._first = None
        if rotated:
            self._first = None
        return rotated

    def first(self) -> int:
        """The oldest sequence kept (``count + 1`` if none is)."""
        if self._first is None or self._first > self.count:
            self._first = self._find_first()
        return self._first

    def _find_first(self) -> int:
        oldest, start = self._oldest_record()
        # The oldest record's chunk is an entry only if where it starts is known.
        low = oldest if start is not None else oldest + 1
        high = self.count + 1
        if low >= high or self._start_of(low) >= self.log.start:
            return min(low, high)
        # The smallest sequence whose bytes start in what pty.log keeps (they only grow).
        low += 1
        while low < high:
            mid = (low + high) // 2
            if self._end_of(mid - 1) >= self.log.start:
                high = mid
            else:
                low = mid + 1
        return low

    def _oldest_record(self) -> tuple[int, int | None]:
        """The oldest sequence whose record is kept, and where its chunk starts (if known)."""
        if self._oldest is None:
            self._oldest = self._find_oldest_record()
        return self._oldest

    def _find_oldest_record(self) -> tuple[int, int | None]:
        kept = -(-self.idx.start // PTY_INDEX_RECORD)
        if kept == 0:
            return 1, 0
        info = generation_record(self.idx_path, self.idx.parts[0].ino)
        start = info.get("start") if info is not None else None
        valid = isinstance(start, int) and not isinstance(start, bool) and start >= 0
        return kept + 1, start if valid and kept * PTY_INDEX_RECORD == self.idx.start else None

    def _end_of(self, sequence: int) -> int:
        """The logical offset in pty.log where entry ``sequence`` (kept) ends; 0 for 0."""
        if sequence <= 0:
            return 0
        raw = self.idx.pread(PTY_INDEX_RECORD, (sequence - 1) * PTY_INDEX_RECORD)
        return unpack_pty_records(raw)[0][0]

    def _start_of(self, sequence: int) -> int:
        """Where entry ``sequence`` starts: the end of the one before, or what the record of
        the oldest index says."""
        oldest, start = self._oldest_record()
        if sequence == oldest and start is not None:
            return start
        return self._end_of(sequence - 1)

    def entries(self, first: int, last: int, max_bytes: int | None = None) -> list[PtyEntry]:
        """Entries ``first`` to ``last`` (inclusive; from the oldest kept if ``first`` was
        dropped), stopping once ``max_bytes`` are taken (always at least one entry)."""
        first = max(first, self.first())
        last = min(last, self.count)
        if first > last:
            return []
        start = self._start_of(first)
        raw = self.idx.pread((last - first + 1) * PTY_INDEX_RECORD, (first - 1) * PTY_INDEX_RECORD)
        records = unpack_pty_records(raw)
        if max_bytes is not None:
            keep = 1
            while keep < len(records) and records[keep][0] - start <= max_bytes:
                keep += 1
            records = records[:keep]
        if not records:
            return []
        data = self.log.pread(records[-1][0] - start, start)
        entries = []
        offset = start
        for sequence, (end, timestamp_ms) in enumerate(records, first):
            if end - start > len(data):
                break  # cannot happen: the bytes of every counted record are kept
            entries.append(PtyEntry(sequence, timestamp_ms, data[offset - start : end - start]))
            offset = end
        return entries

    def tail_bytes(self, nbytes: int, upto_sequence: int | None = None) -> bytes:
        """The last ``nbytes`` of output kept (up to the end of entry ``upto_sequence``)."""
        upto = self.count if upto_sequence is None else min(upto_sequence, self.count)
        oldest, start = self._oldest_record()
        if upto >= oldest:
            end = self._end_of(upto)
        elif upto == oldest - 1 and start is not None:
            end = start
        else:
            return b""
        begin = max(end - nbytes, self.log.start)
        return self.log.pread(end - begin, begin) if end > begin else b""


def _rotated(path: str, view: LogView) -> bool:
    try:
        return os.stat(path).st_ino != view.current.ino
    except FileNotFoundError:
        return False  # deleted (whoever reads is about to close)


def _reopen(path: str, view: LogView) -> LogView:
    """The log at ``path`` opened afresh (``view`` closed), or ``view`` if it is gone."""
    try:
        new = LogView.open(path)
    except FileNotFoundError:
        return view
    view.close()
    return new


def read_entries(directory: str, since: int | None, tail: int | None, max_bytes: int | None) -> list[PtyEntry]:
    """Entries after sequence ``since``, the last ``tail`` of them, at most ``max_bytes`` of data."""
    try:
        files = PtyFiles(directory)
    except FileNotFoundError:
        return []  # no tty
    try:
        count = files.count
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


def read_bounds(directory: str) -> tuple[int, int]:
    """The oldest sequence kept and the newest; ``(1, 0)`` without a tty or output."""
    try:
        files = PtyFiles(directory)
    except FileNotFoundError:
        return 1, 0
    try:
        return files.first(), files.count
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
        self.count = self.files.count
        self.wakers: set[asyncio.Event] = set()
        self.users = 0
        self.exit_state: dict[str, Any] | None = None
        self.closed = False

    def catch_up(self, moved: bool = True) -> None:
        # Its files are looked at whole each time (``files.update``): ``moved`` adds nothing.
        if self.closed:
            return
        if self.files.update():
            self.rewatch = True
        count = self.files.count
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
    A follower whose next entry was dropped (a capped log) gets a ``PtyGap``, then the
    oldest entry kept.
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
                first = feed.files.first()
                if next_sequence < first:
                    yield PtyGap(next_sequence - 1, first - 1)
                    next_sequence = first
                    continue
                entries = feed.files.entries(next_sequence, feed.count, _FOLLOW_READ_BYTES)
                if entries:
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
