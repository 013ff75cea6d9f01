"""The launcher: a warm interpreter that forks one supervisor per spawn request.

Started by the server (``engine.launcher``) as ``python -I -S <this folder> <fd>``, it
imports what a supervisor needs once, freezes the heap, and then forks a supervisor for
each spawn request it reads from the server's socket. Forking from a warm launcher keeps
a start to a couple of milliseconds and lets every supervisor share the interpreter's
pages copy-on-write. It exits when the server's end of the socket closes; the
supervisors it forked carry on in sessions of their own.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import signal
import time

from .capture import CombinedWriter, LogFile, Stream
from .ondisk import LAUNCHER_MAX_MESSAGE, Clock, boot_id, encode_json, process_start_ticks
from .supervisor import prepare, reply, supervise


def _reap(signum: int, frame: object) -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _warm_up() -> None:
    """Run the supervisors' common code here once, before any fork.

    CPython 3.11 rewrites a function's bytecode in place as it specializes it: done in
    each supervisor, that copies the code's pages into every one of them; done here,
    they all share the result.
    """
    boot_id()
    devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        clock = Clock()
        stream = Stream("stdout", -1, LogFile(devnull), CombinedWriter(LogFile(devnull)))
        for i in range(64):
            stream.feed(b"warm\nup", time.time(), clock)
            stream.flush_partial(time.time(), clock)
            encode_json({"i": i, "pid": process_start_ticks(os.getpid()), "s": "x", "n": None})
    finally:
        os.close(devnull)


def launcher_main(fd: int) -> None:
    """Serve spawn requests from the server until it closes the socket."""
    # A SOCK_SEQPACKET socket: one read is one message, one write sends one. Plain os
    # calls on it spare the launcher (and every supervisor) the socket module.
    sock = fd
    os.set_inheritable(sock, False)
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    prepare()
    _warm_up()
    gc.collect()
    gc.freeze()
    while True:
        try:
            data = os.read(sock, LAUNCHER_MAX_MESSAGE)
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            return
        if not data:
            return
        try:
            message = json.loads(data)
        except ValueError:
            continue
        if message.get("op") == "ping":
            reply(sock, {"req": message.get("req"), "ok": True})
            continue
        if os.fork() == 0:
            supervise(sock, message)
