"""The on-disk format: what a supervisor writes and the engine reads. Standard library only.

One process's directory, ``<data dir>/processes/<id>/``, holds:

    state.json     the state record (``STATE_SCHEMA``), only ever replaced atomically
    exit.rec       the command's exit, when state.json could not take it (see ``EXIT_FILE``)
    stdout.log     ``[<ts>] <line>\\n``
    stderr.log     ``[<ts>] <line>\\n``
    combined.log   ``[<ts>] [stdout] <line>\\n`` or ``[<ts>] [stderr] <line>\\n``
    <log>.1        the previous generation of a capped log (see ``ROTATED_SUFFIX``)
    pty.log        a tty process's output, byte for byte as the terminal gave it
    pty.idx        one ``PTY_INDEX_RECORD`` per chunk of pty.log (see ``pack_pty_record``)
    control.fifo   a tty or interactive process's control channel (see ``encode_control``)

A tty process's output also reaches stdout.log and combined.log as stdout lines.

``<ts>`` is UTC, RFC 3339, exactly millisecond precision: ``2026-01-30T12:32:45.123Z``.
The server asks a supervisor to stop with ``STOP_SIGNAL_REQUEST`` and to kill with
``KILL_SIGNAL_REQUEST``; everything else goes through these files. A command is started
the same way by a supervisor and, for a one-shot run, by the engine (``spawn_in_session``).
"""

from __future__ import annotations

import _thread
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
#: A capped log (``maxLogBytes``) keeps two generations: the file being written, and the
#: one before it under this suffix. Offsets and line numbers are *logical*: counted from
#: the first byte the process ever wrote to that log, whatever was dropped since. Each
#: rotation is recorded in the state record's ``logs`` (``LOG_GENERATION``); see
#: ``supervisor/rotation.py`` for the order of its steps and why a reader never gets lost.
ROTATED_SUFFIX = ".1"
#: ``state["logs"][<file name>]``: the generation being written, as
#: ``{"ino": inode, "base": bytes before it, "lines": lines before it (combined.log only),
#: "prev": the same for the previous generation}``. Absent until the first rotation:
#: then the file starts at logical 0.
LOG_GENERATION = ("ino", "base", "lines")
#: The smallest cap: each generation holds half of it, more than one longest line.
MIN_LOG_BYTES = 256 * 1024
#: The default cap of each log (current + previous generation), for a server without one.
DEFAULT_MAX_LOG_BYTES = 64 * 1024 * 1024

#: The command's exit, for when state.json cannot be written (a full disk): the
#: supervisor makes this file at the start, ``EXIT_RECORD_SIZE`` bytes of blanks, while the
#: start writes state.json anyway (so there is room); at the exit, if the atomic replace of
#: state.json fails, it overwrites the blanks in place with ``EXIT_FIELDS`` as JSON, padded
#: with blanks (``encode_exit_record``). An overwrite of blocks the file already has needs
#: no free space. The blanks are never valid JSON and a torn write leaves the start of
#: the JSON and blanks after it, never valid either: a reader sees the exit or none. The
#: supervisor never writes state.json after that; whoever reads the exit from here writes
#: it there (``read_state_with_exit``).
EXIT_FILE = "exit.rec"
EXIT_RECORD_SIZE = 256
EXIT_FIELDS = ("status", "exitCode", "exitSignal", "stoppedAt")
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
#: Supervisor to server, on the exits socket: the exit's state record as it is about to be
#: written, if it is no longer than this (a longer one is learnt from the file alone).
EXIT_MESSAGE_MAX = 32 * 1024

#: Server to supervisor: stop (SIGTERM to the group, SIGKILL after the stop timeout).
STOP_SIGNAL_REQUEST = signal.SIGUSR1
#: Server to supervisor: kill (SIGKILL to the group; the status becomes "killed").
KILL_SIGNAL_REQUEST = signal.SIGUSR2
#: Server to supervisor: restart now (SIGTERM to every descendant, SIGKILL after the stop
#: timeout, then the command again at once). SIGHUP, as daemons take it to reload: a
#: ``kill -HUP`` of a supervisor restarts its command too.
RESTART_SIGNAL_REQUEST = signal.SIGHUP

