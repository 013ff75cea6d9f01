"""``process run``'s plumbing: its output on the right streams, its stdin, its signals; and
how a logged line is shown (the last frame of a progress bar)."""

from __future__ import annotations

import os
import queue
import re
import signal
import stat
import sys
import threading
from types import FrameType
from typing import Any, TextIO

from .._exceptions import Conflict, SandboxAgentError
from ..client import Client

__all__ = ["last_frame", "piped_stdin", "stream_output"]

#: Signals that stop the process as Ctrl-C does: an agent harness that times the command
#: out (SIGTERM), a closed terminal (SIGHUP).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# The prefixes a rendered line may carry: "[<ts>] " and "[stdout] " / "[stderr] ".
_PREFIX = re.compile(r"(?:\[\d{4}-\d\d-\d\dT[\d:.]+Z\] )?(?:\[(?:stdout|stderr)\] )?")
_FRAMES = re.compile(r"[\r\n]")


def last_frame(line: str) -> str:
    """A line as a terminal would leave it: the text after its last carriage return.

    A progress bar writes ``10%\\r20%\\r100%``; a log keeps every frame (a follow shows
    them as separate lines), a terminal shows only the last. The line's prefixes stay.

    >>> last_frame("[stdout] 10%\\r20%\\r100%")
    '[stdout] 100%'
    """
    prefix = _PREFIX.match(line)
    head = prefix.group(0) if prefix else ""
    body = line[len(head) :]
    if "\r" not in body and "\n" not in body:
        return line
    frames = [frame for frame in _FRAMES.split(body) if frame]
    return head + (frames[-1] if frames else "")


def piped_stdin() -> int | None:
    """The fd of stdin when it is a pipe, a file or a socket (something to forward), else
    None: a terminal (use -i), /dev/null, closed, or not a real file (under a test runner)."""
    try:
        fd = sys.stdin.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return None
    if stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode):
        return fd
    return None


def stream_output(client: Client, process_id: str, url: str | None, token: str | None, stdin: int | None) -> None:
    """Print the process's output, split by stream, until it exits; forward ``stdin``.

    Ctrl-C, SIGTERM and SIGHUP stop the process (SIGTERM to its group); a second one
    kills it. A thread reads the follow and queues its lines, another forwards stdin; this
    thread prints and acts on signals, which the handler only records (in the same queue,
    which is safe to put to from a handler), so that a line is never lost to a signal.
    """
    events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    done = threading.Event()

    def pump() -> None:
        try:
            with Client(url, token) as reader:
                for line in reader.follow(process_id, strip_timestamps=True):
                    if done.is_set():
                        return
                    events.put(("line", line))
        except BaseException as exc:
            events.put(("error", exc))
        else:
            events.put(("exit", None))

    def interrupted(signum: int, frame: FrameType | None) -> None:
        events.put(("signal", signum))

    # Not where signals cannot be handled, nor a signal that is ignored (SIGINT in a
    # background job, SIGHUP under nohup).
    handled: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                handled[signum] = signal.signal(signum, interrupted)
    threading.Thread(target=pump, name=f"follow {process_id}", daemon=True).start()
    if stdin is not None:
        threading.Thread(
            target=_forward_stdin, args=(url, token, process_id, stdin, done), name="stdin", daemon=True
        ).start()
    signals = 0
    last: TextIO = sys.stdout
    try:
        while True:
            kind, value = events.get()
            if kind == "line":
                target, text = _split_stream(value)
                if target is not last:
                    last.flush()
                    last = target
                target.write(last_frame(text) + "\n")
                if events.empty():
                    target.flush()
            elif kind == "signal":
                signals += 1
                again = "Ctrl-C again" if value == signal.SIGINT else f"{signal.Signals(value).name} again"
                if signals == 1:
                    _notice(f"stopping process {process_id} ({again} to kill it)")
                    client.stop(process_id)
                else:
                    _notice(f"killing process {process_id}")
                    client.kill(process_id)
            elif kind == "error":
                raise value
            else:
                return
    finally:
        done.set()
        sys.stdout.flush()
        sys.stderr.flush()
        for signum, previous in handled.items():
            signal.signal(signum, previous)


def _forward_stdin(url: str | None, token: str | None, process_id: str, fd: int, done: threading.Event) -> None:
    """Copy ``fd`` to the process's stdin, then close it (EOF)."""
    try:
        with Client(url, token) as writer:
            limit = writer.processes.get_config().max_input_bytes_per_request
            while not done.is_set():
                data = os.read(fd, min(limit, 65536))
                if not data:
                    writer.processes.input(process_id, eof=True)
                    return
                writer.processes.input(process_id, data)
    except Conflict:
        pass  # the process exited (or closed its stdin): nothing more to send
    except (SandboxAgentError, OSError) as exc:
        _notice(f"stdin is no longer forwarded to process {process_id}: {exc}")


def _split_stream(line: str) -> tuple[TextIO, str]:
    tag, _, text = line.partition(" ")
    if tag == "[stderr]":
        return sys.stderr, text
    if tag == "[stdout]":
        return sys.stdout, text
    return sys.stdout, line


def _notice(message: str) -> None:
    print(f"sandbox-agent: {' '.join(message.split())}", file=sys.stderr, flush=True)
