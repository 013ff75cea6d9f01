"""Lifecycle events of the processes (``created``, ``ready``, ``exited``, ``deleted``), with
a bounded in-memory history that a reconnecting subscriber resumes from.

Event ids are integers that grow by one per event. The first id of a server's run is its
start time in microseconds, so an id handed out before a restart of the server is below
every id of the new run, and reads as older than the history: such a subscriber (and one
whose id the history no longer holds) is told to start over (``Reset``) instead of being
silently given a stream with a hole in it.

    log = EventLog()
    log.publish("created", record)
    async for event in log.subscribe(after=None): ...
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from .records import Record

EventKind = Literal["created", "ready", "restarted", "exited", "deleted"]
#: How many events the history holds.
HISTORY = 1000
#: A subscriber idle this long gets a ``Keepalive`` (a comment line on the wire).
KEEPALIVE_INTERVAL = 15.0


@dataclass(frozen=True)
class Event:
    id: int
    kind: EventKind
    #: The process as it was when the event happened (a copy that does not change).
    record: Record


@dataclass(frozen=True)
class Reset:
    """The resume point is not in the history: start over from a fresh list; the events
    that follow come after ``last_id``."""

    last_id: int


@dataclass(frozen=True)
class Keepalive:
    pass


SubscriberEvent = Event | Reset | Keepalive


class EventLog:
    def __init__(self, history: int = HISTORY, keepalive: float = KEEPALIVE_INTERVAL) -> None:
        self.first_id = time.time_ns() // 1000
        self._next = self.first_id
        self._history: collections.deque[Event] = collections.deque(maxlen=history)
        self._wakers: set[asyncio.Event] = set()
        self._keepalive = keepalive
        self.closed = False

    @property
    def last_id(self) -> int:
        """The id of the newest event (one below the first id while there is none)."""
        return self._next - 1

    def publish(self, kind: EventKind, record: Record) -> None:
        self._history.append(Event(self._next, kind, record.snapshot()))
        self._next += 1
        for waker in self._wakers:
            waker.set()

    def close(self) -> None:
        """End every subscription (the server is shutting down)."""
        self.closed = True
        for waker in self._wakers:
            waker.set()

    def holds(self, after: int) -> bool:
        """Whether every event after id ``after`` is still in the history."""
        oldest = self._history[0].id if self._history else self._next
        return oldest - 1 <= after <= self.last_id

    async def subscribe(self, after: int | None) -> AsyncIterator[SubscriberEvent]:
        """Events after id ``after`` (None: from now on); a ``Reset`` first when the
        history no longer holds them all."""
        waker = asyncio.Event()
        self._wakers.add(waker)
        try:
            position = self.last_id
            if after is not None:
                if self.holds(after):
                    position = after
                else:
                    yield Reset(position)
            while not self.closed:
                if position < self.last_id:
                    pending = [event for event in self._history if event.id > position]
                    if pending and pending[0].id != position + 1:
                        # Fell behind by more than the history while it was being given events.
                        position = self.last_id
                        yield Reset(position)
                        continue
                    for event in pending:
                        position = event.id
                        yield event
                    continue
                waker.clear()
                try:
                    async with asyncio.timeout(self._keepalive):
                        await waker.wait()
                except TimeoutError:
                    yield Keepalive()
        finally:
            self._wakers.discard(waker)
