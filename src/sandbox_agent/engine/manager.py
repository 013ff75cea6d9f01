"""The process engine: the one place that knows what a managed process is.

It keeps the registry, starts supervisors through the launcher, signals them, adopts the
ones a previous server left running, and serves log reads and follows. It knows nothing
of HTTP; the server and the tests drive it directly::

    manager = ProcessManager("/tmp/data")
    await manager.start()
    process = await manager.spawn(SpawnRequest(command="echo", args=["hi"]))
    ...
    await manager.close()   # the processes keep running

On disk, ``<data dir>/processes/<id>/`` holds ``state.json`` (written by the supervisor,
or by the engine once the supervisor is known to be gone) and the three logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._exceptions import (
    BadRequest,
    Conflict,
    InsufficientStorage,
    NotFound,
    SandboxAgentError,
    ServiceUnavailable,
)
from .._types import StreamName
from ..supervisor.capture import PARTIAL_DELAY
from ..supervisor.ondisk import (
    DEFAULT_TERM,
    KILL_SIGNAL_REQUEST,
    LOG_FILES,
    STATE_FILE,
    STOP_SIGNAL_REQUEST,
    boot_id,
    process_start_ticks,
    read_state,
    write_json_atomic,
)
from . import config as _config
from . import run as _run
from . import system, validate
from .config import ProcessConfig
from .ids import ID_PATTERN, new_id, unknown_id_detail
from .launcher import LauncherClient
from .logs import entries as logentries
from .logs import feed as logfeed
from .logs import pty as pty_logs
from .logs import store
from .logs.pty import PtyEntry
from .logs.watch import LogWatcher, StateWatch
from .records import Record
from .terminal import Terminals

logger = logging.getLogger("sandbox_agent.engine")

_REAP_INTERVAL = 1.0


def _storage_error(exc: OSError, data_dir: Path) -> InsufficientStorage | None:
    """The 507 for a full disk or quota under the data directory; None for other errors."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return InsufficientStorage(
        f"nothing was started: the disk under the data directory {data_dir} is full ({exc.strerror}); "
        "free space there (old logs: delete exited processes), then try again"
    )


class DataDirInUse(SandboxAgentError):
    """Another server already manages this data directory."""


class ProcessRunning(BadRequest):
    """Delete of a process that still runs.

    A BadRequest (400) as ``/v1/process`` answers it; ``/v1/processes`` answers 409 (the
    server maps it by class).
    """


class TooManyProcesses(Conflict):
    """A start past ``maxConcurrentProcesses`` running processes."""


@dataclass(frozen=True)
class SpawnRequest:
    """What to start: the engine's side of a start request, whichever API it came from."""

    command: str
    args: list[str] = field(default_factory=list)
    cwd: str | None = None
    #: Added over the server's environment.
    env: dict[str, str] | None = None
    #: Seconds between SIGTERM and SIGKILL on stop; the manager's default when None.
    stop_timeout: float | None = None
    #: Run on a new pseudo-terminal (stdin, stdout and stderr, controlling terminal).
    tty: bool = False
    #: Without tty: stdin is a pipe the engine writes to (``send_input``), not /dev/null.
    interactive: bool = False
    #: ``(cols, rows)`` of the terminal; ``DEFAULT_TERMINAL_SIZE`` when None.
    terminal_size: tuple[int, int] | None = None


