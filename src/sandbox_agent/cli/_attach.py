"""``sandbox-agent process attach``: the user's terminal joined to a process's terminal.

The caller's terminal goes into raw mode, so every key (Ctrl-C included) reaches the
process; its window size is sent on attach and on every SIGWINCH. The detach keys
(Ctrl-P Ctrl-Q by default, as Docker's) leave the process running. When the process
exits, so does the command, with the process's exit code.

Built on the SDK's ``TerminalSession``: a thread reads its output onto stdout; the main
thread waits on stdin and on a wake-up pipe that signal handlers and the reader write to.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._exceptions import SandboxAgentError, TerminalClosed

if TYPE_CHECKING:
    # Not at import: `sandbox-agent server` builds the parser that names the defaults here.
    from ..client import Client, TerminalSession

__all__ = ["DEFAULT_DETACH_KEYS", "Attached", "DetachKeys", "attach", "parse_detach_keys", "window_size"]

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
#: Signals that leave the terminal (the process keeps running): a closed terminal, a kill.
_LEAVE_SIGNALS = (signal.SIGHUP, signal.SIGTERM)
_READ = 4096


def parse_detach_keys(text: str) -> bytes:
    """Docker's notation: comma-separated keys, each ``ctrl-<c>`` or one character.

    >>> parse_detach_keys("ctrl-p,ctrl-q")
    b'\\x10\\x11'

    An empty string means no detach keys (ValueError for anything unusable).
    """
    keys = bytearray()
    for key in filter(None, (part.strip() for part in text.split(","))):
        if key.lower().startswith("ctrl-") and len(key) == 6:
            code = ord(key[5].upper())
            if not 0x40 <= code <= 0x5F:  # @, A-Z, [, \, ], ^, _
                raise ValueError(f"ctrl-{key[5]} is not a control key; use ctrl-a .. ctrl-z, ctrl-@, ctrl-[ .. ctrl-_")
            keys.append(code - 0x40)
        elif len(key) == 1 and key.isascii():
            keys.append(ord(key))
        else:
            raise ValueError(f"{key!r} is not a key: write ctrl-<letter> or one character, comma-separated")
    return bytes(keys)


class DetachKeys:
    """Finds the detach sequence in what the user types.

    Bytes that could start the sequence are held back until it is complete (detach) or
    broken (they are sent, late but in order), as Docker does.
    """

    def __init__(self, sequence: bytes) -> None:
        self.sequence = sequence
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(the bytes to send now, whether the sequence was typed)."""
        if not self.sequence:
            return data, False
        out = bytearray()
        for byte in data:
            candidate = self._held + bytes([byte])
            if self.sequence.startswith(candidate):
                self._held = candidate
                if candidate == self.sequence:
                    self._held = b""
                    return bytes(out), True
                continue
            out += self._held
            self._held = b""
            if self.sequence.startswith(bytes([byte])):
                self._held = bytes([byte])
                if len(self.sequence) == 1:
                    return bytes(out), True
            else:
                out.append(byte)
        return bytes(out), False


@dataclass
class Attached:
    """How an attach ended: ``exited`` (the process ended) or detached."""

    exited: bool
    #: The exit code from the terminal's exit frame (None for a signal, or when detached).
    exit_code: int | None = None
    #: Why the attach was left, when detached: "keys", "signal", "stdin closed".
    reason: str = ""


def window_size(fd: int | None = None) -> tuple[int, int] | None:
    """(cols, rows) of the caller's terminal, or None when there is none."""
    fds = [fd] if fd is not None else [sys.stdin.fileno(), sys.stdout.fileno()]
    for each in fds:
        try:
            size = os.get_terminal_size(each)
        except OSError:
            continue
        if size.columns > 0 and size.lines > 0:
            return size.columns, size.lines
    return None


def attach(client: Client, process_id: str, *, detach_keys: bytes, replay: int | None = None) -> Attached:
    """Join the caller's terminal to ``process_id``'s until it exits or the user detaches."""
    with client.processes.terminal(process_id, replay=replay) as session:
        return _Attachment(session, detach_keys).run()


class _Attachment:
    def __init__(self, session: TerminalSession, detach_keys: bytes) -> None:
        self.session = session
        self.keys = DetachKeys(detach_keys)
        self.stdin = sys.stdin.fileno()
        self.stdout = sys.stdout.fileno()
        self.is_tty = os.isatty(self.stdin)
        self.reader_error: BaseException | None = None
        self.reader_done = threading.Event()

    def run(self) -> Attached:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        try:
            with _signals_to(wake_w), self._raw_mode():
                self._send_size()
                reader = threading.Thread(target=self._read, args=(wake_w,), name="terminal output", daemon=True)
                reader.start()
                result = self._loop(wake_r)
            if result.exited or self.reader_error is not None:
                reader.join(5)
            if self.reader_error is not None and not isinstance(self.reader_error, TerminalClosed):
                raise self.reader_error
            return result
        finally:
            os.close(wake_r)
            os.close(wake_w)

    def _loop(self, wake_r: int) -> Attached:
        watched = [self.stdin, wake_r]
        while True:
            ready, _, _ = select.select(watched, [], [])
            if wake_r in ready:
                woken = os.read(wake_r, 512)
                if self.reader_done.is_set():
                    return Attached(exited=self.reader_error is None, exit_code=self.session.exit_code)
                if any(signum in woken for signum in _LEAVE_SIGNALS):
                    return Attached(exited=False, reason="signal")
                if signal.SIGWINCH in woken:
                    self._send_size()
            if self.stdin in ready:
                data = os.read(self.stdin, _READ)
                if not data:
                    if self.is_tty:
                        return Attached(exited=False, reason="stdin closed")
                    watched = [wake_r]  # piped input is over: keep showing output until the exit
                    continue
                data, detached = self.keys.feed(data)
                if data:
                    self._forward(data)
                if detached:
                    return Attached(exited=False, reason="keys")

    def _forward(self, data: bytes) -> None:
        try:
            self.session.send(data)
        except SandboxAgentError:
            # The process exited meanwhile (or the link broke): the reader reports it.
            pass

    def _send_size(self) -> None:
        size = window_size(self.stdin) if self.is_tty else None
        if size is not None:
            with contextlib.suppress(SandboxAgentError):
                self.session.resize(*size)

    def _read(self, wake_w: int) -> None:
        try:
            for chunk in self.session:
                _write_all(self.stdout, chunk)
        except BaseException as exc:
            self.reader_error = exc
        finally:
            self.reader_done.set()
            with contextlib.suppress(OSError):
                os.write(wake_w, b"\0")

    @contextlib.contextmanager
    def _raw_mode(self) -> Iterator[None]:
        if not self.is_tty:
            yield
            return
        saved = termios.tcgetattr(self.stdin)
        tty.setraw(self.stdin, termios.TCSANOW)
        try:
            yield
        finally:
            termios.tcsetattr(self.stdin, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _signals_to(wake_w: int) -> Iterator[None]:
    """SIGWINCH, SIGHUP and SIGTERM written to ``wake_w`` (the handlers only record them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = (signal.SIGWINCH, *_LEAVE_SIGNALS)
    previous = {signum: signal.signal(signum, _record) for signum in wanted}
    previous_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _record(signum: int, frame: object) -> None:
    """Nothing: the wake-up fd carries the signal number to the loop."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
