"""sandbox-agent: a process manager for sandboxes, driven over HTTP.

Importing this package loads the client side only (the SDK, its models and errors); the
server lives in ``sandbox_agent.server`` and pulls in FastAPI and Uvicorn when imported.

    with sandbox_agent.Client("http://127.0.0.1:2468") as client:
        process = client.start("python", ["-c", "print('hello')"])
        print(client.wait(process.id).exit_code)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._exceptions import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    NotFound,
    ProblemError,
    SandboxAgentError,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
)
from ._models import Health, LogPaths, Logs, Process, ProcessList, StartProcess
from ._version import __version__

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Health",
    "LogPaths",
    "Logs",
    "NotFound",
    "ProblemError",
    "Process",
    "ProcessList",
    "SandboxAgentError",
    "ServerError",
    "ServiceUnavailable",
    "StartProcess",
    "Unauthorized",
    "__version__",
]

if TYPE_CHECKING:
    from ._async_client import AsyncClient
    from ._client import Client


def __getattr__(name: str) -> Any:
    # The clients load httpx on first use: the server imports this package too, and
    # has no use for an HTTP client.
    if name == "Client":
        from ._client import Client

        return Client
    if name == "AsyncClient":
        from ._async_client import AsyncClient

        return AsyncClient
    raise AttributeError(f"module 'sandbox_agent' has no attribute {name!r}")
