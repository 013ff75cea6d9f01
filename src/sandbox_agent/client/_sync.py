"""``Client``: the synchronous Python SDK, on ``httpx.Client``."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

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
from ._terminal import TerminalProtocol, TerminalSession

__all__ = ["Client", "Processes"]

_T = TypeVar("_T")
_P = TypeVar("_P", Process, ProcessInfo)


class Client:
    """Drive a sandbox-agent server: start, list, follow, wait for and stop processes.

    ``url`` defaults to ``$SANDBOX_AGENT_URL``, then ``http://127.0.0.1:2468``; ``token``
    to ``$SANDBOX_AGENT_TOKEN``. ``timeout`` (seconds, None for none) bounds each request;
    a follow may stay quiet longer between lines. Errors are ``SandboxAgentError``s:
    ``NotFound``, ``BadRequest``, ``Unauthorized``, ... and ``ConnectionFailed``.

    Usage::

        with sandbox_agent.Client() as client:
            process = client.start("python", ["-c", "print('hello')"])
            for line in client.follow(process.id, strip_timestamps=True):
                print(line)  # [stdout] hello
            print(client.wait(process.id).exit_code)  # 0
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
        self._http = httpx.Client(**_protocol.client_options(self.url, self._token, timeout))
        #: The ``/v1/processes`` dialect: terminals, input, one-shot runs, config, log entries.
        self.processes = Processes(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"<Client {self.url}>"

    # -- the API ------------------------------------------------------------------

    def health(self) -> Health:
        """The server's status and version (needs no token)."""
        return _protocol.parse(Health, self._send(_protocol.Call("GET", "/v1/health")))

    def start(
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

        ``tty``: on a new pseudo-terminal (``terminal_size`` (cols, rows), 80x24 by
        default), driven with ``processes.terminal``; ``interactive``: stdin is a pipe that
        ``processes.input`` writes to. Otherwise stdin is /dev/null.

        ``name`` (unique among running processes) works wherever an id does; ``labels``
        filter ``list``. ``wait_for`` (``WaitFor`` or ``"port:3000"``, ``"log:REGEX"``,
        ``"http:URL"``): return once it holds (or the process exited: check ``ready``);
        ``ReadinessTimeout`` past its ``timeout_ms``, the process left running.

        >>> client.start("sh", ["-c", "echo $GREETING"], env={"GREETING": "hi"}).status
        'running'
        >>> client.start("npm", ["run", "dev"], name="web", wait_for="port:3000").ports
        [3000]
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
        response = self._send(call, timeout=_protocol.start_http_timeout(call, self.timeout))
        started = _protocol.parse_started(response.content)
        return started if isinstance(started, Process) else self.get(started)

    def list(
        self,
        *,
        status: _protocol.StatusFilter | None = None,
        labels: Mapping[str, str] | Sequence[str] | None = None,
        name: str | None = None,
    ) -> list[Process]:
        """Every process the server knows, newest first; or those matching every filter given.

        >>> client.list(status="running", labels={"app": "shop"})
        """
        params = _protocol.filter_params(status, labels, name) or None
        return _protocol.parse(ProcessList, self._send(_protocol.Call("GET", "/v1/process", params=params))).processes

    def prune(self) -> builtins.list[str]:
        """Delete every exited process (record and logs); the ids deleted."""
        deleted = []
        for process in self.list(status="exited"):
            try:
                self.delete(process.id)
            except NotFound:
                continue  # deleted meanwhile
            deleted.append(process.id)
        return deleted

    def events(self, *, last_event_id: str | None = None) -> Iterator[ProcessEvent[Process]]:
        """Yield the processes' lifecycle events from now on (or after ``last_event_id``):
        ``created``, ``ready``, ``exited``, ``deleted``; never ends by itself. A dropped
        connection resumes after the last event yielded (a ``reset`` event with the current
        list when the server no longer holds those).

        >>> for event in client.events():
        ...     print(event.kind, event.process.name)
        """
        state = _protocol.EventFollow(self.url, Process, last_event_id=last_event_id, attempts=self.reconnect_attempts)
        return self._follow(state, state.feed_events)

    def get(self, process_id: str) -> Process:
        response = self._send(_protocol.Call("GET", _protocol.process_path(process_id)))
        return _protocol.parse(Process, response)

    def stop(self, process_id: str) -> None:
        """Send SIGTERM (SIGKILL after the stop timeout); returns at once, see ``wait``."""
        self._send(_protocol.Call("POST", _protocol.process_path(process_id, "stop")))

    def kill(self, process_id: str) -> None:
        """Send SIGKILL; the status becomes ``killed``. Returns at once, see ``wait``."""
        self._send(_protocol.Call("POST", _protocol.process_path(process_id, "kill")))

    def restart(self, process_id: str) -> Process:
        """End the current run as ``stop`` would and start the command again at once, under
        the same process (``restarts`` + 1), policy or not; the process once the new run
        started. ``Conflict`` once exited, or with tty or interactive.

        >>> client.restart("web").restarts
        1
        """
        call = _protocol.Call("POST", _protocol.process_path(process_id, "restart"))
        response = self._send(call, timeout=_protocol.restart_http_timeout(self.timeout))
        return _protocol.parse(Process, response)

    def delete(self, process_id: str) -> None:
        """Forget an exited process and remove its logs (``BadRequest`` while it runs)."""
        self._send(_protocol.Call("DELETE", _protocol.process_path(process_id)))

    def logs(
        self,
        process_id: str,
        *,
        stream: StreamName = "combined",
        tail: int | None = None,
        strip_timestamps: bool = False,
    ) -> Logs:
        """The lines logged so far (the last ``tail`` of them), in ``.content``."""
        params = _protocol.logs_params(stream, tail, strip_timestamps)
        response = self._send(_protocol.Call("GET", _protocol.process_path(process_id, "logs"), params=params))
        return _protocol.parse(Logs, response)

    def follow(
        self,
        process_id: str,
        *,
        stream: StreamName = "combined",
        tail: int | None = None,
        strip_timestamps: bool = False,
    ) -> Iterator[str]:
        """Yield the lines logged so far (the last ``tail``), then each new one, until exit.

        Lines come as rendered (``[<ts>] [stdout] hello`` on the combined stream), with no
        newline. When the connection drops (a server restart), it reconnects and resumes
        after the last line it yielded: nothing lost, nothing repeated. It gives up with
        ``ConnectionFailed`` after ``reconnect_attempts`` failed attempts in a row.

        >>> for line in client.follow(process.id, tail=10):
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
        return self._follow(state, state.feed)

    def wait(self, process_id: str, timeout: float | None = None, *, until: _protocol.Until = "exit") -> Process:
        """Block until the process has exited (``until="ready"``: is ready, or exited);
        return it. ``TimeoutError`` after ``timeout`` s.

        >>> client.wait(process.id, timeout=60).exit_code
        0
        >>> client.wait("web", until="ready").ready
        True
        """
        wait = _protocol.LongWait(process_id, until, timeout, self.reconnect_attempts)
        return self._long_wait(wait, Process, _protocol.process_path)

    # -- internals ----------------------------------------------------------------

    def _long_wait(self, wait: _protocol.LongWait, model: type[_P], path: Callable[[str, str], str]) -> _P:
        while True:
            call, timeout = wait.call(path(wait.process_id, "wait"), self.timeout)
            try:
                process = _protocol.parse(model, self._send(call, timeout=timeout))
            except ConnectionFailed as exc:
                time.sleep(wait.failed(exc))
                continue
            if wait.done(process):
                return process

    def _send(self, call: _protocol.Call, timeout: Any = httpx.USE_CLIENT_DEFAULT) -> httpx.Response:
        try:
            response = self._http.request(call.method, call.path, params=call.params, json=call.json, timeout=timeout)
        except httpx.TransportError as exc:
            raise _protocol.connection_failed(self.url, exc) from exc
        return _protocol.check(response)

    def _follow(self, state: _protocol.Follow, feed: Callable[[str], builtins.list[_T]]) -> Iterator[_T]:
        """Drive a follow over as many connections as it takes (see ``_protocol.Follow``)."""
        while True:
            try:
                with self._http.stream(**state.request(self._follow_timeout)) as response:
                    if response.status_code >= 400:
                        response.read()
                    if state.connected(response):
                        for line in response.iter_lines():
                            yield from feed(line)
                            if state.done:
                                return
                delay = state.dropped(None)
            except httpx.TransportError as exc:
                delay = state.dropped(exc)
            time.sleep(delay)


class Processes:
    """The ``/v1/processes`` dialect, as ``client.processes``: what the TypeScript SDK offers.

    The same processes as the client's own methods (one id space), in this dialect's
    shapes (``ProcessInfo``), plus what only this dialect has: terminals, input, one-shot
    runs, the config, and logs as numbered entries.

    Usage::

        result = client.processes.run("sh", ["-c", "echo hi; exit 3"], timeout=10)
        print(result.exit_code, result.stdout)  # 3 hi

        shell = client.processes.create("bash", tty=True)
        with client.processes.terminal(shell.id) as term:
            term.send("exit 7\n")
            for chunk in term:
                ...
        print(term.exit_code)  # 7
    """

    def __init__(self, client: Client) -> None:
        self._client = client

    def get_config(self) -> ProcessConfig:
        """The limits: concurrent processes, run timeouts and output, log reads, input."""
        return _protocol.parse(ProcessConfig, self._client._send(_protocol.Call("GET", "/v1/processes/config")))

    def set_config(self, config: ProcessConfig) -> ProcessConfig:
        """Replace all six limits (kept across restarts of the server); returns them as stored.

        >>> client.processes.set_config(dataclasses.replace(client.processes.get_config(), max_output_bytes=4096))
        """
        return _protocol.parse(ProcessConfig, self._client._send(_protocol.set_config_call(config)))

    def create(
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
        """Start a process (see ``Client.start``); ``Conflict`` past ``maxConcurrentProcesses``."""
        call = _protocol.create_call(
            command, args, cwd, env, tty, interactive, terminal_size, name, labels, wait_for, restart
        )
        client = self._client
        return _protocol.parse(
            ProcessInfo, client._send(call, timeout=_protocol.start_http_timeout(call, client.timeout))
        )

    def run(
        self,
        command: str,
        args: Sequence[str] = (),
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        max_output_bytes: int | None = None,
    ) -> RunResult:
        """Run a command to its end and return its exit code and output. Not recorded as a process.

        ``timeout`` in seconds (default and cap: the config's); on timeout the whole process
        group is killed, ``timed_out`` is True and ``exit_code`` None. Output past
        ``max_output_bytes`` per stream is dropped (``stdout_truncated``). stdin is /dev/null.

        >>> client.processes.run("sh", ["-c", "echo hi"]).stdout
        'hi\n'
        """
        call = _protocol.run_call(command, args, cwd, env, timeout, max_output_bytes)
        response = self._client._send(call, timeout=_protocol.run_http_timeout(call, self._client.timeout))
        return _protocol.parse(RunResult, response)

    def list(
        self,
        owner: ProcessOwner | None = None,
        *,
        status: _protocol.StatusFilter | None = None,
        labels: Mapping[str, str] | Sequence[str] | None = None,
        name: str | None = None,
    ) -> list[ProcessInfo]:
        """Every process, oldest first; or those matching every filter given (see ``Client.list``)."""
        call = _protocol.list_call(owner, _protocol.filter_params(status, labels, name))
        return _protocol.parse(ProcessInfoList, self._client._send(call)).processes

    def wait(self, process_id: str, timeout: float | None = None, *, until: _protocol.Until = "exit") -> ProcessInfo:
        """Block until the process has exited, or is ready (see ``Client.wait``)."""
        wait = _protocol.LongWait(process_id, until, timeout, self._client.reconnect_attempts)
        return self._client._long_wait(wait, ProcessInfo, _protocol.processes_path)

    def events(self, *, last_event_id: str | None = None) -> Iterator[ProcessEvent[ProcessInfo]]:
        """``Client.events`` with the processes in this dialect's shape."""
        client = self._client
        state = _protocol.EventFollow(
            client.url, ProcessInfo, last_event_id=last_event_id, attempts=client.reconnect_attempts
        )
        return client._follow(state, state.feed_events)

    def get(self, process_id: str) -> ProcessInfo:
        return _protocol.parse(
            ProcessInfo, self._client._send(_protocol.Call("GET", _protocol.processes_path(process_id)))
        )

    def stop(self, process_id: str, *, wait: float | None = None) -> ProcessInfo:
        """SIGTERM to the process group; the process once exited, or after ``wait`` s (server default 2)."""
        return _protocol.parse(ProcessInfo, self._client._send(_protocol.signal_call(process_id, "stop", wait)))

    def kill(self, process_id: str, *, wait: float | None = None) -> ProcessInfo:
        """SIGKILL to the process group; the process once exited, or after ``wait`` s (server default 1)."""
        return _protocol.parse(ProcessInfo, self._client._send(_protocol.signal_call(process_id, "kill", wait)))

    def delete(self, process_id: str) -> None:
        """Forget an exited process and remove its logs (``Conflict`` while it runs)."""
        self._client._send(_protocol.Call("DELETE", _protocol.processes_path(process_id)))

    def logs(
        self,
        process_id: str,
        *,
        stream: LogsStream | None = None,
        since: int | None = None,
        tail: int | None = None,
    ) -> ProcessLogs:
        """The output as entries (``entry.raw``, ``entry.text``): those after sequence
        ``since``, or the last ``tail``. ``stream`` defaults to pty for a tty process, else
        combined. One answer holds at most ``maxLogBytesPerProcess``: page on with ``since``."""
        params = _protocol.entries_params(stream, since, tail)
        call = _protocol.Call("GET", _protocol.processes_path(process_id, "logs"), params=params)
        return _protocol.parse(ProcessLogs, self._client._send(call))

    def follow(
        self,
        process_id: str,
        *,
        stream: LogsStream | None = None,
        since: int | None = None,
        tail: int | None = None,
    ) -> Iterator[ProcessLogEntry]:
        """Yield the entries (as ``logs`` selects them), then each new one, until the process exits.

        A dropped connection is resumed after the last entry yielded (``Last-Event-ID``).

        >>> for entry in client.processes.follow(process.id):
        ...     print(entry.stream, entry.text, end="")
        """
        client = self._client
        state = _protocol.EntryFollow(
            client.url, process_id, stream=stream, since=since, tail=tail, attempts=client.reconnect_attempts
        )
        return client._follow(state, state.feed_entries)

    def input(self, process_id: str, data: bytes | str = b"", *, eof: bool = False) -> int:
        """Write to the terminal of a tty process, or to stdin of an interactive one; the
        number of bytes written. ``str`` goes as UTF-8. ``eof``: close stdin afterwards
        (^D on a terminal). At most ``maxInputBytesPerRequest`` bytes a call."""
        response = self._client._send(_protocol.input_call(process_id, data, eof))
        return _protocol.parse(InputWritten, response).bytes_written

    def resize(self, process_id: str, cols: int, rows: int) -> TerminalSize:
        """Set the terminal size of a running tty process; it gets SIGWINCH."""
        return _protocol.parse(TerminalSize, self._client._send(_protocol.resize_call(process_id, cols, rows)))

    def terminal_url(self, process_id: str, *, replay: int | None = None) -> str:
        """The WebSocket URL of a process's terminal (for a client of your own)."""
        return TerminalProtocol(self._client.url, process_id, None, replay).uri

    def terminal(self, process_id: str, *, replay: int | None = None) -> TerminalSession:
        """Open the terminal of a running tty process; ``replay``: first send up to that many
        bytes of its most recent output (to redraw a screen). See ``TerminalSession``."""
        client = self._client
        return TerminalSession(TerminalProtocol(client.url, process_id, client._token, replay))
