"""Errors raised by the engine and by the client, one hierarchy for both.

    SandboxAgentError
    ├── ConnectionFailed        (client only: the server could not be reached, or a link broke)
    ├── TerminalClosed          (client only: a terminal session used after this client closed it)
    └── ProblemError            (anything the API answers with problem+json)
        ├── BadRequest          400: the request itself is wrong
        ├── Unauthorized        401: missing or wrong token
        ├── NotFound            404: no such process (or route)
        ├── Conflict            409: the process is in the wrong state for this
        └── ServerError         5xx: our fault, not the caller's
            ├── ServiceUnavailable  503: not now (shutting down): retry shortly
            ├── ReadinessTimeout    504: started, but not ready in time (it was left running)
            └── InsufficientStorage 507: the data directory's disk is full

The server maps each class to its status in one place; the client maps the status back
to the class, so ``except sandbox_agent.NotFound`` works the same on both sides.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "Conflict",
    "ConnectionFailed",
    "InsufficientStorage",
    "NotFound",
    "ProblemError",
    "ReadinessTimeout",
    "SandboxAgentError",
    "ServerError",
    "ServiceUnavailable",
    "TerminalClosed",
    "Unauthorized",
]


class SandboxAgentError(Exception):
    """Base class of every error sandbox-agent raises on purpose."""


class ConnectionFailed(SandboxAgentError):
    """The server could not be reached (refused, timed out, dropped)."""


class TerminalClosed(SandboxAgentError):
    """A terminal session was used after this client closed it (closed here, not broken:
    a connection that broke from outside is ``ConnectionFailed``)."""


class ProblemError(SandboxAgentError):
    """An error with an HTTP status and a plain-words ``detail`` (RFC 9457)."""

    status: int = 500
    title: str = "Internal Server Error"

    def __init__(self, detail: str, *, status: int | None = None, title: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title


class BadRequest(ProblemError):
    status = 400
    title = "Bad Request"


class Unauthorized(ProblemError):
    status = 401
    title = "Unauthorized"


class NotFound(ProblemError):
    status = 404
    title = "Not Found"


class Conflict(ProblemError):
    status = 409
    title = "Conflict"


class ServerError(ProblemError):
    status = 500
    title = "Internal Server Error"


class ServiceUnavailable(ServerError):
    """503: the server cannot serve this now (shutting down); try again shortly."""

    status = 503
    title = "Service Unavailable"


class InsufficientStorage(ServerError):
    """507: the server cannot write to its data directory (a full disk); free space there."""

    status = 507
    title = "Insufficient Storage"


class ReadinessTimeout(ServerError):
    """A start with ``waitFor`` whose condition did not hold within its ``timeoutMs``; the
    process was left running."""

    status = 504
    title = "Gateway Timeout"


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    503: ServiceUnavailable,
    504: ReadinessTimeout,
    507: InsufficientStorage,
}


def error_for_status(status: int, detail: str, title: str | None = None) -> ProblemError:
    """The error class a client raises for an HTTP error ``status``."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else BadRequest
    return cls(detail, status=status, title=title)
