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
    PTY_LOG,
    decode_control,
    pack_pty_record,
)

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
    """Appends a tty's output to pty.log and one index record per chunk to pty.idx."""

    __slots__ = ("end", "idx_fd", "log_fd")

    def __init__(self, directory: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self.log_fd = os.open(f"{directory}/{PTY_LOG}", flags, 0o600)
        self.idx_fd = os.open(f"{directory}/{PTY_INDEX}", flags, 0o600)
        self.end = os.fstat(self.log_fd).st_size

    def record(self, chunk: bytes, now: float) -> None:
        view = memoryview(chunk)
        try:
            while view:
                n = os.write(self.log_fd, view)
                self.end += n
                view = view[n:]
            # Written after the data: a record always names bytes that are there.
            os.write(self.idx_fd, pack_pty_record(self.end, int(now * 1000 + 1e-6)))
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
