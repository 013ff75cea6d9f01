"""The launcher and the per-process supervisor. Standard library only.

This module is the part of sandbox-agent that must never die with the server, so it
depends on nothing but the standard library and runs as its own interpreter:

    python -I -S .../_supervisor.py <socket fd>

That process is the *launcher*: it imports what a supervisor needs once, freezes the
heap, and then forks one *supervisor* per spawn request it reads from the server's
socket. Forking from a warm launcher keeps a start to a couple of milliseconds and lets
every supervisor share the interpreter's pages copy-on-write.

A supervisor leaves the launcher's session, spawns the user's command in a session and
process group of its own, pumps the command's stdout and stderr into the three log files
with one timestamp per line, writes the state file by atomic replace, and exits once it
has recorded the command's exit. The server signals it with SIGUSR1 (stop: SIGTERM to
the group, SIGKILL after the grace period) or SIGUSR2 (kill: SIGKILL to the group).

The server imports this module too, for the log format and the state file helpers, so
that the two sides cannot disagree about either.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]
import _thread
import errno
import fcntl
import gc
import json
import os
import select
import signal
import sys
import time

# typing is a large import for a process that must stay small; annotations are strings.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STATE_FILE = "state.json"
LOG_FILES = {"stdout": "stdout.log", "stderr": "stderr.log", "combined": "combined.log"}

#: ``[2026-01-30T12:32:45.123Z] `` is always exactly this long.
TIMESTAMP_PREFIX_LEN = 27
#: One read from a pipe. An endless line is cut at MAX_LINE; keeping reads no larger
#: means only a line that started in an earlier read can exceed it.
#: Reads start at READ_SIZE and grow to BULK_READ_SIZE while the pipe keeps filling
#: them: a chatty process is read in small pieces, a bulk writer in large ones (fewer
#: wake-ups and writes per byte).
READ_SIZE = 64 * 1024
BULK_READ_SIZE = 1024 * 1024
#: An endless line is cut into lines of this many bytes.
MAX_LINE = 64 * 1024
#: How long a line without its newline waits before it is written out as it is.
PARTIAL_DELAY = 0.1
PIPE_SIZE = 1024 * 1024
STOP_SIGNAL_REQUEST = signal.SIGUSR1
KILL_SIGNAL_REQUEST = signal.SIGUSR2

# Plain ints and the C function under signal.signal, whose wrapper converts to and from
# enums: what a supervisor calls after the fork should touch as few objects as it can,
# since each page it touches is copied (this is most of a supervisor's memory).
_SIGTERM, _SIGKILL, _SIGCHLD = int(signal.SIGTERM), int(signal.SIGKILL), int(signal.SIGCHLD)
_SIGHUP, _SIGINT, _SIGPIPE, _SIGXFSZ = int(signal.SIGHUP), int(signal.SIGINT), int(signal.SIGPIPE), int(signal.SIGXFSZ)
_STOP, _KILL = int(STOP_SIGNAL_REQUEST), int(KILL_SIGNAL_REQUEST)
_SIG_DFL = int(signal.SIG_DFL)
_set_handler = _signal.signal

_F_SETPIPE_SZ = 1031
_TAGS = {"stdout": b"[stdout] ", "stderr": b"[stderr] "}


# ---------------------------------------------------------------------------
# Shared helpers: timestamps, state files, process identity
# ---------------------------------------------------------------------------


class _Clock:
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
    return _Clock().prefix(now)[1:-2].decode()


#: Made once, before any fork (json.dumps with options builds an encoder per call).
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


def write_json_atomic(path: str, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old file or the new one."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        payload = _encode_json(data).encode()
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


def _read_small(path: str) -> bytes | None:
    # Plain os calls rather than open(): no io objects in a supervisor's few pages.
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
        _boot_id = (_read_small("/proc/sys/kernel/random/boot_id") or b"").decode().strip()
    return _boot_id


def process_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if it is gone.

    Together with the pid and the boot id it names one process for good: a pid that was
    reused after a restart has another start time.
    """
    stat = _read_small(f"/proc/{pid}/stat")
    if not stat:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


