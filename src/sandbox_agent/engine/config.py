"""The limits of the ``/v1/processes`` dialect (``ProcessConfig``), kept across restarts.

The original holds them in memory only; we write them to ``<data dir>/config.json`` with
an atomic replace, so a restart (or a crash mid-write) leaves the old limits or the new
ones, never a torn file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from .._exceptions import BadRequest
from ..supervisor.ondisk import write_json_atomic

logger = logging.getLogger("sandbox_agent.engine")

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class ProcessConfig:
    """The six limits, with the original's defaults. Wire names are the camelCase ones."""

    max_concurrent_processes: int = 64
    default_run_timeout_ms: int = 30_000
    max_run_timeout_ms: int = 300_000
    max_output_bytes: int = 1_048_576
    max_log_bytes_per_process: int = 10_485_760
    max_input_bytes_per_request: int = 65_536

    def checked(self) -> ProcessConfig:
        """This config if every limit is usable, with the default timeout clamped to the max.

        The checks and their order are the original's; a default above the max is
        clamped there too, not refused.
        """
        if self.max_concurrent_processes <= 0:
            raise BadRequest("maxConcurrentProcesses must be greater than 0")
        if self.default_run_timeout_ms <= 0 or self.max_run_timeout_ms <= 0:
            raise BadRequest("timeouts must be greater than 0 (milliseconds)")
        if min(self.max_output_bytes, self.max_log_bytes_per_process, self.max_input_bytes_per_request) <= 0:
            raise BadRequest("byte limits must be greater than 0")
        return dataclasses.replace(
            self, default_run_timeout_ms=min(self.default_run_timeout_ms, self.max_run_timeout_ms)
        )

    def to_wire(self) -> dict[str, int]:
        return {_camel(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ProcessConfig:
        values = {}
        for f in dataclasses.fields(cls):
            value = data.get(_camel(f.name))
            if isinstance(value, int) and not isinstance(value, bool):
                values[f.name] = value
        return cls(**values)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def load(data_dir: str | os.PathLike[str]) -> ProcessConfig:
    """The stored config, or the defaults when there is none or it cannot be used."""
    path = os.path.join(data_dir, CONFIG_FILE)
    try:
        with open(path, "rb") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return ProcessConfig.from_wire(data).checked()
    except FileNotFoundError:
        return ProcessConfig()
    except (OSError, ValueError, BadRequest) as exc:
        # A bad file must not keep the server down; say so and serve the defaults.
        logger.error("ignoring %s (%s): using the default process limits", path, exc)
        return ProcessConfig()


def save(data_dir: str | os.PathLike[str], config: ProcessConfig) -> None:
    path = os.path.join(data_dir, CONFIG_FILE)
    try:
        write_json_atomic(path, config.to_wire())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(f"{path}.{os.getpid()}.tmp")
        raise
