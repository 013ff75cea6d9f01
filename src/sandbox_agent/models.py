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
from typing import Any, Generic, Literal, TypeVar

from ._types import EXITED_STATUSES, EntryStream, LogsStream, ProcessOwner, ProcessState, Status

__all__ = [
    "CreateProcess",
    "Health",
    "InputWritten",
    "LogPaths",
    "Logs",
    "Process",
    "ProcessConfig",
    "ProcessEvent",
    "ProcessInfo",
    "ProcessInfoList",
    "ProcessList",
    "ProcessLogEntry",
    "ProcessLogs",
    "Restart",
    "RunProcess",
    "RunResult",
    "StartProcess",
    "TerminalSize",
    "Usage",
    "WaitFor",
]

_M = TypeVar("_M", bound="_Wire")
_P = TypeVar("_P", "Process", "ProcessInfo")


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


#: The process object's extension fields of SPEC section 8, absent for a plain process.
_SERVICE_STATE = ("name", "labels", "restarts", "restart", "restarting", "ready", "ports", "usage")
#: The start body's extension fields of SPEC section 8.
_SERVICE_START = ("name", "labels", "wait_for", "restart")


@dataclasses.dataclass(frozen=True)
class Usage(_Wire):
    """CPU and memory of a running process's whole tree, sampled once a second."""

    #: Over the last second; 100 is one core busy all the time.
    cpu_percent: float
    rss_bytes: int


@dataclasses.dataclass(frozen=True)
class Restart(_Wire):
    """When the server's supervisor starts the command again after it exits (SPEC section 8).

    ``Restart("on-failure", max_restarts=5)``, ``Restart.parse("always")``; a stop or kill
    ends it. ``max_restarts`` bounds the restarts in a row (a run up 60 s starts a new
    row); the wait starts at ``backoff_ms`` (the server's 1000 when None) and doubles, up to 30 s.
    """

    policy: Literal["never", "on-failure", "always"]
    max_restarts: int | None = None
    backoff_ms: int | None = None

    _omit_none = ("max_restarts", "backoff_ms")

    @classmethod
    def parse(cls, text: str, backoff_ms: int | None = None) -> Restart:
        """``never``, ``on-failure``, ``always``, with ``:N`` for at most N restarts in a row.

        >>> Restart.parse("on-failure:3").max_restarts
        3
        """
        policy, sep, limit = text.partition(":")
        if policy in ("never", "on-failure", "always") and (not sep or limit.isdigit()):
            return cls(policy, int(limit) if sep else None, backoff_ms)  # type: ignore[arg-type]
        raise ValueError(
            f"restart {text!r}: give never, on-failure or always, with :N for at most N restarts in a row "
            "(for example on-failure:5)"
        )


@dataclasses.dataclass(frozen=True)
class WaitFor(_Wire):
    """What makes a process ready (SPEC section 8); every condition given must hold.

    ``WaitFor(port=3000)``, ``WaitFor(log_pattern=r"ready in \\d+ ms")``,
    ``WaitFor(http_get="http://127.0.0.1:3000/health", timeout_ms=120_000)``.
    """

    port: int | None = None
    #: A regular expression (Python re) searched in each line of stdout and stderr.
    log_pattern: str | None = None
    #: An http:// or https:// URL that must answer a GET with 2xx or 3xx.
    http_get: str | None = None
    #: How long the start waits (None: the server's 60000; 0: it answers at once).
    timeout_ms: int | None = None

    _omit_none = ("port", "log_pattern", "http_get", "timeout_ms")

    @classmethod
    def parse(cls, text: str, timeout_ms: int | None = None) -> WaitFor:
        """``port:3000``, ``log:REGEX`` or ``http:URL`` (also a bare ``http://...`` URL).

        >>> WaitFor.parse("http://127.0.0.1:3000/health").http_get
        'http://127.0.0.1:3000/health'
        """
        kind, sep, rest = text.partition(":")
        if sep and kind in ("http", "https") and rest.startswith("//"):
            return cls(http_get=text, timeout_ms=timeout_ms)
        if sep and kind == "port" and rest.isdigit():
            return cls(port=int(rest), timeout_ms=timeout_ms)
        if sep and kind == "log" and rest:
            return cls(log_pattern=rest, timeout_ms=timeout_ms)
        if sep and kind == "http" and rest:
            return cls(http_get=rest, timeout_ms=timeout_ms)
        raise ValueError(f"wait for {text!r}: give port:PORT, log:REGEX or http:URL (for example port:3000)")

    def __and__(self, other: WaitFor) -> WaitFor:
        """Both conditions (the other's where both give one)."""
        return WaitFor(
            port=other.port if other.port is not None else self.port,
            log_pattern=other.log_pattern if other.log_pattern is not None else self.log_pattern,
            http_get=other.http_get if other.http_get is not None else self.http_get,
            timeout_ms=other.timeout_ms if other.timeout_ms is not None else self.timeout_ms,
        )


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
    #: Extension (services): as given on start; None for a plain process.
    name: str | None = None
    labels: dict[str, str] | None = None
    #: Extension: how many times the command was started again (policy or request); None
    #: for a plain process never restarted.
    restarts: int | None = None
    #: Extension: the restart policy, as given on start.
    restart: Restart | None = None
    #: Extension: True while a restart waits out its backoff (still running, no pid).
    restarting: bool | None = None
    #: Extension: with ``wait_for``, whether it held.
    ready: bool | None = None
    #: Extension, while running: TCP ports its tree listens on, and its CPU and memory.
    ports: list[int] | None = None
    usage: Usage | None = None

    _omit_none = ("stopped_at", "log_bytes_dropped", *_SERVICE_STATE)

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
    #: Extension (services): unique among running processes, usable wherever an id is.
    name: str | None = None
    labels: dict[str, str] | None = None
    #: Extension: the start answers once ready (ReadinessTimeout, a 504, past its timeout).
    wait_for: WaitFor | None = None
    #: Extension: start it again when it exits (not with tty or interactive).
    restart: Restart | None = None

    _omit_none = ("cwd", "env", "tty", "interactive", "terminal_size", "max_log_bytes", *_SERVICE_START)


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
    #: Extension (services): see ``Process``.
    name: str | None = None
    labels: dict[str, str] | None = None
    restarts: int | None = None
    restart: Restart | None = None
    restarting: bool | None = None
    ready: bool | None = None
    ports: list[int] | None = None
    usage: Usage | None = None

    _omit_none = (
        "cwd",
        "pid",
        "exit_code",
        "exited_at_ms",
        "exit_signal",
        "terminal_size",
        "log_bytes_dropped",
        *_SERVICE_STATE,
    )

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
    name: str | None = None
    labels: dict[str, str] | None = None
    wait_for: WaitFor | None = None
    restart: Restart | None = None

    _omit_none = ("cwd", "terminal_size", "max_log_bytes", *_SERVICE_START)


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


EventKind = Literal["created", "ready", "restarted", "exited", "deleted", "reset"]


@dataclasses.dataclass(frozen=True)
class ProcessEvent(Generic[_P]):
    """One event of ``GET /v1/events``: what happened, and the process as it was then.

    ``reset``: the server no longer held the events after the last one seen (or restarted
    since); ``processes`` is then the current list, and the events go on from there.
    """

    kind: EventKind
    #: Resume after it with ``events(last_event_id=...)``.
    id: str | None
    process: _P | None = None
    processes: list[_P] | None = None


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
        "Restart": Restart,
        "Usage": Usage,
        "WaitFor": WaitFor,
    }
)
