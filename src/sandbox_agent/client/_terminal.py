"""A process's terminal over its WebSocket: ``TerminalSession`` (sync) and ``AsyncTerminalSession``.

``TerminalProtocol`` holds what both share, with no I/O: the URL, the frames each way, the
session's state, and how a failure maps to the SDK's errors. The sessions move frames with
the ``websockets`` package, its threaded client and its asyncio client.

The server sends ``{"type":"ready"}`` first, then the terminal's output as binary frames,
then ``{"type":"exit","exitCode"}`` and closes. A session is handed out once ready.
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from .._exceptions import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    SandboxAgentError,
    ServerError,
    TerminalClosed,
    error_for_status,
)

__all__ = ["AsyncTerminalSession", "TerminalProtocol", "TerminalSession", "TerminalState"]

#: Seconds to wait for the handshake and the ready frame.
OPEN_TIMEOUT = 30.0
#: A terminal's output comes in chunks of at most 64 KiB; leave room.
MAX_FRAME = 1 << 20


class TerminalState(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    #: The process exited: its exit frame was received; no more output will come.
    EXITED = "exited"
    #: Closed by this client.
    CLOSED = "closed"


class TerminalProtocol:
    """The state and frames of one terminal session, with no I/O.

    ``received`` turns a frame from the server into output bytes (or None for a control
    frame); the ``*_frame`` methods build the frames to send.
    """

    def __init__(self, base_url: str, process_id: str, token: str | None, replay: int | None) -> None:
        self.process_id = process_id
        self.uri = terminal_url(base_url, process_id, replay)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.state = TerminalState.CONNECTING
        #: Once exited: the exit code (None when a signal ended the process).
        self.exit_code: int | None = None

    # -- opening --------------------------------------------------------------------

    def opened(self, message: str | bytes) -> None:
        """The first frame: it must be ``ready``."""
        frame = _control(message)
        if frame is None or frame.get("type") != "ready":
            raise ServerError(
                f"the terminal WebSocket of process {self.process_id} did not start with a ready frame; "
                "is this a sandbox-agent server?"
            )
        self.state = TerminalState.OPEN

    def refused(self, exc: Exception) -> SandboxAgentError:
        """The error for a handshake that failed."""
        if isinstance(exc, InvalidStatus):
            response = exc.response
            detail = None
            try:
                body = json.loads(response.body or b"")
                detail = body.get("detail") if isinstance(body, dict) else None
            except ValueError:
                pass
            if not isinstance(detail, str) or not detail:
                detail = f"the terminal WebSocket was refused with {response.status_code} {response.reason_phrase}"
            return error_for_status(response.status_code, detail)
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, (InvalidURI, InvalidHandshake)):
            return ServerError(f"the terminal WebSocket at {self.uri} failed its handshake: {reason}")
        return ConnectionFailed(f"cannot open the terminal WebSocket at {self.uri}: {reason}")

    # -- receiving ------------------------------------------------------------------

    def received(self, message: str | bytes) -> bytes | None:
        """Output bytes, or None for a control frame. An exit frame ends the session;
        an error frame (the answer to a bad frame this client sent) raises ``BadRequest``."""
        if isinstance(message, bytes):
            return message
        frame = _control(message)
        if frame is None:
            return None  # not ours to understand: a newer server's frame
        kind = frame.get("type")
        if kind == "exit":
            code = frame.get("exitCode")
            self.exit_code = code if isinstance(code, int) else None
            self.state = TerminalState.EXITED
        elif kind == "error":
            raise BadRequest(str(frame.get("message") or "the terminal refused a frame"))
        return None

    def dropped(self, exc: Exception) -> SandboxAgentError:
        """The connection ended while this session was open: closed by us, or broken."""
        if self.state is TerminalState.CLOSED:
            return TerminalClosed(f"the terminal session of process {self.process_id} was closed")
        reason = f" ({exc})" if str(exc) else ""
        return ConnectionFailed(
            f"the terminal WebSocket of process {self.process_id} closed before the process exited{reason}; "
            "the process keeps running: attach again"
        )

    # -- sending --------------------------------------------------------------------

    def check_sendable(self) -> None:
        if self.state is TerminalState.CLOSED:
            raise TerminalClosed(f"the terminal session of process {self.process_id} was closed")
        if self.state is TerminalState.EXITED:
            raise Conflict(f"process {self.process_id} has exited; its terminal takes no more input")

    def input_frame(self, data: bytes | str) -> str:
        """``str`` goes as UTF-8, ``bytes`` as base64."""
        self.check_sendable()
        if isinstance(data, str):
            return json.dumps({"type": "input", "data": data})
        if isinstance(data, (bytes, bytearray, memoryview)):
            return json.dumps({"type": "input", "data": base64.b64encode(data).decode("ascii"), "encoding": "base64"})
        raise TypeError(f"terminal input must be str or bytes, not {type(data).__name__}")

    def resize_frame(self, cols: int, rows: int) -> str:
        self.check_sendable()
        return json.dumps({"type": "resize", "cols": cols, "rows": rows})

    def close_frame(self) -> str | None:
        """The frame that asks the server to close, or None when there is nothing to close."""
        state, self.state = self.state, TerminalState.CLOSED
        return json.dumps({"type": "close"}) if state is TerminalState.OPEN else None


def terminal_url(base_url: str, process_id: str, replay: int | None) -> str:
    """The WebSocket URL of a process's terminal: ``ws://`` for ``http://``, ``wss://`` for ``https://``."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = f"{parts.path.rstrip('/')}/v1/processes/{quote(process_id, safe='')}/terminal/ws"
    if replay is not None and replay < 0:
        raise ValueError(f"replay must be a number of bytes, 0 or more; got {replay}")
    query = "" if replay is None else f"replay={replay}"
    return urlunsplit((scheme, parts.netloc, path, query, ""))