#: Restart policies (SPEC section 8), carried out by the supervisor: the request's
#: ``restart`` is ``{"policy": ..., "maxRestarts": int or None, "backoffMs": int}``.
#: The wait before restart n of a row is ``backoffMs * 2 ** (n - 1)``, at most
#: ``MAX_BACKOFF_MS``; a run that stayed up ``RESTART_RESET_AFTER`` seconds starts a new
#: row (the backoff and the count that ``maxRestarts`` bounds start afresh).
RESTART_POLICIES = ("never", "on-failure", "always")
DEFAULT_BACKOFF_MS = 1000
MAX_BACKOFF_MS = 30_000
RESTART_RESET_AFTER = 60.0

#: A tty process's raw output, and its index: record n (1-based, the chunk's sequence) is
#: ``PTY_INDEX_RECORD`` bytes at ``(n - 1) * PTY_INDEX_RECORD``, holding the offset in
#: pty.log where chunk n *ends* and the time it was read, in Unix milliseconds, both
#: unsigned 64-bit little-endian. Chunk n starts where chunk n - 1 ends (0 for the first).
#: The supervisor appends the data first and its record second, so every complete record
#: names bytes already in pty.log; a reader ignores a trailing partial record. Capped, the
#: two rotate as a pair (``terminal.PtyRecorder``): offsets in pty.log and in pty.idx are
#: then logical (``ROTATED_SUFFIX``), and the ``LOG_GENERATION`` of pty.idx also has
#: ``start``, the logical offset in pty.log where its first chunk starts.
PTY_LOG = "pty.log"
PTY_INDEX = "pty.idx"
PTY_INDEX_RECORD = 16


def pack_pty_record(end: int, timestamp_ms: int) -> bytes:
    return end.to_bytes(8, "little") + timestamp_ms.to_bytes(8, "little")


def unpack_pty_records(data: bytes) -> list[tuple[int, int]]:
    """``(end, timestampMs)`` of each complete record in ``data``."""
    return [
        (int.from_bytes(data[i : i + 8], "little"), int.from_bytes(data[i + 8 : i + 16], "little"))
        for i in range(0, len(data) - PTY_INDEX_RECORD + 1, PTY_INDEX_RECORD)
    ]


#: Server to supervisor, for tty and interactive processes: a FIFO the supervisor makes
#: (mode 0600) and holds open for reading and writing as long as it runs, so that it
#: outlives any server. The server writes messages: a kind byte, the payload's length
#: (4 bytes, big-endian), the payload. ``encode_control`` cuts input into messages of at
#: most ``CONTROL_MAX_MESSAGE`` bytes: a FIFO write that small is atomic (POSIX PIPE_BUF),
#: so messages never interleave and a non-blocking write sends all of one or nothing.
CONTROL_FIFO = "control.fifo"
CONTROL_INPUT = 0x69  # "i": bytes for the terminal or stdin
CONTROL_RESIZE = 0x72  # "r": cols and rows, 2 bytes each, big-endian
CONTROL_EOF = 0x65  # "e": close stdin (an interactive process without tty)
CONTROL_HEADER = 5
CONTROL_MAX_MESSAGE = 4096


def encode_control(kind: int, payload: bytes = b"") -> list[bytes]:
    """The FIFO messages that carry ``payload``: input is split, others fit in one."""
    step = CONTROL_MAX_MESSAGE - CONTROL_HEADER
    pieces = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
    if kind != CONTROL_INPUT and len(pieces) > 1:
        raise ValueError("a control message other than input must fit in one FIFO write")
    head = kind.to_bytes(1, "big")
    return [head + len(piece).to_bytes(4, "big") + piece for piece in pieces]


def encode_resize(cols: int, rows: int) -> bytes:
    return encode_control(CONTROL_RESIZE, cols.to_bytes(2, "big") + rows.to_bytes(2, "big"))[0]


