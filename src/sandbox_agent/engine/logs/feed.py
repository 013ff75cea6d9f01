"""Following a log: one reader per followed file, shared by every follower of it.

A ``Feed`` reads the new complete lines of one log file once, when inotify (or, where
there is none, a poll) says the file grew, and keeps the last few megabytes of them as
``Segment``s. Each follower is just an offset into the file: it takes the segments after
its offset, or reads the file itself when it has fallen further behind than the feed
remembers. A slow follower therefore never holds memory and never misses a line, and the
work of reading and rendering a line is done once, not once per follower.
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
#: (capped by _MAX_PACE): one follower is woken at once, a hundred every 10 ms, so the
#: cost of waking stays bounded however fast the process writes.
_PACE_PER_FOLLOWER = 0.0001
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
    """The complete lines ``[start, end)`` of the file when the follow began, read on demand.

    A snapshot of a huge log is handed out in pieces (``pieces``, blocking: call it off
    the event loop), never held whole. Its descriptor is the snapshot's own, closed by
    the follow once the next event is asked for.
    """

    start: int
    end: int
    fd: int

    @property
    def raw(self) -> bytes:
        """All of it at once: for small snapshots."""
        return store.read_range(self.fd, self.start, self.end)

    def pieces(self) -> Iterator[bytes]:
        """Whole-line pieces of about ``store.PIECE_BYTES``."""
        pos = self.start
        while pos < self.end:
            data = os.pread(self.fd, min(store.PIECE_BYTES, self.end - pos), pos)
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


FollowEvent = Snapshot | Lines | Exit | Keepalive


class Feed:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.end = store.complete_end(self.fd, os.fstat(self.fd).st_size)
        self.segments: deque[Segment] = deque()
        self.retained = 0
        self.wakers: set[asyncio.Event] = set()
        #: Followers holding the feed open (counted before their first event).
        self.users = 0
        self.exit_state: dict[str, Any] | None = None
        self.closed = False
        self.watch: int | None = None
        self._last_wake = 0.0
        self._wake_timer: asyncio.TimerHandle | None = None

    def catch_up(self) -> None:
        """Take in whatever complete lines the file has gained; wake followers if any."""
        if self.closed:
            return
        size = os.fstat(self.fd).st_size
        grown = False
        while size > self.end:
            chunk = os.pread(self.fd, min(size - self.end, _CATCH_UP_BYTES), self.end)
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
        while self.retained > _RETAIN_BYTES and len(self.segments) > 1:
            self.retained -= len(self.segments.popleft().raw)
        if grown:
            self._paced_wake()

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
            os.close(self.fd)
            self.wake()

    def pieces_from(self, offset: int) -> list[Segment]:
        """Segments covering ``[offset, self.end)``, reading the file for what is not kept."""
        pieces: list[Segment] = []
        first_kept = self.segments[0].start if self.segments else self.end
        if offset < first_kept:
            upto = min(first_kept, offset + _CATCH_UP_BYTES)
            raw = os.pread(self.fd, upto - offset, offset)
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
        if offset == 0:
            return True
        if offset > self.end or offset < 0:
            return False
        return os.pread(self.fd, 1, offset - 1) == b"\n"


async def follow_feed(
    feed: Feed,
    *,
    tail: int | None,
    resume_from: int | None,
    keepalive: float = KEEPALIVE_INTERVAL,
) -> AsyncIterator[FollowEvent]:
    """Events for one follower of ``feed``: a snapshot (unless resuming), lines, exit."""
    waker = asyncio.Event()
    feed.wakers.add(waker)
    try:
        if resume_from is None:
            start = 0 if tail is None else store.tail_start(feed.fd, feed.end, tail)
            snapshot = Snapshot(start, feed.end, os.dup(feed.fd))
            try:
                yield snapshot
            finally:
                os.close(snapshot.fd)
            offset = snapshot.end
        else:
            offset = resume_from
        while not feed.closed:
            if offset < feed.end:
                pieces = feed.pieces_from(offset)
                offset = pieces[-1].end
                yield Lines(pieces)
                continue
            if feed.exit_state is not None:
                yield Exit(offset, feed.exit_state)
                return
            waker.clear()
            try:
                # asyncio.timeout, not wait_for: no task per wait, which counts with
                # a hundred followers woken a few hundred times a second.
                async with asyncio.timeout(keepalive):
                    await waker.wait()
            except TimeoutError:
                yield Keepalive()
    finally:
        feed.wakers.discard(waker)