def _control(message: str | bytes) -> dict[str, Any] | None:
    if isinstance(message, bytes):
        return None
    try:
        frame = json.loads(message)
    except ValueError:
        return None
    return frame if isinstance(frame, dict) else None


# -- sync -------------------------------------------------------------------------------


class TerminalSession:
    """The terminal of a running tty process: its output, input and size.

    Get one from ``client.processes.terminal(id)``; it is ready when you have it. Any
    number of sessions may be open on one process; closing one leaves the process running.

    Usage::

        with client.processes.terminal(process.id) as term:
            term.send("echo hi; exit 3\\n")
            for chunk in term:  # output bytes, until the process exits
                sys.stdout.buffer.write(chunk)
            print(term.exit_code)  # 3

    ``send`` and ``resize`` may be called from another thread than the one reading.
    """

    def __init__(self, protocol: TerminalProtocol, open_timeout: float | None = OPEN_TIMEOUT) -> None:
        self._protocol = protocol
        try:
            ws = connect(
                protocol.uri, additional_headers=protocol.headers, open_timeout=open_timeout, max_size=MAX_FRAME
            )
            # Entered as a context manager would be (websockets 17.1 warns about a connection
            # that was not; 13.1, the floor, has no other way to say it), closed by close().
            self._ws: ClientConnection = ws.__enter__()
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise protocol.refused(exc) from exc
        try:
            protocol.opened(self._ws.recv(timeout=open_timeout))
        except BaseException as exc:
            self._ws.close()
            if isinstance(exc, (ConnectionClosed, TimeoutError)):
                raise protocol.dropped(exc) from exc
            raise

    @property
    def process_id(self) -> str:
        return self._protocol.process_id

    @property
    def state(self) -> TerminalState:
        return self._protocol.state

    @property
    def exit_code(self) -> int | None:
        """The process's exit code once the session saw it exit (``state`` is EXITED)."""
        return self._protocol.exit_code

    def recv(self, timeout: float | None = None) -> bytes | None:
        """The next output, or None once the process has exited.

        Raises ``TimeoutError`` after ``timeout`` seconds without output, ``TerminalClosed``
        once this session was closed, ``ConnectionFailed`` if the connection broke.
        """
        protocol = self._protocol
        while True:
            if protocol.state is TerminalState.EXITED:
                return None
            if protocol.state is TerminalState.CLOSED:
                raise protocol.dropped(RuntimeError())
            try:
                message = self._ws.recv(timeout=timeout)
            except ConnectionClosed as exc:
                raise protocol.dropped(exc) from exc
            data = protocol.received(message)
            if data is not None:
                return data

    def __iter__(self) -> Iterator[bytes]:
        while (data := self.recv()) is not None:
            yield data

    def send(self, data: bytes | str) -> None:
        """Type ``data`` into the terminal: ``str`` is sent as UTF-8, ``bytes`` as they are."""
        self._send(self._protocol.input_frame(data))

    def resize(self, cols: int, rows: int) -> None:
        """Set the terminal's size; the process gets SIGWINCH."""
        self._send(self._protocol.resize_frame(cols, rows))

    def close(self) -> None:
        """Leave the terminal; the process keeps running. Closing twice does nothing."""
        frame = self._protocol.close_frame()
        if frame is not None:
            try:
                self._ws.send(frame)
            except ConnectionClosed:
                pass
        self._ws.close()

    def __enter__(self) -> TerminalSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TerminalSession {self.process_id} {self.state.value}>"

    def _send(self, frame: str) -> None:
        try:
            self._ws.send(frame)
        except ConnectionClosed as exc:
            raise self._protocol.dropped(exc) from exc


