"""The process engine: the one place that knows what a managed process is.

It keeps the registry, starts supervisors through the launcher and signals them; two
mixins add the rest: ``watching.py`` (adoption at start-up, exits, orphans, retention)
and ``reading.py`` (log reads, entries, follows). It knows nothing of HTTP; the server
and the tests drive it directly::

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
from ..supervisor.capture import PARTIAL_DELAY
from ..supervisor.ondisk import (
    DEFAULT_MAX_LOG_BYTES,
    DEFAULT_TERM,
    KILL_SIGNAL_REQUEST,
    RESTART_RESET_AFTER,
    RESTART_SIGNAL_REQUEST,
    STOP_SIGNAL_REQUEST,
    process_start_ticks,
)
from . import config as _config
from . import run as _run
from . import system, validate
from .config import ProcessConfig
from .dirpool import DirPool
from .ids import new_id, unknown_id_detail
from .launcher import LauncherClient
from .logs.watch import LogWatcher
from .reading import LogReading
from .records import Record
from .services import RestartPolicy, Service, ServiceTracking, WaitFor
from .terminal import Terminals
from .usage import Sampler
from .watching import SupervisorWatching

logger = logging.getLogger("sandbox_agent.engine")


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
    #: The cap of each of its logs on disk (0: none); the manager's when None.
    max_log_bytes: int | None = None
    #: Services (SPEC section 8): unique among running processes, usable as an id.
    name: str | None = None
    labels: dict[str, str] | None = None
    #: What makes it ready; ``spawn`` answers once it is (or raises ReadinessTimeout).
    wait_for: WaitFor | None = None
    #: When the supervisor starts the command again after it exits (not with tty or interactive).
    restart: RestartPolicy | None = None


class ProcessManager(ServiceTracking, SupervisorWatching, LogReading):
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
        max_log_bytes: int = DEFAULT_MAX_LOG_BYTES,
        restart_reset: float = RESTART_RESET_AFTER,
    ) -> None:
        """``subreaper``: adopt and reap orphans below this process (the server does;
        an application embedding the engine may not want its process to).

        ``retain_exited`` / ``retain_seconds``: forget (and remove the logs of) exited
        processes beyond the newest N, or exited longer ago than that; None keeps them
        all until deleted, as the original API's clients expect.

        ``max_log_bytes``: the cap of each log of a process on disk, unless its request
        gives one; the newest half of it at least is kept (``supervisor/rotation.py``). 0:
        no cap.

        ``restart_reset``: seconds a run must stay up for the next restart to start a new
        row (backoff and ``maxRestarts`` count afresh).

        The environment processes start from is this process's, read here once
        (``base_env``): a request's ``env`` is added over it.
        """
        self.base_env = validate.server_env()
        self.restart_reset = restart_reset
        self.max_log_bytes = validate.check_max_log_bytes(max_log_bytes)
        self.subreaper = subreaper
        self.retain_exited = retain_exited
        self.retain_seconds = retain_seconds
        self.data_dir = Path(data_dir).absolute()
        self.processes_dir = self.data_dir / "processes"
        self.stop_timeout = stop_timeout
        self.partial_delay = partial_delay
        # Started with the environment processes start from, so that a spawn request
        # carries only what a process has on top of it (a smaller message to parse).
        self._launcher = LauncherClient(self.base_env, python)
        self._launcher.on_exit = self._on_exit_told
        #: Process directories made ahead: a start renames one into place.
        self._dirs = DirPool(self.processes_dir)
        #: Exits told before their spawn's answer was taken (``_on_exit_told``), by id.
        self._early_exits: dict[str, tuple[dict[str, Any], int]] = {}
        self._records: dict[str, Record] = {}
        self._ordered: list[Record] | None = None
        self._lock_fd: int | None = None
        self._watcher = LogWatcher()
        self.terminals = Terminals(self._watcher)
        self._reaper: asyncio.Task[None] | None = None
        #: Records whose supervisor is watched by polling: no pidfd could be had.
        self._polled: set[Record] = set()
        #: Every record that ran when it was made or loaded; ``running_count`` drops the
        #: exited ones as it counts.
        self._maybe_running: set[Record] = set()
        #: Records whose state.json is behind what the engine knows (a full disk).
        self._unsaved: set[Record] = set()
        self._closing = False
        #: The limits of the ``/v1/processes`` dialect, loaded by ``start``.
        self.config = ProcessConfig()
        #: One-shot runs under way: their children are ours to reap (asyncio's), not orphans.
        self._runs = 0
        self._init_services()
        #: Ports, CPU and memory of the running processes, sampled in the background.
        self._sampler = Sampler(lambda: self._maybe_running)

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        self.processes_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.data_dir, 0o700)
        self.lock()
        self.config = _config.load(self.data_dir)
        system.raise_fd_limit()
        self._watcher.start()
        self._load_records()
        self._load_services()
        self._sampler.start()
        if self.subreaper:
            system.become_subreaper()
        # A poll, not a SIGCHLD handler: event loops (uvloop) keep SIGCHLD for their own
        # subprocesses. An orphan stays a zombie a second at most; a supervisor watched
        # without a pidfd is checked as often.
        self._reaper = asyncio.create_task(self._poll_forever())
        self._dirs.start()
        await self._launcher.start()

    async def close(self) -> None:
        """Stop serving; the managed processes and their supervisors keep running."""
        self.begin_shutdown()
        await self._sampler.close()
        # Readiness watches end here; a restarted server takes them up again.
        watches = [r.service.task for r in self._records.values() if r.service is not None and r.service.task]
        for task in watches:
            task.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
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
        await self._dirs.close()
        await self._launcher.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def begin_shutdown(self) -> None:
        """End every follow stream so that open connections can close."""
        self._closing = True
        self.events.close()
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

    # -- the API's operations -------------------------------------------------
    async def set_config(self, config: ProcessConfig) -> ProcessConfig:
        """Check, store (atomically, so it survives a restart) and apply new limits."""
        config = config.checked()
        await asyncio.to_thread(_config.save, self.data_dir, config)
        self.config = config
        return config

    def running_count(self) -> int:
        """How many run: one look at each that may, not a walk through every record."""
        self._maybe_running = {record for record in self._maybe_running if not record.exited}
        return len(self._maybe_running)

    async def spawn(self, request: SpawnRequest, *, max_running: int | None = None) -> Record:
        """Start ``request.command`` under a new supervisor; return once it runs, and with
        ``wait_for`` once it is ready (or exited; ReadinessTimeout past its timeout).

        ``max_running``: refuse (TooManyProcesses) when that many already run.
        """
        if not request.command.strip():
            raise BadRequest("command is empty; give a program name such as 'python3' or a path")
        if request.restart is not None and request.restart.policy != "never" and (request.tty or request.interactive):
            raise BadRequest(
                "a restart policy is for processes without a terminal or stdin (tty, interactive): a new run would "
                "get a new terminal; start it without tty and interactive, or without restart"
            )
        if max_running is not None and self.running_count() >= max_running:
            raise TooManyProcesses(
                f"max concurrent process limit reached ({max_running}); stop or kill a running process, "
                "or raise maxConcurrentProcesses in the process config"
            )
        self._launcher.wake()
        system.check_fd_headroom()
        cwd = validate.resolve_cwd(request.cwd)
        env = validate.build_env(request.env, self.base_env)
        if request.tty and "TERM" not in (request.env or {}):
            env["TERM"] = DEFAULT_TERM
        terminal_size = validate.check_terminal_size(request.terminal_size) if request.tty else None
        executable = validate.resolve_command(request.command, cwd, env)
        validate.check_args(request.args)
        max_log_bytes = validate.check_max_log_bytes(
            self.max_log_bytes if request.max_log_bytes is None else request.max_log_bytes
        )
        service = self._prepare_service(request.name, request.labels, request.wait_for, request.restart)
        try:
            record = await self._spawn(request, service, cwd, env, terminal_size, executable, max_log_bytes)
        finally:
            self._release_name(service)
        # A short command has often exited by now, its exit told but not yet read: the
        # answer then says so, and its caller needs no second look.
        self.read_told_exits()
        await self._start_ready(record)
        return record

    async def _spawn(
        self,
        request: SpawnRequest,
        service: Service | None,
        cwd: str,
        env: dict[str, str],
        terminal_size: list[int] | None,
        executable: str,
        max_log_bytes: int,
    ) -> Record:
        process_id = new_id()
        pid_dir = self.processes_dir / process_id
        try:
            made_ahead = self._dirs.take(pid_dir)
            if not made_ahead:
                pid_dir.mkdir(mode=0o700)
            if service is not None:
                self._write_service(str(pid_dir), service)
        except OSError as exc:
            shutil.rmtree(pid_dir, ignore_errors=True)
            raise (_storage_error(exc, self.data_dir) or exc) from None
        message = {
            "op": "spawn",
            "id": process_id,
            "dir": str(pid_dir),
            "command": request.command,
            "executable": executable,
            "args": request.args,
            "cwd": cwd,
            # Over the launcher's environment, which is ``base_env``.
            "envAdd": {name: value for name, value in env.items() if self.base_env.get(name) != value},
            "stopTimeout": self.stop_timeout if request.stop_timeout is None else request.stop_timeout,
            "partialDelay": self.partial_delay,
            "tty": request.tty,
            "interactive": request.interactive,
            "terminalSize": terminal_size,
            "maxLogBytes": max_log_bytes,
            "restart": None if request.restart is None else request.restart.to_json(),
            "restartResetAfter": self.restart_reset,
            # A directory made ahead has its blank exit record (``DirPool._make``).
            "exitReady": made_ahead,
        }
        # Shielded: once asked, the launcher may start the process whatever happens to
        # this request (a client gone, a shutdown), and the record must still be kept.
        return await asyncio.shield(self._launch(request, pid_dir, message, service))

    async def _launch(
        self, request: SpawnRequest, pid_dir: Path, message: dict[str, Any], service: Service | None
    ) -> Record:
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
        self._maybe_running.add(record)
        self._ordered = None
        self._service_created(record, service)
        if self._watch_supervisor(record):
            self._watch_state(record)
            early = self._early_exits.pop(process_id, None)
            if early is not None:
                self._take_told_exit(record, *early)
        else:
            # It already finished (a quick command): its final state is on disk.
            self._on_supervisor_exit(record)
        return record

    def processes(self) -> list[Record]:
        """Every process, newest first (by start time, then by creation)."""
        return self._sorted()

    def get(self, process_id: str) -> Record:
        return self._record(process_id)

    def read_told_exits(self) -> None:
        """Take the exits supervisors have told and the loop has not read yet (a poll of
        a running process may arrive beside its exit)."""
        self._launcher.read_exits()

    async def wait(self, process_id: str) -> Record:
        """Wait until the process has exited; return its final record."""
        record = self._record(process_id)
        if not record.exited:
            waiter = asyncio.get_running_loop().create_future()
            record.waiters.append(waiter)
            await waiter
        return record

    async def wait_until(self, process_id: str, until: str, timeout_ms: int) -> Record:
        """Wait up to ``timeout_ms`` for the process to exit (``until="exit"``) or to be
        ready (``"ready"``: it had ``wait_for``; an exit ends the wait too); return it as
        it is then, whether that held or not.

        ``await manager.wait_until("web", "ready", 30_000)``
        """
        record = self._record(process_id)
        if until == "ready":
            await self._wait_ready(record, timeout_ms)
        elif until == "exit":
            if not record.exited:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout_ms / 1000):
                        await self.wait(record.id)
        else:
            raise BadRequest(f"until {until[:40]!r} is not one of exit, ready")
        return record

    def stop(self, process_id: str) -> None:
        """SIGTERM to every descendant, SIGKILL after the stop timeout; once the command
        exited, only descendants it left (the record does not change)."""
        self._signal(self._record(process_id), STOP_SIGNAL_REQUEST)

    def kill(self, process_id: str) -> None:
        """SIGKILL to every descendant; the status becomes ``killed`` (unchanged once exited)."""
        self._signal(self._record(process_id), KILL_SIGNAL_REQUEST)

    async def restart(self, process_id: str) -> Record:
        """End the current run as a stop would (SIGTERM to every descendant, SIGKILL after
        the stop timeout) and start the command again at once, under the same record and
        restart policy, whether it has a policy or not; return once the new run started
        (or the process exited, or the stop timeout and 5 s more passed).

        ``await manager.restart("web")``
        """
        record = self._record(process_id)
        if record.exited:
            raise Conflict(
                f"process {record.id} has exited ({record.status}): there is no run to restart; start it again "
                "(a new process), or give it a restart policy on start"
            )
        if record.tty or record.interactive:
            raise Conflict(
                f"process {record.id} has a terminal or stdin (tty, interactive), which a new run would not get "
                "back; stop it and start it again"
            )
        # Woken by the next run's state record (``_run_changed``) or by the exit.
        waiter = asyncio.get_running_loop().create_future()
        record.run_waiters.append(waiter)
        self._signal(record, RESTART_SIGNAL_REQUEST)
        timeout = float(record.state.get("stopTimeout") or self.stop_timeout) + 5.0
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            pass
        finally:
            if waiter in record.run_waiters:
                record.run_waiters.remove(waiter)
        return record

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
            return await _run.run(request, self._launcher, self.base_env)
        finally:
            self._runs -= 1

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

    # -- internals ---------------------------------------------------------------
    def _record(self, process_id: str) -> Record:
        record = self._records.get(process_id) or self._by_name(process_id)
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
