"""The wire models as the client sees them: plain dataclasses, standard library only.

Attributes are snake_case in Python and camelCase on the wire, as the original API's
clients read them: ``process.exit_code`` is ``"exitCode"`` in JSON. ``from_wire`` reads a
server's JSON object (unknown fields are ignored, so a newer server works with an older
client); ``to_wire`` gives it back. The server's schemas (``server/schemas.py``) describe
the same fields for OpenAPI; a test holds the two to the same names.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from ._types import EXITED_STATUSES, EntryStream, LogsStream, ProcessOwner, ProcessState, Status

__all__ = [
    "CreateProcess",
    "Health",
    "InputWritten",
    "LogPaths",
    "Logs",
    "Process",
    "ProcessConfig",
    "ProcessInfo",
    "ProcessInfoList",
    "ProcessList",
    "ProcessLogEntry",
    "ProcessLogs",
    "RunProcess",
    "RunResult",
    "StartProcess",
    "TerminalSize",
]

_M = TypeVar("_M", bound="_Wire")


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class _Wire:
    """Conversion to and from the camelCase JSON objects of the API."""

    #: Fields left out of ``to_wire`` while None (the server omits them until known).
    _omit_none: tuple[str, ...] = ()

    @classmethod
    def from_wire(cls: type[_M], data: Mapping[str, Any]) -> _M:
        """The model for a JSON object; ValueError if a required field is missing or wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            key = camel(f.name)
            if key not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ValueError(f"{cls.__name__} has no {key!r}")
                continue
            values[f.name] = _convert(f.type, data[key], f"{cls.__name__}.{key}")
        return cls(**values)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.name in self._omit_none:
                continue
            out[camel(f.name)] = value.to_wire() if isinstance(value, _Wire) else _plain(value)
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [v.to_wire() if isinstance(v, _Wire) else v for v in value]
    if isinstance(value, dict):
        return dict(value)
    return value


_NESTED: dict[str, type[_Wire]] = {}
_SCALARS: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
    "Status": str,
    "ProcessState": str,
    "ProcessOwner": str,
    "EntryStream": str,
    "LogsStream": str,
}


def _convert(annotation: object, value: Any, where: str) -> Any:
    """Check ``value`` against a field annotation (as written in this module)."""
    text = str(annotation)
    if value is None:
        if "None" in text:
            return None
        raise ValueError(f"{where} must not be null")
    base = text.replace(" | None", "")
    if base in _NESTED:
        return _NESTED[base].from_wire(value)
    if base.startswith("list["):
        item = base[5:-1]
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list")
        return [_convert(item, v, where) for v in value]
    if base.startswith("dict["):
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be an object")
        return dict(value)
    expected = _SCALARS.get(base)
    if expected is not None and (not isinstance(value, expected) or (base == "int" and isinstance(value, bool))):
        raise ValueError(f"{where} must be {base}, got {type(value).__name__}")
    return value


@dataclasses.dataclass(frozen=True)
class LogPaths(_Wire):
    stdout: str
    stderr: str
    combined: str


@dataclasses.dataclass(frozen=True)
class Process(_Wire):
    """A managed process as the API shows it."""

    id: str
    command: str
    args: list[str]
    status: Status
    log_paths: LogPaths
    #: Unix seconds.
    started_at: int
    #: The exit status once exited by itself; None when ended by a signal or unknown.
    exit_code: int | None = None
    #: Extension: the signal number that ended it.
    exit_signal: int | None = None
    #: Unix seconds; None until exited.
    stopped_at: int | None = None
    cwd: str | None = None
    #: Extension: the process id of the command.
    pid: int | None = None
    #: Extension: bytes dropped from each capped log (``stdout``, ``stderr``, ``combined``),
    #: oldest first; None while nothing was dropped.
    log_bytes_dropped: dict[str, int] | None = None
    #: Extension: what is shown (an exit, say) is not recorded on disk yet: the disk under
    #: the server's data directory is full. Recorded once there is room.
    state_unsaved: bool = False
    #: Extension: the command exited, and processes it started still run (a daemon, say);
    #: stop, kill and delete still reach them.
    descendants_running: bool = False

    _omit_none = ("stopped_at", "log_bytes_dropped")

    @property
    def exited(self) -> bool:
        return self.status in EXITED_STATUSES


@dataclasses.dataclass(frozen=True)
class ProcessList(_Wire):
    processes: list[Process]


@dataclasses.dataclass(frozen=True)
class TerminalSize(_Wire):
    cols: int
    rows: int


@dataclasses.dataclass(frozen=True)
class StartProcess(_Wire):
    """Body of ``POST /v1/process``."""

    command: str
    args: list[str] = dataclasses.field(default_factory=list)
    cwd: str | None = None
    env: dict[str, str] | None = None
    #: Extension: run on a new pseudo-terminal (None: not sent, the server's default).
    tty: bool | None = None
    #: Extension: stdin is a pipe that takes input.
    interactive: bool | None = None
    #: Extension: with tty, the terminal's size (80x24 by default).
    terminal_size: TerminalSize | None = None
    #: Extension: this process's log cap in bytes (0: none; None: the server's).
    max_log_bytes: int | None = None

    _omit_none = ("cwd", "env", "tty", "interactive", "terminal_size", "max_log_bytes")


