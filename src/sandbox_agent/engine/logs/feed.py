"""Following a log: one reader per followed file, shared by every follower of it.

A ``Feed`` reads the new complete lines of one log file once, when inotify (or, where
there is none, a poll) says the file grew, and keeps the last few megabytes of them as
``Segment``s. Each follower is just an offset into the file: it takes the segments after
its offset, or reads the file itself when it has fallen further behind than the feed
remembers. A slow follower therefore never holds memory and never misses a line, and the
work of reading and rendering a line is done once, not once per follower.

Offsets are logical (``store.LogView``): a capped log rotates under a feed, which notices
(the old file's link count changes, or its path names another file), reads the old file
to its end, and goes on in the new one at the same logical offset. A follower that fell
so far behind that its next line was dropped gets a ``Gap`` saying so, then goes on from
the oldest line kept.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import store

#: How much of a feed's recent output stays in memory for followers to share.
_RETAIN_BYTES = 4 * 1024 * 1024
#: The most a follower that fell behind reads from the file in one go.
_CATCH_UP_BYTES = 1024 * 1024
KEEPALIVE_INTERVAL = 15.0
#: Followers of a busy feed are woken at most once per this many seconds per follower
#: (capped by _MAX_PACE): one follower is woken at once, a hundred every 5 ms, so the
#: cost of waking stays bounded however fast the process writes (100 followers of 5,000
#: lines/s: about 60% of a core). Every 10 ms for a hundred held a line printed every
#: 10 ms up to 10 ms (bench: follow-many).
_PACE_PER_FOLLOWER = 0.00005
_MAX_PACE = 0.02


@dataclass(eq=False)
class Segment:
    """Complete log lines ``raw`` found at byte ``start`` of the file."""

    start: int
    raw: bytes
    #: Renderings of this segment, by whoever renders it (the SSE layer), made once.
    cache: dict[Any, bytes] = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.start + len(self.raw)


@dataclass
class Snapshot:
    """The complete lines ``[start, end)`` of the log when the follow began, read on demand.

    A snapshot of a huge log is handed out in pieces (``pieces``, blocking: call it off
    the event loop), never held whole. Its files are the snapshot's own, closed by the
    follow once the next event is asked for.
    """

    start: int
    end: int
    view: store.LogView

    @property
    def raw(self) -> bytes:
        """All of it at once: for small snapshots."""
        return store.read_range(self.view, self.start, self.end)

    def pieces(self) -> Iterator[bytes]:
        """Whole-line pieces of about ``store.PIECE_BYTES``."""
        pos = self.start
        while pos < self.end:
            data = self.view.pread(min(store.PIECE_BYTES, self.end - pos), pos)
            if not data:
                return
            cut = data.rfind(b"\n")
            if cut != -1 and pos + len(data) < self.end:
                data = data[: cut + 1]
            pos += len(data)
            yield data


@dataclass
class Lines:
    """New lines: consecutive segments, sent together (one write per wake-up)."""

    segments: list[Segment]


@dataclass
class Exit:
    end: int
    state: dict[str, Any]


@dataclass
class Keepalive:
    pass


@dataclass
class Gap:
    """The lines from logical offset ``start`` to ``end`` were dropped (a capped log) before
    this follower got them; ``lines`` is the number of lines before ``end``."""

    start: int
    end: int
    lines: int


FollowEvent = Snapshot | Lines | Exit | Keepalive | Gap


class Feed:
    def __init__(self, path: str, *, lines: bool = False) -> None:
        self.path = path
        #: Whether line counts matter (combined.log: entry sequences).
        self.count_lines = lines
        self.view = store.LogView.open(path, lines=lines)
        self.end = store.complete_end(self.view, self.view.size())
        self.segments: deque[Segment] = deque()
        self.retained = 0
        self.wakers: set[asyncio.Event] = set()
        #: Followers holding the feed open (counted before their first event).
        self.users = 0
        self.exit_state: dict[str, Any] | None = None
        self.closed = False
        self.watch: int | None = None
        #: The file changed under the watch (a rotation): the watcher watches the new one.
        self.rewatch = False
        self._last_wake = 0.0
        self._wake_timer: asyncio.TimerHandle | None = None

    def catch_up(self, moved: bool = True) -> None:
        """Take in whatever complete lines the log has gained; wake followers if any.
        ``moved``: look for a rotation too (not needed when the log was only written)."""
        if self.closed:
            return
        grown = self._read_new()
        if moved and self._rotated():
            grown = self._read_new() or grown  # the old file is final now: read it to its end
            self._reopen()
            grown = self._read_new() or grown
        while self.retained > _RETAIN_BYTES and len(self.segments) > 1:
            self.retained -= len(self.segments.popleft().raw)
        if grown:
            self._paced_wake()

    def _read_new(self) -> bool:
        view = self.view
        size = view.size()
        grown = False
        while size > self.end:
            chunk = view.pread(min(size - self.end, _CATCH_UP_BYTES), self.end)
            last = chunk.rfind(b"\n")
            if last == -1:
                if len(chunk) < _CATCH_UP_BYTES:
                    break  # a line still being written
                last = len(chunk) - 1  # cannot happen with supervisor-written lines
            raw = chunk[: last + 1]
            self.segments.append(Segment(self.end, raw))
            self.retained += len(raw)
            self.end += len(raw)
            grown = True
        return grown

    def _rotated(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self.view.current.ino
        except FileNotFoundError:
            return False  # deleted (the feed is about to close)

    def _reopen(self) -> None:
        """Go on in the log's new generation; the old files close."""
        try:
            view = store.LogView.open(self.path, lines=self.count_lines)
        except FileNotFoundError:
            return
        old, self.view = self.view, view
        old.close()
        self.rewatch = True
        if view.start > self.end:
            # Rotated more than once since the last look: what was between is gone. Lines
            # still held stay for followers; the rest get a Gap.
            self.end = view.start
            self.segments.clear()
            self.retained = 0

    def _paced_wake(self) -> None:
        if self._wake_timer is not None:
            return  # a wake is already due; it will see this data too
        loop = asyncio.get_running_loop()
        due = self._last_wake + min(_MAX_PACE, _PACE_PER_FOLLOWER * len(self.wakers))
        if loop.time() >= due:
            self.wake()
        else:
            self._wake_timer = loop.call_at(due, self.wake)

    def finish(self, state: dict[str, Any]) -> None:
        """The process exited: everything it wrote is on disk, read it all then say so."""
        self.catch_up()
        self.exit_state = state
        self.wake()

    def wake(self) -> None:
        if self._wake_timer is not None:
            self._wake_timer.cancel()
            self._wake_timer = None
        self._last_wake = asyncio.get_running_loop().time()
        for event in self.wakers:
            event.set()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.view.close()
            self.wake()

    def pieces_from(self, offset: int) -> list[Segment] | Gap:
        """Segments covering ``[offset, self.end)``, reading the files for what is not
        held; a ``Gap`` if the line at ``offset`` was dropped."""
        pieces: list[Segment] = []
        first_kept = self.segments[0].start if self.segments else self.end
        if offset < first_kept:
            start = self.view.start
            if offset < start:
                return Gap(offset, start, self.view.start_lines)
            upto = min(first_kept, offset + _CATCH_UP_BYTES)
            raw = self.view.pread(upto - offset, offset)
            if upto < first_kept and b"\n" in raw:
                raw = raw[: raw.rfind(b"\n") + 1]
            return [Segment(offset, raw)]
        for segment in reversed(self.segments):
            if segment.end <= offset:
                break
            if segment.start >= offset:
                pieces.append(segment)
            else:
                pieces.append(Segment(offset, segment.raw[offset - segment.start :]))
        pieces.reverse()
        return pieces

    def is_line_boundary(self, offset: int) -> bool:
        """Whether a follow may resume at ``offset``: a line boundary, or a dropped offset
        (it resumes at the oldest line kept, with a ``Gap``)."""
        if offset <= self.view.start:
            return offset >= 0
        if offset > self.end:
            return False
        return self.view.pread(1, offset - 1) == b"\n"


