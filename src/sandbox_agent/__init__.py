"""sandbox-agent: a process manager for sandboxes, driven over HTTP.

Importing this package loads the client side only (models and errors); the server lives
in ``sandbox_agent.server`` and pulls in FastAPI and Uvicorn when imported.
"""

from __future__ import annotations

from ._exceptions import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    NotFound,
    ProblemError,
    SandboxAgentError,
    ServerError,
    Unauthorized,
)
from ._models import Health, LogPaths, Logs, Process, ProcessList, StartProcess
from ._version import __version__

__all__ = [
    "BadRequest",
    "Conflict",
    "ConnectionFailed",
    "Health",
    "LogPaths",
    "Logs",
    "NotFound",
    "Process",
    "ProcessList",
    "ProblemError",
    "SandboxAgentError",
    "ServerError",
    "StartProcess",
    "Unauthorized",
    "__version__",
]
