"""One supervisor: owns one child from spawn to recorded exit. Standard library only.

Forked from the launcher, a supervisor leaves the launcher's session, becomes a child
subreaper (orphans below it come to it, and it reaps them), spawns the user's command in
a session and process group of its own, pumps the command's stdout and stderr into the
three log files (``capture``) and writes the state record by atomic replace. It records
the command's exit as soon as it sees it (in ``ondisk.EXIT_FILE`` when the disk is too
full for state.json), then keeps pumping while descendants the command left behind still
hold its pipes (or its terminal), and exits once the last descendant is gone: as their
subreaper it outlives even those that closed their output, so that stop and kill still
reach them. The server signals it with ``STOP_SIGNAL_REQUEST`` (SIGTERM to every
descendant, SIGKILL after the grace period) or ``KILL_SIGNAL_REQUEST`` (SIGKILL to every
descendant).

With a restart policy (``ondisk.RESTART_POLICIES``) an exit that calls for a restart is not
recorded as the end: the status stays "running" with no pid and ``restartAt`` set, the
descendants the run left get SIGTERM, and once the backoff has passed (SIGKILL to those
still there) the command is spawned again in the same directory, its output appended to
the same logs after a marker line. A stop or kill during the backoff ends it at once;
``RESTART_SIGNAL_REQUEST`` ends the current run as a stop would and starts the next one
without waiting, policy or not. This happens with or without a server.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]
import _thread
import fcntl
import os
import select
import signal
import time

from .capture import BULK_READ_SIZE, PARTIAL_DELAY, PIPE_SIZE, READ_SIZE, CombinedWriter, LogFile, Stream
from .ondisk import (
    CONTROL_EOF,
    CONTROL_INPUT,
    CONTROL_RESIZE,
    DEFAULT_BACKOFF_MS,
    DEFAULT_TERMINAL_SIZE,
    ERROR_FILE,
    EXIT_MESSAGE_MAX,
    KILL_SIGNAL_REQUEST,
    LOG_FILES,
    MAX_BACKOFF_MS,
    RESTART_RESET_AFTER,
    RESTART_SIGNAL_REQUEST,
    STATE_FILE,
    STOP_SIGNAL_REQUEST,
    STREAM_TAGS,
    Clock,
    boot_id,
    encode_json,
    fill_exit_record,
    make_exit_record,
    process_start_ticks,
    read_small,
    spawn_in_session,
    write_json_atomic,
)
from .rotation import Generations, use_renameat2
from .terminal import INPUT_BACKLOG, Control, PtyRecorder, open_pty, set_window

# typing is a large import for a process that must stay small; annotations are strings.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# Plain ints and the C function under signal.signal, whose wrapper converts to and from
# enums: what a supervisor calls after the fork should touch as few objects as it can,
# since each page it touches is copied (this is most of a supervisor's memory).
_SIGTERM, _SIGKILL, _SIGCHLD = int(signal.SIGTERM), int(signal.SIGKILL), int(signal.SIGCHLD)
_SIGHUP, _SIGINT = int(signal.SIGHUP), int(signal.SIGINT)
_STOP, _KILL, _RESTART = int(STOP_SIGNAL_REQUEST), int(KILL_SIGNAL_REQUEST), int(RESTART_SIGNAL_REQUEST)
_SIG_DFL = int(signal.SIG_DFL)
_set_handler = _signal.signal

_F_SETPIPE_SZ = 1031
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NAME = 15
#: The names ``ps -o comm``, top and /proc/<pid>/comm show: a spare, or a process's supervisor.
SPARE_NAME, SUPERVISOR_NAME = b"sa-spare", b"sa-supervisor"
#: Rounds of a kill sweep: each signals the descendants the previous ones had not seen
#: yet (forked meanwhile); a sweep ends at the first round that finds none new.
_KILL_ROUNDS = 50
#: How long after the answer the start record may wait for its fsync while the loop is
#: busy (a command that writes without pause); it is synced sooner at any idle moment.
SYNC_DEFERRAL = 0.05
#: libc, opened by the launcher before it forks (``prepare``): a supervisor then only calls it.
_libc: Any = None
#: glibc's ``mallopt`` options: the size from which a block gets a mapping of its own, how
#: much free memory the top of the heap may hold before ``free`` returns it, and how many
#: arenas (heaps) the threads of a process may use.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
#: What the heap keeps of freed blocks while output pours in (``prepare``).
HEAP_KEPT = 8 * 1024 * 1024
#: How long after its last large read a supervisor gives its heap's free memory back.
TRIM_AFTER = 1.0
#: libc's ``malloc_trim``, if the heap keeps freed blocks (``prepare``); else None.
_trim_heap: Any = None
#: The environment every command starts from: the launcher's own, read by ``prepare``
#: before it forks (a spawn request names only what it adds, ``envAdd``).
_base_env: dict[str, str] = {}
_POLLIN, _POLLOUT = select.POLLIN, select.POLLOUT
#: Writable, or broken (a stdin pipe whose reader closed reports only POLLERR).
_WRITE_EVENTS = select.POLLOUT | select.POLLERR | select.POLLHUP


class Supervisor:
    """Owns one child from spawn to recorded exit."""

    def __init__(self, exits_fd: int = -1) -> None:
        """What does not depend on the request: made by the spare before it has one, so
        that a start waits for none of it (nor for the pages it copies).

        ``exits_fd``: the server's exits socket (a datagram socket, non-blocking), on
        which the exit is told before it is written (``_tell_exit``); -1 for none.
        """
        self.exits_fd = exits_fd
        #: State writes come from the loop and from the combined.log writer's thread (a rotation).
        self.state_lock = _thread.allocate_lock()
        #: The exit went to the exit record (a full disk): state.json is the server's now.
        self.state_frozen = False
        self.clock = Clock()
        self.state: dict[str, Any] = {}
        self.stop_requested = False
        self.kill_requested = False
        self.kill_deadline: float | None = None
        self.kill_sent = False
        self.killed = False
        #: The pty master (tty) or the write end of stdin (interactive), -1 once closed.
        self.input_fd = -1
        self.pty: PtyRecorder | None = None
        self.control: Control | None = None
        self.backlog = bytearray()
        self.eof_pending = False
        #: The command's pid until it has been reaped; 0 after.
        self.pid = 0
        #: The start time of the command now running (``spawn_in_session``).
        self.pid_start: int | None = None
        #: A signal woke the loop (a child exited, a request came).
        self.woken = False
        #: The start record, renamed into place unsynced, is to be synced by then: at the
        #: loop's first idle moment, at the latest this (``SYNC_DEFERRAL``) after the answer.
        self.sync_due: float | None = None
        #: When to give the heap's free memory back (``prepare``): after output stops.
        self.trim_at: float | None = None
        #: While waiting to restart: when (pid is 0 then).
        self.restart_at: float | None = None
        self.restart_requested = False
        self.restart_term_sent = False
        #: Restarts since the last run that stayed up ``reset_after`` seconds.
        self.in_a_row = 0
        self.run_started = 0.0
        #: The previous run's exit, for the marker line ("exit code 1", "signal 9").
        self.last_exit = ""
        #: Opened now, for the child's stdin (when not interactive) and for our own 0, 1, 2.
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        #: The state record's fields that name this supervisor.
        self.me = {
            "supervisorPid": os.getpid(),
            "supervisorStart": process_start_ticks(os.getpid()),
            "bootId": boot_id(),
        }
        self.listen()

    def configure(self, request: dict[str, Any]) -> None:
        """Take the spawn request."""
        self.request = request
        added = request.get("envAdd")
        self.env = {**_base_env, **added} if added else _base_env
        self.dir: str = request["dir"]
        self.state_path = f"{self.dir}/{STATE_FILE}"
        self.stop_timeout = float(request.get("stopTimeout", 10.0))
        self.partial_delay = float(request.get("partialDelay", PARTIAL_DELAY))
        #: The cap of each log (current + previous generation); 0: none.
        self.max_log_bytes = int(request.get("maxLogBytes") or 0)
        self.tty = bool(request.get("tty"))
        self.interactive = bool(request.get("interactive"))
        #: The directory holds a blank exit record already (made ahead by the server).
        self.exit_ready = bool(request.get("exitReady"))
        restart = request.get("restart") or {}
        self.policy: str = restart.get("policy") or "never"
        self.max_restarts: int | None = restart.get("maxRestarts")
        self.backoff = int(restart.get("backoffMs") or DEFAULT_BACKOFF_MS) / 1000
        self.reset_after = float(request.get("restartResetAfter", RESTART_RESET_AFTER))
        # Requests are for the command: none can be meant for it before it is started
        # (the spare's pid could only have been signalled as some earlier process's).
        self.stop_requested = self.kill_requested = self.restart_requested = False
        # A stop from now on stops the command (a spare simply ends on SIGTERM).
        _set_handler(_SIGTERM, self._on_stop)

    # -- spawn ------------------------------------------------------------

    def spawn(self) -> int:
        """Start the command; return its pid. OSError if it cannot be started."""
        self.logs = {name: self._open_log(name, file) for name, file in LOG_FILES.items()}
        if self.tty or self.interactive:
            self.control = Control(self.dir)
        if self.tty:
            return self._spawn_tty()
        self.streams: dict[int, Stream] = {}
        self.combined = CombinedWriter(self.logs["combined"])
        return self._started(self._spawn_piped(tune=False), None)

    def _spawn_piped(self, tune: bool = True) -> int:
        """Start the command with its output on new pipes (added to ``streams``);
        ``tune``: made non-blocking and enlarged now (else by ``tune_pipes``, once the
        start is answered)."""
        req = self.request
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        if self.interactive:
            stdin, self.input_fd = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(self.input_fd, False)
        else:
            stdin = self.devnull
        try:
            # posix_spawn (vfork and exec) rather than subprocess: far less Python runs
            # in the forked supervisor, so far fewer shared pages get copied.
            os.chdir(req["cwd"])
            pid, self.pid_start = spawn_in_session(
                req["executable"],
                [req["command"], *req["args"]],
                self.env,
                [
                    (os.POSIX_SPAWN_DUP2, stdin, 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, err_w, 2),
                ],
            )
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
            if stdin != self.devnull:
                os.close(stdin)
        for name, fd in (("stdout", out_r), ("stderr", err_r)):
            self.streams[fd] = Stream(name, fd, self.logs[name], self.combined)
            if tune:
                _tune_pipe(fd)
        return pid

    def tune_pipes(self) -> None:
        """``_tune_pipe`` for the first run's output pipes. A start does it once it has
        answered: no read comes before, and a pipe's size may grow with output in it."""
        for fd in self.streams:
            if fd != self.input_fd:  # a pty's master (non-blocking already): not a pipe
                _tune_pipe(fd)

    def _open_log(self, name: str, file: str) -> LogFile:
        path = f"{self.dir}/{file}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        if not self.max_log_bytes:
            return LogFile(fd)
        # Entry sequences are line numbers of combined.log: only it needs its lines counted.
        generations = Generations(path, self._record_log, count_lines=name == "combined")
        return LogFile(fd, generations, self.max_log_bytes // 2)

    def _record_log(self, name: str, info: dict[str, Any]) -> bool:
        """A rotation of log ``name``, into the state record; False if it cannot be written."""
        with self.state_lock:
            if self.state_frozen:
                return False
            self.state.setdefault("logs", {})[name] = info
            try:
                # Not synced: the logs it describes are not (a sync would wait behind
                # their writeback, while the command's output waits for us). The record
                # replaced is freed aside, for the same reason.
                write_json_atomic(self.state_path, self.state, sync=False, aside=True)
            except OSError:
                return False
            return True

    def rehearse(self) -> None:
        """In a spare, while it waits: a spawn done once for nothing, so that a start's
        spawn finds the pages it writes already copied (the first ``posix_spawn`` in a
        fresh fork took 0.24 to 0.38 ms here, the next ones 0.13 to 0.15). Nothing is
        executed: the child fails at its last step before the exec, opening the root
        directory for writing (EISDIR, always), and ``posix_spawn`` reaps it before it
        returns. No exec of anything is ever attempted (an audit log sees none)."""
        try:
            spawn_in_session(
                "/",
                ["/"],
                _base_env,
                [
                    (os.POSIX_SPAWN_DUP2, self.devnull, 1),
                    (os.POSIX_SPAWN_DUP2, self.devnull, 2),
                    (os.POSIX_SPAWN_OPEN, 0, "/", os.O_WRONLY, 0),
                ],
            )
        except OSError:
            pass

    def write_state(self, sync: bool = True) -> None:
        with self.state_lock:
            write_json_atomic(self.state_path, self.state, sync=sync)

    def sync_state(self) -> None:
        """Put the state record written without ``sync`` on the disk (best effort: a full
        or failing disk leaves it in the page cache, whole, which any process crash keeps);
        no sync is due after it."""
        self.sync_due = None
        try:
            fd = os.open(self.state_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _spawn_tty(self) -> int:
        """Start the command on a new pty: its controlling terminal, as stdin, stdout and stderr."""
        req = self.request
        cols, rows = req.get("terminalSize") or DEFAULT_TERMINAL_SIZE
        master, slave_path = open_pty(cols, rows)
        self.input_fd = master
        self.pty = PtyRecorder(self.dir, self.max_log_bytes, self._record_log if self.max_log_bytes else None)
        os.chdir(req["cwd"])
        pid, self.pid_start = spawn_in_session(
            req["executable"],
            [req["command"], *req["args"]],
            self.env,
            [
                # Opened after setsid and without O_NOCTTY: it becomes the session's
                # controlling terminal, so ^C reaches the foreground job.
                (os.POSIX_SPAWN_OPEN, 0, slave_path, os.O_RDWR, 0),
                (os.POSIX_SPAWN_DUP2, 0, 1),
                (os.POSIX_SPAWN_DUP2, 0, 2),
            ],
        )
        self.combined = CombinedWriter(self.logs["combined"])
        self.streams = {master: Stream("stdout", master, self.logs["stdout"], self.combined)}
        return self._started(pid, [cols, rows])

    def _started(self, pid: int, terminal_size: list[int] | None) -> int:
        req = self.request
        started = time.time()
        self.state = {
            "id": req["id"],
            "command": req["command"],
            "args": req["args"],
            "cwd": req["cwd"],
            "status": "running",
            "pid": pid,
            "pidStart": self.pid_start,
            "exitCode": None,
            "exitSignal": None,
            "startedAt": started,
            "stoppedAt": None,
            **self.me,
            "stopTimeout": self.stop_timeout,
        }
        self.run_started = started
        if self.policy != "never":
            self.state.update(restarts=0, restartAt=None, lastExitCode=None, lastExitSignal=None)
        if self.tty or self.interactive:
            self.state.update(tty=self.tty, interactive=self.interactive, terminalSize=terminal_size)
            if not self.tty:
                self.state["inputClosed"] = False
        try:
            # The exit record first: its blocks are taken now, while there is room (a
            # restart blanks the one its last run filled).
            if not self.exit_ready:
                make_exit_record(self.dir)
            self.exit_ready = False
            # Whole through any crash of a process once renamed; put on the disk after
            # the answer, at the loop's first idle moment (``sync_due``).
            self.write_state(sync=False)
        except OSError:
            # No record, no process (a full disk, most likely): the caller is told the
            # start failed, so nothing may be left running that no one would see.
            try:
                os.killpg(pid, _SIGKILL)
            except OSError:
                pass
            os.waitpid(pid, 0)
            raise
        return pid

    # -- signals from the server -----------------------------------------

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def _on_kill(self, signum: int, frame: object) -> None:
        self.kill_requested = True

    def _on_restart(self, signum: int, frame: object) -> None:
        self.restart_requested = True

    def _on_child(self, signum: int, frame: object) -> None:
        pass  # only wakes the loop (the wakeup fd), which reaps

    def _signal_all(self, sig: int) -> None:
        """``sig`` to the command's group and to every descendant (SIGKILL: until none is new)."""
        group = self.pid
        if group:
            # The group's leader is unreaped, so its pid (the group id) is still ours.
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass
        signalled: set[int] = set()
        for _round in range(_KILL_ROUNDS if sig == _SIGKILL else 1):
            new = 0
            for pid, pidfd, pgid in descendants():
                try:
                    # Not twice: a second SIGTERM could cut short the handler of the first.
                    if pid not in signalled and pgid != group:
                        signal.pidfd_send_signal(pidfd, sig)
                        signalled.add(pid)
                        new += 1
                except OSError:
                    pass  # gone meanwhile
                finally:
                    os.close(pidfd)
            if not new:
                return

    def _act_on_requests(self, now: float) -> None:
        """Turn recorded requests into signals: SIGTERM once, SIGKILL once (and again at
        each wake-up after, for descendants that forked meanwhile)."""
        if self.kill_sent:
            if self.woken:
                self._signal_all(_SIGKILL)
            return
        if self.kill_requested or (self.kill_deadline is not None and now >= self.kill_deadline):
            # Only a kill request acted on before the exit was seen makes it "killed".
            self.killed = self.kill_requested
            self._signal_all(_SIGKILL)
            self.kill_sent = True
            self.kill_deadline = None
        elif (self.stop_requested or (self.restart_requested and self.pid)) and self.kill_deadline is None:
            # A restart request ends the current run as a stop would.
            self._signal_all(_SIGTERM)
            self.kill_deadline = now + self.stop_timeout

    def _reap_orphans(self) -> bool:
        """Reap the children that are not the command: orphans handed to us as subreaper.

        Once the command is reaped, True when no child is left: every descendant is gone
        (an orphan's children come to us when it exits, before we can reap it).
        """
        if not self.pid:
            while True:
                try:
                    pid, _status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return True
                if not pid:
                    return False
        for pid in children(os.getpid()):
            if pid != self.pid:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        return False

    # -- the loop ----------------------------------------------------------

    def listen(self) -> None:
        """Take stop and kill requests from now on; the loop acts on them once it runs.

        Done before the spawn is confirmed: the server may signal at once after that,
        and an unhandled SIGUSR2 would kill the supervisor instead of the command.
        SIGTERM is taken once there is a request (``configure``).
        """
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        _set_handler(_STOP, self._on_stop)
        _set_handler(_KILL, self._on_kill)
        _set_handler(_RESTART, self._on_restart)
        _set_handler(_SIGCHLD, self._on_child)

    def run(self, pid: int) -> None:
        self.pid = pid
        wake_r = self.wake_r
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        for fd in self.streams:
            poller.register(fd, _POLLIN)
        poller.register(pidfd, _POLLIN)
        poller.register(wake_r, _POLLIN)
        control = self.control
        #: With a control channel, the masks of the fds registered (they change with input).
        masks: dict[int, int] = dict.fromkeys(self.streams, _POLLIN)
        while True:
            now = time.time()
            self._act_on_requests(now)
            #: The policy ended during a backoff: nothing will wake the poll, so it must
            #: not wait before the end is checked below.
            ended = False
            if self.restart_at is not None:
                if self.stop_requested or self.kill_requested:
                    self._end_restarts(now)
                    ended = True
                elif self.restart_requested or now >= self.restart_at:
                    pidfd = self._respawn(now)
                    if pidfd >= 0:
                        poller.register(pidfd, _POLLIN)
                        for fd, stream in self.streams.items():
                            if stream.fd >= 0 and fd not in masks:
                                poller.register(fd, _POLLIN)
                                masks[fd] = _POLLIN
            self.woken = False
            if control is not None:
                self._update_masks(poller, masks)
            deadline = None
            for stream in self.streams.values():
                if stream.pending:
                    due = stream.pending_since + self.partial_delay
                    deadline = due if deadline is None else min(deadline, due)
            if self.kill_deadline is not None:
                deadline = self.kill_deadline if deadline is None else min(deadline, self.kill_deadline)
            if self.restart_at is not None:
                deadline = self.restart_at if deadline is None else min(deadline, self.restart_at)
            if self.trim_at is not None:
                deadline = self.trim_at if deadline is None else min(deadline, self.trim_at)
            timeout = None if deadline is None else max(0, int((deadline - now) * 1000) + 1)
            events = poller.poll(0 if ended or self.sync_due is not None else timeout)
            now = time.time()
            for fd, mask in events:
                if fd == pidfd:
                    os.close(pidfd)
                    pidfd = -1
                    self._command_exited()
                    # From now on only output is left to pump (no input, no resizing).
                    self.control = control = None
                    poller = select.poll()
                    poller.register(wake_r, _POLLIN)
                    masks = {fd: _POLLIN for fd, stream in self.streams.items() if stream.fd >= 0}
                    for fd in masks:
                        poller.register(fd, _POLLIN)
                elif fd == wake_r:
                    self.woken = True
                    try:
                        os.read(wake_r, 512)
                    except BlockingIOError:
                        pass
                    self._reap_orphans()
                elif control is not None and fd == control.fd:
                    self._take_control(control)
                else:
                    if fd == self.input_fd and mask & _WRITE_EVENTS and self.backlog:
                        self._write_input()
                    if (
                        fd in self.streams
                        and mask != _POLLOUT
                        and not self._pump(self.streams[fd], now)
                        and fd in masks  # not if the drain at the command's exit closed it
                    ):
                        poller.unregister(fd)
                        del masks[fd]
            for stream in self.streams.values():
                if stream.pending and now - stream.pending_since >= self.partial_delay:
                    stream.flush_partial(now, self.clock)
            if self.sync_due is not None and (not events or now >= self.sync_due):
                self.sync_state()
            if self.trim_at is not None and now >= self.trim_at:
                self.trim_at = None
                _trim_heap(0)
            # The command is gone, so is every writer of its output, and so is every
            # descendant: one that closed its output (a daemon) still runs under us, where
            # stop and kill reach it. Each that exits wakes us (SIGCHLD) to check again.
            if (
                not self.pid
                and self.restart_at is None
                and all(stream.fd < 0 for stream in self.streams.values())
                and self._reap_orphans()
            ):
                break
        now = time.time()
        for stream in self.streams.values():
            stream.flush_partial(now, self.clock)
        self.combined.flush()
        if self.sync_due is not None:
            self.sync_state()

    def _command_exited(self) -> None:
        """Reap the command and record its exit, with all it wrote before it."""
        _pid, status = os.waitpid(self.pid, 0)
        self.pid = 0
        # Everything the command wrote before it exited is in the pipes now: drain what
        # is there (not waiting for descendants that hold them), so that the exit is
        # recorded after the last line the command wrote.
        now = time.time()
        for stream in self.streams.values():
            while self._pump(stream, now, drain=True):
                pass
            stream.flush_partial(now, self.clock)
        self.combined.flush()
        now = time.time()
        if self._restart_due(status, now):
            self._wait_to_restart(status, now)
            return
        self._record_exit(status, now)
        if not self.tty:
            # A descendant reading stdin gets end of file: nobody can send input any more.
            self.backlog.clear()
            self.eof_pending = False
            if self.input_fd >= 0:
                os.close(self.input_fd)
                self.input_fd = -1

    def _pump(self, stream: Stream, now: float, drain: bool = False) -> bool:
        """Read once from ``stream``; False at end of file (or, draining, when empty)."""
        if stream.fd < 0:
            return False
        try:
            chunk = os.read(stream.fd, stream.read_size)
        except BlockingIOError:
            return not drain
        except OSError:
            chunk = b""  # EIO from a pty master: no process holds the terminal any more
        if not chunk:
            if stream.fd == self.input_fd:
                self.input_fd = -1
                self.backlog.clear()
            os.close(stream.fd)
            stream.fd = -1
            return False
        if len(chunk) == stream.read_size:
            stream.read_size = BULK_READ_SIZE
        elif len(chunk) < READ_SIZE:
            stream.read_size = READ_SIZE
        if len(chunk) >= READ_SIZE and _trim_heap is not None:
            self.trim_at = now + TRIM_AFTER
        if self.pty is not None:
            self.pty.record(chunk, now)
            # The line logs get lines, not the terminal's CR LF.
            chunk = chunk.replace(b"\r\n", b"\n")
        stream.feed(chunk, now, self.clock)
        return True

    # -- input and resize (tty and interactive processes) -------------------

    def _update_masks(self, poller: select.poll, masks: dict[int, int]) -> None:
        """Read the control FIFO unless the child is behind on input; write input while there is some."""
        control = self.control
        assert control is not None
        want = {fd: _POLLIN for fd, stream in self.streams.items() if stream.fd >= 0}
        if len(self.backlog) < INPUT_BACKLOG:
            want[control.fd] = _POLLIN
        if self.input_fd >= 0 and self.backlog:
            want[self.input_fd] = want.get(self.input_fd, 0) | _POLLOUT
        for fd in [fd for fd in masks if fd not in want]:
            poller.unregister(fd)
            del masks[fd]
        for fd, mask in want.items():
            if fd not in masks:
                poller.register(fd, mask)
            elif masks[fd] != mask:
                poller.modify(fd, mask)
            masks[fd] = mask

    def _take_control(self, control: Control) -> None:
        for kind, payload in control.read():
            if kind == CONTROL_INPUT:
                if self.input_fd >= 0 and not self.eof_pending:
                    self.backlog += payload
            elif kind == CONTROL_RESIZE and self.tty and self.input_fd >= 0 and len(payload) == 4:
                cols, rows = int.from_bytes(payload[:2], "big"), int.from_bytes(payload[2:], "big")
                try:
                    set_window(self.input_fd, cols, rows)
                except OSError:
                    continue
                with self.state_lock:
                    self.state["terminalSize"] = [cols, rows]
                self._save_state()
            elif kind == CONTROL_EOF and self.input_fd >= 0:
                if self.tty:
                    self.backlog += b"\x04"  # the terminal's end-of-file character
                else:
                    self.eof_pending = True
        if self.backlog:
            self._write_input()
        elif self.eof_pending:
            self._close_input()

    def _write_input(self) -> None:
        try:
            written = os.write(self.input_fd, self.backlog)
        except BlockingIOError:
            return
        except OSError:
            # EPIPE: the child closed its stdin; what it did not read is dropped.
            self.backlog.clear()
            if not self.tty:
                self._close_input()
            return
        del self.backlog[:written]
        if not self.backlog and self.eof_pending:
            self._close_input()

    def _close_input(self) -> None:
        """Close the child's stdin (never the pty master: it is also the output)."""
        if self.input_fd >= 0 and not self.tty:
            os.close(self.input_fd)
            self.input_fd = -1
            self.eof_pending = False
            with self.state_lock:
                self.state["inputClosed"] = True
            self._save_state()

    def _save_state(self) -> None:
        """Write the state record while the command runs; on a full disk the change waits
        in memory for the next write (the exit's)."""
        try:
            self.write_state()
        except OSError:
            pass

    # -- restarts -------------------------------------------------------------

    def _restart_due(self, status: int, now: float) -> bool:
        """Whether the run that ended with ``status`` is to be followed by another."""
        if self.stop_requested or self.kill_requested:
            return False
        if self.restart_requested:
            return True
        if self.policy == "never" or (self.policy == "on-failure" and status == 0):
            return False
        if now - self.run_started >= self.reset_after:
            self.in_a_row = 0
        return self.max_restarts is None or self.in_a_row < self.max_restarts

    def _wait_to_restart(self, status: int, now: float) -> None:
        """Record the run's end (still "running", no pid) and when the next one starts."""
        if self.restart_requested or now - self.run_started >= self.reset_after:
            self.in_a_row = 0
        delay = 0.0 if self.restart_requested else min(self.backoff * 2**self.in_a_row, MAX_BACKOFF_MS / 1000)
        self.restart_at = now + delay
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        self.last_exit = f"exit code {code}" if sig is None else f"signal {sig}"
        with self.state_lock:
            self.state.update(pid=None, pidStart=None, restartAt=self.restart_at, lastExitCode=code, lastExitSignal=sig)
        # On a full disk the change waits in memory; the restart goes on all the same.
        self._save_state()
        # What the run left behind ends with it (SIGKILL at the restart if still there):
        # a server's worker holding its port would make every later run fail.
        self._signal_all(_SIGTERM)

    def _respawn(self, now: float) -> int:
        """Start the next run; its pidfd, or -1 if it could not start (the end recorded)."""
        self._signal_all(_SIGKILL)
        requested = self.restart_requested
        self.restart_requested = False
        count = int(self.state.get("restarts") or 0) + 1
        if requested:
            why = f"on request, after {self.last_exit}"
        else:
            self.in_a_row += 1
            delay = min(self.backoff * 2 ** (self.in_a_row - 1), MAX_BACKOFF_MS / 1000)
            why = f"after {self.last_exit}, backoff {round(delay * 1000)} ms"
        # The previous run's unfinished lines go before the marker, not after it.
        for stream in self.streams.values():
            stream.flush_partial(now, self.clock)
        self._marker(f"restart {count} {why}", now)
        self.streams = {fd: stream for fd, stream in self.streams.items() if stream.fd >= 0}
        try:
            pid = self._spawn_piped()
        except OSError as exc:
            self._marker(f"restart {count} failed: {exc.strerror or exc}; no more restarts", time.time())
            self._end_restarts(time.time())
            return -1
        combined = self.logs["combined"]
        offset = os.fstat(combined.fd).st_size + (combined.generations.base if combined.generations else 0)
        self.pid = pid
        self.run_started = time.time()
        self.restart_at = None
        self.kill_deadline = None
        self.kill_sent = False
        with self.state_lock:
            self.state.update(pid=pid, pidStart=self.pid_start, restarts=count, restartAt=None, runLogOffset=offset)
        self._save_state()
        return os.pidfd_open(pid)

    def _marker(self, text: str, now: float) -> None:
        """A line of ours in stdout.log and combined.log (as stdout), written at once."""
        line = f"[sandbox-agent: {text}]\n".encode()
        prefix = self.clock.prefix(now)
        self.combined.submit(line, prefix + STREAM_TAGS["stdout"])
        self.logs["stdout"].write(line, prefix)
        self.combined.flush()

    def _end_restarts(self, now: float) -> None:
        """A stop or kill during the backoff (or a run that cannot start): the end, with
        the last run's exit."""
        self.restart_at = None
        self.killed = self.kill_requested
        with self.state_lock:
            self.state.update(exitCode=self.state.get("lastExitCode"), exitSignal=self.state.get("lastExitSignal"))
        self._finish(now)

    def _record_exit(self, status: int, now: float) -> None:
        with self.state_lock:  # the combined.log writer's thread may record a rotation
            if os.WIFEXITED(status):
                self.state["exitCode"] = os.WEXITSTATUS(status)
            elif os.WIFSIGNALED(status):
                self.state["exitSignal"] = os.WTERMSIG(status)
        self._finish(now)

    def _finish(self, now: float) -> None:
        """Record the end: the exit fields of ``state`` are set."""
        state = self.state
        with self.state_lock:
            if "restartAt" in state:
                state["restartAt"] = None
            state["status"] = "killed" if self.killed else "stopped"
            state["stoppedAt"] = now
            payload = encode_json(state).encode()
            self._tell_exit(payload)
            try:
                # Synced after the rename, so that the server (watching it) learns of the
                # exit one fsync sooner; whole through any crash of a process either way.
                write_json_atomic(self.state_path, state, sync=False, sync_after=True, payload=payload)
                self.sync_due = None  # the start record it replaced need not reach the disk
            except OSError:
                # A full disk: the exit goes over the blanks of the exit record, which
                # needs no new space; the server takes it from there and writes
                # state.json once it can. This supervisor never writes state.json again
                # (a rotation after this is not begun: its record would fail).
                self.state_frozen = True
                try:
                    fill_exit_record(self.dir, state)
                except OSError:
                    pass  # nothing left to try: the server keeps the exit it was told, if it was

    def _tell_exit(self, payload: bytes) -> None:
        """Send the server the exit's record (encoded) before it is written: the server
        shows the exit one write (and one read of it) sooner, and writes the record itself
        if this supervisor ends before it has. Best effort: with the server gone, busy (its
        queue full) or another server's, the record alone tells it."""
        fd, self.exits_fd = self.exits_fd, -1
        if fd < 0:
            return
        try:
            if len(payload) <= EXIT_MESSAGE_MAX:
                os.write(fd, payload)
        except OSError:
            pass
        finally:
            os.close(fd)


def children(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (zombies too)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            fd = os.open(f"/proc/{pid}/task/{task}/children", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            data = b""
            while chunk := os.read(fd, 65536):
                data += chunk
        except OSError:
            continue
        finally:
            os.close(fd)
        found.extend(int(child) for child in data.split())
    return found


def descendants() -> list[tuple[int, int, int]]:
    """``(pid, pidfd, pgid)`` of every live (not zombie) descendant of this process.

    Each is checked to be a child of its parent after its pidfd was opened, and the
    parent to be unreaped (so it was the parent when its children were read): a pid
    reused by another process is never taken for a descendant, and the pidfd signals
    exactly the process that was checked. The caller closes the pidfds.
    """
    found: list[tuple[int, int, int]] = []
    parents = [(os.getpid(), -1)]
    while parents:
        parent, parent_fd = parents.pop()
        for pid in children(parent):
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue  # gone
            ours = False
            pgid = 0
            stat = read_small(f"/proc/{pid}/stat")
            if stat:
                fields = stat[stat.rindex(b")") + 2 :].split()
                ours = int(fields[1]) == parent and fields[0] not in (b"Z", b"X")
                pgid = int(fields[2])
            if ours and parent_fd >= 0:
                try:
                    signal.pidfd_send_signal(parent_fd, 0)
                except OSError:
                    ours = False  # reaped: its pid may have been someone else's
            if ours:
                found.append((pid, pidfd, pgid))
                parents.append((pid, pidfd))
            else:
                os.close(pidfd)
    return found


def prepare() -> None:
    """In the launcher, before it forks: open libc, so that a supervisor only calls prctl,
    read the environment commands start from, and tune the heap for bulk output.

    Each large read (up to ``BULK_READ_SIZE``) is a buffer, and each log's stamped copy
    another, freed once written. By default glibc gives such blocks back to the kernel
    (as mappings of their own, or by trimming the top of the heap), so every read of a
    chatty command faulted in fresh zeroed pages: a sixth of a busy supervisor's time.
    The heap now keeps up to ``HEAP_KEPT`` of them, and a supervisor gives its free memory
    back ``TRIM_AFTER`` its last large read (``Supervisor.run``), so that an idle one holds
    no more than before. One arena serves both threads (the combined.log writer's too):
    ``malloc_trim`` gives back the free top of the main heap only. Without glibc, nothing
    changes.
    """
    global _libc, _trim_heap
    _base_env.update(os.environ)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl  # noqa: B018 -- resolved (and cached on the CDLL) here, shared after fork
    except (ImportError, OSError, AttributeError):
        return
    _libc = libc
    try:
        use_renameat2(libc.renameat2)
    except AttributeError:
        pass  # a libc without it: rotations rename
    try:
        tuned = (
            libc.mallopt(_M_ARENA_MAX, 1)
            and libc.mallopt(_M_MMAP_THRESHOLD, HEAP_KEPT)
            and libc.mallopt(_M_TRIM_THRESHOLD, HEAP_KEPT)
        )
        trim = libc.malloc_trim
    except AttributeError:
        return  # not glibc
    if tuned:
        _trim_heap = trim


def set_name(name: bytes) -> None:
    """This process's name (comm), at most 15 bytes."""
    if _libc is not None:
        _libc.prctl(_PR_SET_NAME, name, 0, 0, 0)


def become_subreaper() -> None:
    """Orphans below us come to us (and we reap them): stop and kill find every descendant."""
    if _libc is not None:
        _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def become_supervisor() -> None:
    """In a fresh fork of the launcher, before any request: a session of its own, the
    subreaper of what it will start, and its signal dispositions."""
    os.setsid()
    become_subreaper()
    _set_handler(_SIGCHLD, _SIG_DFL)
    # A Python-level no-op rather than SIG_IGN: ignored signals would stay ignored
    # in the child across exec, handled ones are reset to their default there.
    _set_handler(_SIGHUP, _ignore)
    _set_handler(_SIGINT, _ignore)


def supervise(sock: int, supervisor: Supervisor, message: dict[str, Any], taken: Callable[[], None]) -> None:
    """Body of a supervisor (``become_supervisor`` done, ``supervisor`` made) once it has
    its request; never returns. ``taken`` tells the launcher the spare is taken: called
    once the request is answered, as the launcher replaces a spare only later anyway and
    its wake-up (a write to its pipe, up to a tenth of a millisecond here) need not hold
    the answer."""
    code = 0
    try:
        set_name(SUPERVISOR_NAME)
        supervisor.configure(message)
        try:
            pid = supervisor.spawn()
        except OSError as exc:
            reply(sock, {"req": message["req"], "ok": False, "errno": exc.errno, "error": exc.strerror or str(exc)})
            taken()
            return
        reply(sock, {"req": message["req"], "ok": True, "state": supervisor.state})
        taken()
        supervisor.tune_pipes()
        # Synced once the loop has looked at what is waiting: a short command has often
        # exited by now, and its exit (synced too) is then recorded one fsync sooner.
        supervisor.sync_due = time.time() + SYNC_DEFERRAL
        os.close(sock)
        for fd in (0, 1, 2):
            os.dup2(supervisor.devnull, fd)
        supervisor.run(pid)
    except BaseException:
        code = 1
        _report_crash(message.get("dir"))
    finally:
        os._exit(code)


def _tune_pipe(fd: int) -> None:
    """Make an output pipe non-blocking, and as large as allowed."""
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # capped by /proc/sys/fs/pipe-max-size: the default size works too
    os.set_blocking(fd, False)


def _ignore(signum: int, frame: object) -> None:
    pass


def reply(sock: int, payload: dict[str, Any]) -> None:
    try:
        os.write(sock, encode_json(payload).encode())
    except OSError:
        pass  # the server is gone; it will read the state file when it comes back


def _report_crash(directory: str | None) -> None:
    import traceback

    text = traceback.format_exc()
    if directory:
        try:
            with open(os.path.join(directory, ERROR_FILE), "a") as f:
                f.write(text)
            return
        except OSError:
            pass
    try:
        os.write(2, text.encode())
    except OSError:
        pass
