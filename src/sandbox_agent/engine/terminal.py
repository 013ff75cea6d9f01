"""Terminals and input: what the engine sends to a supervisor's control FIFO, and the
followers of a tty process's output.

The supervisor holds the pty (or the stdin pipe) and the FIFO for as long as the process
runs, whatever happens to the server; the engine opens the FIFO for each request. Input is
cut into messages that fit one atomic FIFO write (``ondisk.encode_control``); a full FIFO
(the child is not reading) is waited on without blocking the event loop, for a bounded
time. Requests to one process are sent one after the other, so their bytes never mix.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncGenerator

from .._exceptions import Conflict, ServiceUnavailable
from ..supervisor.ondisk import CONTROL_EOF, CONTROL_FIFO, CONTROL_INPUT, encode_control, encode_resize, read_state
from .logs.pty import PtyEvent, PtyFeed, follow_pty
from .logs.watch import LogWatcher
from .records import Record
from .validate import check_terminal_size

#: How long input waits for a process that does not read it before the request fails.
INPUT_TIMEOUT = 30.0

_GONE = (errno.ENXIO, errno.EPIPE, errno.ENOENT)


class Terminals:
    """Control channels and pty followers of the processes of one manager."""

    def __init__(self, watcher: LogWatcher, *, input_timeout: float = INPUT_TIMEOUT) -> None:
        self._watcher = watcher
        self._locks: dict[str, asyncio.Lock] = {}
        self._feeds: dict[str, PtyFeed] = {}
        self.input_timeout = input_timeout

    # -- sending -----------------------------------------------------------------

    @staticmethod
    def check_input(record: Record) -> None:
        """Conflict unless ``record`` is a running process that takes input."""
        _check_running(record, "send input to it")
        if not (record.tty or record.interactive):
            raise Conflict(
                f"process {record.id} takes no input: its stdin is /dev/null. "
                "Start it with interactive: true (stdin is a pipe) or tty: true (a terminal)"
            )
        if record.input_closed:
            raise Conflict(f"the stdin of process {record.id} was closed (eof); it takes no more input")

    async def send_input(self, record: Record, data: bytes) -> int:
        if record.interactive and not record.tty and not record.exited:
            _refresh(record)  # the supervisor records a stdin the child closed
        self.check_input(record)
        if data:
            await self._send(record, encode_control(CONTROL_INPUT, data))
        return len(data)

    async def close_input(self, record: Record) -> None:
        self.check_input(record)
        await self._send(record, encode_control(CONTROL_EOF))
        if not record.tty:
            record.update(dict(record.state, inputClosed=True))

    async def resize(self, record: Record, cols: int, rows: int) -> None:
        if not record.tty:
            raise Conflict(
                f"process {record.id} is not running in a terminal: only a process started with tty: true "
                "can be resized"
            )
        _check_running(record, "resize its terminal")
        cols, rows = check_terminal_size((cols, rows))
        await self._send(record, [encode_resize(cols, rows)])
        record.update(dict(record.state, terminalSize=[cols, rows]))

    async def _send(self, record: Record, messages: list[bytes]) -> None:
        lock = self._locks.setdefault(record.id, asyncio.Lock())
        async with lock:
            try:
                fd = os.open(os.path.join(record.dir, CONTROL_FIFO), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                raise self._gone(record, exc) from exc
            try:
                for message in messages:
                    await self._write(record, fd, message)
            finally:
                os.close(fd)

    async def _write(self, record: Record, fd: int, message: bytes) -> None:
        # A message fits one atomic FIFO write: all of it is written, or none.
        while True:
            try:
                os.write(fd, message)
                return
            except BlockingIOError:
                pass
            except OSError as exc:
                raise self._gone(record, exc) from exc
            await self._writable(record, fd)

    async def _writable(self, record: Record, fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def on_writable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_writer(fd, on_writable)
        try:
            async with asyncio.timeout(self.input_timeout):
                await ready
        except TimeoutError:
            raise ServiceUnavailable(
                f"process {record.id} has not read its input for {self.input_timeout:.0f} s; "
                "part of this input may have been sent. Try again once it reads its input"
            ) from None
        finally:
            loop.remove_writer(fd)

    @staticmethod
    def _gone(record: Record, exc: OSError) -> Exception:
        if exc.errno in _GONE:
            return Conflict(f"process {record.id} is not running any more; it takes no input")
        return exc

    # -- following ---------------------------------------------------------------

    def follow(self, record: Record, *, since: int | None, replay: int | None) -> AsyncGenerator[PtyEvent, None]:
        feed = self._feeds.get(record.id)
        if feed is None:
            feed = PtyFeed(record.dir)
            if record.exited:
                feed.exit_state = record.state
            else:
                self._watcher.watch(feed)
            self._feeds[record.id] = feed
        feed.users += 1
        return self._events(record.id, feed, since, replay)

    async def _events(
        self, process_id: str, feed: PtyFeed, since: int | None, replay: int | None
    ) -> AsyncGenerator[PtyEvent, None]:
        try:
            async for event in follow_pty(feed, since=since, replay=replay):
                yield event
        finally:
            feed.users -= 1
            if feed.users <= 0 and self._feeds.get(process_id) is feed:
                self._drop(process_id)

    def exited(self, record: Record) -> None:
        """The process exited: its followers get what is left, then the exit."""
        feed = self._feeds.get(record.id)
        if feed is not None:
            self._watcher.unwatch(feed)
            feed.finish(record.state)

    def forget(self, process_id: str) -> None:
        self._locks.pop(process_id, None)
        if process_id in self._feeds:
            self._drop(process_id)

    def close_all(self) -> None:
        """End every follow (a shutdown: WebSockets must not hold it up)."""
        for process_id in list(self._feeds):
            self._drop(process_id)

    def _drop(self, process_id: str) -> None:
        feed = self._feeds.pop(process_id)
        self._watcher.unwatch(feed)
        feed.close()


def _refresh(record: Record) -> None:
    """Take in what the supervisor recorded since the spawn (inputClosed): one small read."""
    try:
        state = read_state(record.dir)
    except (OSError, ValueError):
        return
    if state.get("inputClosed") and not record.input_closed:
        record.update(dict(record.state, inputClosed=True))


def _check_running(record: Record, what: str) -> None:
    if record.exited:
        raise Conflict(f"process {record.id} is not running (it is {record.status}); cannot {what}")
