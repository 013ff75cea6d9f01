"""The launcher: a warm interpreter that keeps supervisors forked in advance.

Started by the server (``engine.launcher``) as ``python -I -S <this folder> <fd>``, it
imports what a supervisor needs once, freezes the heap, and forks ``SPARES`` *spares*:
supervisors-to-be that have already set themselves up (session, subreaper, signals) and
wait on the server's socket. The spare that reads a spawn request tells the launcher it
was taken and becomes that process's supervisor; the launcher forks its replacement a
little later, while the other spare serves the next request. So the fork and the first
copy-on-write faults happen neither while a caller waits nor beside the start that is
under way, and every supervisor shares the interpreter's pages copy-on-write. The
launcher exits when the spares read the end of the server's socket; the supervisors
carry on in sessions of their own.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import time

from .capture import CombinedWriter, LogFile, Stream
from .ondisk import LAUNCHER_MAX_MESSAGE, Clock, boot_id, encode_json, process_start_ticks
from .supervisor import SPARE_NAME, Supervisor, become_supervisor, prepare, reply, set_name, supervise

#: What a spare tells the launcher on its pipe (its pid, then ``_TAKEN``; or ``_END``),
#: and what the SIGCHLD handler adds.
_TAKEN, _END, _DIED = b"t", b"e", b"d"
#: Spares kept waiting. The launcher replaces one that was taken ``REFILL_DELAY`` seconds
#: later, so that the fork and the new spare's first copy-on-write faults do not take a
#: core from the start that took it (measured: a tenth off start-to-exit); at once only
#: when none is left, as a request may be waiting.
SPARES = 2
REFILL_DELAY = 0.01
#: How often the launcher reads the runs the server named (``RunGuard``): the pipe holds
#: far more than the server can start in that time.
RUNS_READ_INTERVAL = 1.0
#: Children reaped and not yet seen by the launcher's loop, and the pipe the handler wakes it on.
_dead: set[int] = set()
_notify_w = -1
#: The server's exits socket, which every supervisor tells its command's exit on.
_exits_fd = -1


def _reap(signum: int, frame: object) -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _dead.add(pid)
        try:
            os.write(_notify_w, _DIED)
        except OSError:
            pass


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


def launcher_main(fd: int, runs_fd: int = -1, exits_fd: int = -1) -> None:
    """Keep ``SPARES`` spare supervisors waiting on the server's socket until the server
    closes it.

    ``runs_fd``: the read end of a pipe on which the server names its one-shot runs as they
    start and end (``RunGuard``); when the server is gone, the launcher kills what still
    runs of them, each as a whole process group. ``exits_fd``: a datagram socket to the
    server, for the supervisors (``Supervisor._tell_exit``).
    """
    global _notify_w, _exits_fd
    # A SOCK_SEQPACKET socket: one read is one message, one write sends one. Plain os
    # calls on it spare the launcher (and every supervisor) the socket module.
    sock = fd
    os.set_inheritable(sock, False)
    for own in (runs_fd, exits_fd):
        if own >= 0:
            os.set_inheritable(own, False)  # no command a supervisor starts gets it
    _exits_fd = exits_fd
    notify_r, _notify_w = os.pipe2(os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    prepare()
    _warm_up()
    gc.collect()
    gc.freeze()
    spares = {_fork_spare(sock, notify_r, runs_fd) for _ in range(SPARES)}
    refill_at: float | None = None
    runs = RunGuard(runs_fd)
    poller = select.poll()
    poller.register(notify_r, select.POLLIN)
    if runs_fd >= 0:
        # Not woken by each line (two per run, a wake-up each on another core), only by
        # the pipe's end; the lines are read every RUNS_READ_INTERVAL, and at the end.
        os.set_blocking(runs_fd, False)
        poller.register(runs_fd, 0)
    runs_read_at = time.monotonic() + RUNS_READ_INTERVAL
    while True:
        wake_at = runs_read_at if refill_at is None else min(refill_at, runs_read_at)
        ready = [fd for fd, _mask in poller.poll(max(0, int((wake_at - time.monotonic()) * 1000) + 1))]
        if runs_fd in ready or (runs_fd >= 0 and time.monotonic() >= runs_read_at):
            runs_read_at = time.monotonic() + RUNS_READ_INTERVAL
            if not runs.read():
                # The server is gone (its end of the pipe closed with it).
                poller.unregister(runs_fd)
                runs.kill_all()
                os.close(runs_fd)  # not for the spares forked from now on
                runs_fd = -1
        if notify_r in ready:
            news = os.read(notify_r, 4096)
            if not news or _END in news:
                runs.kill_all()
                # The spares that read the end exit at once: wait for them, so that
                # nothing of ours outlives the launcher unreaped.
                for spare in spares:
                    try:
                        os.waitpid(spare, 0)
                    except ChildProcessError:
                        pass  # reaped already by the SIGCHLD handler
                return
            spares.difference_update(int(pid) for pid in news.replace(_DIED, b"").split(_TAKEN) if pid)
        dead = set(_dead)
        _dead.difference_update(dead)
        spares -= dead
        if not spares:
            # None left: a request may be waiting for one.
            spares.add(_fork_spare(sock, notify_r, runs_fd))
        if len(spares) >= SPARES:
            refill_at = None
        elif refill_at is None:
            refill_at = time.monotonic() + REFILL_DELAY
        elif time.monotonic() >= refill_at:
            while len(spares) < SPARES:
                spares.add(_fork_spare(sock, notify_r, runs_fd))
            refill_at = None


class RunGuard:
    """The server's one-shot runs that still run, as it names them on a pipe.

    The server writes ``+<pid> <start ticks>`` when a run starts and ``-<pid>`` as soon as
    it has reaped it, each line one atomic pipe write. A run is a session and process
    group of its own, led by its pid. Its start time, read by the server while the run was
    its unreaped child, tells it from a later process that got the same pid: the group is
    killed only if its leader still has that start time. The lines are read in batches,
    in order: a run that ended is gone from the list by the end of the batch.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = b""
        self.runs: dict[int, int] = {}

    def read(self) -> bool:
        """Take all the server wrote so far; False at its end (the server is gone)."""
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                data = b""
            if not data:
                return False
            lines = (self.pending + data).split(b"\n")
            self.pending = lines.pop()
            for line in lines:
                try:
                    if line.startswith(b"+"):
                        pid, ticks = line[1:].split(b" ")
                        self.runs[int(pid)] = int(ticks)
                    elif line.startswith(b"-"):
                        self.runs.pop(int(line[1:]), None)
                except ValueError:
                    continue

    def kill_all(self) -> None:
        """SIGKILL to the group of every run still listed that is still the same process."""
        for pid, ticks in self.runs.items():
            if process_start_ticks(pid) == ticks:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass  # gone meanwhile
        self.runs.clear()


