"""Running the server under Uvicorn, with a shutdown that ends follow streams first."""

from __future__ import annotations

import ctypes
import logging
import socket

import uvicorn

from ..engine import DataDirInUse, ProcessManager
from .app import create_app
from .config import Settings, is_loopback
from .wire import http_protocol

logger = logging.getLogger("sandbox_agent.server")


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, manager: ProcessManager) -> None:
        super().__init__(config)
        self.manager = manager

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        _release_freed_memory()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Open SSE streams would otherwise hold the graceful shutdown until its timeout.
        self.manager.begin_shutdown()
        await super().shutdown(sockets)


def _release_freed_memory() -> None:
    """Hand back to the system the memory start-up freed (the imports leave some behind).

    glibc's malloc keeps freed memory for later allocations; once the server is up and
    idle, that is about 0.2 MB of its footprint for nothing. Elsewhere (musl): nothing.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return
    trim(0)


def serve(settings: Settings) -> int:
    """Run until SIGINT or SIGTERM; the managed processes keep running after it returns."""
    manager = ProcessManager(
        settings.data_dir,
        stop_timeout=settings.stop_timeout,
        subreaper=True,
        retain_exited=settings.retain_exited,
        retain_seconds=settings.retain_seconds,
        max_log_bytes=settings.max_log_bytes,
    )
    try:
        manager.lock()
    except DataDirInUse as exc:
        logger.error("%s", exc)
        return 1
    except OSError as exc:
        logger.error(
            "cannot use the data directory %s: %s; pass a writable --data-dir",
            settings.data_dir,
            exc.strerror or exc,
        )
        return 1
    app = create_app(
        manager,
        token=settings.token,
        cors_origins=settings.cors_origins,
        loopback_only=is_loopback(settings.host),
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=5,
        lifespan="on",
        # uvicorn's httptools protocol, with the fast lane's answers written in one go.
        http=http_protocol(),
        # The terminal WebSocket; the sans-I/O implementation, not the deprecated legacy one.
        ws="websockets-sansio",
    )
    server = _Server(config, manager)
    server.run()  # with the loop uvicorn picks: uvloop when installed
    return 0 if server.started else 1
