"""A supervisor's terminal and input: the pty, its raw log and index, the control FIFO.

Standard library only, and only plain ``os`` calls on the hot path: most supervisors
have no terminal and never touch this module's code. It is imported in the launcher,
before the fork, ``termios`` included: imported after the fork, in each tty supervisor,
it cost about 0.4 MB of private memory apiece; before it, its pages are shared.
"""

from __future__ import annotations

import fcntl
import os
import sys
import termios

from .ondisk import (
    CONTROL_FIFO,
    PTY_INDEX,
    PTY_INDEX_RECORD,
    PTY_LOG,
    decode_control,
    pack_pty_record,
)
from .rotation import Generations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: How much input a supervisor buffers for a child that does not read it before it
#: stops reading the control FIFO: the server's writes then wait (backpressure).
INPUT_BACKLOG = 1024 * 1024
_CONTROL_READ = 64 * 1024


def open_pty(cols: int, rows: int) -> tuple[int, str]:
    """A new pty of ``cols`` x ``rows``: the master fd (non-blocking) and the slave's path.

    The slave is opened by the child itself (after ``setsid``), without ``O_NOCTTY``, so
    that it becomes the controlling terminal of the child's new session.
    """
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
    finally:
        os.close(slave)
    os.set_inheritable(master, False)
    set_window(master, cols, rows)
    os.set_blocking(master, False)
    return master, path


def set_window(master: int, cols: int, rows: int) -> None:
    """Set the window size; the kernel sends SIGWINCH to the terminal's foreground group."""
    order = sys.byteorder
    winsize = rows.to_bytes(2, order) + cols.to_bytes(2, order) + bytes(4)
    fcntl.ioctl(master, termios.TIOCSWINSZ, winsize)


class PtyRecorder:
    """Appends a tty's output to pty.log and one index record per chunk to pty.idx.

    Capped (``max_log_bytes``, with ``record`` to write rotations into the state record),
    the two files rotate together (``rotation.py``) before either would pass half the cap:
    the generations of pty.idx then hold the chunks of the same generations of pty.log, and
    what is dropped from one is dropped from the other. Offsets in index records are
    logical, like the others (bytes ever written to pty.log); the new pty.idx's record
    gets ``start``, where its first chunk starts, since the record that ends the chunk
    before it is in the generation that goes next. A chunk larger than half the cap is
    recorded in pieces that fit.
    """

    __slots__ = ("half", "idx", "idx_behind", "idx_fd", "idx_size", "log", "log_fd", "log_size", "recorded")

    def __init__(
        self, directory: str, max_log_bytes: int = 0, record: Callable[[str, dict[str, Any]], bool] | None = None
    ) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        log_path, idx_path = f"{directory}/{PTY_LOG}", f"{directory}/{PTY_INDEX}"
        self.log_fd = os.open(log_path, flags, 0o600)
        self.idx_fd = os.open(idx_path, flags, 0o600)
        self.log_size = os.fstat(self.log_fd).st_size
        self.idx_size = os.fstat(self.idx_fd).st_size
        #: Where the last recorded chunk ends (logical): the next one starts there.
        self.recorded = self.log_size
        self.half = max_log_bytes // 2 if record is not None else 0
        self.log = Generations(log_path, record, count_lines=False) if record is not None else None
        self.idx = Generations(idx_path, record, count_lines=False) if record is not None else None
        #: pty.log was rotated, pty.idx not yet (it failed): rotate pty.idx before writing.
        self.idx_behind = False

    @property
    def end(self) -> int:
        """The logical end of pty.log."""
        return (self.log.base if self.log is not None else 0) + self.log_size

    def record(self, chunk: bytes, now: float) -> None:
        timestamp_ms = int(now * 1000 + 1e-6)
        half = self.half
        if not half:
            self._append(chunk, timestamp_ms)
            return
        view = memoryview(chunk)
        for start in range(0, len(chunk), half):
            piece = view[start : start + half]
            if (
                self.idx_behind
                or (self.log_size and self.log_size + len(piece) > half)
                or self.idx_size + PTY_INDEX_RECORD > half
            ):
                self._rotate()
            self._append(piece, timestamp_ms)

    def _rotate(self) -> None:
        """Rotate pty.log, then pty.idx; if either cannot be done now, write on."""
        assert self.log is not None
        assert self.idx is not None
        if not self.idx_behind and self.log_size:
            fd = self.log.rotate(self.log_fd, self.log_size)
            if fd == -1:
                return
            os.close(self.log_fd)
            self.log_fd, self.log_size = fd, 0
            self.idx_behind = True
        fd = self.idx.rotate(self.idx_fd, self.idx_size, extra={"start": self.recorded})
        if fd == -1:
            return
        os.close(self.idx_fd)
        self.idx_fd, self.idx_size = fd, 0
        self.idx_behind = False

    def _append(self, data: bytes | memoryview, timestamp_ms: int) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.log_fd, view)
                self.log_size += n
                view = view[n:]
            # Written after the data: a record always names bytes that are there.
            end = self.end
            self.idx_size += os.write(self.idx_fd, pack_pty_record(end, timestamp_ms))
            self.recorded = end
        except OSError:
            # A full disk must not block the terminal. What reached pty.log without
            # its record joins the next chunk.
            pass


class Control:
    """The read side of the control FIFO, kept open (read-write) for as long as we run."""

    __slots__ = ("buffer", "fd")

    def __init__(self, directory: str) -> None:
        path = f"{directory}/{CONTROL_FIFO}"
        os.mkfifo(path, 0o600)
        # Read-write: the FIFO always has a writer (us), so no end of file when a server
        # closes its end, and a server can open it for writing without blocking.
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.buffer = b""

    def read(self) -> list[tuple[int, bytes]]:
        """The messages that are complete after one read."""
        try:
            data = os.read(self.fd, _CONTROL_READ)
        except BlockingIOError:
            return []
        messages, self.buffer = decode_control(self.buffer + data)
        return messages
