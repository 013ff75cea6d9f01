"""Telling feeds that their log file grew: inotify where it works, a poll elsewhere.

The same machinery tells the engine that a state record was replaced (``StateWatch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from .inotify import IN_CLOSE_WRITE, IN_MODIFY, IN_MOVED_TO, Inotify

logger = logging.getLogger("sandbox_agent.engine")

POLL_INTERVAL = 0.05


class Feed(Protocol):
    """What the watcher needs of a feed: the file to watch, and what to call when it grows."""

    path: str
    watch: int | None

    def catch_up(self) -> None: ...


class StateWatch:
    """A process directory, watched for a state record renamed into place (atomic replace),
    or for an exit record written in place (closed after writing)."""

    __slots__ = ("catch_up", "path", "watch")

    def __init__(self, directory: str, on_change: Callable[[], None]) -> None:
        self.path = directory
        self.watch: int | None = None
        self.catch_up = on_change


class LogWatcher:
    def __init__(self) -> None:
        self._inotify: Inotify | None = None
        self._watches: dict[int, Feed] = {}
        #: Feeds inotify cannot watch (no inotify, or out of watches): polled.
        self._polled: set[Feed] = set()
        self._poller: asyncio.Task[None] | None = None

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
        if self._inotify is not None:
            asyncio.get_running_loop().remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None

    def watch(self, feed: Feed) -> None:
        if self._inotify is not None:
            mask = IN_MOVED_TO | IN_CLOSE_WRITE if isinstance(feed, StateWatch) else IN_MODIFY
            try:
                feed.watch = self._inotify.add_watch(feed.path, mask)
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
            self._watches.pop(feed.watch, None)
            self._inotify.rm_watch(feed.watch)
        self._polled.discard(feed)

    def _on_inotify(self) -> None:
        assert self._inotify is not None
        seen = set()
        for wd, _mask in self._inotify.read():
            if wd not in seen:
                seen.add(wd)
                feed = self._watches.get(wd)
                if feed is not None:
                    feed.catch_up()

    async def _poll(self) -> None:
        while self._polled:
            await asyncio.sleep(POLL_INTERVAL)
            for feed in list(self._polled):
                feed.catch_up()
