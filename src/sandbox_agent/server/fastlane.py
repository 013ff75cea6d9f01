"""The hottest requests, answered before FastAPI: a plain GET of one process, and the plain
starts and one-shot runs a coding agent sends by the hundred.

A coding agent starts a short command (``POST /v1/processes``, ``/v1/process`` or
``/v1/processes/run``), then polls ``GET /v1/processes/{id}`` until it exits. The layers
of the stack (the security middlewares, Starlette's and FastAPI's own, routing,
dependency solving, body validation) cost more than the answer itself. So the lane is
the outermost application: it applies the stack's token check and browser guard itself
(the same objects), hands anything they would refuse to the stack to refuse, and answers
only what it can check completely by itself:

- a GET without a query string of a process that exists (the answer is cached bytes,
  ``render``);
- a start or run whose body is a JSON object of only ``command`` (text), ``args`` (a list
  of text), ``cwd`` and ``env`` (text to text) (a run also ``timeoutMs`` and
  ``maxOutputBytes``, whole numbers 0 or more), each of the type the route's schema takes.

Everything else (a query string, an unknown id, any other field, a value of another type)
goes on to the routes, which stay the one place that explains a malformed request. The
answers are the routes' own, byte for byte, errors of the engine included
(``tests/test_fastlane.py``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._exceptions import ProblemError, SandboxAgentError
from ..engine import ProcessManager, SpawnRequest
from ..engine.records import Record
from ..engine.run import RunRequest
from . import problems, render
from .auth import Bearer, BrowserPolicy
from .problems import domain_problem

_JSON = b"application/json"
#: Path prefix -> how that dialect renders a process.
_DIALECTS: tuple[tuple[str, Callable[[Record], bytes]], ...] = (
    ("/v1/processes/", render.process_info),
    ("/v1/process/", render.process_v1),
)
#: The start and run routes, and the fields of their bodies the lane takes.
_BASE_FIELDS = frozenset(("command", "args", "cwd", "env"))
_RUN_FIELDS = _BASE_FIELDS | {"timeoutMs", "maxOutputBytes"}
_POSTS = {"/v1/processes": _BASE_FIELDS, "/v1/process": _BASE_FIELDS, "/v1/processes/run": _RUN_FIELDS}
#: A start body larger than this goes to the routes (an environment that large is rare).
_MAX_BODY = 64 * 1024
#: Sends one of the lane's answers: status, body and the headers beside the content's.
Respond = Callable[[int, bytes, tuple[tuple[bytes, bytes], ...]], Awaitable[None]]


class FastLane:
    """The outermost application: answers what it can (see the module's doc), hands the
    rest to ``app``, the whole stack.

    It answers only what that stack's token check and browser guard would let through
    (``_admits``), and only requests without an ``Origin`` (a browser's, whose CORS
    headers are the stack's to add); everything else goes to the stack, which refuses or
    answers it in full. Bodies it reads are small (``_MAX_BODY``), far below the stack's
    limit.
    """

    def __init__(self, app: ASGIApp, manager: ProcessManager, bearer: Bearer, policy: BrowserPolicy) -> None:
        self.app = app
        self.manager = manager
        self.bearer = bearer
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            if method == "GET":
                body = self.answer(scope)
                if body is not None:
                    await _respond(send, 200, body)
                    return
            elif method == "POST" and self.takes_post(scope):
                await self.post(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def answer(self, scope: Scope) -> bytes | None:
        """The body of the lane's 200 to this GET, or None if the stack is to answer it."""
        if scope["query_string"] or not self._admits(scope):
            return None
        return self._answer(scope["path"])

    def takes_post(self, scope: Scope) -> bool:
        """This POST is a start or a run the lane may take (its body decides: ``post``)."""
        return not scope["query_string"] and scope["path"] in _POSTS and self._admits(scope)

    def _admits(self, scope: Scope) -> bool:
        """The stack would let this request through to the routes, untouched."""
        host = b""
        for name, value in scope["headers"]:
            if name == b"origin":
                return False
            if name == b"host":
                host = value
        return self.policy.problem(None, host) is None and not self.bearer.refuses(scope)

    def _answer(self, path: str) -> bytes | None:
        for prefix, render_one in _DIALECTS:
            if path.startswith(prefix):
                key = path[len(prefix) :]
                if not key or "/" in key:
                    return None
                try:
                    record = self.manager.get(key)
                except SandboxAgentError:
                    return None  # unknown, or not an id: the route says so properly
                if not record.exited:
                    self.manager.read_told_exits()
                return render_one(record)
        return None

    async def post(self, scope: Scope, receive: Receive, send: Send, respond: Respond | None = None) -> None:
        """Answer a POST that ``takes_post``: a start or a run with a body the lane can take
        whole, else the routes' answer. ``respond`` sends the lane's own answers (by
        default as two ASGI messages on ``send``)."""
        body = await _read_body(scope, receive)
        fields = None if body is None else _simple_body(body, scope["path"])
        if fields is None:
            await self.app(scope, _replay(body, receive), send)
            return
        path: str = scope["path"]
        try:
            status, answer, headers = await self._start(path, fields)
        except ProblemError as exc:
            response = domain_problem(exc, path)
        except Exception:
            response = problems.unexpected("POST", path)
        else:
            if respond is None:
                await _respond(send, status, answer, *headers)
            else:
                await respond(status, answer, headers)
            return
        await response(scope, receive, send)

    async def _start(self, path: str, fields: dict[str, Any]) -> tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]:
        """Status, body and more headers of the answer to a start or run the lane takes."""
        manager = self.manager
        request = {"command": fields["command"], "args": fields.get("args", []), "cwd": fields.get("cwd")}
        if path == "/v1/processes/run":
            result = await manager.run(
                RunRequest(**request, env=fields.get("env", {})),
                timeout_ms=fields.get("timeoutMs"),
                max_output_bytes=fields.get("maxOutputBytes"),
            )
            return 200, render.run_result(result), ()
        if path == "/v1/processes":
            record = await manager.spawn(
                SpawnRequest(**request, env=fields.get("env", {})),
                max_running=manager.config.max_concurrent_processes,
            )
            return 200, render.process_info(record), ()
        record = await manager.spawn(SpawnRequest(**request, env=fields.get("env")))
        return 201, render.process_v1(record), ((b"location", f"/v1/process/{record.id}".encode()),)


def _simple_body(body: bytes, path: str) -> dict[str, Any] | None:
    """The body's fields if it is one the lane takes whole (see the module's doc), else None."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or not _POSTS[path].issuperset(data) or type(data.get("command")) is not str:
        return None
    args = data.get("args", [])
    if type(args) is not list or any(type(arg) is not str for arg in args):
        return None
    cwd = data.get("cwd")
    if cwd is not None and type(cwd) is not str:
        return None
    # /v1/process takes a null env (none added); /v1/processes wants an object or nothing.
    env = data.get("env", {})
    if env is None and path == "/v1/process":
        env = {}
    if type(env) is not dict or any(type(value) is not str for value in env.values()):
        return None
    for name in ("timeoutMs", "maxOutputBytes"):
        value = data.get(name)
        if value is not None and (type(value) is not int or value < 0):
            return None
    return data


async def _read_body(scope: Scope, receive: Receive) -> bytes | None:
    """The whole body, if its Content-Length says it is small; None to leave it unread."""
    length = next((value for name, value in scope["headers"] if name == b"content-length"), None)
    if length is None or not length.isdigit() or int(length) > _MAX_BODY:
        return None
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # the client went away: the routes' own handling follows
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes | None, receive: Receive) -> Receive:
    """``receive`` for the routes: the body the lane read first, then the connection's own."""
    if body is None:
        return receive
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


async def _respond(send: Send, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    raw = [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON), *headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
