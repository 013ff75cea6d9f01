"""Bearer token check for ``/v1`` (health excepted), HTTP and WebSocket alike.

Browsers cannot set headers on a WebSocket, so there the token may also come as an
entry of ``Sec-WebSocket-Protocol``: ``bearer.<token>`` (or the bare token), and on the
terminal WebSocket alone as ``?access_token=<token>`` (where the published SDK puts it).
"""

from __future__ import annotations

import functools
import hmac
import re
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from . import problems
from .config import is_loopback

_OPEN_PATHS = frozenset({"/v1/health"})
#: The only path where the token may come in the query string.
_QUERY_TOKEN_PATH = re.compile(r"/v1/processes/[^/]+/terminal/ws")


class Bearer:
    """The token check: which requests need the token, and whether one offers it."""

    def __init__(self, token: str | None) -> None:
        self.token = token.encode() if token else None

    def refuses(self, scope: Scope) -> bool:
        """The request needs the token and does not offer it."""
        return self.token is not None and self.guarded(scope) and not self.authorized(scope)

    @staticmethod
    def guarded(scope: Scope) -> bool:
        path: str = scope["path"]
        if not path.startswith("/v1/") or path in _OPEN_PATHS:
            return False
        # CORS preflights carry no credentials by design.
        return not (scope["type"] == "http" and scope["method"] == "OPTIONS")

    def authorized(self, scope: Scope) -> bool:
        assert self.token is not None
        offered: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credential = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    offered.append(credential.strip())
            elif name == b"sec-websocket-protocol" and scope["type"] == "websocket":
                for entry in value.split(b","):
                    entry = entry.strip()
                    offered.append(entry[len(b"bearer.") :] if entry.lower().startswith(b"bearer.") else entry)
        if scope["type"] == "websocket" and _QUERY_TOKEN_PATH.fullmatch(scope["path"]):
            query = scope.get("query_string", b"").decode("latin-1")
            offered += [value.encode() for name, value in parse_qsl(query) if name == "access_token"]
        # compare_digest on each candidate: the time taken says nothing about the token.
        ok = False
        for candidate in offered:
            ok |= hmac.compare_digest(candidate, self.token)
        return ok


class TokenAuth:
    def __init__(self, app: ASGIApp, bearer: Bearer) -> None:
        self.app = app
        self.bearer = bearer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.bearer.refuses(scope):
            await self.app(scope, receive, send)
            return
        await _refuse(
            scope,
            send,
            401,
            "Unauthorized",
            "this server needs a token: send the header 'Authorization: Bearer <token>' "
            "(the value given to --token or SANDBOX_AGENT_TOKEN)",
            [(b"www-authenticate", b'Bearer realm="sandbox-agent"')],
        )


class BrowserPolicy:
    """What a hostile web page could send to a server on this machine, refused.

    A page on another site can make the browser send a "simple" cross-origin POST
    without any preflight, and a name that resolves to 127.0.0.1 (DNS rebinding) makes
    even a same-origin page reach us. So, on ``/v1``:

    - a request whose ``Origin`` is neither this server's own nor an allowed CORS
      origin is refused;
    - without a token, the ``Host`` must name a loopback address: a rebinding name is
      refused. (With a token, or with ``--no-token`` on purpose, any name may be used.)
    """

    def __init__(self, *, allowed_origins: list[str], check_host: bool) -> None:
        self.any_origin = "*" in allowed_origins
        self.allowed_origins = {origin.rstrip("/").lower() for origin in allowed_origins}
        self.check_host = check_host

    def problem(self, origin: bytes | None, host: bytes) -> str | None:
        """Why a request with these headers is refused; None if it is not."""
        host_text = host.decode("latin-1").lower()
        if self.check_host and not _is_loopback_host(host_text):
            return (
                f"requests for host {host_text!r} are refused: without a token this server answers only to "
                "localhost, 127.0.0.1 or [::1]. Use one of those, or start the server with --token."
            )
        if origin is None or self.any_origin:
            return None
        origin_text = origin.decode("latin-1").rstrip("/").lower()
        if origin_text in self.allowed_origins or origin_text.partition("://")[2] == host_text:
            return None
        return (
            f"cross-origin request from {origin_text} refused; to let pages from it use the API, "
            f"start the server with --cors-allow-origin {origin_text}"
        )


class BrowserGuard:
    """``BrowserPolicy`` on ``/v1``, HTTP and WebSocket alike: a 403 for what it refuses."""

    def __init__(self, app: ASGIApp, policy: BrowserPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"].startswith("/v1/"):
            headers = {name: value for name, value in scope["headers"] if name in (b"origin", b"host")}
            problem = self.policy.problem(headers.get(b"origin"), headers.get(b"host", b""))
            if problem is not None:
                await _refuse(scope, send, 403, "Forbidden", problem)
                return
        await self.app(scope, receive, send)


@functools.lru_cache(maxsize=64)
def _is_loopback_host(host: str) -> bool:
    """Whether a ``Host`` header names a loopback host (remembered: a client sends the
    same one every time, and parsing the address was a thirtieth of a run's CPU)."""
    return is_loopback(_hostname(host))


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if ":" in host else host


async def _refuse(
    scope: Scope, send: Send, status: int, title: str, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer with a problem+json before the application sees the request."""
    body = problems.body(scope["path"], status, title, detail)
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    headers += extra or []
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": ws_denial_headers(headers)})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


def ws_denial_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Headers of an HTTP answer to a WebSocket handshake, without Content-Length.

    uvicorn's websockets-sansio adds Content-Length only when it is missing, but a client
    refuses an answer with two, so we leave it to uvicorn. (Before 0.52.1 it also added a
    second Content-Type; that is why the floor is 0.52.1.)
    """
    return [(name, value) for name, value in headers if name.lower() != b"content-length"]
