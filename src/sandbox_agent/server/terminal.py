"""Input, resize and the terminal WebSocket of ``/v1/processes``: parse, call the engine, answer.

The WebSocket sends ``{"type":"ready"}``, then the terminal's output as binary frames, then
``{"type":"exit"}`` and closes; it takes ``input``, ``resize`` and ``close`` frames. The
output is read from the process's pty.log by the engine, so any number of clients can
attach, and a client that goes away leaves the process running.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, TypeGuard

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from starlette.responses import Response

from .._exceptions import BadRequest, Conflict, ProblemError
from ..engine import ProcessManager
from ..engine.logs.pty import PtyChunks, PtyEvent, PtyExit, PtyReplay
from . import problems
from .auth import ws_denial_headers
from .routes import _JSONBodyRoute
from .schemas import InputWritten, ProcessInput, TerminalResize

ENCODINGS = ("base64", "utf8", "text")

router = APIRouter(prefix="/v1", route_class=_JSONBodyRoute)

_JSON = "application/json"
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The request is wrong; `detail` says how (problem+json)"},
    401: {"description": "Missing or wrong bearer token (problem+json)"},
    404: {"description": "No such process (problem+json)"},
    409: {"description": "The process is not in a state for this; `detail` says what to do (problem+json)"},
}


class PayloadTooLarge(BadRequest):
    status = 413
    title = "Payload Too Large"


def decode_input(data: str, encoding: str | None, default: str, limit: int) -> bytes:
    """The bytes ``data`` stands for; BadRequest or PayloadTooLarge if unusable."""
    encoding = default if encoding is None else encoding
    if encoding not in ENCODINGS:
        raise BadRequest(f"encoding must be one of: {', '.join(ENCODINGS)}; got {encoding!r}")
    if encoding == "base64":
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest(
                f"data is not valid base64 ({exc}); encode it, or send it as is with encoding utf8"
            ) from None
    else:
        raw = data.encode("utf-8", "replace")
    if len(raw) > limit:
        raise PayloadTooLarge(
            f"this input is {len(raw)} bytes, more than the {limit} one request may carry "
            "(maxInputBytesPerRequest); send it in several requests"
        )
    return raw


def _manager(request: Request | WebSocket) -> ProcessManager:
    manager: ProcessManager = request.app.state.manager
    return manager


@router.post(
    "/processes/{process_id}/input",
    response_model=InputWritten,
    responses={**_PROBLEMS, 413: {"description": "More than maxInputBytesPerRequest (problem+json)"}},
    tags=["terminals"],
)
async def process_input(process_id: str, body: ProcessInput, request: Request) -> Response:
    """Send bytes to the terminal of a tty process or to stdin of an interactive one.

    Extension: `eof: true` closes stdin afterwards (a terminal gets ^D).
    """
    if body.data is None and not body.eof:
        # A missing field is a 422 on this dialect, as the original answers it.
        raise BadRequest(
            'the body needs data, for example {"data": "aGkK"} (base64) or {"eof": true}',
            status=422,
            title="Unprocessable Entity",
        )
    limit = _manager(request).config.max_input_bytes_per_request
    raw = decode_input(body.data or "", body.encoding, "base64", limit)
    manager = _manager(request)
    written = await manager.send_input(process_id, raw)
    if body.eof:
        await manager.close_input(process_id)
    return Response(json.dumps({"bytesWritten": written}), media_type=_JSON)


@router.post(
    "/processes/{process_id}/terminal/resize", response_model=TerminalResize, responses=_PROBLEMS, tags=["terminals"]
)
async def resize_terminal(process_id: str, body: TerminalResize, request: Request) -> Response:
    """Set the window size of a running tty process; it gets SIGWINCH."""
    await _manager(request).resize(process_id, body.cols, body.rows)
    return Response(json.dumps({"cols": body.cols, "rows": body.rows}), media_type=_JSON)


@router.get("/processes/{process_id}/terminal/ws", include_in_schema=False)
async def terminal_ws_without_upgrade(process_id: str) -> Response:
    """A plain GET of the WebSocket's path: say what it is (the original answers 400 too)."""
    raise BadRequest(
        "this path is a WebSocket: connect to it with a WebSocket client (Connection: Upgrade, "
        "Upgrade: websocket); the terminal's output can also be read with GET /v1/processes/{id}/logs"
    )


