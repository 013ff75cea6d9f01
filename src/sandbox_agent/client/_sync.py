"""``Client``: the synchronous Python SDK, on ``httpx.Client``."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType

import httpx

from .._exceptions import ConnectionFailed
from .._types import StreamName
from ..models import Health, Logs, Process, ProcessList
from . import _protocol

__all__ = ["Client"]


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
        self._follow_timeout = _protocol.follow_timeout(timeout)
        self._http = httpx.Client(**_protocol.client_options(self.url, _protocol.resolve_token(token), timeout))

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
    ) -> Process:
        """Start ``command`` with ``args``; ``env`` is added over the server's environment.

        >>> client.start("sh", ["-c", "echo $GREETING"], env={"GREETING": "hi"}).status
        'running'
        """
        response = self._send(_protocol.start_call(command, args, cwd, env))
        started = _protocol.parse_started(response.content)
        return started if isinstance(started, Process) else self.get(started)

    def list(self) -> list[Process]:
        """Every process the server knows, newest first."""
        return _protocol.parse(ProcessList, self._send(_protocol.Call("GET", "/v1/process"))).processes

    def get(self, process_id: str) -> Process:
        response = self._send(_protocol.Call("GET", _protocol.process_path(process_id)))
        return _protocol.parse(Process, response)

    def stop(self, process_id: str) -> None:
        """Send SIGTERM (SIGKILL after the stop timeout); returns at once, see ``wait``."""
        self._send(_protocol.Call("POST", _protocol.process_path(process_id, "stop")))

    def kill(self, process_id: str) -> None:
        """Send SIGKILL; the status becomes ``killed``. Returns at once, see ``wait``."""
        self._send(_protocol.Call("POST", _protocol.process_path(process_id, "kill")))

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
        while True:
            try:
                with self._http.stream(**state.request(self._follow_timeout)) as response:
                    if response.status_code >= 400:
                        response.read()
                    if state.connected(response):
                        for line in response.iter_lines():
                            yield from state.feed(line)
                            if state.done:
                                return
                delay = state.dropped(None)
            except httpx.TransportError as exc:
                delay = state.dropped(exc)
            time.sleep(delay)

    def wait(self, process_id: str, timeout: float | None = None) -> Process:
        """Block until the process has exited; return it. ``TimeoutError`` after ``timeout`` s.

        >>> client.wait(process.id, timeout=60).exit_code
        0
        """
        poll = _protocol.Poll(process_id, timeout, self.reconnect_attempts)
        while True:
            try:
                process = self.get(process_id)
            except ConnectionFailed as exc:
                poll.failed(exc)
            else:
                if poll.answered(process):
                    return process
            time.sleep(poll.next_delay())

    # -- internals ----------------------------------------------------------------

    def _send(self, call: _protocol.Call) -> httpx.Response:
        try:
            response = self._http.request(call.method, call.path, params=call.params, json=call.json)
        except httpx.TransportError as exc:
            raise _protocol.connection_failed(self.url, exc) from exc
        return _protocol.check(response)
