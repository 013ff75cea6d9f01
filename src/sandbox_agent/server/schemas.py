"""The server's schemas of the wire: request bodies it validates, responses it documents.

Attributes are snake_case in Python and camelCase on the wire. The client reads the
same objects with the dataclasses of ``sandbox_agent.models``; a test holds both to the
same field names. Responses are rendered by ``render.py`` (cached per record), these
models describe them in the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

from .._types import Status
from ..supervisor.ondisk import MIN_LOG_BYTES

__all__ = [
    "CreateProcess",
    "Health",
    "InputWritten",
    "LogPaths",
    "Logs",
    "Problem",
    "Process",
    "ProcessConfig",
    "ProcessInfo",
    "ProcessInfoList",
    "ProcessInput",
    "ProcessList",
    "ProcessLogEntry",
    "ProcessLogs",
    "Restart",
    "RunProcess",
    "RunResult",
    "StartProcess",
    "TerminalResize",
    "TerminalSize",
    "Usage",
    "WaitFor",
]


# The constraints below are documented here and enforced by the engine's checks
# (engine/validate.py), whose 400s say in plain words what to change.
#: Text a command line or an environment can carry: no NUL character.
_NO_NUL: dict[str, JsonValue] = {"type": "string", "pattern": "^[^\\x00]*$"}
#: A command: some non-blank text without NUL.
_COMMAND_SCHEMA: dict[str, JsonValue] = {"minLength": 1, "pattern": "^[^\\x00]*\\S[^\\x00]*$"}
#: An environment variable's name: non-empty, no "=" and no NUL.
_ENV_NAME: dict[str, JsonValue] = {"type": "string", "minLength": 1, "pattern": "^[^=\\x00]+$"}


def _number_not_text_or_bool(value: object) -> object:
    """Numbers only: pydantic would take "64" and true for an int, the original does not."""
    if isinstance(value, (bool, str)):
        raise ValueError("must be a number")
    return value


#: A whole number given as a JSON number (80 or 80.0), never as text or a boolean.
_Int = Annotated[int, BeforeValidator(_number_not_text_or_bool)]
#: A log cap: 0 (none) or at least MIN_LOG_BYTES (the engine checks; the schema says so too).
_LogCap = Annotated[
    _Int, Field(ge=0, json_schema_extra={"minimum": 0, "not": {"minimum": 1, "maximum": MIN_LOG_BYTES - 1}})
]


_DROPPED = (
    "Extension: bytes dropped from each capped log, oldest first (keys stdout, stderr, combined, and pty "
    "for a tty process: its raw output, pty.log, whose entries go with its bytes); omitted while nothing "
    "was dropped. See maxLogBytes."
)
_MAX_LOG_BYTES = (
    "Extension: cap of each of this process's logs on disk, in bytes (the newest kept: the current file and "
    "the one before it); 0 for no cap; at least 262144. Default: the server's --max-log-bytes (64 MiB)."
)


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


# -- services (SPEC section 8): documented here, checked by engine/services.py (400s) --

_NAME = (
    "Extension: unique among running processes, usable wherever an id is (a name resolves to the running "
    "process of that name, else to the newest that had it); 1 to 64 of a-z 0-9 - _ . starting with a letter "
    "or digit; not config or run. 409 while a running process has it."
)
_LABELS = "Extension: string to string; filter the list with ?label=key=value"


class WaitFor(_Wire):
    """What makes a process ready; every condition given must hold."""

    port: int | None = Field(
        default=None,
        json_schema_extra={"minimum": 1, "maximum": 65535},
        description="A TCP port the process or one of its descendants listens on",
    )
    log_pattern: str | None = Field(
        default=None,
        json_schema_extra={"maxLength": 512},
        description="A regular expression (Python re) searched in each line of stdout and stderr, from the first",
    )
    http_get: str | None = Field(
        default=None, description="An http:// or https:// URL that answers a GET with 2xx or 3xx"
    )
    timeout_ms: _Int = Field(
        default=60000,
        json_schema_extra={"minimum": 0, "maximum": 300000},
        description="How long the start waits before answering 504 (the process is left running and watched "
        "on); 0: the start answers at once, wait with GET .../wait?until=ready",
    )


class Restart(_Wire):
    """When the supervisor starts the command again after it exits (with or without a server)."""

    policy: str = Field(
        json_schema_extra={"enum": ["never", "on-failure", "always"]},
        description="never; on-failure: after an exit other than code 0 (a signal too); always: after any exit. "
        "A stop or kill ends it (during the backoff too)",
    )
    max_restarts: _Int | None = Field(
        default=None,
        json_schema_extra={"minimum": 0},
        description="At most this many restarts in a row (absent: no bound); a run that stayed up 60 s starts a "
        "new row. Past it the process exits with its last exit code",
    )
    backoff_ms: _Int = Field(
        default=1000,
        json_schema_extra={"minimum": 10, "maximum": 30000},
        description="The wait before the first restart of a row; it doubles at each restart, up to 30 s",
    )


class Usage(_Wire):
    cpu_percent: float = Field(description="CPU of the whole process tree over the last second; 100 = one core")
    rss_bytes: int = Field(description="Resident memory of the whole process tree")


class _Service(_Wire):
    """The start request's extension fields of SPEC section 8."""

    name: str | None = Field(default=None, json_schema_extra={"maxLength": 64}, description=_NAME)
    labels: dict[str, str] | None = Field(default=None, description=_LABELS)
    wait_for: WaitFor | None = Field(
        default=None, description="Extension: answer once ready (504 past timeoutMs, the process left running)"
    )
    restart: Restart | None = Field(
        default=None,
        description="Extension: restart policy, carried out by the process's supervisor; not with tty or "
        "interactive (400)",
    )


