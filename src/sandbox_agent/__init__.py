"""sandbox-agent: a process manager for sandboxes, driven over HTTP.

This package is the client side (the SDK, its models and errors); the server lives in
``sandbox_agent.server`` and needs the ``server`` extra.

    with sandbox_agent.Client("http://127.0.0.1:2468") as client:
        process = client.start("python", ["-c", "print('hello')"])
        print(client.wait(process.id).exit_code)

Every name is loaded on first use: the supervisor program (``sandbox_agent.supervisor``)
runs with the standard library alone and must not load anything of this package's when
Python imports it as the parent of its own.
"""

from __future__ import annotations

# No typing or importlib: this module is also loaded by the supervisor, which stays small.
TYPE_CHECKING = False

__all__ = [
    "AsyncClient",
    "AsyncTerminalSession",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Health",
    "InsufficientStorage",
    "LogPaths",
    "Logs",
    "NotFound",
    "ProblemError",
    "Process",
    "ProcessConfig",
    "ProcessEvent",
    "ProcessInfo",
    "ProcessList",
    "ProcessLogEntry",
    "ProcessLogs",
    "ReadinessTimeout",
    "Restart",
    "RunResult",
    "SandboxAgentError",
    "ServerError",
    "ServiceUnavailable",
    "StartProcess",
    "TerminalClosed",
    "TerminalSession",
    "TerminalSize",
    "Unauthorized",
    "Usage",
    "WaitFor",
    "__version__",
]

if TYPE_CHECKING:
    from ._exceptions import (
        BadRequest,
        Conflict,
        ConnectionFailed,
        InsufficientStorage,
        NotFound,
        ProblemError,
        ReadinessTimeout,
        SandboxAgentError,
        ServerError,
        ServiceUnavailable,
        TerminalClosed,
        Unauthorized,
    )
    from ._version import __version__
    from .client import AsyncClient, AsyncTerminalSession, Client, TerminalSession
    from .models import (
        Health,
        LogPaths,
        Logs,
        Process,
        ProcessConfig,
        ProcessEvent,
        ProcessInfo,
        ProcessList,
        ProcessLogEntry,
        ProcessLogs,
        Restart,
        RunResult,
        StartProcess,
        TerminalSize,
        Usage,
        WaitFor,
    )

_CLIENT = ("Client", "AsyncClient", "TerminalSession", "AsyncTerminalSession")
_MODELS = (
    "Health",
    "LogPaths",
    "Logs",
    "Process",
    "ProcessConfig",
    "ProcessEvent",
    "ProcessInfo",
    "ProcessList",
    "ProcessLogEntry",
    "ProcessLogs",
    "Restart",
    "RunResult",
    "StartProcess",
    "TerminalSize",
    "Usage",
    "WaitFor",
)


def __getattr__(name: str) -> object:
    if name in _CLIENT:
        from . import client as module
    elif name in _MODELS:
        from . import models as module  # type: ignore[no-redef]
    elif name == "__version__":
        from . import _version as module  # type: ignore[no-redef]
    elif name in __all__:
        from . import _exceptions as module  # type: ignore[no-redef]
    else:
        raise AttributeError(f"module 'sandbox_agent' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
