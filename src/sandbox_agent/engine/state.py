"""What the manager's mixins (``watching``, ``reading``) may use of it, for the type checker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import ProcessConfig
from .launcher import LauncherClient
from .logs.watch import LogWatcher
from .records import Record
from .terminal import Terminals


class ManagerState:
    """The attributes ``ProcessManager.__init__`` sets, declared once."""

    data_dir: Path
    processes_dir: Path
    config: ProcessConfig
    terminals: Terminals
    subreaper: bool
    retain_exited: int | None
    retain_seconds: float | None
    _records: dict[str, Record]
    _ordered: list[Record] | None
    _watcher: LogWatcher
    _launcher: LauncherClient
    _polled: set[Record]
    _maybe_running: set[Record]
    _unsaved: set[Record]
    _early_exits: dict[str, tuple[dict[str, Any], int]]
    _closing: bool
    _runs: int