# ---------------------------------------------------------------------------
# The supervisor
# ---------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Stream:
    """One output pipe of the child, turned into timestamped log lines."""

    __slots__ = ("combined", "fd", "log_fd", "name", "pending", "pending_since", "read_size", "tag")

    def __init__(self, name: str, fd: int, log_fd: int, combined: _CombinedWriter) -> None:
        self.name = name
        self.fd = fd
        self.log_fd = log_fd
        self.combined = combined
        self.tag = _TAGS[name]
        self.pending = b""
        self.pending_since = 0.0
        self.read_size = READ_SIZE

    def feed(self, chunk: bytes, now: float, clock: _Clock) -> None:
        data = self.pending + chunk if self.pending else chunk
        continued = bool(self.pending)
        start = 0
        if len(data) > MAX_LINE:
            data, start = self._cut_long_lines(data, now, clock)
            continued = continued and start == 0
        last = data.rfind(b"\n", start)
        if last == -1:
            if not continued:
                self.pending_since = now
            self.pending = data[start:] if start else data
            return
        self.emit(data[start : last + 1] if start else data[: last + 1], clock.prefix(now))
        self.pending = data[last + 1 :]
        self.pending_since = now

    def _cut_long_lines(self, data: bytes, now: float, clock: _Clock) -> tuple[bytes, int]:
        """Write out every line of ``data`` longer than MAX_LINE as MAX_LINE pieces.

        Looks at one window of MAX_LINE + 1 bytes at a time: a window without a newline
        is a piece to cut, so a megabyte of short lines costs sixteen searches, not one
        per line. Returns ``data`` and the offset where what is not yet written starts.
        """
        start = pos = 0
        while len(data) - pos > MAX_LINE:
            newline = data.rfind(b"\n", pos, pos + MAX_LINE + 1)
            if newline != -1:
                pos = newline + 1
                continue
            prefix = clock.prefix(now)
            if pos > start:
                self.emit(data[start:pos], prefix)
            self.emit(data[pos : pos + MAX_LINE] + b"\n", prefix)
            pos += MAX_LINE
            start = pos
        return data, start

    def flush_partial(self, now: float, clock: _Clock) -> None:
        if self.pending:
            self.emit(self.pending + b"\n", clock.prefix(now))
            self.pending = b""

    def emit(self, lines: bytes, prefix: bytes) -> None:
        """Write complete lines (``lines`` ends in a newline) to both logs.

        The hot path of capture: each log gets one ``replace`` and one ``writev``, with
        no other copy of the data (the prefix the last newline gains is cut by view).
        """
        self.combined.submit(lines, prefix + self.tag)
        try:
            _write_lines(self.log_fd, lines, prefix)
        except OSError:
            # A full or broken disk must not block the child: the output is dropped
            # and the command keeps running.
            pass


class _CombinedWriter:
    """Writes combined.log, in a second thread when the output is heavy.

    Both logs are written in full, so a heavy producer makes us write more than twice
    what it wrote; the kernel work of those writes (page allocation, copies) is most of
    the cost, and two threads spread it over two cores. The thread starts only at the
    first large chunk, so that a quiet process never pays for its stack, and at most
    one chunk is in flight, so the order of lines and the memory held stay as they were.
    """

    THREADED_FROM = 16 * 1024

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.job: tuple[bytes, bytes] | None = None
        self.work: Any = None  # _thread locks, created with the thread
        self.done: Any = None

    def submit(self, lines: bytes, prefix: bytes) -> None:
        if self.done is not None:
            self.done.acquire()  # the previous chunk is written: the order holds
        if len(lines) < self.THREADED_FROM:
            if self.done is not None:
                self.done.release()
            self._write(lines, prefix)
            return
        if self.work is None:
            self.work = _thread.allocate_lock()
            self.work.acquire()
            self.done = _thread.allocate_lock()
            self.done.acquire()
            _thread.start_new_thread(self._run, ())
        self.job = (lines, prefix)
        self.work.release()

    def flush(self) -> None:
        """Wait until every submitted chunk is on disk."""
        if self.done is not None:
            self.done.acquire()
            self.done.release()

    def _run(self) -> None:
        while True:
            self.work.acquire()
            job, self.job = self.job, None
            if job is not None:
                self._write(*job)
            self.done.release()

    def _write(self, lines: bytes, prefix: bytes) -> None:
        try:
            _write_lines(self.fd, lines, prefix)
        except OSError:
            pass


def _write_lines(fd: int, lines: bytes, prefix: bytes) -> None:
    stamped = memoryview(lines.replace(b"\n", b"\n" + prefix))[: -len(prefix)]
    written = os.writev(fd, (prefix, stamped))
    if written < len(prefix) + len(stamped):  # only on a signal or a full disk
        _write_all(fd, (prefix + stamped)[written:])