class _ServiceState(_Wire):
    """The process object's extension fields of SPEC section 8 (absent for a plain process)."""

    name: str | None = Field(default=None, description="Extension: as given on start")
    labels: dict[str, str] | None = Field(default=None, description="Extension: as given on start")
    restarts: int | None = Field(
        default=None,
        description="Extension: how many times the command was started again (by its policy, or on request); "
        "each restart writes a marker line into the logs",
    )
    restart: Restart | None = Field(default=None, description="Extension: the restart policy, as given on start")
    restarting: bool | None = Field(
        default=None,
        description="Extension: true while a restart waits out its backoff (the status stays running, with no pid)",
    )
    ready: bool | None = Field(default=None, description="Extension: with waitFor, whether it held")
    ports: list[int] | None = Field(
        default=None, description="Extension, while running: TCP ports the process tree listens on, sorted"
    )
    usage: Usage | None = Field(default=None, description="Extension, while running: sampled once a second")


class LogPaths(_Wire):
    stdout: str
    stderr: str
    combined: str


class TerminalSize(_Wire):
    cols: int = Field(ge=1, le=1000)
    rows: int = Field(ge=1, le=1000)


_STATE_UNSAVED = (
    "Extension, present (true) only while the data directory's disk is too full to record what is shown "
    "(an exit, say): it is kept in memory and recorded once there is room"
)
_DESCENDANTS_RUNNING = (
    "Extension, present (true) only once the command exited while processes it started still run (a daemon, "
    "say): stop, kill and delete still reach them"
)


class Process(_ServiceState):
    """A managed process as the API shows it."""

    id: str
    command: str
    args: list[str]
    status: Status
    exit_code: int | None = Field(
        default=None, description="Exit status once exited by itself; null when ended by a signal or unknown"
    )
    exit_signal: int | None = Field(default=None, description="Extension: the signal number that ended it")
    log_paths: LogPaths
    started_at: int = Field(description="Unix seconds")
    stopped_at: int | None = Field(default=None, description="Unix seconds; omitted until exited")
    cwd: str | None = None
    pid: int | None = Field(default=None, description="Extension: the process id of the command")
    log_bytes_dropped: dict[str, int] | None = Field(default=None, description=_DROPPED)
    state_unsaved: bool = Field(default=False, description=_STATE_UNSAVED)
    descendants_running: bool = Field(default=False, description=_DESCENDANTS_RUNNING)


