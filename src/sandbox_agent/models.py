"""The wire models as the client sees them: plain dataclasses, standard library only.

Attributes are snake_case in Python and camelCase on the wire, as the original API's
clients read them: ``process.exit_code`` is ``"exitCode"`` in JSON. ``from_wire`` reads a
server's JSON object (unknown fields are ignored, so a newer server works with an older
client); ``to_wire`` gives it back. The server's schemas (``server/schemas.py``) describe
the same fields for OpenAPI; a test holds the two to the same names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from ._types import EXITED_STATUSES, Status

__all__ = ["Health", "LogPaths", "Logs", "Process", "ProcessList", "StartProcess"]

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
    #: Extension: what is shown (an exit, say) is not recorded on disk yet: the disk under
    #: the server's data directory is full. Recorded once there is room.
    state_unsaved: bool = False
    #: Extension: the command exited, and processes it started still run (a daemon, say);
    #: stop, kill and delete still reach them.
    descendants_running: bool = False

    _omit_none = ("stopped_at",)

    @property
    def exited(self) -> bool:
        return self.status in EXITED_STATUSES


@dataclasses.dataclass(frozen=True)
class ProcessList(_Wire):
    processes: list[Process]


@dataclasses.dataclass(frozen=True)
class StartProcess(_Wire):
    """Body of ``POST /v1/process``."""

    command: str
    args: list[str] = dataclasses.field(default_factory=list)
    cwd: str | None = None
    env: dict[str, str] | None = None

    _omit_none = ("cwd", "env")


@dataclasses.dataclass(frozen=True)
class Logs(_Wire):
    content: str
    lines: int


@dataclasses.dataclass(frozen=True)
class Health(_Wire):
    status: str
    version: str


_NESTED.update({"LogPaths": LogPaths, "Process": Process})
