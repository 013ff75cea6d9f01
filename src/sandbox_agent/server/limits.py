"""Bounds on what one request may make the server hold."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import problem

#: The largest request body: far above any start request or input the API takes, far
#: below what would strain the server (the original's limit is 2 MB too).
MAX_BODY_BYTES = 2 * 1024 * 1024


class BodyLimit:
    """413 for a body over ``max_bytes``, by its Content-Length or as it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_bytes
                except ValueError:
                    too_large = False
                if too_large:
                    await self._refuse(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException: FastAPI passes it on while it reads a body (it
                    # turns anything else into a 400), and problems.py renders it.
                    raise HTTPException(413, self.detail)
            return message

        await self.app(scope, limited_receive, send)

    @property
    def detail(self) -> str:
        return (
            f"the request body is over {self.max_bytes // (1024 * 1024)} MiB, more than any request of this API "
            "needs; send less (a large input in several requests)"
        )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await problem(413, "Content Too Large", self.detail, path=scope["path"])(scope, receive, send)
