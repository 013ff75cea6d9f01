"""``Client``: the synchronous Python SDK, on ``httpx.Client``."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType

import httpx

from . import _transport
from ._exceptions import ConnectionFailed
from ._models import Health, Logs, Process, ProcessList
from ._types import StreamName

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
        timeout: float | None = _transport.DEFAULT_TIMEOUT,
        *,
        reconnect_attempts: int = _transport.RECONNECT_ATTEMPTS,
    ) -> None:
        self.url = _transport.resolve_url(url)
        self.reconnect_attempts = reconnect_attempts
        self._follow_timeout = _transport.follow_timeout(timeout)
        self._http = httpx.Client(**_transport.client_options(self.url, _transport.resolve_token(token), timeout))

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
        return Health.model_validate_json(self._send(_transport.Call("GET", "/v1/health")).content)

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
        response = self._send(_transport.start_call(command, args, cwd, env))
        started = _transport.parse_started(response.content)
        return started if isinstance(started, Process) else self.get(started)

    def list(self) -> list[Process]:
        """Every process the server knows, newest first."""
        return ProcessList.model_validate_json(self._send(_transport.Call("GET", "/v1/process")).content).processes

    def get(self, process_id: str) -> Process:
        response = self._send(_transport.Call("GET", _transport.process_path(process_id)))
        return Process.model_validate_json(response.content)

    def stop(self, process_id: str) -> None:
        """Send SIGTERM (SIGKILL after the stop timeout); returns at once, see ``wait``."""
        self._send(_transport.Call("POST", _transport.process_path(process_id, "stop")))

    def kill(self, process_id: str) -> None:
        """Send SIGKILL; the status becomes ``killed``. Returns at once, see ``wait``."""
        self._send(_transport.Call("POST", _transport.process_path(process_id, "kill")))

    def delete(self, process_id: str) -> None:
        """Forget an exited process and remove its logs (``BadRequest`` while it runs)."""
        self._send(_transport.Call("DELETE", _transport.process_path(process_id)))

    def logs(
        self,
        process_id: str,
        *,
        stream: StreamName = "combined",
        tail: int | None = None,
        strip_timestamps: bool = False,
    ) -> Logs:
        """The lines logged so far (the last ``tail`` of them), in ``.content``."""
        params = _transport.logs_params(stream, tail, strip_timestamps)
        response = self._send(_transport.Call("GET", _transport.process_path(process_id, "logs"), params=params))
        return Logs.model_validate_json(response.content)

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
        state = _transport.Follow(
            self.url,
            process_id,
            stream=stream,
            tail=tail,
            strip_timestamps=strip_timestamps,
            attempts=self.reconnect_attempts,
        )
        while True:
            try:
                with self._http.stream(
                    "GET", state.path, params=state.params, headers=state.headers(), timeout=self._follow_timeout
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                    if state.connected(response):
                        decoder = _transport.SSEDecoder()
                        heard = False
                        for line in response.iter_lines():
                            if not heard:
                                heard = True
                                state.received()
                            event = decoder.feed(line)
                            if event is not None:
                                yield from state.handle(event)
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
        poll = _transport.Poll(process_id, timeout, self.reconnect_attempts)
        while True:
            try:
                process = self.get(process_id)
            except ConnectionFailed as exc:
                poll.failed(exc)
            else:
                poll.succeeded()
                if process.exited:
                    return process
            time.sleep(poll.next_delay())

    # -- internals ----------------------------------------------------------------

    def _send(self, call: _transport.Call) -> httpx.Response:
        try:
            response = self._http.request(call.method, call.path, params=call.params, json=call.json)
        except httpx.TransportError as exc:
            raise _transport.connection_failed(self.url, exc) from exc
        return _transport.check(response)
