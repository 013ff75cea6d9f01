"""The server's schemas of the wire: request bodies it validates, responses it documents.

Attributes are snake_case in Python and camelCase on the wire. The client reads the
same objects with the dataclasses of ``sandbox_agent.models``; a test holds both to the
same field names. Responses are rendered by ``render.py`` (cached per record), these
models describe them in the OpenAPI document.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .._types import Status

__all__ = [
    "Health",
    "InputWritten",
    "LogPaths",
    "Logs",
    "Process",
    "ProcessInput",
    "ProcessList",
    "StartProcess",
    "TerminalResize",
    "TerminalSize",
]


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class LogPaths(_Wire):
    stdout: str
    stderr: str
    combined: str


class TerminalSize(_Wire):
    cols: int = Field(ge=1, le=1000)
    rows: int = Field(ge=1, le=1000)


class Process(_Wire):
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


class ProcessList(_Wire):
    processes: list[Process]


class StartProcess(_Wire):
    """Body of ``POST /v1/process``."""

    command: str = Field(description="Program to run: a name looked up in PATH, or a path")
    args: list[str] = Field(default_factory=list)
    cwd: str | None = Field(default=None, description="Working directory; the server's own when absent")
    env: dict[str, str] | None = Field(default=None, description="Added over the server's environment")
    stop_timeout: float | None = Field(
        default=None,
        ge=0,
        le=3600,
        description="Extension: seconds between SIGTERM and SIGKILL on stop (default 10)",
    )
    tty: bool = Field(default=False, description="Extension: run on a new pseudo-terminal (SPEC section 7)")
    interactive: bool = Field(default=False, description="Extension: stdin is a pipe that takes input")
    terminal_size: TerminalSize | None = Field(default=None, description="Extension: with tty, default 80x24")


class Logs(_Wire):
    content: str
    lines: int


class Health(_Wire):
    status: str
    version: str


class ProcessInput(_Wire):
    """Body of ``POST /v1/processes/{id}/input``."""

    data: str | None = Field(default=None, description="The bytes to send, encoded as `encoding` says")
    encoding: str | None = Field(default=None, description="base64 (the default), utf8 or text")
    eof: bool = Field(default=False, description="Extension: close stdin after the data (^D on a terminal)")


class InputWritten(_Wire):
    bytes_written: int


class TerminalResize(_Wire):
    """Body and answer of ``POST /v1/processes/{id}/terminal/resize``."""

    cols: int = Field(ge=0, le=65535)
    rows: int = Field(ge=0, le=65535)
