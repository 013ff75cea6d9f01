"""Type aliases and constants shared by the engine, the HTTP layer and the client."""

from __future__ import annotations

from typing import Literal

Status = Literal["starting", "running", "stopped", "killed"]
StreamName = Literal["combined", "stdout", "stderr"]

STREAMS: tuple[StreamName, ...] = ("combined", "stdout", "stderr")

#: The statuses of an exited process. The supervisor's on-disk format has the same set
#: (``supervisor/ondisk.py``, which must not import this package); a test holds them equal.
EXITED_STATUSES: tuple[Status, ...] = ("stopped", "killed")

# -- /v1/processes (SPEC section 7) --------------------------------------------------

ProcessState = Literal["running", "exited"]
ProcessOwner = Literal["user", "desktop", "system"]
#: The stream of one log entry; a read may also ask for ``combined`` (stdout + stderr).
EntryStream = Literal["stdout", "stderr", "pty"]
LogsStream = Literal["combined", "stdout", "stderr", "pty"]