@router.websocket("/processes/{process_id}/terminal/ws")
async def terminal_ws(websocket: WebSocket, process_id: str) -> None:
    """The terminal of a tty process; ``?replay=BYTES`` first sends that much recent output."""
    manager = _manager(websocket)
    try:
        replay = _replay_bytes(websocket.query_params.get("replay"))
        record = manager.get(process_id)
        if not record.tty:
            raise Conflict(
                f"process {process_id} is not running in tty mode; start it with tty: true to attach a terminal, "
                "or use its logs and input endpoints"
            )
        events = manager.pty_follow(process_id, replay=replay)
    except ProblemError as exc:
        await _deny(websocket, exc)
        return
    async with contextlib.aclosing(events):
        await websocket.accept(subprotocol=_subprotocol(websocket))
        await websocket.send_text(json.dumps({"type": "ready", "processId": process_id}))
        output = asyncio.create_task(_send_output(websocket, events))
        commands = asyncio.create_task(_take_commands(websocket, manager, process_id))
        try:
            await asyncio.wait((output, commands), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (output, commands):
                task.cancel()
            for task in (output, commands):
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError, RuntimeError):
                    await task


async def _deny(websocket: WebSocket, exc: ProblemError) -> None:
    """Answer the handshake with a problem+json instead of accepting it."""
    response = problems.problem(exc.status, exc.title, exc.detail, path=websocket.scope["path"])
    headers = ws_denial_headers(response.headers.raw)
    await websocket.send({"type": "websocket.http.response.start", "status": exc.status, "headers": headers})
    await websocket.send({"type": "websocket.http.response.body", "body": response.body})


def _subprotocol(websocket: WebSocket) -> str | None:
    """The protocol to answer with: a browser fails a WebSocket that offered protocols and got
    none back, and one that offers only ``bearer.<token>`` (auth.py) gets that one."""
    offered = websocket.scope.get("subprotocols") or []
    for protocol in offered:
        if not protocol.lower().startswith("bearer."):
            return str(protocol)
    return str(offered[0]) if offered else None


def _replay_bytes(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest(f"replay must be a number of bytes, 0 or more; got {value!r}")
    return int(value)


async def _send_output(websocket: WebSocket, events: AsyncIterator[PtyEvent]) -> None:
    async for event in events:
        if isinstance(event, PtyChunks):
            for entry in event.entries:
                await websocket.send_bytes(entry.data)
        elif isinstance(event, PtyReplay):
            if event.data:
                await websocket.send_bytes(event.data)
        elif isinstance(event, PtyExit):
            await websocket.send_text(json.dumps({"type": "exit", "exitCode": event.state.get("exitCode")}))
            await websocket.close()
            return
    # The feed ended without an exit: the server is shutting down.
    await websocket.close(code=1012, reason="server restarting; reconnect")


async def _take_commands(websocket: WebSocket, manager: ProcessManager, process_id: str) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            await _error(websocket, "binary input is not supported; use text JSON frames")
            continue
        try:
            if await _command(manager, process_id, text):
                await websocket.close()
                return
        except ProblemError as exc:
            await _error(websocket, exc.detail)


async def _command(manager: ProcessManager, process_id: str, text: str) -> bool:
    """Carry out one client frame; True for ``close``."""
    try:
        frame = json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"invalid terminal frame: not JSON ({exc})") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise BadRequest('invalid terminal frame: it must be a JSON object with a "type"')
    kind = frame["type"]
    if kind == "input":
        data, encoding = frame.get("data"), frame.get("encoding")
        if not isinstance(data, str):
            raise BadRequest('invalid terminal frame: input needs "data", a string')
        if encoding is not None and not isinstance(encoding, str):
            raise BadRequest("invalid terminal frame: encoding must be a string")
        limit = manager.config.max_input_bytes_per_request
        await manager.send_input(process_id, decode_input(data, encoding, "utf8", limit))
    elif kind == "resize":
        cols, rows = frame.get("cols"), frame.get("rows")
        if not (_is_size(cols) and _is_size(rows)):
            raise BadRequest("invalid terminal frame: resize needs cols and rows, whole numbers from 0 to 65535")
        await manager.resize(process_id, cols, rows)
    elif kind == "close":
        return True
    else:
        raise BadRequest(f"invalid terminal frame: unknown type {kind!r}, expected one of input, resize, close")
    return False


def _is_size(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535


async def _error(websocket: WebSocket, message: str) -> None:
    await websocket.send_text(json.dumps({"type": "error", "message": message}))