class ProcessList(_Wire):
    processes: list[Process]


class StartProcess(_Service):
    """Body of ``POST /v1/process``."""

    command: str = Field(
        json_schema_extra=_COMMAND_SCHEMA,
        description="Program to run: a name looked up in PATH, or a path (relative to cwd). A 400 says so "
        "when it names no executable file.",
    )
    args: list[str] = Field(default_factory=list, json_schema_extra={"items": _NO_NUL})
    cwd: str | None = Field(
        default=None,
        json_schema_extra={"anyOf": [{"minLength": 1, **_NO_NUL}, {"type": "null"}]},
        description="Working directory (an existing directory); the server's own when absent",
    )
    env: dict[str, str] | None = Field(
        default=None,
        json_schema_extra={
            "anyOf": [
                {"type": "object", "propertyNames": _ENV_NAME, "additionalProperties": _NO_NUL},
                {"type": "null"},
            ]
        },
        description="Added over the server's environment",
    )
    stop_timeout: float | None = Field(
        default=None,
        ge=0,
        le=3600,
        description="Extension: seconds between SIGTERM and SIGKILL on stop (default 10)",
    )
    tty: bool = Field(default=False, description="Extension: run on a new pseudo-terminal")
    interactive: bool = Field(default=False, description="Extension: stdin is a pipe that takes input")
    terminal_size: TerminalSize | None = Field(default=None, description="Extension: with tty, default 80x24")
    max_log_bytes: _LogCap | None = Field(default=None, description=_MAX_LOG_BYTES)


class Logs(_Wire):
    content: str
    lines: int


class Health(_Wire):
    status: str
    version: str


class Problem(BaseModel):
    """Every error: ``application/problem+json`` (RFC 9457)."""

    type: str = Field(description="about:blank, or urn:sandbox-agent:error:<kind> on /v1/processes")
    title: str
    status: int
    detail: str = Field(description="What was wrong and what to do, in plain words")


# -- /v1/processes (SPEC section 7) ------------------------------------------------

ProcessState = Literal["running", "exited"]
ProcessOwner = Literal["user", "desktop", "system"]
EntryStream = Literal["stdout", "stderr", "pty"]
LogsStream = Literal["combined", "stdout", "stderr", "pty"]


#: A limit: 0 parses but is refused with a 400 (as the original does), so 1 is the least.
_POSITIVE: dict[str, JsonValue] = {"minimum": 1}


class ProcessConfig(_Wire):
    """The limits of this dialect. A POST replaces all six; none may be 0."""

    max_concurrent_processes: _Int = Field(
        ge=0, json_schema_extra=_POSITIVE, description="Starts past this many running processes get 409"
    )
    default_run_timeout_ms: _Int = Field(
        ge=0, json_schema_extra=_POSITIVE, description="A run's timeout when it gives none"
    )
    max_run_timeout_ms: _Int = Field(
        ge=0, json_schema_extra=_POSITIVE, description="The longest timeout a run may ask for"
    )
    max_output_bytes: _Int = Field(
        ge=0, json_schema_extra=_POSITIVE, description="The most a run keeps of each of stdout and stderr"
    )
    max_log_bytes_per_process: _Int = Field(
        ge=0, json_schema_extra=_POSITIVE, description="The most data one log read returns"
    )
    max_input_bytes_per_request: _Int = Field(
        ge=0, json_schema_extra=_POSITIVE, description="The most one input request may write"
    )