class Supervisor:
    """Owns one child from spawn to recorded exit."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request
        self.dir: str = request["dir"]
        self.state_path = f"{self.dir}/{STATE_FILE}"
        self.stop_timeout = float(request.get("stopTimeout", 10.0))
        self.partial_delay = float(request.get("partialDelay", PARTIAL_DELAY))
        self.clock = _Clock()
        self.state: dict[str, Any] = {}
        self.stop_requested = False
        self.kill_requested = False
        self.kill_deadline: float | None = None
        self.kill_sent = False
        self.killed = False

    # -- spawn ------------------------------------------------------------

    def spawn(self) -> int:
        """Start the command; return its pid. OSError if it cannot be started."""
        req = self.request
        self.log_fds = {
            name: os.open(
                f"{self.dir}/{file}",
                os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                0o600,
            )
            for name, file in LOG_FILES.items()
        }
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # posix_spawn (vfork and exec) rather than subprocess: far less Python runs
            # in the forked supervisor, so far fewer shared pages get copied.
            os.chdir(req["cwd"])
            pid = os.posix_spawn(
                req["executable"],
                [req["command"], *req["args"]],
                req["env"],
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, devnull, 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, err_w, 2),
                ],
                setsid=True,
                setsigmask=(),
                # Python ignores these; an ignored signal would stay ignored after exec.
                setsigdef=(_SIGPIPE, _SIGXFSZ),
            )
        finally:
            os.close(out_w)
            os.close(err_w)
            os.close(devnull)
        started = time.time()
        self.streams: dict[int, _Stream] = {}
        self.combined = _CombinedWriter(self.log_fds["combined"])
        for name, fd in (("stdout", out_r), ("stderr", err_r)):
            try:
                fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # capped by /proc/sys/fs/pipe-max-size: the default size works too
            os.set_blocking(fd, False)
            self.streams[fd] = _Stream(name, fd, self.log_fds[name], self.combined)
        self.state = {
            "id": req["id"],
            "command": req["command"],
            "args": req["args"],
            "cwd": req["cwd"],
            "status": "running",
            "pid": pid,
            "pidStart": process_start_ticks(pid),
            "exitCode": None,
            "exitSignal": None,
            "startedAt": started,
            "stoppedAt": None,
            "supervisorPid": os.getpid(),
            "supervisorStart": process_start_ticks(os.getpid()),
            "bootId": boot_id(),
            "stopTimeout": self.stop_timeout,
        }
        write_json_atomic(self.state_path, self.state)
        return pid

    # -- signals from the server -----------------------------------------

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def _on_kill(self, signum: int, frame: object) -> None:
        self.kill_requested = True

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass

    def _act_on_requests(self, now: float) -> None:
        """Turn recorded requests into signals: SIGTERM once, SIGKILL once."""
        if self.kill_sent:
            return
        if self.kill_requested or (self.kill_deadline is not None and now >= self.kill_deadline):
            # Only a kill request acted on before the exit was seen makes it "killed".
            self.killed = self.kill_requested
            self._signal_group(_SIGKILL)
            self.kill_sent = True
            self.kill_deadline = None
        elif self.stop_requested and self.kill_deadline is None:
            self._signal_group(_SIGTERM)
            self.kill_deadline = now + self.stop_timeout

    # -- the loop ----------------------------------------------------------

    def listen(self) -> None:
        """Take stop and kill requests from now on; the loop acts on them once it runs.

        Called before the spawn is confirmed: the server may signal at once after that,
        and an unhandled SIGUSR2 would kill the supervisor instead of the command.
        """
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        _set_handler(_STOP, self._on_stop)
        _set_handler(_SIGTERM, self._on_stop)
        _set_handler(_KILL, self._on_kill)

    def run(self, pid: int) -> None:
        self.pgid = pid
        wake_r = self.wake_r
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        for fd in self.streams:
            poller.register(fd, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        exited = False
        while not exited:
            now = time.time()
            self._act_on_requests(now)
            deadline = None
            for stream in self.streams.values():
                if stream.pending:
                    due = stream.pending_since + self.partial_delay
                    deadline = due if deadline is None else min(deadline, due)
            if self.kill_deadline is not None:
                deadline = self.kill_deadline if deadline is None else min(deadline, self.kill_deadline)
            timeout = None if deadline is None else max(0, int((deadline - now) * 1000) + 1)
            events = poller.poll(timeout)
            now = time.time()
            for fd, _mask in events:
                if fd == pidfd:
                    exited = True
                elif fd == wake_r:
                    try:
                        os.read(wake_r, 512)
                    except BlockingIOError:
                        pass
                elif fd in self.streams and not self._pump(self.streams[fd], now):
                    poller.unregister(fd)
            for stream in self.streams.values():
                if stream.pending and now - stream.pending_since >= self.partial_delay:
                    stream.flush_partial(now, self.clock)
        _pid, status = os.waitpid(pid, 0)
        # Everything the child wrote before it exited is in the pipes now: drain what is
        # there, but do not wait for descendants that still hold them open.
        now = time.time()
        for stream in self.streams.values():
            while self._pump(stream, now, drain=True):
                pass
            stream.flush_partial(now, self.clock)
        self.combined.flush()
        self._record_exit(status, time.time())

    def _pump(self, stream: _Stream, now: float, drain: bool = False) -> bool:
        """Read once from ``stream``; False at end of file (or, draining, when empty)."""
        if stream.fd < 0:
            return False
        try:
            chunk = os.read(stream.fd, stream.read_size)
        except BlockingIOError:
            return not drain
        except OSError:
            chunk = b""
        if not chunk:
            os.close(stream.fd)
            stream.fd = -1
            return False
        if len(chunk) == stream.read_size:
            stream.read_size = BULK_READ_SIZE
        elif len(chunk) < READ_SIZE:
            stream.read_size = READ_SIZE
        stream.feed(chunk, now, self.clock)
        return True

    def _record_exit(self, status: int, now: float) -> None:
        state = self.state
        if os.WIFEXITED(status):
            state["exitCode"] = os.WEXITSTATUS(status)
        elif os.WIFSIGNALED(status):
            state["exitSignal"] = os.WTERMSIG(status)
        state["status"] = "killed" if self.killed else "stopped"
        state["stoppedAt"] = now
        write_json_atomic(self.state_path, state)


def _supervise(sock: int, message: dict[str, Any]) -> None:
    """Body of a forked supervisor; never returns."""
    code = 0
    try:
        os.setsid()
        _set_handler(_SIGCHLD, _SIG_DFL)
        # A Python-level no-op rather than SIG_IGN: ignored signals would stay ignored
        # in the child across exec, handled ones are reset to their default there.
        _set_handler(_SIGHUP, _ignore)
        _set_handler(_SIGINT, _ignore)
        supervisor = Supervisor(message)
        supervisor.listen()
        try:
            pid = supervisor.spawn()
        except OSError as exc:
            _reply(sock, {"req": message["req"], "ok": False, "errno": exc.errno, "error": exc.strerror or str(exc)})
            return
        _reply(sock, {"req": message["req"], "ok": True, "state": supervisor.state})
        os.close(sock)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        supervisor.run(pid)
    except BaseException:
        code = 1
        _report_crash(message.get("dir"))
    finally:
        os._exit(code)


def _ignore(signum: int, frame: object) -> None:
    pass


def _reply(sock: int, payload: dict[str, Any]) -> None:
    try:
        os.write(sock, _encode_json(payload).encode())
    except OSError:
        pass  # the server is gone; it will read the state file when it comes back


def _report_crash(directory: str | None) -> None:
    import traceback

    text = traceback.format_exc()
    if directory:
        try:
            with open(os.path.join(directory, "supervisor-error.log"), "a") as f:
                f.write(text)
            return
        except OSError:
            pass
    try:
        os.write(2, text.encode())
    except OSError:
        pass


# ---------------------------------------------------------------------------
# The launcher
# ---------------------------------------------------------------------------


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
        clock = _Clock()
        stream = _Stream("stdout", -1, devnull, _CombinedWriter(devnull))
        for i in range(64):
            stream.feed(b"warm\nup", time.time(), clock)
            stream.flush_partial(time.time(), clock)
            _encode_json({"i": i, "pid": process_start_ticks(os.getpid()), "s": "x", "n": None})
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
    _warm_up()
    gc.collect()
    gc.freeze()
    while True:
        try:
            data = os.read(sock, 4 * 1024 * 1024)
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
            _reply(sock, {"req": message.get("req"), "ok": True})
            continue
        if os.fork() == 0:
            _supervise(sock, message)


if __name__ == "__main__":
    launcher_main(int(sys.argv[1]))
