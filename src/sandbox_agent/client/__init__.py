"""The Python SDK: ``Client`` (sync) and ``AsyncClient``, on httpx.

_protocol   what both share, with no I/O: requests, parsing, errors, following, waiting
_terminal   a process's terminal over its WebSocket: the shared protocol, a session each
_sync       Client (and its ``processes``)
_async      AsyncClient (and its ``processes``)
"""

from __future__ import annotations

from ._async import AsyncClient, AsyncProcesses
from ._sync import Client, Processes
from ._terminal import AsyncTerminalSession, TerminalSession, TerminalState

__all__ = [
    "AsyncClient",
    "AsyncProcesses",
    "AsyncTerminalSession",
    "Client",
    "Processes",
    "TerminalSession",
    "TerminalState",
]