class ProcessManager:
    """Registry and lifecycle of the processes under one data directory."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        stop_timeout: float = 10.0,
        partial_delay: float = PARTIAL_DELAY,
        python: str = sys.executable,
        subreaper: bool = False,
        retain_exited: int | None = None,
        retain_seconds: float | None = None,
    ) -> None:
        """``subreaper``: adopt and reap orphans below this process (the server does;
        an application embedding the engine may not want its process to).

        ``retain_exited`` / ``retain_seconds``: forget (and remove the logs of) exited
        processes beyond the newest N, or exited longer ago than that; None keeps them
        all until deleted, as the original API's clients expect.
        """
        self.subreaper = subreaper
        self.retain_exited = retain_exited
        self.retain_seconds = retain_seconds
        self.data_dir = Path(data_dir).absolute()
        self.processes_dir = self.data_dir / "processes"
        self.stop_timeout = stop_timeout
        self.partial_delay = partial_delay
        self._launcher = LauncherClient(python)
        self._records: dict[str, Record] = {}
        self._ordered: list[Record] | None = None
        self._lock_fd: int | None = None
        self._watcher = LogWatcher()
        self.terminals = Terminals(self._watcher)
        self._reaper: asyncio.Task[None] | None = None
        #: Records whose supervisor is watched by polling: no pidfd could be had.
        self._polled: set[Record] = set()
        self._closing = False
        #: The limits of the ``/v1/processes`` dialect, loaded by ``start``.
        self.config = ProcessConfig()
        #: One-shot runs under way: their children are ours to reap (asyncio's), not orphans.
        self._runs = 0

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        self.processes_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.data_dir, 0o700)
        self.lock()
        self.config = _config.load(self.data_dir)
        system.raise_fd_limit()
        self._watcher.start()
        self._load_records()
        if self.subreaper:
            system.become_subreaper()
        # A poll, not a SIGCHLD handler: event loops (uvloop) keep SIGCHLD for their own
        # subprocesses. An orphan stays a zombie a second at most; a supervisor watched
        # without a pidfd is checked as often.
        self._reaper = asyncio.create_task(self._poll_forever())
        await self._launcher.start()

    async def close(self) -> None:
        """Stop serving; the managed processes and their supervisors keep running."""
        self.begin_shutdown()
        for record in self._records.values():
            self._unwatch_supervisor(record)
            self._unwatch_state(record)
            for waiter in record.waiters:
                if not waiter.done():
                    waiter.set_exception(ServiceUnavailable("the process manager was closed before the process exited"))
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self._watcher.close()
        await self._launcher.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def begin_shutdown(self) -> None:
        """End every follow stream so that open connections can close."""
        self._closing = True
        self.terminals.close_all()
        for record in self._records.values():
            for stream in list(record.feeds):
                self._drop_feed(record, stream)

    def lock(self) -> None:
        """Claim the data directory for this manager; DataDirInUse if another has it."""
        if self._lock_fd is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.data_dir / "server.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataDirInUse(
                    f"another sandbox-agent server is using {self.data_dir}; stop it or pass another --data-dir"
                ) from None
            raise
        self._lock_fd = fd

    # -- adoption ----------------------------------------------------------

    def _load_records(self) -> None:
        our_boot = boot_id()
        for entry in os.scandir(self.processes_dir):
            if not ID_PATTERN.fullmatch(entry.name) or not entry.is_dir():
                continue
            for leftover in Path(entry.path).glob(f"{STATE_FILE}.*.tmp"):
                leftover.unlink(missing_ok=True)
            try:
                state = read_state(entry.path)
            except FileNotFoundError:
                continue  # a spawn that never started: nothing to show
            except (OSError, ValueError) as exc:
                logger.error("skipping %s: unusable state record (%s)", entry.path, exc)
                continue
            if state["id"] != entry.name:
                # Keyed by its directory: a record copied or edited into another one's
                # place must not speak for that process (or signal its pid).
                logger.error("skipping %s: its state record names another process (%s)", entry.path, state["id"])
                continue
            record = Record(entry.path, state)
            self._records[record.id] = record
            if record.exited:
                if state.get("bootId") == our_boot:
                    # Its supervisor may still pump what descendants write: watched, so
                    # that kill and delete still reach them.
                    self._watch_supervisor(record, state)
                continue
            if state.get("bootId") == our_boot and self._watch_supervisor(record):
                self._watch_state(record)
                continue
            self._settle_lost(record)
        self._ordered = None
        self._prune()
        logger.info("loaded %d processes from %s", len(self._records), self.processes_dir)

    def _watch_supervisor(self, record: Record, state: dict[str, Any] | None = None) -> bool:
        """Watch the record's supervisor for exit; False if it is already gone.

        ``state``: the full state record, for an exited record (whose ``state`` no longer
        holds the supervisor's identity).
        """
        state = record.state if state is None else state
        pid = state.get("supervisorPid")
        if not isinstance(pid, int):
            return False
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
                return False  # gone (ESRCH)
            # Our own shortage says nothing about the supervisor: watch it by polling
            # its pid and start time until a pidfd can be had.
            if process_start_ticks(pid) != state.get("supervisorStart"):
                return False
            logger.warning("process %s: no file descriptor for a pidfd (%s); polling its supervisor", record.id, exc)
            self._polled.add(record)
            return True
        # Checked after the pidfd is open, so the pid cannot be reused in between.
        if process_start_ticks(pid) != state.get("supervisorStart"):
            os.close(pidfd)
            return False
        self._polled.discard(record)
        record.pidfd = pidfd
        asyncio.get_running_loop().add_reader(pidfd, self._on_supervisor_exit, record)
        return True

    def _poll_unwatched(self) -> None:
        """Check the supervisors watched without a pidfd; take a pidfd when one can be had."""
        for record in list(self._polled):
            if record.exited or record.pidfd is not None:
                self._polled.discard(record)
            elif not self._watch_supervisor(record):
                self._polled.discard(record)
                self._on_supervisor_exit(record)

    def _unwatch_supervisor(self, record: Record) -> None:
        self._polled.discard(record)
        if record.pidfd is not None:
            asyncio.get_running_loop().remove_reader(record.pidfd)
            os.close(record.pidfd)
            record.pidfd = None

    def _watch_state(self, record: Record) -> None:
        """Learn of the command's exit when the supervisor records it: the supervisor
        itself may run on, pumping what descendants of the command still write."""
        record.state_watch = StateWatch(record.dir, lambda: self._on_state_change(record))
        self._watcher.watch(record.state_watch)
        self._on_state_change(record)  # recorded before the watch began

    def _unwatch_state(self, record: Record) -> None:
        if record.state_watch is not None:
            self._watcher.unwatch(record.state_watch)
            record.state_watch = None

    def _on_state_change(self, record: Record) -> None:
        if record.exited or record.state_watch is None:
            return
        try:
            state = read_state(record.dir)
        except (OSError, ValueError):
            return  # the supervisor's exit settles it
        if state != record.state:
            record.update(state)
            if record.exited:
                self._on_exit(record)

    def _on_supervisor_exit(self, record: Record) -> None:
        self._unwatch_supervisor(record)
        if record.exited:
            # The exit of the command was seen when recorded; now it may be pruned.
            if self.retain_exited is not None:
                self._prune()
            return
        try:
            state = read_state(record.dir)
        except (OSError, ValueError) as exc:
            logger.error("cannot read the state of %s after its supervisor exited: %s", record.id, exc)
            state = record.state
        record.update(state)
        if not record.exited:
            self._settle_lost(record)
        self._on_exit(record)

    def _on_exit(self, record: Record) -> None:
        """The command exited (recorded in ``record.state``): tell followers and waiters."""
        self._unwatch_state(record)
        self._ordered = None
        for feed in record.feeds.values():
            feed.finish(record.state)
        self.terminals.exited(record)
        for waiter in record.waiters:
            if not waiter.done():
                waiter.set_result(None)
        record.waiters.clear()
        if self.retain_exited is not None:
            self._prune()

    def _prune(self) -> None:
        """Forget the exited processes past the retention limits (oldest exits first)."""
        if self.retain_exited is None and self.retain_seconds is None:
            return
        # Not while descendants of the command still write through its supervisor.
        exited = sorted(
            (r for r in self._records.values() if r.exited and r.pidfd is None and r not in self._polled),
            key=lambda r: (r.stopped_at or r.started_at, r.id),
        )
        doomed = exited[: max(0, len(exited) - self.retain_exited)] if self.retain_exited is not None else []
        if self.retain_seconds is not None:
            horizon = time.time() - self.retain_seconds
            doomed.extend(r for r in exited[len(doomed) :] if (r.stopped_at or r.started_at) < horizon)
        for record in doomed:
            self._forget(record)
            # Off the loop and unawaited: removing a big log must not hold anyone up.
            asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, record.dir, True)
        if doomed:
            logger.info("retention: forgot %d exited processes", len(doomed))

    def _forget(self, record: Record) -> None:
        self._unwatch_supervisor(record)
        self._unwatch_state(record)
        for stream in list(record.feeds):
            self._drop_feed(record, stream)
        self.terminals.forget(record.id)
        self._records.pop(record.id, None)
        self._ordered = None

    def _settle_lost(self, record: Record) -> None:
        """The supervisor is gone with no exit recorded: the process ended unseen."""
        # Read once more: it may have recorded the exit just before it went.
        with contextlib.suppress(OSError, ValueError):
            record.update(read_state(record.dir))
        if record.exited:
            return
        logger.warning("process %s: its supervisor is gone and no exit was recorded", record.id)
        self._kill_orphan(record)
        state = dict(record.state, status="stopped", exitCode=None, exitSignal=None, stoppedAt=time.time())
        # Known in memory whatever the disk does: the API must not show it running forever.
        record.update(state)
        try:
            write_json_atomic(os.path.join(record.dir, STATE_FILE), state)
        except OSError as exc:
            logger.error("process %s: cannot record its end (%s); the next start-up settles it again", record.id, exc)

    @staticmethod
    def _kill_orphan(record: Record) -> None:
        """Kill the group of a process whose supervisor died under it, if it is still ours.

        Nobody reads its output any more and nobody would record its exit: left alone it
        would run unseen. The pid counts as ours only with the same boot and start time.
        """
        state = record.state
        pid = state.get("pid")
        if not isinstance(pid, int) or state.get("bootId") != boot_id():
            return
        if state.get("pidStart") is None or process_start_ticks(pid) != state.get("pidStart"):
            return
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(_REAP_INTERVAL)
            if self.subreaper:
                self._reap_orphans()
            self._poll_unwatched()
            if self.retain_seconds is not None:
                self._prune()

    def _reap_orphans(self) -> None:
        """Reap children we never started: orphans that were handed to us.

        As a subreaper (or as PID 1 in a container) we inherit the supervisors of a
        launcher that died and every daemon a managed process left behind; unreaped,
        each would stay a zombie. The launcher itself is reaped by its own handle.
        """
        if self._runs:
            # A run's child is a child of ours too, and asyncio must be the one to reap
            # it (or its exit status is lost); orphans can wait for the next round.
            return
        for pid in system.children():
            if pid == self._launcher.pid:
                continue
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)

    # -- the API's operations -------------------------------------------------

    async def set_config(self, config: ProcessConfig) -> ProcessConfig:
        """Check, store (atomically, so it survives a restart) and apply new limits."""
        config = config.checked()
        await asyncio.to_thread(_config.save, self.data_dir, config)
        self.config = config
        return config

    def running_count(self) -> int:
        return sum(1 for record in self._records.values() if not record.exited)

    async def spawn(self, request: SpawnRequest, *, max_running: int | None = None) -> Record:
        """Start ``request.command`` under a new supervisor; return once it runs.

        ``max_running``: refuse (TooManyProcesses) when that many already run.
        """
        if not request.command.strip():
            raise BadRequest("command is empty; give a program name such as 'python3' or a path")
        if max_running is not None and self.running_count() >= max_running:
            raise TooManyProcesses(
                f"max concurrent process limit reached ({max_running}); stop or kill a running process, "
                "or raise maxConcurrentProcesses in the process config"
            )
        system.check_fd_headroom()
        cwd = validate.resolve_cwd(request.cwd)
        env = validate.build_env(request.env)
        if request.tty and "TERM" not in (request.env or {}):
            env["TERM"] = DEFAULT_TERM
        terminal_size = validate.check_terminal_size(request.terminal_size) if request.tty else None
        executable = validate.resolve_command(request.command, cwd, env)
        validate.check_args(request.args)
        process_id = new_id()
        pid_dir = self.processes_dir / process_id
        try:
            pid_dir.mkdir(mode=0o700)
        except OSError as exc:
            raise (_storage_error(exc, self.data_dir) or exc) from None
        message = {
            "op": "spawn",
            "id": process_id,
            "dir": str(pid_dir),
            "command": request.command,
            "executable": executable,
            "args": request.args,
            "cwd": cwd,
            "env": env,
            "stopTimeout": self.stop_timeout if request.stop_timeout is None else request.stop_timeout,
            "partialDelay": self.partial_delay,
            "tty": request.tty,
            "interactive": request.interactive,
            "terminalSize": terminal_size,
        }
        # Shielded: once asked, the launcher may start the process whatever happens to
        # this request (a client gone, a shutdown), and the record must still be kept.
        return await asyncio.shield(self._launch(request, pid_dir, message))

    async def _launch(self, request: SpawnRequest, pid_dir: Path, message: dict[str, Any]) -> Record:
        process_id = message["id"]
        try:
            reply = await self._launcher.request(message)
        except Exception:
            shutil.rmtree(pid_dir, ignore_errors=True)
            raise
        if not reply.get("ok"):
            shutil.rmtree(pid_dir, ignore_errors=True)
            error = OSError(reply.get("errno") or 0, reply.get("error", "unknown error"))
            storage = _storage_error(error, self.data_dir)
            if storage is not None:
                raise storage
            raise BadRequest(f"could not start {request.command!r}: {reply.get('error', 'unknown error')}")
        record = Record(str(pid_dir), reply["state"])
        self._records[process_id] = record
        self._ordered = None
        if self._watch_supervisor(record):
            self._watch_state(record)
        else:
            # It already finished (a quick command): its final state is on disk.
            self._on_supervisor_exit(record)
        return record

    def processes(self) -> list[Record]:
        """Every process, newest first (by start time, then by creation)."""
        return self._sorted()

    def get(self, process_id: str) -> Record:
        return self._record(process_id)

    async def wait(self, process_id: str) -> Record:
        """Wait until the process has exited; return its final record."""
        record = self._record(process_id)
        if not record.exited:
            waiter = asyncio.get_running_loop().create_future()
            record.waiters.append(waiter)
            await waiter
        return record

    def stop(self, process_id: str) -> None:
        """SIGTERM to every descendant, SIGKILL after the stop timeout; once the command
        exited, only descendants it left (the record does not change)."""
        self._signal(self._record(process_id), STOP_SIGNAL_REQUEST)

    def kill(self, process_id: str) -> None:
        """SIGKILL to every descendant; the status becomes ``killed`` (unchanged once exited)."""
        self._signal(self._record(process_id), KILL_SIGNAL_REQUEST)

    async def delete(self, process_id: str) -> None:
        record = self._record(process_id)
        if not record.exited:
            raise ProcessRunning(
                f"process {process_id} is still {record.state.get('status')}; stop or kill it first, then delete it"
            )
        # Descendants the command left that still write through its supervisor go with it.
        self._signal(record, KILL_SIGNAL_REQUEST)
        self._forget(record)
        await asyncio.to_thread(shutil.rmtree, record.dir, ignore_errors=True)

    async def logs(
        self, process_id: str, *, stream: StreamName = "combined", tail: int | None = None, strip: bool = False
    ) -> tuple[str, int]:
        """The selected lines of a log and their count, read off the event loop (a log can be large)."""
        record = self._record(process_id)
        path = os.path.join(record.dir, LOG_FILES[stream])
        return await asyncio.to_thread(store.read_lines, path, tail, strip)

    async def open_log(
        self, process_id: str, *, stream: StreamName = "combined", tail: int | None = None, strip: bool = False
    ) -> store.LogRead:
        """A reader of the selected lines, to hand out piece by piece (close it after)."""
        record = self._record(process_id)
        try:
            return await asyncio.to_thread(store.LogRead, record.log_path(stream), tail, strip)
        except OSError as exc:
            raise (system.out_of_fds(exc) or exc) from None

    async def run(
        self,
        request: _run.RunRequest,
        *,
        timeout_ms: int | None = None,
        max_output_bytes: int | None = None,
    ) -> _run.RunResult:
        """A one-shot run (not recorded as a process) under the limits of ``config``.

        ``timeout_ms``: None or 0 for the configured default, capped at the configured
        max; ``max_output_bytes`` (per stream) capped at the configured max.
        """
        config = self.config
        timeout = timeout_ms or config.default_run_timeout_ms
        cap = config.max_output_bytes if max_output_bytes is None else max_output_bytes
        request = dataclasses.replace(
            request,
            timeout_ms=min(timeout, config.max_run_timeout_ms),
            max_output_bytes=min(cap, config.max_output_bytes),
        )
        self._runs += 1
        try:
            return await _run.run(request)
        finally:
            self._runs -= 1

    async def entries(
        self, process_id: str, *, stream: str | None = None, since: int = 0, tail: int | None = None
    ) -> tuple[str, list[logentries.Entry]]:
        """The effective stream and its entries (see ``logentries.read``), read off the loop.

        ``stream`` None: ``pty`` for a tty process, else ``combined``.
        """
        record = self._record(process_id)
        stream = stream or ("pty" if record.tty else "combined")
        if stream == "pty" and record.tty:
            chunks = await asyncio.to_thread(
                pty_logs.read_entries, record.dir, since, tail, self.config.max_log_bytes_per_process
            )
            return stream, [logentries.Entry(c.sequence, "pty", c.timestamp_ms, c.data) for c in chunks]
        if record.tty:
            return stream, []  # a terminal's output is all on the pty stream
        found = await asyncio.to_thread(
            logentries.read,
            record.log_path("combined"),
            record.line_index,
            stream=stream,
            since=since,
            tail=tail,
            max_bytes=self.config.max_log_bytes_per_process,
        )
        return stream, found

    async def follow_entries(
        self, process_id: str, *, stream: str | None = None, since: int = 0, tail: int | None = None
    ) -> tuple[str, AsyncIterator[logentries.Batch | logentries.Entries | logentries.Ended | logfeed.Keepalive]]:
        """The effective stream and its follow: the entries after ``since`` (the last
        ``tail`` of them), then each new one, then ``Ended`` once the process exited.

        Batches hold every line; the caller keeps the entries of ``stream``. Checks raise
        before the first event, so that a caller can still answer with an error status.
        """
        record = self._record(process_id)
        stream = stream or ("pty" if record.tty else "combined")
        if record.tty:
            return stream, await self._follow_pty_entries(record, show=stream == "pty", since=since, tail=tail)
        offset, lines = await asyncio.to_thread(
            logentries.locate, record.log_path("combined"), record.line_index, stream=stream, since=since, tail=tail
        )
        events = await self.follow(process_id, stream="combined", resume_from=offset)
        return stream, self._entry_events(events, lines)

    async def _follow_pty_entries(
        self, record: Record, *, show: bool, since: int, tail: int | None
    ) -> AsyncIterator[logentries.Entries | logentries.Ended | logfeed.Keepalive]:
        """A terminal's output as entries (``show`` False: none, for the streams a tty
        process does not have), then ``Ended`` with the last sequence."""
        if tail is not None:
            newest = await asyncio.to_thread(pty_logs.read_entries, record.dir, None, 1, None)
            since = max(since, (newest[0].sequence if newest else 0) - tail)
        if self._closing:
            raise ServiceUnavailable("the server is shutting down; reconnect in a moment")
        events = self.terminals.follow(record, since=since, replay=None)
        return self._pty_entry_events(events, show, since)

    @staticmethod
    async def _pty_entry_events(
        events: AsyncGenerator[pty_logs.PtyEvent, None], show: bool, last: int
    ) -> AsyncIterator[logentries.Entries | logentries.Ended | logfeed.Keepalive]:
        try:
            async for event in events:
                if isinstance(event, pty_logs.PtyChunks):
                    if event.entries:
                        last = event.entries[-1].sequence
                    if show:
                        yield logentries.Entries(
                            [logentries.Entry(c.sequence, "pty", c.timestamp_ms, c.data) for c in event.entries]
                        )
                elif isinstance(event, pty_logs.PtyExit):
                    yield logentries.Ended(last, event.state)
                elif isinstance(event, logfeed.Keepalive):
                    yield event
        finally:
            await events.aclose()

    @staticmethod
    async def _entry_events(
        events: AsyncIterator[logfeed.FollowEvent], lines: int
    ) -> AsyncIterator[logentries.Batch | logentries.Ended | logfeed.Keepalive]:
        # Each follower counts the lines it is given: a segment's newlines, no rescans.
        try:
            async for event in events:
                if isinstance(event, logfeed.Lines):
                    for segment in event.segments:
                        yield logentries.Batch(segment, lines + 1)
                        lines += segment.raw.count(b"\n")
                elif isinstance(event, logfeed.Exit):
                    yield logentries.Ended(lines, event.state)
                elif isinstance(event, logfeed.Keepalive):
                    yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def follow(
        self,
        process_id: str,
        *,
        stream: StreamName = "combined",
        tail: int | None = None,
        resume_from: int | None = None,
    ) -> AsyncIterator[logfeed.FollowEvent]:
        """Snapshot, then each new line, then the exit. See ``logfeed.follow_feed``.

        Checks (unknown id, bad resume offset) raise before the first event, so that a
        caller can still answer with an error status.
        """
        record = self._record(process_id)
        if self._closing:
            raise ServiceUnavailable("the server is shutting down; reconnect in a moment")
        try:
            feed = self._feed(record, stream)
        except OSError as exc:
            raise (system.out_of_fds(exc) or exc) from None
        feed.users += 1
        feed.catch_up()
        if resume_from is not None and not feed.is_line_boundary(resume_from):
            self._release_feed(record, stream, feed)
            raise BadRequest(
                f"Last-Event-ID {resume_from} is not a position in this {stream} log; "
                "reconnect with the same stream parameter, or without Last-Event-ID"
            )
        return self._follow_events(record, stream, feed, tail, resume_from)

    async def _follow_events(
        self, record: Record, stream: str, feed: logfeed.Feed, tail: int | None, resume_from: int | None
    ) -> AsyncIterator[logfeed.FollowEvent]:
        try:
            async for event in logfeed.follow_feed(feed, tail=tail, resume_from=resume_from):
                yield event
        finally:
            self._release_feed(record, stream, feed)

    # -- terminals and input (engine/terminal.py) --------------------------------

    async def send_input(self, process_id: str, data: bytes) -> int:
        """Write ``data`` to the terminal or stdin of a running tty or interactive process;
        return how many bytes were sent. Conflict if it takes no input (or is not running).

        ``await manager.send_input(pid, b"echo hi\\n")``
        """
        return await self.terminals.send_input(self._record(process_id), data)

    async def close_input(self, process_id: str) -> None:
        """Close stdin of an interactive process (a tty gets its end-of-file character, ^D)."""
        await self.terminals.close_input(self._record(process_id))

    async def resize(self, process_id: str, cols: int, rows: int) -> None:
        """Set the window size of a running tty process (it gets SIGWINCH)."""
        await self.terminals.resize(self._record(process_id), cols, rows)

    async def pty_entries(
        self, process_id: str, *, since: int | None = None, tail: int | None = None, max_bytes: int | None = None
    ) -> list[PtyEntry]:
        """Terminal output chunks after sequence ``since``, the last ``tail`` of them, at most
        ``max_bytes`` of data (always one entry at least). Empty for a process without tty."""
        record = self._record(process_id)
        return await asyncio.to_thread(pty_logs.read_entries, record.dir, since, tail, max_bytes)

    async def pty_replay(self, process_id: str, nbytes: int) -> bytes:
        """The last ``nbytes`` of a tty process's output, byte for byte."""
        record = self._record(process_id)
        return await asyncio.to_thread(pty_logs.read_tail, record.dir, nbytes)

    def pty_follow(
        self, process_id: str, *, since: int | None = None, replay: int | None = None
    ) -> AsyncGenerator[pty_logs.PtyEvent, None]:
        """Follow a process's terminal output: ``PtyReplay`` (with ``replay`` bytes), then
        ``PtyChunks`` of new entries (all after ``since`` when given, else those after now),
        ``Keepalive`` when idle, and ``PtyExit`` once it exited and all was sent.

        Checks (unknown id, shutting down) raise here, before the first event.
        """
        record = self._record(process_id)
        if self._closing:
            raise ServiceUnavailable("the server is shutting down; reconnect in a moment")
        return self.terminals.follow(record, since=since, replay=replay)

    # -- internals ---------------------------------------------------------------

    def _record(self, process_id: str) -> Record:
        record = self._records.get(process_id)
        if record is None:
            # Any string that names no process is unknown, whatever its shape (SPEC section 3).
            raise NotFound(unknown_id_detail(process_id))
        return record

    def _sorted(self) -> list[Record]:
        if self._ordered is None:
            self._ordered = sorted(self._records.values(), key=lambda r: r.sort_key, reverse=True)
        return self._ordered

    def _signal(self, record: Record, sig: signal.Signals) -> None:
        """Signal the supervisor while it runs: after the command exited, it still owns the
        descendants the command left (the record's status does not change any more)."""
        if record.pidfd is None and record not in self._polled:
            return
        try:
            if record.pidfd is not None:
                signal.pidfd_send_signal(record.pidfd, sig)
            elif record in self._polled:
                # No pidfd to be had: the pid, checked by its start time just before.
                pid = record.state["supervisorPid"]
                if process_start_ticks(pid) == record.state.get("supervisorStart"):
                    os.kill(pid, sig)
        except ProcessLookupError:
            pass  # the supervisor is exiting; its exit handler records the end

    def _feed(self, record: Record, stream: str) -> logfeed.Feed:
        feed = record.feeds.get(stream)
        if feed is None:
            path = os.path.join(record.dir, LOG_FILES[stream])
            if not os.path.exists(path):
                open(path, "ab").close()
            feed = logfeed.Feed(path)
            if not record.exited:
                self._watcher.watch(feed)
            if record.exited:
                feed.exit_state = record.state
            record.feeds[stream] = feed
        return feed

    def _release_feed(self, record: Record, stream: str, feed: logfeed.Feed) -> None:
        if record.feeds.get(stream) is feed:
            feed.users -= 1
            if feed.users <= 0:
                self._drop_feed(record, stream)

    def _drop_feed(self, record: Record, stream: str) -> None:
        feed = record.feeds.pop(stream)
        self._watcher.unwatch(feed)
        feed.close()
