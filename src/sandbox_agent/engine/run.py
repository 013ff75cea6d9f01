"""One-shot runs: start a command, collect its output up to a cap, answer when it ends.

A run is not a managed process: no supervisor, no id, no files. It runs in a session of
its own so that a timeout can kill its whole process group; output past the cap is read
and dropped as it comes (a chatty command never fills the server's memory, nor blocks on
a full pipe).

If the server dies during a run, the launcher kills the run's whole process group: the
server names each run to it as it starts and once it has ended (``RunGuard``), and the
launcher sees the server go (``supervisor/launcher.py``). No wrapper is executed before
the command, which was the parent-death signal's price (``setpriv``, an exec per run).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .._exceptions import BadRequest
from ..supervisor.ondisk import boot_clock_ns, spawn_in_session, spawned_start_ticks
from . import system, validate

_READ_SIZE = 64 * 1024
#: After a timeout kill, how long to wait for the pipes to close (a child that left
#: the group may hold them) before answering with what was read.
_DRAIN_AFTER_KILL = 1.0


class RunGuard(Protocol):
    """Who kills the runs still going if the server dies (the launcher's client)."""

    def guard_run(self, pid: int, start_ticks: int | None) -> None: ...

    def release_run(self, pid: int) -> None: ...


@dataclass(frozen=True)
class RunRequest:
    command: str
    args: list[str] = field(default_factory=list)
    cwd: str | None = None
    env: dict[str, str] | None = None
    timeout_ms: int = 30_000
    #: Per stream.
    max_output_bytes: int = 1_048_576


@dataclass(frozen=True)
class RunResult:
    exit_code: int | None
    timed_out: bool
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: int


class _Collector:
    """One output pipe, read as it becomes readable: keeps the first ``cap`` bytes, reads
    and drops the rest, and calls ``on_end`` at its end of file."""

    def __init__(self, fd: int, cap: int, loop: asyncio.AbstractEventLoop) -> None:
        self.fd = fd
        self.cap = cap
        self.kept = bytearray()
        self.truncated = False
        self.on_end: Callable[[], None] | None = None
        self._loop = loop
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            if self.on_end is not None:
                self.on_end()
            return
        room = self.cap - len(self.kept)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
        self.kept += chunk

    def close(self) -> None:
        if self.fd >= 0:
            self._loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


class _Ends:
    """What a run waits for, watched on the loop: the command's exit (a pidfd) and the end
    of both its output pipes. The command is left unreaped (``reap``) until the run is
    done with its group: while its leader is a zombie, the group's id cannot be reused.

    One future per wait, no timer unless there is a deadline: a run's usual course (the
    command exits and its pipes end together) costs one wake-up of the waiting task and
    no other object, where a timeout scope, a gathering and a shield each cost a run
    about as much as the rest of its waiting.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, process: _Child | subprocess.Popen[bytes], pipes: tuple[_Collector, ...]
    ) -> None:
        self._loop = loop
        self.process = process
        self._pipes = pipes
        self._waiter: asyncio.Future[bool] | None = None
        self._drained_too = False
        self._pidfd = -1
        self.exited = process.returncode is not None
        if not self.exited:
            self._pidfd = os.pidfd_open(process.pid)
            loop.add_reader(self._pidfd, self._on_exit)
        for pipe in pipes:
            pipe.on_end = self._check

    def _met(self) -> bool:
        return self.exited and (not self._drained_too or all(pipe.fd < 0 for pipe in self._pipes))

    def _on_exit(self) -> None:
        self.close()
        self.exited = True
        self._check()

    def reap(self) -> None:
        """Reap the command, which has exited (at once: it is a zombie)."""
        if self.exited:
            self.process.wait()

    def _check(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done() and self._met():
            waiter.set_result(True)

    async def until(self, drained: bool, seconds: float | None) -> bool:
        """Wait until the command has exited (and with ``drained``, its pipes have ended
        too), at most ``seconds`` (None: no limit); whether it has."""
        self._drained_too = drained
        if self._met():
            return True
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiter = waiter
        timer = None if seconds is None else self._loop.call_later(seconds, _expire, waiter)
        try:
            return await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        """Stop watching the exit (the pipes are their collectors' to close)."""
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class _Child:
    """A child started with ``os.posix_spawn``: what ``run`` uses of a ``Popen``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            _pid, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _spawn(
    argv: list[str], cwd: str, env: dict[str, str]
) -> tuple[_Child | subprocess.Popen[bytes], int | None, int, int]:
    """Start ``argv`` in a session of its own: the process, its start time
    (``spawned_start_ticks``), its stdout and stderr read ends.

    vfork and exec, in C: ``os.posix_spawn`` in the server's own directory (it cannot
    change directory before the exec), else ``subprocess.Popen``, whose Python costs a
    run about 0.15 ms more; both far cheaper than the loop's subprocess machinery, and the
    pipes and the exit are watched here with ``add_reader`` and a pidfd anyway.
    """
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        if cwd == os.getcwd():
            stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            try:
                pid, start_ticks = spawn_in_session(
                    argv[0],
                    argv,
                    env,
                    [(os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)],
                )
            finally:
                os.close(stdin)
            process: _Child | subprocess.Popen[bytes] = _Child(pid)
        else:
            before = boot_clock_ns()
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
            start_ticks = spawned_start_ticks(process.pid, before)
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    return process, start_ticks, out_r, err_r


async def _exited(process: _Child | subprocess.Popen[bytes]) -> int:
    """Wait for ``process``, which was killed, to exit; its return code."""
    if process.returncode is not None:
        return process.returncode  # reaped already: its pid may be another's by now
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(process.pid)
    except OSError:
        # No descriptor to spare: wait in a thread (a killed process exits at once).
        return await asyncio.to_thread(process.wait)
    try:
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
    return process.wait()


async def run(
    request: RunRequest, guard: RunGuard | None = None, base_env: Mapping[str, str] | None = None
) -> RunResult:
    """Run ``request`` to its end or its timeout; ``guard`` is told of it while it runs.
    ``request.env`` is added over ``base_env`` (None: this process's environment now).

    Example::

        result = await run(RunRequest("sh", ["-c", "echo hi"], timeout_ms=1000))
        assert result.stdout == b"hi\\n"
    """
    cwd = validate.resolve_cwd(request.cwd)
    env = validate.build_env(request.env, base_env)
    # As the original does (over the server's own TERM): a run is often a tool that
    # colours its output by TERM, and its output is read by a program, not a terminal.
    if "TERM" not in (request.env or {}):
        env["TERM"] = "xterm-256color"
    executable = validate.resolve_command(request.command, cwd, env)
    validate.check_args(request.args)
    argv = [executable, *request.args]
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        process, start_ticks, out_fd, err_fd = _spawn(argv, cwd, env)
    except OSError as exc:
        # What the checks above cannot see: not a format the kernel runs (ENOEXEC), a
        # missing interpreter on its #! line; or no descriptors left (a 503).
        raise system.out_of_fds(exc) or BadRequest(
            f"could not start {request.command!r}: {exc.strerror or exc}"
        ) from None
    if guard is not None:
        guard.guard_run(process.pid, start_ticks)
    pipes: list[_Collector] = []
    ends: _Ends | None = None
    timed_out = False
    try:
        for fd in (out_fd, err_fd):
            pipes.append(_Collector(fd, request.max_output_bytes, loop))
        ends = _Ends(loop, process, tuple(pipes))
        # The command's exit and its pipes' end, by the deadline; children it left in its
        # group may hold the pipes after it exited.
        if not await ends.until(True, request.timeout_ms / 1000):
            drained = False
            if not ends.exited:
                timed_out = True
                _kill_group(process.pid)
                await ends.until(False, None)
                # Give the pipes a moment to close after the kill.
                drained = await ends.until(True, _DRAIN_AFTER_KILL)
            if not drained:
                # Kill what is left of the group; whatever still holds the pipes after
                # that is outside the group (it made its own session).
                _kill_group(process.pid)
                await ends.until(True, _DRAIN_AFTER_KILL)
    except BaseException as exc:
        # The caller went away (or the server is closing), or the run cannot be watched
        # (no descriptor left for its exit): leave nothing running, nor unreaped.
        _kill_group(process.pid)
        if ends is not None:
            ends.close()
        with contextlib.suppress(BaseException):
            await asyncio.shield(_exited(process))
        if isinstance(exc, OSError) and (unavailable := system.out_of_fds(exc)):
            raise unavailable from None
        raise
    finally:
        # No leaked descriptors, whatever happened; the command reaped before the
        # launcher hears that the run is over.
        if ends is not None:
            ends.close()
            ends.reap()
        for pipe in pipes:
            pipe.close()
        for fd in (out_fd, err_fd)[len(pipes) :]:
            os.close(fd)  # not yet watched
        if guard is not None:
            guard.release_run(process.pid)
    out, err = pipes
    returncode = process.returncode
    return RunResult(
        exit_code=None if timed_out or returncode is None or returncode < 0 else returncode,
        timed_out=timed_out,
        stdout=bytes(out.kept),
        stderr=bytes(err.kept),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


def _kill_group(pid: int) -> None:
    # The group's leader is our child and not yet reaped, so its pid (= group id)
    # cannot have been reused.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