@dataclasses.dataclass(frozen=True)
class Logs(_Wire):
    content: str
    lines: int


@dataclasses.dataclass(frozen=True)
class Health(_Wire):
    status: str
    version: str


# -- /v1/processes (SPEC section 7) ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProcessInfo(_Wire):
    """A process as ``/v1/processes`` shows it: the same process as ``Process``, in the
    current dialect's shape (``status`` is ``running`` or ``exited``, times in ms)."""

    id: str
    command: str
    args: list[str]
    tty: bool
    interactive: bool
    owner: ProcessOwner
    status: ProcessState
    #: Unix milliseconds.
    created_at_ms: int
    cwd: str | None = None
    #: Only while running.
    pid: int | None = None
    #: Only once exited with a code.
    exit_code: int | None = None
    exited_at_ms: int | None = None
    #: Extension: the signal that ended it.
    exit_signal: int | None = None
    #: Extension: a tty process's terminal.
    terminal_size: TerminalSize | None = None
    #: Extension: bytes dropped from each capped log; None while nothing was dropped.
    log_bytes_dropped: dict[str, int] | None = None
    #: Extension: what is shown is not recorded on disk yet (a full disk).
    state_unsaved: bool = False
    #: Extension: the command exited, and processes it started still run.
    descendants_running: bool = False

    _omit_none = ("cwd", "pid", "exit_code", "exited_at_ms", "exit_signal", "terminal_size", "log_bytes_dropped")

    @property
    def exited(self) -> bool:
        return self.status == "exited"


@dataclasses.dataclass(frozen=True)
class ProcessInfoList(_Wire):
    processes: list[ProcessInfo]


@dataclasses.dataclass(frozen=True)
class CreateProcess(_Wire):
    """Body of ``POST /v1/processes``."""

    command: str
    args: list[str] = dataclasses.field(default_factory=list)
    cwd: str | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    tty: bool = False
    interactive: bool = False
    terminal_size: TerminalSize | None = None
    #: Extension: this process's log cap in bytes (0: none; None: the server's).
    max_log_bytes: int | None = None

    _omit_none = ("cwd", "terminal_size", "max_log_bytes")


@dataclasses.dataclass(frozen=True)
class RunProcess(_Wire):
    """Body of ``POST /v1/processes/run``."""

    command: str
    args: list[str] = dataclasses.field(default_factory=list)
    cwd: str | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    #: None: the server's ``defaultRunTimeoutMs``; capped at ``maxRunTimeoutMs``.
    timeout_ms: int | None = None
    #: Per stream; None: the server's ``maxOutputBytes`` (also the cap).
    max_output_bytes: int | None = None

    _omit_none = ("cwd", "timeout_ms", "max_output_bytes")


@dataclasses.dataclass(frozen=True)
class RunResult(_Wire):
    """What a one-shot run answers: its exit code and output (decoded as UTF-8)."""

    #: None when it timed out or died of a signal.
    exit_code: int | None
    timed_out: bool
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: int


@dataclasses.dataclass(frozen=True)
class ProcessConfig(_Wire):
    """The limits of ``/v1/processes``; ``set_config`` replaces all six."""

    max_concurrent_processes: int = 64
    default_run_timeout_ms: int = 30000
    max_run_timeout_ms: int = 300000
    max_output_bytes: int = 1048576
    max_log_bytes_per_process: int = 10485760
    max_input_bytes_per_request: int = 65536


@dataclasses.dataclass(frozen=True)
class ProcessLogEntry(_Wire):
    """One line (or, for a terminal, one chunk) of a process's output."""

    #: Grows across the streams of a process; stable across restarts of the server.
    sequence: int
    stream: EntryStream
    timestamp_ms: int
    #: The bytes, base64-encoded (see ``raw`` and ``text``).
    data: str
    encoding: str = "base64"

    @property
    def raw(self) -> bytes:
        """The output as the process wrote it."""
        return base64.b64decode(self.data) if self.encoding == "base64" else self.data.encode()

    @property
    def text(self) -> str:
        """The output decoded as UTF-8, with replacement characters."""
        return self.raw.decode("utf-8", "replace")


@dataclasses.dataclass(frozen=True)
class ProcessLogs(_Wire):
    process_id: str
    stream: LogsStream
    entries: list[ProcessLogEntry]


@dataclasses.dataclass(frozen=True)
class InputWritten(_Wire):
    bytes_written: int


_NESTED.update(
    {
        "LogPaths": LogPaths,
        "Process": Process,
        "TerminalSize": TerminalSize,
        "ProcessInfo": ProcessInfo,
        "ProcessLogEntry": ProcessLogEntry,
    }
)
