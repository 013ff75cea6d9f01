"""The on-disk format: what a supervisor writes and the engine reads. Standard library only.

One process's directory, ``<data dir>/processes/<id>/``, holds:

    state.json     the state record (``STATE_SCHEMA``), only ever replaced atomically
    stdout.log     ``[<ts>] <line>\\n``
    stderr.log     ``[<ts>] <line>\\n``
    combined.log   ``[<ts>] [stdout] <line>\\n`` or ``[<ts>] [stderr] <line>\\n``

``<ts>`` is UTC, RFC 3339, exactly millisecond precision: ``2026-01-30T12:32:45.123Z``.
The server asks a supervisor to stop with ``STOP_SIGNAL_REQUEST`` and to kill with
``KILL_SIGNAL_REQUEST``; everything else goes through these files.
"""

from __future__ import annotations

import json
import os
import signal
import time

# typing is a large import for a process that must stay small; annotations are strings.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STATE_FILE = "state.json"
LOG_FILES = {"stdout": "stdout.log", "stderr": "stderr.log", "combined": "combined.log"}
#: A supervisor that failed writes its traceback here.
ERROR_FILE = "supervisor-error.log"

#: The statuses of a process that has exited; the others are "starting" and "running".
EXITED_STATUSES = ("stopped", "killed")
STATUSES = ("starting", "running", *EXITED_STATUSES)

#: ``[2026-01-30T12:32:45.123Z] `` is always exactly this long.
TIMESTAMP_PREFIX_LEN = 27
#: The leading timestamp of a log line, as a regular expression over bytes.
TIMESTAMP_PATTERN = rb"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "
#: The tag after the timestamp in combined.log.
STREAM_TAGS = {"stdout": b"[stdout] ", "stderr": b"[stderr] "}

#: The largest message on the launcher's socket; the server keeps its requests below it.
LAUNCHER_MAX_MESSAGE = 4 * 1024 * 1024

#: Server to supervisor: stop (SIGTERM to the group, SIGKILL after the stop timeout).
STOP_SIGNAL_REQUEST = signal.SIGUSR1
#: Server to supervisor: kill (SIGKILL to the group; the status becomes "killed").
KILL_SIGNAL_REQUEST = signal.SIGUSR2

_INT = (int,)
_NUM = (int, float)
_STR = (str,)
_NONE = (type(None),)

#: The state record: each field, the JSON types it may have, and whether it must be there.
#: The supervisor writes every field; the engine rejects a record that breaks this.
STATE_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": (_STR, True),
    "command": (_STR, True),
    "args": ((list,), True),
    "cwd": (_STR + _NONE, False),
    "status": (_STR, True),
    "pid": (_INT + _NONE, False),
    #: The child's start time in clock ticks since boot: with the boot id, its identity.
    "pidStart": (_INT + _NONE, False),
    "exitCode": (_INT + _NONE, False),
    "exitSignal": (_INT + _NONE, False),
    #: Unix seconds, as floats.
    "startedAt": (_NUM, True),
    "stoppedAt": (_NUM + _NONE, False),
    "supervisorPid": (_INT + _NONE, False),
    "supervisorStart": (_INT + _NONE, False),
    "bootId": (_STR + _NONE, False),
    "stopTimeout": (_NUM + _NONE, False),
}


def check_state(data: object) -> dict[str, Any]:
    """``data`` if it is a valid state record; ValueError saying what is wrong if not."""
    if not isinstance(data, dict):
        raise ValueError("the state record is not a JSON object")
    for name, (types, required) in STATE_SCHEMA.items():
        if name not in data:
            if required:
                raise ValueError(f"the state record has no {name!r}")
            continue
        value = data[name]
        # bool is an int in Python, never a valid number here.
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"the state record's {name!r} has the wrong type ({type(value).__name__})")
    if data["status"] not in STATUSES:
        raise ValueError(f"the state record's status {data['status']!r} is not one of {', '.join(STATUSES)}")
    if not all(isinstance(arg, str) for arg in data["args"]):
        raise ValueError("the state record's 'args' holds something other than strings")
    return data


class Clock:
    """Formats ``[<RFC 3339 UTC, ms>] `` prefixes, reusing the seconds part."""

    __slots__ = ("_head", "_sec")

    def __init__(self) -> None:
        self._sec = -1
        self._head = b""

    def prefix(self, now: float) -> bytes:
        # Milliseconds from the whole value, so 100.3 is .300 and not .299.
        sec, ms = divmod(int(now * 1000 + 1e-6), 1000)
        if sec != self._sec:
            self._sec = sec
            self._head = b"[" + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()
        return self._head + b".%03dZ] " % ms


def format_timestamp(now: float) -> str:
    """``2026-01-30T12:32:45.123Z`` for a Unix time."""
    return Clock().prefix(now)[1:-2].decode()


#: Made once, before any fork (json.dumps with options builds an encoder per call).
encode_json = json.JSONEncoder(separators=(",", ":")).encode


def write_json_atomic(path: str, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old file or the new one."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        payload = encode_json(data).encode()
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def read_json(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        data = json.loads(f.read())
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def read_state(directory: str) -> dict[str, Any]:
    """The state record of the process in ``directory``; OSError or ValueError if unusable."""
    return check_state(read_json(os.path.join(directory, STATE_FILE)))


def read_small(path: str) -> bytes | None:
    """The first 4 KiB of ``path``, or None. Plain os calls: no io objects in a supervisor's pages."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return None  # a /proc file whose process went away after the open
    finally:
        os.close(fd)


_boot_id: str | None = None


def boot_id() -> str:
    """This boot's id (read once: the launcher has it before it forks)."""
    global _boot_id
    if _boot_id is None:
        _boot_id = (read_small("/proc/sys/kernel/random/boot_id") or b"").decode().strip()
    return _boot_id


def process_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if it is gone.

    Together with the pid and the boot id it names one process for good: a pid that was
    reused after a restart has another start time.
    """
    stat = read_small(f"/proc/{pid}/stat")
    if not stat:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])
