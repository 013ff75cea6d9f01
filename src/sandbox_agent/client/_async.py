"""``AsyncClient``: the asynchronous Python SDK, on ``httpx.AsyncClient``.

The twin of ``_sync.py``, method for method; what they share lives in ``_protocol`` and
``_terminal``.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx

from .._exceptions import ConnectionFailed, NotFound
from .._types import LogsStream, ProcessOwner, StreamName
from ..models import (
    Health,
    InputWritten,
    Logs,
    Process,
    ProcessConfig,
    ProcessEvent,
    ProcessInfo,
    ProcessInfoList,
    ProcessList,
    ProcessLogEntry,
    ProcessLogs,
    Restart,
    RunResult,
    TerminalSize,
    WaitFor,
)
from . import _protocol
from ._terminal import AsyncTerminalSession, TerminalProtocol

__all__ = ["AsyncClient", "AsyncProcesses"]

_T = TypeVar("_T")
_P = TypeVar("_P", Process, ProcessInfo)


class AsyncClient:
    """Drive a sandbox-agent server: start, list, follow, wait for and stop processes.

    ``url`` defaults to ``$SANDBOX_AGENT_URL``, then ``http://127.0.0.1:2468``; ``token``
    to ``$SANDBOX_AGENT_TOKEN``. ``timeout`` (seconds, None for none) bounds each request;
    a follow may stay quiet longer between lines. Errors are ``SandboxAgentError``s:
    ``NotFound``, ``BadRequest``, ``Unauthorized``, ... and ``ConnectionFailed``.

    Usage::

        async with sandbox_agent.AsyncClient() as client:
            process = await client.start("python", ["-c", "print('hello')"])
            async for line in client.follow(process.id, strip_timestamps=True):
                print(line)  # [stdout] hello
            print((await client.wait(process.id)).exit_code)  # 0

    Break out of ``follow`` inside ``contextlib.aclosing(...)`` so that its connection
    closes at once rather than when the generator is collected.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float | None = _protocol.DEFAULT_TIMEOUT,
        *,
        reconnect_attempts: int = _protocol.RECONNECT_ATTEMPTS,
    ) -> None:
        self.url = _protocol.resolve_url(url)
        self.reconnect_attempts = reconnect_attempts
        self.timeout = timeout
        self._token = _protocol.resolve_token(token)
        self._follow_timeout = _protocol.follow_timeout(timeout)
        self._http = httpx.AsyncClient(**_protocol.client_options(self.url, self._token, timeout))
        #: The ``/v1/processes`` dialect: terminals, input, one-shot runs, config, log entries.
        self.processes = AsyncProcesses(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"<AsyncClient {self.url}>"

    # -- the API ------------------------------------------------------------------

    async def health(self) -> Health:
        """The server's status and version (needs no token)."""
        response = await self._send(_protocol.Call("GET", "/v1/health"))
        return _protocol.parse(Health, response)

    async def start(
        self,
        command: str,
        args: Sequence[str] = (),
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        tty: bool = False,
        interactive: bool = False,
        terminal_size: tuple[int, int] | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        wait_for: WaitFor | str | None = None,
        restart: Restart | str | None = None,
    ) -> Process:
        """Start ``command`` with ``args``; ``env`` is added over the server's environment.

        ``tty``, ``interactive``, ``terminal_size``, ``name``, ``labels`` and ``wait_for``
        as in ``Client.start``.

        >>> (await client.start("sh", ["-c", "echo $GREETING"], env={"GREETING": "hi"})).status
        'running'
        """
        call = _protocol.start_call(
            command,
            args,
            cwd,
            env,
            tty=tty,
            interactive=interactive,
            terminal_size=terminal_size,
            name=name,
            labels=labels,
            wait_for=wait_for,
            restart=restart,
        )
        response = await self._send(call, timeout=_protocol.start_http_timeout(call, self.timeout))
        started = _protocol.parse_started(response.content)
        return started if isinstance(started, Process) else await self.get(started)

    async def list(
        self,
        *,
        status: _protocol.StatusFilter | None = None,
        labels: Mapping[str, str] | Sequence[str] | None = None,
        name: str | None = None,
    ) -> list[Process]:
        """Every process the server knows, newest first; or those matching every filter given."""
        params = _protocol.filter_params(status, labels, name) or None
        response = await self._send(_protocol.Call("GET", "/v1/process", params=params))
        return _protocol.parse(ProcessList, response).processes

    async def prune(self) -> builtins.list[str]:
        """Delete every exited process (record and logs); the ids deleted."""
        deleted = []
        for process in await self.list(status="exited"):
            try:
                await self.delete(process.id)
            except NotFound:
                continue  # deleted meanwhile
            deleted.append(process.id)
        return deleted

    async def events(self, *, last_event_id: str | None = None) -> AsyncIterator[ProcessEvent[Process]]:
        """The processes' lifecycle events (see ``Client.events``).

        >>> async for event in client.events():
        ...     print(event.kind, event.process.name)
        """
        state = _protocol.EventFollow(self.url, Process, last_event_id=last_event_id, attempts=self.reconnect_attempts)
        async with contextlib.aclosing(self._follow(state, state.feed_events)) as events:
            async for event in events:
                yield event

    async def get(self, process_id: str) -> Process:
        response = await self._send(_protocol.Call("GET", _protocol.process_path(process_id)))
        return _protocol.parse(Process, response)

    async def stop(self, process_id: str) -> None:
        """Send SIGTERM (SIGKILL after the stop timeout); returns at once, see ``wait``."""
        await self._send(_protocol.Call("POST", _protocol.process_path(process_id, "stop")))

    async def kill(self, process_id: str) -> None:
        """Send SIGKILL; the status becomes ``killed``. Returns at once, see ``wait``."""
        await self._send(_protocol.Call("POST", _protocol.process_path(process_id, "kill")))

    async def restart(self, process_id: str) -> Process:
        """End the current run as ``stop`` would and start the command again at once, under
        the same process (``restarts`` + 1), policy or not; the process once the new run
        started. ``Conflict`` once exited, or with tty or interactive.

        >>> client.restart("web").restarts
        1
        """
        call = _protocol.Call("POST", _protocol.process_path(process_id, "restart"))
        response = await self._send(call, timeout=_protocol.restart_http_timeout(self.timeout))
        return _protocol.parse(Process, response)

    async def delete(self, process_id: str) -> None:
        """Forget an exited process and remove its logs (``BadRequest`` while it runs)."""
        await self._send(_protocol.Call("DELETE", _protocol.process_path(process_id)))

    async def logs(
        self,
        process_id: str,
        *,
        stream: StreamName = "combined",
        tail: int | None = None,
        strip_timestamps: bool = False,
    ) -> Logs:
        """The lines logged so far (the last ``tail`` of them), in ``.content``."""
        params = _protocol.logs_params(stream, tail, strip_timestamps)
        response = await self._send(_protocol.Call("GET", _protocol.process_path(process_id, "logs"), params=params))
        return _protocol.parse(Logs, response)

    async def follow(
        self,
        process_id: str,
        *,
        stream: StreamName = "combined",
        tail: int | None = None,
        strip_timestamps: bool = False,
    ) -> AsyncIterator[str]:
        """Yield the lines logged so far (the last ``tail``), then each new one, until exit.

        Lines come as rendered (``[<ts>] [stdout] hello`` on the combined stream), with no
        newline. When the connection drops (a server restart), it reconnects and resumes
        after the last line it yielded: nothing lost, nothing repeated. It gives up with
        ``ConnectionFailed`` after ``reconnect_attempts`` failed attempts in a row.

        >>> async for line in client.follow(process.id, tail=10):
        ...     print(line)
        """
        state = _protocol.Follow(
            self.url,
            process_id,
            stream=stream,
            tail=tail,
            strip_timestamps=strip_timestamps,
            attempts=self.reconnect_attempts,
        )
        async with contextlib.aclosing(self._follow(state, state.feed)) as lines:
            async for line in lines:
                yield line

    # The same signature as Client.wait; anyio.fail_after around it works as well.
    async def wait(
        self,
        process_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the same signature as Client.wait
        *,
        until: _protocol.Until = "exit",
    ) -> Process:
        """Block until the process has exited (``until="ready"``: is ready, or exited);
        return it. ``TimeoutError`` after ``timeout`` s.

        >>> (await client.wait(process.id, timeout=60)).exit_code
        0
        """
        wait = _protocol.LongWait(process_id, until, timeout, self.reconnect_attempts)
        return await self._long_wait(wait, Process, _protocol.process_path)

    # -- internals ----------------------------------------------------------------

    async def _long_wait(self, wait: _protocol.LongWait, model: type[_P], path: Callable[[str, str], str]) -> _P:
        while True:
            call, timeout = wait.call(path(wait.process_id, "wait"), self.timeout)
            try:
                process = _protocol.parse(model, await self._send(call, timeout=timeout))
            except ConnectionFailed as exc:
                await anyio.sleep(wait.failed(exc))
                continue
            if wait.done(process):
                return process

    # timeout: an httpx timeout for this one request, as httpx takes it.
    async def _send(self, call: _protocol.Call, timeout: Any = httpx.USE_CLIENT_DEFAULT) -> httpx.Response:  # noqa: ASYNC109
        try:
            response = await self._http.request(
                call.method, call.path, params=call.params, json=call.json, timeout=timeout
            )
        except httpx.TransportError as exc:
            raise _protocol.connection_failed(self.url, exc) from exc
        return _protocol.check(response)

    async def _follow(
        self, state: _protocol.Follow, feed: Callable[[str], builtins.list[_T]]
    ) -> AsyncGenerator[_T, None]:
        """Drive a follow over as many connections as it takes (see ``_protocol.Follow``)."""
        while True:
            try:
                async with self._http.stream(**state.request(self._follow_timeout)) as response:
                    if response.status_code >= 400:
                        await response.aread()
                    if state.connected(response):
                        async for line in response.aiter_lines():
                            for item in feed(line):
                                yield item
                            if state.done:
                                return
                delay = state.dropped(None)
            except httpx.TransportError as exc:
                delay = state.dropped(exc)
            await anyio.sleep(delay)


class AsyncProcesses:
    """``Processes`` for ``AsyncClient``: the ``/v1/processes`` dialect, awaited.

    Usage::

        result = await client.processes.run("sh", ["-c", "echo hi; exit 3"], timeout=10)
        shell = await client.processes.create("bash", tty=True)
        async with await client.processes.terminal(shell.id) as term:
            await term.send("exit 7\n")
            async for chunk in term:
                ...
    """

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def get_config(self) -> ProcessConfig:
        response = await self._client._send(_protocol.Call("GET", "/v1/processes/config"))
        return _protocol.parse(ProcessConfig, response)

    async def set_config(self, config: ProcessConfig) -> ProcessConfig:
        return _protocol.parse(ProcessConfig, await self._client._send(_protocol.set_config_call(config)))

    async def create(
        self,
        command: str,
        args: Sequence[str] = (),
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        tty: bool = False,
        interactive: bool = False,
        terminal_size: tuple[int, int] | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        wait_for: WaitFor | str | None = None,
        restart: Restart | str | None = None,
    ) -> ProcessInfo:
        call = _protocol.create_call(
            command, args, cwd, env, tty, interactive, terminal_size, name, labels, wait_for, restart
        )
        timeout = _protocol.start_http_timeout(call, self._client.timeout)
        return _protocol.parse(ProcessInfo, await self._client._send(call, timeout=timeout))

    async def run(
        self,
        command: str,
        args: Sequence[str] = (),
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the run's own timeout, enforced by the server)
        max_output_bytes: int | None = None,
    ) -> RunResult:
        call = _protocol.run_call(command, args, cwd, env, timeout, max_output_bytes)
        response = await self._client._send(call, timeout=_protocol.run_http_timeout(call, self._client.timeout))
        return _protocol.parse(RunResult, response)

    async def list(
        self,
        owner: ProcessOwner | None = None,
        *,
        status: _protocol.StatusFilter | None = None,
        labels: Mapping[str, str] | Sequence[str] | None = None,
        name: str | None = None,
    ) -> list[ProcessInfo]:
        call = _protocol.list_call(owner, _protocol.filter_params(status, labels, name))
        return _protocol.parse(ProcessInfoList, await self._client._send(call)).processes

    async def wait(
        self,
        process_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the same signature as Client.wait
        *,
        until: _protocol.Until = "exit",
    ) -> ProcessInfo:
        wait = _protocol.LongWait(process_id, until, timeout, self._client.reconnect_attempts)
        return await self._client._long_wait(wait, ProcessInfo, _protocol.processes_path)

    async def events(self, *, last_event_id: str | None = None) -> AsyncIterator[ProcessEvent[ProcessInfo]]:
        client = self._client
        state = _protocol.EventFollow(
            client.url, ProcessInfo, last_event_id=last_event_id, attempts=client.reconnect_attempts
        )
        async with contextlib.aclosing(client._follow(state, state.feed_events)) as events:
            async for event in events:
                yield event

    async def get(self, process_id: str) -> ProcessInfo:
        response = await self._client._send(_protocol.Call("GET", _protocol.processes_path(process_id)))
        return _protocol.parse(ProcessInfo, response)

    async def stop(self, process_id: str, *, wait: float | None = None) -> ProcessInfo:
        response = await self._client._send(_protocol.signal_call(process_id, "stop", wait))
        return _protocol.parse(ProcessInfo, response)

    async def kill(self, process_id: str, *, wait: float | None = None) -> ProcessInfo:
        response = await self._client._send(_protocol.signal_call(process_id, "kill", wait))
        return _protocol.parse(ProcessInfo, response)

    async def delete(self, process_id: str) -> None:
        await self._client._send(_protocol.Call("DELETE", _protocol.processes_path(process_id)))

    async def logs(
        self,
        process_id: str,
        *,
        stream: LogsStream | None = None,
        since: int | None = None,
        tail: int | None = None,
    ) -> ProcessLogs:
        params = _protocol.entries_params(stream, since, tail)
        call = _protocol.Call("GET", _protocol.processes_path(process_id, "logs"), params=params)
        return _protocol.parse(ProcessLogs, await self._client._send(call))

    async def follow(
        self,
        process_id: str,
        *,
        stream: LogsStream | None = None,
        since: int | None = None,
        tail: int | None = None,
    ) -> AsyncIterator[ProcessLogEntry]:
        client = self._client
        state = _protocol.EntryFollow(
            client.url, process_id, stream=stream, since=since, tail=tail, attempts=client.reconnect_attempts
        )
        async with contextlib.aclosing(client._follow(state, state.feed_entries)) as entries:
            async for entry in entries:
                yield entry

    async def input(self, process_id: str, data: bytes | str = b"", *, eof: bool = False) -> int:
        response = await self._client._send(_protocol.input_call(process_id, data, eof))
        return _protocol.parse(InputWritten, response).bytes_written

    async def resize(self, process_id: str, cols: int, rows: int) -> TerminalSize:
        response = await self._client._send(_protocol.resize_call(process_id, cols, rows))
        return _protocol.parse(TerminalSize, response)

    def terminal_url(self, process_id: str, *, replay: int | None = None) -> str:
        return TerminalProtocol(self._client.url, process_id, None, replay).uri

    async def terminal(self, process_id: str, *, replay: int | None = None) -> AsyncTerminalSession:
        """Open the terminal of a running tty process (asyncio only); see ``AsyncTerminalSession``."""
        client = self._client
        return await AsyncTerminalSession.open(TerminalProtocol(client.url, process_id, client._token, replay))
