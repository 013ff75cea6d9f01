"""The hottest read, answered before FastAPI's routing: GET of one process.

A coding agent polls ``GET /v1/processes/{id}`` (or ``/v1/process/{id}``) until its
command exits. Routing, dependency solving and the exception layers cost FastAPI more
than the answer itself, which is cached bytes (``render``). This middleware sits inside
the security ones (token, browser guard, body limit), so it answers only what they let
through, and it answers only a plain GET of a process that exists; everything else (a
query string, an unknown id, an error to explain) goes on to the routes, which stay the
one place that speaks problem+json. The answer is the route's own, byte for byte
(``tests/test_fastlane.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from .._exceptions import SandboxAgentError
from ..engine import ProcessManager
from ..engine.records import Record
from . import render

_JSON_HEADERS = [(b"content-type", b"application/json")]
#: Path prefix -> how that dialect renders a process.
_DIALECTS: tuple[tuple[str, Callable[[Record], bytes]], ...] = (
    ("/v1/processes/", render.process_info),
    ("/v1/process/", render.process_v1),
)


class FastLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            body = self._answer(scope)
            if body is not None:
                headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _answer(scope: Scope) -> bytes | None:
        path: str = scope["path"]
        for prefix, render_one in _DIALECTS:
            if path.startswith(prefix):
                key = path[len(prefix) :]
                if not key or "/" in key:
                    return None
                manager: ProcessManager = scope["app"].state.manager
                try:
                    record = manager.get(key)
                except SandboxAgentError:
                    return None  # unknown, or not an id: the route says so properly
                return render_one(record)
        return None
