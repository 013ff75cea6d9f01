"""Bearer token check for ``/v1`` (health excepted), HTTP and WebSocket alike.

Browsers cannot set headers on a WebSocket, so there the token may also come as an
entry of ``Sec-WebSocket-Protocol``: ``bearer.<token>`` (or the bare token).
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

_OPEN_PATHS = frozenset({"/v1/health"})


class TokenAuth:
    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] not in ("http", "websocket") or not self._guarded(scope):
            await self.app(scope, receive, send)
            return
        if self._authorized(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Unauthorized",
                "status": 401,
                "detail": "this server needs a token: send the header 'Authorization: Bearer <token>' "
                "(the value given to --token or SANDBOX_AGENT_TOKEN)",
            }
        ).encode()
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="sandbox-agent"'),
        ]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})

    @staticmethod
    def _guarded(scope: Scope) -> bool:
        path: str = scope["path"]
        if not path.startswith("/v1/") or path in _OPEN_PATHS:
            return False
        # CORS preflights carry no credentials by design.
        return not (scope["type"] == "http" and scope["method"] == "OPTIONS")

    def _authorized(self, scope: Scope) -> bool:
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
        # compare_digest on each candidate: the time taken says nothing about the token.
        ok = False
        for candidate in offered:
            ok |= hmac.compare_digest(candidate, self.token)
        return ok