async def follow_feed(
    feed: Feed,
    *,
    tail: int | None,
    resume_from: int | None,
    keepalive: float = KEEPALIVE_INTERVAL,
) -> AsyncIterator[FollowEvent]:
    """Events for one follower of ``feed``: a snapshot (unless resuming), lines, exit;
    a keepalive every ``keepalive`` seconds while it waits."""
    waker = asyncio.Event()
    feed.wakers.add(waker)
    # One timer for the whole follow, not one per wait: a hundred followers are woken a
    # few hundred times a second, and arming and cancelling a timeout each time was a
    # tenth of their cost. It may put a keepalive among lines; a client skips those.
    loop = asyncio.get_running_loop()
    keepalive_due = False
    timer: asyncio.TimerHandle | None = None

    def due() -> None:
        nonlocal keepalive_due, timer
        keepalive_due = True
        waker.set()
        timer = loop.call_later(keepalive, due)

    timer = loop.call_later(keepalive, due)
    try:
        if resume_from is None:
            start = feed.view.start if tail is None else store.tail_start(feed.view, feed.end, tail)
            snapshot = Snapshot(start, feed.end, feed.view.dup())
            try:
                yield snapshot
            finally:
                snapshot.view.close()
            offset = snapshot.end
        else:
            offset = resume_from
        while not feed.closed:
            if offset < feed.end:
                pieces = feed.pieces_from(offset)
                if isinstance(pieces, Gap):
                    offset = pieces.end
                    yield pieces
                    continue
                offset = pieces[-1].end
                yield Lines(pieces)
                continue
            if feed.exit_state is not None:
                yield Exit(offset, feed.exit_state)
                return
            if keepalive_due:
                keepalive_due = False
                yield Keepalive()
                continue
            waker.clear()
            await waker.wait()
    finally:
        if timer is not None:
            timer.cancel()
        feed.wakers.discard(waker)
