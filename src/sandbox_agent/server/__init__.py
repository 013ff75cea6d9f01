"""The HTTP server: ``create_app`` over a ``ProcessManager``, and ``serve`` to run it."""

from __future__ import annotations

from .app import create_app
from .config import ConfigError, Settings
from .run import serve

__all__ = ["ConfigError", "Settings", "create_app", "serve"]
