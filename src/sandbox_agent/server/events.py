"""``GET /v1/events``: the processes' lifecycle as Server-Sent Events (SPEC section 8).

Each event is ``id: <n>``, ``event: created|ready|restarted|exited|deleted`` and the
process as its data, as it was when the event happened, in the shape of the dialect asked
for. A client reconnecting with ``Last-Event-ID`` gets the events after that id from the
server's in-memory history (``engine/events.py``); when the history no longer holds them
(too old, or handed out before a restart of the server), it gets an ``event: reset``
whose data is the current list, ``{"processes": [...]}``, and the events from there on.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response, StreamingResponse

from .._exceptions import BadRequest
from ..engine import ProcessManager, Record
from ..engine.events import HISTORY, Event, Reset
from . import render
from .sse import KEEPALIVE

router = APIRouter(prefix="/v1", tags=["events"])

_ID = re.compile(r"[0-9]{1,19}")
_DESCRIPTION = (
    "Extension: a text/event-stream of `created`, `ready`, `restarted`, `exited` and `deleted` events, each "
    "with `id: <n>` and the process (as it was then) as its data, from the moment of connection (a fresh stream "
    "starts with a bare `id:` line, no event, so that a client has an id to resume from at once). Reconnect "
    f"with Last-Event-ID to resume: the server holds the last {HISTORY} events; an id it no longer holds (or "
    "one from before a restart of the server) gets an `event: reset` whose data is the current list "
    '`{"processes": [...]}`, then the events after it. A comment line every 15 s keeps the connection open.'
)


@router.get(
    "/events",
    description=_DESCRIPTION,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The events"},
        400: {"description": "Last-Event-ID is not an event id (problem+json)"},
        401: {"description": "Missing or wrong bearer token (problem+json)"},
    },
    response_class=Response,
)
async def events(
    request: Request,
    dialect: Annotated[
        Literal["process", "processes"],
        Query(description="The shape of the process: process (/v1/process, the default) or processes"),
    ] = "process",
    last_event_id: Annotated[str, Header(description="Resume after this event id")] = "",
) -> Response:
    manager: ProcessManager = request.app.state.manager
    after = None
    if last_event_id.strip():
        if not _ID.fullmatch(last_event_id.strip()):
            raise BadRequest(
                f"Last-Event-ID {last_event_id[:40]!r} is not an event id of this stream (a number); "
                "reconnect without it to start from now"
            )
        after = int(last_event_id)
    if dialect == "process":
        one, listing = render.process_v1, _list_v1
    else:
        one, listing = render.process_info, _list_processes
    return StreamingResponse(
        _stream(manager, after, one, listing),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _list_v1(manager: ProcessManager) -> bytes:
    return render.process_list_v1(manager.processes())


def _list_processes(manager: ProcessManager) -> bytes:
    return render.process_info_list(reversed(manager.processes()))


async def _stream(
    manager: ProcessManager,
    after: int | None,
    one: Callable[[Record], bytes],
    listing: Callable[[ProcessManager], bytes],
) -> AsyncIterator[bytes]:
    # Something at once: a client (and a proxy) knows the stream is open before any event.
    # A fresh stream starts with an id and no data (no event is dispatched): a client that
    # drops before the first event resumes from here all the same.
    if after is None:
        after = manager.events.last_id
        yield b": connected\nid: %d\n\n" % after
    else:
        yield b": connected\n\n"
    subscription: Any = manager.events.subscribe(after)
    async with contextlib.aclosing(subscription):
        async for event in subscription:
            if isinstance(event, Event):
                yield b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.kind.encode(), one(event.record))
            elif isinstance(event, Reset):
                yield b"id: %d\nevent: reset\ndata: %s\n\n" % (event.last_id, listing(manager))
            else:
                yield KEEPALIVE
