"""The server's end of the launcher: start it, send spawn requests, match replies.

The launcher (``supervisor/launcher.py``) is a small standard-library interpreter
that forks one supervisor per request. It lives as long as the server's socket to it:
when the server exits or crashes the launcher sees end of file and exits too, while the
supervisors it forked carry on in sessions of their own.

Each supervisor also holds the server's *exits socket*, a datagram socket on which it
tells its command's exit (the record it is about to write) before it writes it. The
kernel stamps each datagram with its sender's pid, and the engine takes an exit only
from the supervisor of that record (``on_exit``). The socket lives as long as this client,
whatever becomes of the launcher: supervisors forked by an earlier launcher still reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import logging
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._exceptions import BadRequest, ServerError
from ..supervisor.ondisk import EXIT_MESSAGE_MAX, LAUNCHER_MAX_MESSAGE

logger = logging.getLogger("sandbox_agent.launcher")

#: Run by path: the folder's __main__.py starts the launcher.
_PROGRAM = str(Path(__file__).resolve().parent.parent / "supervisor")
_BUFFER = LAUNCHER_MAX_MESSAGE
#: The runs pipe: the launcher reads it once a second (``RunGuard``).
_RUNS_PIPE_SIZE = 1024 * 1024
#: Room for the credentials the kernel adds to each exit message (``struct ucred``).
_CREDENTIALS = struct.Struct("3i")
_CREDENTIALS_SPACE = socket.CMSG_SPACE(_CREDENTIALS.size)


class LauncherClient:
    def __init__(self, env: dict[str, str], python: str = sys.executable, reply_timeout: float = 15.0) -> None:
        """``env``: the launcher's whole environment, which each spawn request's ``envAdd``
        is added over (given, never inherited: what the requests leave out must be exactly
        what the manager took as the base)."""
        self._python = python
        self._env = env
        self._reply_timeout = reply_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._counter = itertools.count(1)
        self._start_lock = asyncio.Lock()
        self._reaping: asyncio.Future[int] | None = None
        #: The write end of the launcher's pipe of runs (``RunGuard``), -1 without one.
        self._runs_w = -1
        #: The exits socket: our end (read), and the supervisors' (each launcher gets it).
        self._exits: socket.socket | None = None
        self._exits_theirs: socket.socket | None = None
        #: Called with the state record a supervisor told and the pid that sent it.
        self.on_exit: Callable[[dict[str, Any], int], None] | None = None
        #: The exits socket is read (no error stopped its reader).
        self._exits_readable = True

    async def start(self) -> None:
        async with self._start_lock:
            if self._sock is not None:
                return
            exits = self._open_exits()
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            runs_r, runs_w = os.pipe2(os.O_CLOEXEC)
            try:
                for s in (ours, theirs):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
                args = [self._python, "-I", "-S", _PROGRAM, str(theirs.fileno()), str(runs_r), str(exits)]
                self._proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once, never waits
                    args,
                    pass_fds=(theirs.fileno(), runs_r, exits),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,
                    env=self._env,
                )
            except BaseException:
                ours.close()
                os.close(runs_w)
                raise
            finally:
                theirs.close()
                os.close(runs_r)
            ours.setblocking(False)
            os.set_blocking(runs_w, False)
            with contextlib.suppress(OSError):  # capped by pipe-max-size: the default holds enough
                fcntl.fcntl(runs_w, fcntl.F_SETPIPE_SZ, _RUNS_PIPE_SIZE)
            self._sock = ours
            self._runs_w = runs_w
            asyncio.get_running_loop().add_reader(ours.fileno(), self._on_readable)

    def _open_exits(self) -> int:
        """The exits socket (made once): the fd of the supervisors' end."""
        if self._exits_theirs is None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
            ours.setblocking(False)
            # Non-blocking for every supervisor (one open file, shared): one never waits
            # for a server that does not read, and tells nothing instead.
            theirs.setblocking(False)
            asyncio.get_running_loop().add_reader(ours.fileno(), self._on_exits_readable)
            self._exits, self._exits_theirs = ours, theirs
        return self._exits_theirs.fileno()

    def read_exits(self) -> None:
        """Take the exits told so far, now: before an answer that would otherwise show a
        process running whose exit is already in the socket (the loop reads it only once
        the answer is written). One ``recvmsg`` when there is none."""
        if self._exits is not None and self._exits_readable:
            try:
                self._on_exits_readable()
            except Exception:
                # Called from a request's handling: a fault here must not fail that request
                # (the loop's own reader logs it the same way).
                logger.exception("taking the exits told failed")

    def _on_exits_readable(self) -> None:
        sock = self._exits
        assert sock is not None
        while True:
            try:
                data, ancillary, flags, _address = sock.recvmsg(EXIT_MESSAGE_MAX, _CREDENTIALS_SPACE)
            except BlockingIOError:
                return
            except OSError as exc:
                # Not expected of a socket pair; exits are still read from the records.
                logger.error("cannot read the exits socket (%s); exits are taken from the records alone", exc)
                asyncio.get_running_loop().remove_reader(sock.fileno())
                self._exits_readable = False
                return
            sender = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= _CREDENTIALS.size:
                    sender, _uid, _gid = _CREDENTIALS.unpack_from(payload)
            if sender is None or flags & socket.MSG_TRUNC or self.on_exit is None:
                continue
            try:
                state = json.loads(data)
            except ValueError:
                logger.error("unreadable exit message from pid %d: %r", sender, data[:200])
                continue
            if isinstance(state, dict):
                self.on_exit(state, sender)

    def guard_run(self, pid: int, start_ticks: int | None) -> None:
        """Name a one-shot run to the launcher, which kills its group if the server dies
        before ``release_run``. Best effort: a run that cannot be named runs all the same.

        ``pid`` is our unreaped child and ``start_ticks`` its start time (None: it is
        gone already): with it, the launcher never takes a later process that got the
        same pid for the run."""
        if start_ticks is not None:
            self._tell_runs(f"+{pid} {start_ticks}\n")

    def release_run(self, pid: int) -> None:
        """The run ``pid`` has ended and been reaped (told at once, with no await between)."""
        self._tell_runs(f"-{pid}\n")

    def _tell_runs(self, line: str) -> None:
        if self._runs_w < 0:
            return
        try:
            os.write(self._runs_w, line.encode())
        except OSError as exc:  # a full pipe: the launcher is stuck; or it is gone
            logger.warning("could not tell the process launcher of a run: %s", exc)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def wake(self) -> None:
        """Wake a spare now, ahead of the spawn request the caller is about to send (best
        effort): its wake-up overlaps the server's checks instead of following them."""
        if self._sock is not None:
            try:
                self._sock.send(b'{"op":"wake"}')
            except OSError:
                pass

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send ``message`` to the launcher and wait for the reply with the same number."""
        if self._sock is None:
            await self.start()
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        req = next(self._counter)
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[req] = future
        try:
            payload = json.dumps({**message, "req": req}).encode()
            if len(payload) > _BUFFER:
                raise BadRequest(
                    f"this start request takes {len(payload)} bytes with the server's environment added, over "
                    f"the {_BUFFER} the process launcher accepts; pass fewer or shorter arguments and variables"
                )
            try:
                await loop.sock_sendall(self._sock, payload)
            except OSError as exc:
                raise ServerError(f"could not reach the process launcher: {exc}") from exc
            try:
                return await asyncio.wait_for(future, self._reply_timeout)
            except TimeoutError:
                raise ServerError(
                    f"the process launcher did not answer within {self._reply_timeout:g} s; "
                    "the machine may be overloaded, try again"
                ) from None
        finally:
            self._pending.pop(req, None)

    def _on_readable(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            try:
                data = sock.recv(_BUFFER)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                logger.warning("the process launcher exited; a new one starts with the next spawn")
                self._detach(ServerError("the process launcher exited before it answered; try again"))
                return
            try:
                reply = json.loads(data)
                future = self._pending.get(reply["req"])
            except (ValueError, KeyError, TypeError):
                logger.error("unreadable message from the launcher: %r", data[:200])
                continue
            if future is not None and not future.done():
                future.set_result(reply)

    def _detach(self, error: Exception) -> None:
        sock, self._sock = self._sock, None
        runs_w, self._runs_w = self._runs_w, -1
        if runs_w >= 0:
            os.close(runs_w)
        if sock is not None:
            try:
                asyncio.get_running_loop().remove_reader(sock.fileno())
            except RuntimeError:
                pass
            sock.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            # Without its socket it exits by itself; reap it off the loop.
            self._reaping = asyncio.get_running_loop().run_in_executor(None, proc.wait)

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - a bound on proc.wait
        proc, self._proc = self._proc, None
        self._detach(ServerError("the server is shutting down"))
        exits, self._exits = self._exits, None
        if exits is not None:
            asyncio.get_running_loop().remove_reader(exits.fileno())
            exits.close()
        if self._exits_theirs is not None:
            self._exits_theirs.close()
            self._exits_theirs = None
        if proc is None:
            return
        try:
            await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            logger.error("the process launcher did not exit; killing it")
            proc.kill()
            await asyncio.to_thread(proc.wait)
