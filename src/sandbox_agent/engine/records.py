"""A managed process as the engine holds it: its directory, its state record, its watchers.

The state record (``supervisor/ondisk.py``, ``STATE_SCHEMA``) is written by the
supervisor and checked on every read; a ``Record`` exposes it as typed properties so
that no other layer reads the dict. Each API dialect renders a record its own way and
may keep the rendering in ``cache`` until the state changes.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING, Any

from .._types import Status
from ..supervisor.ondisk import EXITED_STATUSES, LOG_FILES, PTY_LOG, read_small
from .logs.entries import LineIndex
from .logs.feed import Feed
from .logs.watch import StateWatch

if TYPE_CHECKING:
    from .services import Service
    from .usage import Sample

#: Fields that identify a running process's supervisor and child: of no use once it
#: exited (they stay in state.json), so an exited record does not hold them.
_RUNNING_ONLY = ("pidStart", "supervisorPid", "supervisorStart", "bootId", "stopTimeout")
#: Fields whose values repeat across records: one string object for all.
_SHARED = ("status", "command", "cwd")


def _compact(state: dict[str, Any]) -> dict[str, Any]:
    """The state as held in memory: thousands of exited records cost little."""
    if state["status"] in EXITED_STATUSES:
        state = {key: value for key, value in state.items() if key not in _RUNNING_ONLY}
    for key in _SHARED:
        value = state.get(key)
        if isinstance(value, str):
            state[key] = sys.intern(value)
    return state


class Record:
    """One process: its directory, its last known state, and how we watch it."""

    __slots__ = (
        "cache",
        "dir",
        "exit_told",
        "feeds",
        "id",
        "line_index",
        "live",
        "pidfd",
        "run_waiters",
        "service",
        "state",
        "state_watch",
        "supervisor_pid",
        "unsaved",
        "waiters",
    )

    def __init__(self, pid_dir: str, state: dict[str, Any]) -> None:
        self.id: str = state["id"]
        self.dir = pid_dir
        self.state = _compact(state)
        #: The supervisor, watched for its exit; it may outlive the command (descendants
        #: that still write), so an exited record may still have one.
        self.pidfd: int | None = None
        #: The supervisor's pid while it is watched (by pidfd or by polling); None after.
        self.supervisor_pid: int | None = None
        #: The full state record as the engine knows it but state.json does not hold yet
        #: (an exit on a full disk, taken from the exit record): written once there is room.
        self.unsaved: dict[str, Any] | None = None
        #: The exit in ``state`` came from the supervisor's message, and state.json may
        #: not hold it yet: the state watch stays until it does (``_confirm_exit``).
        self.exit_told = False
        #: The directory, watched for the state record the supervisor replaces (the
        #: command's exit) while the command runs.
        self.state_watch: StateWatch | None = None
        self.feeds: dict[str, Feed] = {}
        self.waiters: list[asyncio.Future[None]] = []
        #: Woken when the next run starts (a restart): ``ProcessManager.restart``.
        self.run_waiters: list[asyncio.Future[None]] = []
        #: Renderings of this record (wire JSON, by dialect), dropped when the state changes:
        #: listing thousands stays cheap.
        self.cache: dict[str, Any] = {}
        #: Where line numbers of combined.log were counted before (entry sequences).
        self.line_index = LineIndex()
        #: Name, labels and readiness (``services.py``); None for a plain process.
        self.service: Service | None = None
        #: The latest sample of a running process (``usage.py``): ports and usage.
        self.live: Sample | None = None

    def snapshot(self) -> Record:
        """A copy as the record is now, that later changes leave alone (for events)."""
        copy = Record.__new__(Record)
        copy.id, copy.dir, copy.state, copy.live = self.id, self.dir, self.state, self.live
        copy.service = None if self.service is None else self.service.copy()
        copy.cache = {}
        copy.unsaved = self.unsaved
        # Descendants still running are read from /proc when shown: not part of a copy.
        copy.supervisor_pid = None
        return copy

    def update(self, state: dict[str, Any]) -> None:
        self.state = _compact(state)
        self.cache.clear()

    @property
    def exited(self) -> bool:
        return self.state["status"] in EXITED_STATUSES

    @property
    def restarts(self) -> int:
        """How many times the supervisor started the command again (policy or request)."""
        restarts: int = self.state.get("restarts") or 0
        return restarts

    @property
    def restarting(self) -> bool:
        """A run ended and the next waits out its backoff (the status is still running)."""
        return self.state.get("restartAt") is not None and not self.exited

    @property
    def run_log_offset(self) -> int:
        """The logical offset in combined.log where the current run's output starts."""
        offset: int = self.state.get("runLogOffset") or 0
        return offset

    @property
    def state_unsaved(self) -> bool:
        """What the API shows is not in state.json yet (a full disk); it is kept in memory
        (and an exit in the exit record) and written once there is room."""
        return self.unsaved is not None

    @property
    def descendants_running(self) -> bool:
        """The command exited, and processes it started still run under its supervisor.

        Read from /proc on each call (never cached): the supervisor, their subreaper, has
        children exactly while some descendant of the command lives. One that is already
        a zombie, or has a SIGKILL pending (a kill reaches them all at once: the command's
        exit may be seen before theirs), is not counted.
        """
        pid = self.supervisor_pid
        if pid is None or not self.exited:
            return False
        children = read_small(f"/proc/{pid}/task/{pid}/children")
        return children is not None and any(_alive(int(child)) for child in children.split())

    @property
    def sort_key(self) -> tuple[float, str]:
        return (float(self.state["startedAt"]), self.id)

    @property
    def status(self) -> Status:
        status: Status = self.state["status"]
        return status

    @property
    def command(self) -> str:
        command: str = self.state["command"]
        return command

    @property
    def args(self) -> list[str]:
        args: list[str] = self.state["args"]
        return args

    @property
    def cwd(self) -> str | None:
        return self.state.get("cwd")

    @property
    def pid(self) -> int | None:
        return self.state.get("pid")

    @property
    def exit_code(self) -> int | None:
        return self.state.get("exitCode")

    @property
    def exit_signal(self) -> int | None:
        return self.state.get("exitSignal")

    @property
    def started_at(self) -> float:
        """Unix seconds."""
        return float(self.state["startedAt"])

    @property
    def stopped_at(self) -> float | None:
        """Unix seconds; None until exited."""
        stopped = self.state.get("stoppedAt")
        return None if stopped is None else float(stopped)

    @property
    def tty(self) -> bool:
        return bool(self.state.get("tty"))

    @property
    def interactive(self) -> bool:
        return bool(self.state.get("interactive"))

    @property
    def terminal_size(self) -> tuple[int, int] | None:
        """``(cols, rows)`` of a tty process, as last resized; None without a tty."""
        size = self.state.get("terminalSize")
        return (int(size[0]), int(size[1])) if size else None

    @property
    def input_closed(self) -> bool:
        """An interactive process whose stdin was closed (eof)."""
        return bool(self.state.get("inputClosed"))

    @property
    def log_bytes_dropped(self) -> dict[str, int] | None:
        """Bytes dropped from each capped log (by stream), as the supervisor last recorded
        a rotation; None while nothing was dropped."""
        logs = self.state.get("logs")
        if not logs:
            return None
        dropped = {}
        for stream, file in {**LOG_FILES, "pty": PTY_LOG}.items():
            info = logs.get(file)
            if isinstance(info, dict):
                oldest = info.get("prev", info)
                base = oldest.get("base") if isinstance(oldest, dict) else None
                dropped[stream] = base if isinstance(base, int) and not isinstance(base, bool) else 0
            elif file != PTY_LOG or self.tty:
                dropped[stream] = 0
        return dropped if any(dropped.values()) else None

    def log_path(self, stream: str) -> str:
        return os.path.join(self.dir, LOG_FILES[stream])

    @property
    def log_paths(self) -> dict[str, str]:
        return {name: self.log_path(name) for name in LOG_FILES}


_SIGKILL_BIT = 1 << (9 - 1)


def _alive(pid: int) -> bool:
    """Neither a zombie nor dying of a SIGKILL already sent (nor gone)."""
    status = read_small(f"/proc/{pid}/status")
    if not status:
        return False
    for line in status.splitlines():
        if line.startswith(b"State:") and line.split()[1:2] in ([b"Z"], [b"X"]):
            return False
        if line.startswith((b"SigPnd:", b"ShdPnd:")) and int(line.split()[1], 16) & _SIGKILL_BIT:
            return False
    return True