class CreateProcess(_Service):
    """Body of ``POST /v1/processes``."""

    command: str = Field(
        json_schema_extra=_COMMAND_SCHEMA,
        description="Program to run: a name looked up in PATH, or a path (relative to cwd). A 400 says so "
        "when it names no executable file.",
    )
    args: list[str] = Field(default_factory=list)
    cwd: str | None = Field(default=None, description="Working directory; the server's own when absent")
    env: dict[str, str] = Field(default_factory=dict, description="Added over the server's environment")
    tty: bool = Field(default=False, description="Run in a terminal (pty)")
    interactive: bool = Field(default=False, description="Keep stdin open for input")
    terminal_size: TerminalSize | None = Field(default=None, description="Extension: the terminal's size (80x24)")
    max_log_bytes: _LogCap | None = Field(default=None, description=_MAX_LOG_BYTES)


class RunProcess(_Wire):
    """Body of ``POST /v1/processes/run``."""

    command: str = Field(
        json_schema_extra=_COMMAND_SCHEMA,
        description="Program to run: a name looked up in PATH, or a path (relative to cwd). A 400 says so "
        "when it names no executable file.",
    )
    args: list[str] = Field(default_factory=list)
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict, description="Added over the server's environment")
    timeout_ms: int | None = Field(default=None, ge=0, description="0 or absent: defaultRunTimeoutMs; capped")
    max_output_bytes: int | None = Field(default=None, ge=0, description="Per stream; capped by the config")


class RunResult(_Wire):
    exit_code: int | None = Field(description="null when it timed out or died of a signal")
    timed_out: bool
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: int


class ProcessInfo(_ServiceState):
    """A process as ``/v1/processes`` shows it; optional fields are left out, not null."""

    id: str
    command: str
    args: list[str]
    cwd: str | None = None
    tty: bool
    interactive: bool
    owner: ProcessOwner
    status: ProcessState
    pid: int | None = Field(default=None, description="Only while running")
    exit_code: int | None = Field(default=None, description="Only once exited with a code")
    created_at_ms: int
    exited_at_ms: int | None = None
    exit_signal: int | None = Field(default=None, description="Extension: the signal that ended it")
    terminal_size: TerminalSize | None = Field(default=None, description="Extension: a tty process's terminal")
    log_bytes_dropped: dict[str, int] | None = Field(default=None, description=_DROPPED)
    state_unsaved: bool = Field(default=False, description=_STATE_UNSAVED)
    descendants_running: bool = Field(default=False, description=_DESCENDANTS_RUNNING)


class ProcessInfoList(_Wire):
    processes: list[ProcessInfo]


class ProcessLogEntry(_Wire):
    sequence: int = Field(description="Grows across the streams of a process; stable across restarts")
    stream: EntryStream
    timestamp_ms: int
    data: str = Field(description="base64")
    encoding: Literal["base64"]


class ProcessLogs(_Wire):
    process_id: str
    stream: LogsStream
    entries: list[ProcessLogEntry]


class ProcessInput(_Wire):
    """Body of ``POST /v1/processes/{id}/input``."""

    # Data, or eof: true, or both.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["data"], "properties": {"data": {"type": "string"}}},
                {"required": ["eof"], "properties": {"eof": {"const": True}}},
            ]
        }
    )

    data: str | None = Field(default=None, description="The bytes to send, encoded as `encoding` says")
    encoding: str | None = Field(
        default=None,
        json_schema_extra={"anyOf": [{"enum": ["base64", "utf8", "text"]}, {"type": "null"}]},
        description="base64 (the default), utf8 or text",
    )
    eof: bool = Field(default=False, description="Extension: close stdin after the data (^D on a terminal)")


class InputWritten(_Wire):
    bytes_written: int


class TerminalResize(_Wire):
    """Body and answer of ``POST /v1/processes/{id}/terminal/resize``."""

    # Strict, as the original's u16: "80" or 80.0 is a 422, not a size.
    cols: int = Field(ge=0, le=65535, strict=True)
    rows: int = Field(ge=0, le=65535, strict=True)