def decode_control(buffer: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete messages at the start of ``buffer`` and what is left after them."""
    messages = []
    pos = 0
    while len(buffer) - pos >= CONTROL_HEADER:
        size = int.from_bytes(buffer[pos + 1 : pos + CONTROL_HEADER], "big")
        end = pos + CONTROL_HEADER + size
        if end > len(buffer):
            break
        messages.append((buffer[pos], buffer[pos + CONTROL_HEADER : end]))
        pos = end
    return messages, buffer[pos:]


#: The window size of a new terminal unless the request gives one.
DEFAULT_TERMINAL_SIZE = (80, 24)
#: TERM for a tty process unless its request's env sets one.
DEFAULT_TERM = "xterm-256color"

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
    #: Optional: records written before terminals existed have none of these.
    "tty": ((bool,), False),
    "interactive": ((bool,), False),
    #: ``[cols, rows]`` of a tty process, as last resized.
    "terminalSize": ((list, *_NONE), False),
    #: An interactive process whose stdin was closed (eof).
    "inputClosed": ((bool,), False),
    #: The rotations of capped logs, by file name (``LOG_GENERATION``).
    "logs": ((dict,), False),
    #: Restarts (``RESTART_POLICIES``, or on request): how many so far; absent if none could be.
    "restarts": (_INT, False),
    #: While a restart waits out its backoff (``pid`` is None then): when it is due.
    "restartAt": (_NUM + _NONE, False),
    #: The exit of the run before the current one (or before the wait).
    "lastExitCode": (_INT + _NONE, False),
    "lastExitSignal": (_INT + _NONE, False),
    #: The logical offset in combined.log where the current run's output starts.
    "runLogOffset": (_INT, False),
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
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
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


def write_json_atomic(
    path: str,
    data: dict[str, Any],
    *,
    sync: bool = True,
    sync_after: bool = False,
    aside: bool = False,
    payload: bytes | None = None,
) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old file or the new one.

    ``payload``: ``data`` already encoded (``encode_json``), when the caller has it.

    ``sync``: the new file reaches the disk before it replaces the old one, so that a
    machine's crash also leaves one or the other (``False`` for a record of what is not
    synced either, such as a log's rotation: any crash of a process still leaves one or
    the other).

    ``sync_after`` (with ``sync=False``): the new file is synced right after the rename
    instead, so that whoever watches ``path`` reads it one fsync sooner. A crash of any
    process still leaves one file or the other, whole; a machine's crash within that
    fsync could cost the new one only where a rename is not ordered after the data it
    publishes (ext4 orders it by default: ``auto_da_alloc``).

    The old file is held open across the rename and freed after it, by the close: on a
    filesystem mounted with ``discard`` freeing blocks waits for the device, tens of
    milliseconds while it writes logs back, and the new record is out before that.
    ``aside``: freed in a thread of its own, so that the caller does not wait at all."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            if payload is None:
                payload = encode_json(data).encode()
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
            try:
                old = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                old = -1  # none yet, or no descriptor to spare: the rename frees it
            try:
                os.rename(tmp, path)
                if sync_after:
                    try:
                        os.fsync(fd)
                    except OSError:
                        pass  # a failing disk: the record is out, whole, in the page cache
            finally:
                if old >= 0:
                    if aside:
                        close_aside(old)
                    else:
                        os.close(old)
        finally:
            os.close(fd)
    except BaseException:
        # A full disk leaves a partial temporary file: not one more for every attempt.
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def close_aside(fd: int) -> None:
    """Close ``fd`` in a thread of its own (here if no thread can be started): the last
    close of a file already replaced or removed frees it, which can take long."""
    try:
        _thread.start_new_thread(os.close, (fd,))
    except RuntimeError:
        os.close(fd)


def make_exit_record(directory: str) -> None:
    """Make ``EXIT_FILE`` in ``directory`` blank, taking the blocks its exit will need.

    Written over in place, not truncated: one made ahead (``engine/dirpool.py``) keeps
    its blocks, and freeing them would cost a discard on some disks."""
    fd = os.open(f"{directory}/{EXIT_FILE}", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.pwrite(fd, b" " * (EXIT_RECORD_SIZE - 1) + b"\n", 0) != EXIT_RECORD_SIZE:
            raise OSError(28, "No space left on device")  # ENOSPC: a short write
    finally:
        os.close(fd)


def encode_exit_record(state: dict[str, Any]) -> bytes:
    payload = encode_json({name: state.get(name) for name in EXIT_FIELDS}).encode()
    return payload.ljust(EXIT_RECORD_SIZE - 1) + b"\n"


def fill_exit_record(directory: str, state: dict[str, Any]) -> None:
    """Write the exit of ``state`` over the blanks of ``EXIT_FILE``, in place, and sync it."""
    fd = os.open(f"{directory}/{EXIT_FILE}", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.pwrite(fd, encode_exit_record(state), 0)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def read_exit_record(directory: str) -> dict[str, Any] | None:
    """The exit fields ``EXIT_FILE`` holds, or None (blank, missing, torn or invalid)."""
    data = read_small(os.path.join(directory, EXIT_FILE))
    if not data or not data.strip():
        return None
    try:
        fields = json.loads(data)
    except ValueError:
        return None
    if not isinstance(fields, dict) or set(fields) != set(EXIT_FIELDS):
        return None
    for name in EXIT_FIELDS:
        types = STATE_SCHEMA[name][0]
        value = fields[name]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            return None
    return fields if fields["status"] in EXITED_STATUSES else None


def read_state_with_exit(directory: str) -> tuple[dict[str, Any], bool]:
    """The state record with the exit of ``EXIT_FILE`` over it if state.json lacks one;
    and whether it did (then state.json is behind: the caller should write it)."""
    state = read_state(directory)
    if state["status"] not in EXITED_STATUSES:
        fields = read_exit_record(directory)
        if fields is not None:
            return {**state, **fields}, True
    return state, False


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


#: Python ignores these; a signal ignored at exec stays ignored in the new program.
_SIGNALS_TO_RESET = (int(signal.SIGPIPE), int(signal.SIGXFSZ))


def spawn_in_session(
    executable: str, argv: list[str], env: dict[str, str], file_actions: list[Any]
) -> tuple[int, int | None]:
    """Start a command as every command is started (by a supervisor, or as a run): in a
    session and process group of its own, no signal blocked, every signal at its default;
    vfork and exec (``posix_spawn``), so little runs in the forked process. Its pid, and
    its start time (``spawned_start_ticks``)."""
    before = boot_clock_ns()
    pid = os.posix_spawn(
        executable,
        argv,
        env,
        file_actions=file_actions,
        setsid=True,
        setsigmask=(),
        setsigdef=_SIGNALS_TO_RESET,
    )
    return pid, spawned_start_ticks(pid, before)


#: Clock ticks per second of /proc's start times (USER_HZ), when a tick is a whole number
#: of nanoseconds (it always is on Linux: 100); else 0, and start times come from /proc.
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
if 1_000_000_000 % _CLOCK_TICKS:
    _CLOCK_TICKS = 0


def boot_clock_ns() -> int:
    """The boot-time clock, which the kernel stamps a new process's start time from."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def spawned_start_ticks(pid: int, before_ns: int) -> int | None:
    """``process_start_ticks`` of ``pid``, a child made since ``boot_clock_ns()`` read
    ``before_ns``.

    The kernel stamps a process's start from the boot-time clock when it makes it, and
    /proc shows that stamp in whole clock ticks: if the clock reads the same tick now as
    before the spawn, that tick is the child's (98% of spawns here; a spawn is 0.15 ms,
    a tick 10 ms). Otherwise /proc is read, which right after a spawn waits until the
    child's exec is through: 0.5 to 0.7 ms here, which every start and run used to wait.
    """
    if _CLOCK_TICKS:
        tick = before_ns * _CLOCK_TICKS // 1_000_000_000
        if boot_clock_ns() * _CLOCK_TICKS // 1_000_000_000 == tick:
            return tick
    return process_start_ticks(pid)


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
