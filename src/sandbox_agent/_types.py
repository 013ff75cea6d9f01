"""Type aliases shared by the engine, the HTTP layer and the client."""

from __future__ import annotations

from typing import Literal

Status = Literal["starting", "running", "stopped", "killed"]
StreamName = Literal["combined", "stdout", "stderr"]

STREAMS: tuple[StreamName, ...] = ("combined", "stdout", "stderr")
