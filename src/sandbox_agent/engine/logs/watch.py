"""Telling feeds that their log file grew: inotify where it works, a poll elsewhere.

The same machinery tells the engine that a state record was replaced (``StateWatch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from ...supervisor.ondisk import EXIT_FILE, STATE_FILE
from .inotify import IN_ATTRIB, IN_CLOSE_WRITE, IN_MODIFY, IN_MOVE_SELF, IN_MOVED_TO, IN_Q_OVERFLOW, Inotify

#: The files of a process directory whose change a ``StateWatch`` reports.
_STATE_NAMES = frozenset(name.encode() for name in (STATE_FILE, EXIT_FILE))

logger = logging.getLogger("sandbox_agent.engine")

POLL_INTERVAL = 0.05


class Feed(Protocol):
    """What the watcher needs of a feed: the file to watch, and what to call when it grows.

    A feed whose file was replaced (a log rotation) sets ``rewatch``: the watcher then
    watches the file the path names now.
    """

    path: str
    watch: int | None
    rewatch: bool

    def catch_up(self, moved: bool = True) -> None:
        """Take in what changed; ``moved``: the file may have been replaced or renamed
        since the last look (False when all that happened to it is a write)."""


class StateWatch:
    """A process directory, watched for a state record renamed into place (atomic replace),
    or for an exit record written in place (closed after writing)."""

    __slots__ = ("on_change", "path", "rewatch", "watch")

    def __init__(self, directory: str, on_change: Callable[[], None]) -> None:
        self.path = directory
        self.watch: int | None = None
        self.rewatch = False
        self.on_change = on_change

    def catch_up(self, moved: bool = True) -> None:
        self.on_change()


class LogWatcher:
    def __init__(self) -> None:
        self._inotify: Inotify | None = None
        self._watches: dict[int, Feed] = {}
        #: Feeds inotify cannot watch (no inotify, or out of watches): polled.
        self._polled: set[Feed] = set()
        self._poller: asyncio.Task[None] | None = None
        #: Where watches are removed: inotify_rm_watch waits for an RCU grace period
        #: (about a millisecond), which the event loop must not.
        self._removals: ThreadPoolExecutor | None = None
        #: The removals handed to that thread, by watch descriptor.
        self._removing: dict[int, Future[None]] = {}

    def start(self) -> None:
        self._inotify = Inotify.create()
        if self._inotify is not None:
            asyncio.get_running_loop().add_reader(self._inotify.fd, self._on_inotify)
        else:
            logger.warning("inotify is not available: followers poll every %.0f ms", POLL_INTERVAL * 1000)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._removals is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._removals.shutdown)
            self._removals = None
        if self._inotify is not None:
            asyncio.get_running_loop().remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None

    def watch(self, feed: Feed) -> None:
        if self._inotify is not None:
            # A state record is renamed into place, an exit record closed after writing; a
            # log's link count changes when it is rotated (IN_ATTRIB), so the feed learns
            # that it must read on in a new file.
            if isinstance(feed, StateWatch):
                mask = IN_MOVED_TO | IN_CLOSE_WRITE
            else:
                mask = IN_MODIFY | IN_ATTRIB | IN_MOVE_SELF
            try:
                feed.watch = self._add_watch(feed.path, mask)
            except OSError as exc:
                logger.warning("cannot watch %s (%s): polling it instead", feed.path, exc)
            else:
                self._watches[feed.watch] = feed
                return
        self._polled.add(feed)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())

    def unwatch(self, feed: Feed) -> None:
        if feed.watch is not None and self._inotify is not None:
            # Its events are ignored from now on; the kernel's watch goes in the background.
            self._watches.pop(feed.watch, None)
            if self._removals is None:
                self._removals = ThreadPoolExecutor(1, thread_name_prefix="inotify-rm")
            if len(self._removing) > 64:
                self._removing = {wd: done for wd, done in self._removing.items() if not done.done()}
            self._removing[feed.watch] = self._removals.submit(self._inotify.rm_watch, feed.watch)
            feed.watch = None
        self._polled.discard(feed)

    def _add_watch(self, path: str, mask: int) -> int:
        assert self._inotify is not None
        wd = self._inotify.add_watch(path, mask)
        removing = self._removing.pop(wd, None)
        if removing is not None:
            # The kernel gave back a watch of the same file still queued for removal:
            # let that removal finish (rare, and short), then watch afresh.
            removing.result()
            wd = self._inotify.add_watch(path, mask)
        return wd

    def _on_inotify(self) -> None:
        assert self._inotify is not None
        # Each watch's events of the batch, taken together, in the order they came.
        changes: dict[int, int] = {}
        for wd, mask, name in self._inotify.read():
            if mask & IN_Q_OVERFLOW:
                # The kernel's queue was full and dropped events, a rotation's among them
                # perhaps: every feed looks at its file, as if it could have moved.
                for watched in list(self._watches):
                    changes[watched] = changes.get(watched, 0) | IN_Q_OVERFLOW
                continue
            if name and name not in _STATE_NAMES:
                continue  # a state record's temporary file, the control FIFO: not news
            changes[wd] = changes.get(wd, 0) | mask
        for wd, mask in changes.items():
            feed = self._watches.get(wd)
            if feed is not None:
                # A log that was only written to has not moved: no stat of its path (one
                # per followed line). A rotation changes its link count or its name.
                feed.catch_up(moved=bool(mask & ~IN_MODIFY))
                while feed.rewatch:
                    self._rewatch(feed)

    def _rewatch(self, feed: Feed) -> None:
        """Watch the file ``feed.path`` names now, then read what it got before the watch."""
        feed.rewatch = False
        self.unwatch(feed)
        feed.watch = None
        self.watch(feed)
        feed.catch_up()

    async def _poll(self) -> None:
        while self._polled:
            await asyncio.sleep(POLL_INTERVAL)
            for feed in list(self._polled):
                feed.catch_up()
                feed.rewatch = False  # polled by path: nothing to move