def _fork_spare(sock: int, notify_r: int, runs_fd: int) -> int:
    pid = os.fork()
    if pid == 0:
        if runs_fd >= 0:
            os.close(runs_fd)  # the launcher's alone
        _spare(sock, notify_r)
    return pid


def _taken() -> None:
    """Tell the launcher this spare was taken (and so is one short)."""
    os.write(_notify_w, b"%d%s" % (os.getpid(), _TAKEN))
    os.close(_notify_w)


#: A spawn request's shape, parsed by each spare while it waits: the parse of the real one
#: then writes to pages the spare has already copied (the decoder's objects and state).
_REHEARSAL = json.dumps(
    {
        "op": "spawn",
        "id": "0" * 26,
        "dir": "/" + "d" * 80,
        "command": "command",
        "executable": "/usr/bin/command",
        "args": ["argument", "argument"],
        "cwd": "/" + "c" * 40,
        "envAdd": {"NAME": "value"},
        "stopTimeout": 10.0,
        "partialDelay": 0.1,
        "tty": False,
        "interactive": False,
        "terminalSize": None,
        "maxLogBytes": 67108864,
        "restart": None,
        "restartResetAfter": 60.0,
        "exitReady": True,
        "req": 1,
    }
)


def _touch_allocator() -> None:
    """Copy, while the spare waits, the allocator's pages a start writes first.

    A fresh fork shares every page with the launcher: its first allocation of each size
    class writes to a pool it must copy first (a fault, 5 to 20 µs on a VM), and a start
    makes its first allocations of most classes while the caller waits. One object of
    each size up to 256 bytes, made and dropped here, takes those faults ahead (create to
    exit 2 to 4% sooner); larger sizes, rarer on a start, cost more memory than they save.
    """
    sizes = [bytes(size) for size in range(1, 260, 8)]
    del sizes


def _spare(sock: int, notify_r: int) -> None:
    """A supervisor-to-be: answer pings, and become the supervisor of the first spawn
    request read; never returns."""
    try:
        os.close(notify_r)
        become_supervisor()
        supervisor = Supervisor(_exits_fd)
        _touch_allocator()
        json.loads(_REHEARSAL)
        supervisor.rehearse()
        # Named only now, with its request handlers in place: the name says it is ready.
        set_name(SPARE_NAME)
        while True:
            try:
                data = os.read(sock, LAUNCHER_MAX_MESSAGE)
            except OSError:
                data = b""  # the socket is unusable: as good as closed
            if not data:
                os.write(_notify_w, _END)
                break
            try:
                message = json.loads(data)
            except ValueError:
                continue
            op = message.get("op")
            if op == "ping":
                reply(sock, {"req": message.get("req"), "ok": True})
                continue
            if op == "wake":
                continue  # a spawn request follows: this woke a spare (and its CPU) ahead
            supervise(sock, supervisor, message, _taken)
    except BaseException:
        pass
    os._exit(0)
