"""Reading logs: line reads, entries, follows and a terminal's output, for ``ProcessManager``.

A mixin of the manager (``manager.py``): the registry and lifecycle live there, what a
caller reads of a process lives here. Blocking file reads run off the event loop; each
followed file has one shared ``Feed`` whose followers are offsets.
"""

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING

from .._exceptions import (
    BadRequest,
    ServiceUnavailable,
)
from .._types import StreamName
from ..supervisor.ondisk import (
    LOG_FILES,
)
from . import system
from .logs import entries as logentries
from .logs import feed as logfeed
from .logs import pty as pty_logs
from .logs import store
from .logs.pty import PtyEntry
from .records import Record
from .state import ManagerState


class LogReading(ManagerState):
    """The manager's log reads and follows (see ``ProcessManager``)."""

    if TYPE_CHECKING:

        def _record(self, process_id: str) -> Record: ...

    async def logs(
        self, process_id: str, *, stream: StreamName = "combined", tail: int | None = None, strip: bool = False
    ) -> tuple[str, int]:
        """The selected lines of a log and their count, read off the event loop (a log can be large)."""
        record = self._record(process_id)
        path = os.path.join(record.dir, LOG_FILES[stream])
        return await asyncio.to_thread(store.read_lines, path, tail, strip)

    async def open_log(
        self, process_id: str, *, stream: StreamName = "combined", tail: int | None = None, strip: bool = False
    ) -> store.LogRead:
        """A reader of the selected lines, to hand out piece by piece (close it after)."""
        record = self._record(process_id)
        try:
            return await asyncio.to_thread(store.LogRead, record.log_path(stream), tail, strip)
        except OSError as exc:
            raise (system.out_of_fds(exc) or exc) from None

    async def entries(
        self, process_id: str, *, stream: str | None = None, since: int = 0, tail: int | None = None
    ) -> tuple[str, list[logentries.Entry]]:
        """The effective stream and its entries (see ``logentries.read``), read off the loop.

        ``stream`` None: ``pty`` for a tty process, else ``combined``.
        """
        record = self._record(process_id)
        stream = stream or ("pty" if record.tty else "combined")
        if stream == "pty" and record.tty:
            chunks = await asyncio.to_thread(
                pty_logs.read_entries, record.dir, since, tail, self.config.max_log_bytes_per_process
            )
            return stream, [logentries.Entry(c.sequence, "pty", c.timestamp_ms, c.data) for c in chunks]
        if record.tty:
            return stream, []  # a terminal's output is all on the pty stream
        found = await asyncio.to_thread(
            logentries.read,
            record.log_path("combined"),
            record.line_index,
            stream=stream,
            since=since,
            tail=tail,
            max_bytes=self.config.max_log_bytes_per_process,
        )
        return stream, found

    async def follow_entries(
        self, process_id: str, *, stream: str | None = None, since: int = 0, tail: int | None = None
    ) -> tuple[str, AsyncIterator[logentries.FollowEvent]]:
        """The effective stream and its follow: the entries after ``since`` (the last
        ``tail`` of them), then each new one, then ``Ended`` once the process exited.

        Batches hold every line; the caller keeps the entries of ``stream``. Checks raise
        before the first event, so that a caller can still answer with an error status.
        """
        record = self._record(process_id)
        stream = stream or ("pty" if record.tty else "combined")
        if record.tty:
            return stream, await self._follow_pty_entries(record, show=stream == "pty", since=since, tail=tail)
        offset, lines = await asyncio.to_thread(
            logentries.locate, record.log_path("combined"), record.line_index, stream=stream, since=since, tail=tail
        )
        events = await self.follow(process_id, stream="combined", resume_from=offset)
        # Entries after ``since`` that were dropped (a capped log): say so first.
        skipped = logentries.Skipped(since, lines) if tail is None and lines > since else None
        return stream, self._entry_events(events, lines, skipped)

    async def _follow_pty_entries(
        self, record: Record, *, show: bool, since: int, tail: int | None
    ) -> AsyncIterator[logentries.FollowEvent]:
        """A terminal's output as entries (``show`` False: none, for the streams a tty
        process does not have), then ``Ended`` with the last sequence."""
        if tail is not None:
            # The last ``tail`` entries kept: no gap for those dropped before them.
            first, newest = await asyncio.to_thread(pty_logs.read_bounds, record.dir)
            since = max(since, newest - tail, first - 1)
        if self._closing:
            raise ServiceUnavailable("the server is shutting down; reconnect in a moment")
        events = self.terminals.follow(record, since=since, replay=None)
        return self._pty_entry_events(events, show, since)

    @staticmethod
    async def _pty_entry_events(
        events: AsyncGenerator[pty_logs.PtyEvent, None], show: bool, last: int
    ) -> AsyncIterator[logentries.FollowEvent]:
        try:
            async for event in events:
                if isinstance(event, pty_logs.PtyChunks):
                    if event.entries:
                        last = event.entries[-1].sequence
                    if show:
                        yield logentries.Entries(
                            [logentries.Entry(c.sequence, "pty", c.timestamp_ms, c.data) for c in event.entries]
                        )
                elif isinstance(event, pty_logs.PtyGap):
                    last = event.last
                    if show:
                        yield logentries.Skipped(event.after, event.last)
                elif isinstance(event, pty_logs.PtyExit):
                    yield logentries.Ended(last, event.state)
                elif isinstance(event, logfeed.Keepalive):
                    yield event
        finally:
            await events.aclose()

    @staticmethod
    async def _entry_events(
        events: AsyncIterator[logfeed.FollowEvent], lines: int, skipped: logentries.Skipped | None
    ) -> AsyncIterator[logentries.FollowEvent]:
        # Each follower counts the lines it is given: a segment's newlines, no rescans.
        try:
            if skipped is not None:
                yield skipped
            async for event in events:
                if isinstance(event, logfeed.Lines):
                    for segment in event.segments:
                        yield logentries.Batch(segment, lines + 1)
                        lines += segment.raw.count(b"\n")
                elif isinstance(event, logfeed.Gap):
                    yield logentries.Skipped(lines, event.lines)
                    lines = event.lines
                elif isinstance(event, logfeed.Exit):
                    yield logentries.Ended(lines, event.state)
                elif isinstance(event, logfeed.Keepalive):
                    yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def follow(
        self,
        process_id: str,
        *,
        stream: StreamName = "combined",
        tail: int | None = None,
        resume_from: int | None = None,
    ) -> AsyncIterator[logfeed.FollowEvent]:
        """Snapshot, then each new line, then the exit. See ``logfeed.follow_feed``.

        Checks (unknown id, bad resume offset) raise before the first event, so that a
        caller can still answer with an error status.
        """
        record = self._record(process_id)
        if self._closing:
            raise ServiceUnavailable("the server is shutting down; reconnect in a moment")
        try:
            feed = self._feed(record, stream)
        except OSError as exc:
            raise (system.out_of_fds(exc) or exc) from None
        feed.users += 1
        feed.catch_up()
        if resume_from is not None and not feed.is_line_boundary(resume_from):
            self._release_feed(record, stream, feed)
            raise BadRequest(
                f"Last-Event-ID {resume_from} is not a position in this {stream} log; "
                "reconnect with the same stream parameter, or without Last-Event-ID"
            )
        # An id older than the oldest line kept (a capped log) resumes there, after a Gap.
        return self._follow_events(record, stream, feed, tail, resume_from)

    async def _follow_events(
        self, record: Record, stream: str, feed: logfeed.Feed, tail: int | None, resume_from: int | None
    ) -> AsyncIterator[logfeed.FollowEvent]:
        try:
            async for event in logfeed.follow_feed(feed, tail=tail, resume_from=resume_from):
                yield event
        finally:
            self._release_feed(record, stream, feed)

    async def pty_entries(
        self, process_id: str, *, since: int | None = None, tail: int | None = None, max_bytes: int | None = None
    ) -> list[PtyEntry]:
        """Terminal output chunks after sequence ``since``, the last ``tail`` of them, at most
        ``max_bytes`` of data (always one entry at least). Empty for a process without tty."""
        record = self._record(process_id)
        return await asyncio.to_thread(pty_logs.read_entries, record.dir, since, tail, max_bytes)

    async def pty_replay(self, process_id: str, nbytes: int) -> bytes:
        """The last ``nbytes`` of a tty process's output, byte for byte."""
        record = self._record(process_id)
        return await asyncio.to_thread(pty_logs.read_tail, record.dir, nbytes)

    def pty_follow(
        self, process_id: str, *, since: int | None = None, replay: int | None = None
    ) -> AsyncGenerator[pty_logs.PtyEvent, None]:
        """Follow a process's terminal output: ``PtyReplay`` (with ``replay`` bytes), then
        ``PtyChunks`` of new entries (all after ``since`` when given, else those after now),
        ``Keepalive`` when idle, and ``PtyExit`` once it exited and all was sent.

        Checks (unknown id, shutting down) raise here, before the first event.
        """
        record = self._record(process_id)
        if self._closing:
            raise ServiceUnavailable("the server is shutting down; reconnect in a moment")
        return self.terminals.follow(record, since=since, replay=replay)

    def _feed(self, record: Record, stream: str) -> logfeed.Feed:
        feed = record.feeds.get(stream)
        if feed is None:
            path = os.path.join(record.dir, LOG_FILES[stream])
            if not os.path.exists(path):
                open(path, "ab").close()
            feed = logfeed.Feed(path, lines=stream == "combined")
            if not record.exited:
                self._watcher.watch(feed)
            if record.exited:
                feed.exit_state = record.state
            record.feeds[stream] = feed
        return feed

    def _release_feed(self, record: Record, stream: str, feed: logfeed.Feed) -> None:
        if record.feeds.get(stream) is feed:
            feed.users -= 1
            if feed.users <= 0:
                self._drop_feed(record, stream)

    def _drop_feed(self, record: Record, stream: str) -> None:
        feed = record.feeds.pop(stream)
        self._watcher.unwatch(feed)
        feed.close()
