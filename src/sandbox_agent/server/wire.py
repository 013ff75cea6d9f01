"""The fast lane's answers written at the HTTP connection itself, in one write.

Under uvicorn, every request becomes an ASGI cycle: a task, its scope, two ``send``
messages checked header by header, two writes to the socket (the head, then the body).
For the lane's answers (``fastlane.py``) that machinery is most of the server's own
work, and the two writes reach the client as two segments: a client that reads the head
first wakes twice for one answer. So the connection's protocol is uvicorn's own
``HttpToolsProtocol`` with one step changed, where a parsed request's head becomes an
ASGI task (``_start_asgi_task``):

- a GET the lane answers is answered right there, without a task, and in one write;
- a POST the lane takes runs in a task of its own that reads the body through the cycle,
  and answers in one write (what it hands to the stack goes through the cycle as usual);
- everything else, and everything while the client is not reading its answers (writing
  paused) or has more requests queued behind this one, goes on as uvicorn would.

The lane's answers keep what uvicorn's would have: its default headers (``date``,
``server``), ``connection: close`` when the connection is not kept alive, and the cycle's
state, so the connection's keep-alive, pipelining and shutdown go on unchanged. The
access log is uvicorn's to write: with it on, nothing is taken here.

``http_protocol`` returns this protocol when the installed uvicorn has the step and the
cycle's fields it relies on (checked once), else uvicorn's own.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from .fastlane import FastLane

logger = logging.getLogger("sandbox_agent.server")

_STATUS = {200: b"HTTP/1.1 200 OK\r\n", 201: b"HTTP/1.1 201 Created\r\n"}
_CYCLE_FIELDS = frozenset(("default_headers", "keep_alive", "on_response", "access_log", "transport"))


class LaneProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering the fast lane's requests itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lane = _find_lane(self.app)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # A request is starting: no keep-alive timeout may run under it. uvicorn arms one
        # when an answer completes and cancels it when data comes; an answer completed
        # here, while the parser is still in the data that brought it, would otherwise
        # leave it armed under the next request of that data (a pipelined run cut off
        # after the timeout).
        self._unset_keepalive_if_required()
        lane = self._lane
        if lane is None or app is not self.app or cycle.access_log or self.pipeline or self.flow.write_paused:
            super()._start_asgi_task(cycle, app)
            return
        scope: Any = cycle.scope
        method = scope["method"]
        if method == "GET":
            try:
                body = lane.answer(scope)
            except Exception:
                # Raised here, it would reach the HTTP parser and become a 400: the stack
                # answers instead (with a 500 if it fails the same way), and it is logged.
                logger.exception("the fast lane failed to answer GET %s", scope["path"])
                body = None
            if body is not None:
                _finish(cycle, 200, body, ())
                return
        elif method == "POST" and lane.takes_post(scope):
            post: Any = _LanePost(lane, cycle, self)  # an ASGI app by Starlette's types, not uvicorn's
            task = self.loop.create_task(cycle.run_asgi(post))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)
            return
        super()._start_asgi_task(cycle, app)


class _LanePost:
    """The ASGI application of one POST the lane takes: its own answers in one write."""

    def __init__(self, lane: FastLane, cycle: RequestResponseCycle, protocol: LaneProtocol) -> None:
        self.lane = lane
        self.cycle = cycle
        self.protocol = protocol

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.lane.post(scope, receive, send, self.respond)

    async def respond(self, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        cycle = self.cycle
        if cycle.disconnected:
            return
        flow = self.protocol.flow
        if flow.write_paused:
            await flow.drain()
        _finish(cycle, status, body, headers)


def _finish(cycle: RequestResponseCycle, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...]) -> None:
    """Write a whole JSON answer on ``cycle``'s connection and complete the cycle, as the
    cycle's own ``send`` would have for the same two messages."""
    head = [_STATUS[status]]
    for name, value in (*cycle.default_headers, *headers):
        head += (name, b": ", value, b"\r\n")
    head += (b"content-length: ", str(len(body)).encode(), b"\r\ncontent-type: application/json\r\n")
    if cycle.keep_alive and _asks_close(cycle.scope["headers"]):
        cycle.keep_alive = False  # uvicorn before 0.53 sets it from the request's version alone
    if not cycle.keep_alive:
        head.append(b"connection: close\r\n")
    head += (b"\r\n", body)
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.transport.write(b"".join(head))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()


def _asks_close(headers: Any) -> bool:
    """The request's ``Connection`` header says ``close``."""
    for name, value in headers:
        if name == b"connection" and b"close" in (token.strip().lower() for token in value.split(b",")):
            return True
    return False


def _find_lane(app: Any) -> FastLane | None:
    """The fast lane under uvicorn's wrappers of ``app`` (if any), else None."""
    for _ in range(4):
        if isinstance(app, FastLane):
            return app
        app = getattr(app, "app", None)
    return None


def http_protocol() -> type[asyncio.Protocol] | str:
    """``LaneProtocol`` if this uvicorn has what it relies on, else uvicorn's ``httptools``."""
    cycle_fields = set(inspect.signature(RequestResponseCycle.__init__).parameters)
    steps = ("_start_asgi_task", "_unset_keepalive_if_required")
    if all(callable(getattr(HttpToolsProtocol, step, None)) for step in steps) and cycle_fields >= _CYCLE_FIELDS:
        return LaneProtocol
    return "httptools"