# -- async ------------------------------------------------------------------------------


class AsyncTerminalSession:
    """``TerminalSession`` for asyncio: the same methods, awaited.

    Usage::

        async with await client.processes.terminal(process.id) as term:
            await term.send("echo hi; exit 3\\n")
            async for chunk in term:
                print(chunk)
            print(term.exit_code)  # 3
    """

    def __init__(self, protocol: TerminalProtocol, ws: AsyncConnection) -> None:
        self._protocol = protocol
        self._ws = ws

    @classmethod
    async def open(cls, protocol: TerminalProtocol, open_timeout: float | None = OPEN_TIMEOUT) -> AsyncTerminalSession:
        import asyncio

        try:
            ws = await async_connect(
                protocol.uri, additional_headers=protocol.headers, open_timeout=open_timeout, max_size=MAX_FRAME
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise protocol.refused(exc) from exc
        try:
            async with asyncio.timeout(open_timeout):
                protocol.opened(await ws.recv())
        except BaseException as exc:
            await ws.close()
            if isinstance(exc, (ConnectionClosed, TimeoutError)):
                raise protocol.dropped(exc) from exc
            raise
        return cls(protocol, ws)

    @property
    def process_id(self) -> str:
        return self._protocol.process_id

    @property
    def state(self) -> TerminalState:
        return self._protocol.state

    @property
    def exit_code(self) -> int | None:
        return self._protocol.exit_code

    async def recv(self) -> bytes | None:
        """The next output, or None once the process has exited (see ``TerminalSession.recv``)."""
        protocol = self._protocol
        while True:
            if protocol.state is TerminalState.EXITED:
                return None
            if protocol.state is TerminalState.CLOSED:
                raise protocol.dropped(RuntimeError())
            try:
                message = await self._ws.recv()
            except ConnectionClosed as exc:
                raise protocol.dropped(exc) from exc
            data = protocol.received(message)
            if data is not None:
                return data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while (data := await self.recv()) is not None:
            yield data

    async def send(self, data: bytes | str) -> None:
        await self._send(self._protocol.input_frame(data))

    async def resize(self, cols: int, rows: int) -> None:
        await self._send(self._protocol.resize_frame(cols, rows))

    async def aclose(self) -> None:
        frame = self._protocol.close_frame()
        if frame is not None:
            try:
                await self._ws.send(frame)
            except ConnectionClosed:
                pass
        await self._ws.close()

    async def __aenter__(self) -> AsyncTerminalSession:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<AsyncTerminalSession {self.process_id} {self.state.value}>"

    async def _send(self, frame: str) -> None:
        try:
            await self._ws.send(frame)
        except ConnectionClosed as exc:
            raise self._protocol.dropped(exc) from exc
