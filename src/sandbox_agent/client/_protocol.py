"""What ``Client`` and ``AsyncClient`` share: settings, requests, responses, following.

Nothing here does I/O. The two clients send the requests described here with httpx's
sync or async API and hand the responses back, so that the wire details (paths, query
parameters, problem+json errors, Server-Sent Events, resuming a follow) are written once.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx

from .._exceptions import ConnectionFailed, ProblemError, ServerError, error_for_status
from .._types import LogsStream, ProcessOwner, StreamName
from ..models import (
    CreateProcess,
    EventKind,
    Process,
    ProcessConfig,
    ProcessEvent,
    ProcessInfo,
    ProcessLogEntry,
    Restart,
    RunProcess,
    StartProcess,
    TerminalSize,
    WaitFor,
    _Wire,
)

DEFAULT_URL = "http://127.0.0.1:2468"
DEFAULT_TIMEOUT = 30.0
#: Consecutive failed attempts after which a follow (or a wait) gives up.
RECONNECT_ATTEMPTS = 20
#: The server sends a keepalive comment every 15 s; silence for this long means a dead link.
FOLLOW_READ_TIMEOUT = 60.0

_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 1.0


# -- settings ---------------------------------------------------------------------


def resolve_url(url: str | None) -> str:
    """``url``, else ``$SANDBOX_AGENT_URL``, else the default; ``http://`` when no scheme."""
    url = url or os.environ.get("SANDBOX_AGENT_URL") or DEFAULT_URL
    if "://" not in url:
        url = f"http://{url}"
    return url.rstrip("/")


def resolve_token(token: str | None) -> str | None:
    return token or os.environ.get("SANDBOX_AGENT_TOKEN") or None


def client_options(url: str, token: str | None, timeout: float | None) -> dict[str, Any]:
    """Keyword arguments for ``httpx.Client`` / ``httpx.AsyncClient``."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return {"base_url": url, "headers": headers, "timeout": timeout}


def follow_timeout(timeout: float | None) -> httpx.Timeout:
    """A follow may stay quiet between keepalives: only the read timeout is longer."""
    if timeout is None:
        return httpx.Timeout(None)
    return httpx.Timeout(timeout, read=max(timeout, FOLLOW_READ_TIMEOUT))


# -- requests and responses -------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request: what the clients hand to ``httpx.Client.request``."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: dict[str, Any] | None = None


def process_path(process_id: str, action: str = "") -> str:
    # Quoted so that an id typed by a user ("../x") stays one path segment.
    path = f"/v1/process/{quote(process_id, safe='')}"
    return f"{path}/{action}" if action else path


_M = TypeVar("_M", bound=_Wire)
_P = TypeVar("_P", Process, ProcessInfo)


def parse(model: type[_M], response: httpx.Response) -> _M:
    """``model`` read from a successful response; ServerError if the body is not one."""
    try:
        return model.from_wire(json.loads(response.content))
    except ValueError as exc:
        raise ServerError(
            f"the server's answer to {response.request.method} {response.request.url.path} is not a "
            f"{model.__name__}: {exc}; is this a sandbox-agent server of a compatible version?",
            status=response.status_code,
        ) from exc


def parse_started(content: bytes) -> Process | str:
    """The Process a start answered with, or just its id when the answer is the
    original server's minimal ``{id, status, logPaths}`` (the caller then gets it)."""
    data = json.loads(content)
    try:
        return Process.from_wire(data)
    except ValueError:
        process_id = data.get("id") if isinstance(data, dict) else None
        if isinstance(process_id, str):
            return process_id
        raise


def _args(args: Sequence[str]) -> list[str]:
    if isinstance(args, str):
        raise TypeError("args must be a sequence of strings, not a string: args=['-c', 'print(1)']")
    return list(args)


def _size(size: tuple[int, int] | None) -> TerminalSize | None:
    return None if size is None else TerminalSize(cols=size[0], rows=size[1])


def start_call(
    command: str,
    args: Sequence[str],
    cwd: str | None,
    env: Mapping[str, str] | None,
    *,
    tty: bool = False,
    interactive: bool = False,
    terminal_size: tuple[int, int] | None = None,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    wait_for: WaitFor | str | None = None,
    restart: Restart | str | None = None,
) -> Call:
    body = StartProcess(
        command=command,
        args=_args(args),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        # Sent only when asked for: the original's /v1/process knows none of them.
        tty=tty or None,
        interactive=interactive or None,
        terminal_size=_size(terminal_size),
        name=name,
        labels=None if labels is None else dict(labels),
        wait_for=_wait_for(wait_for),
        restart=_restart(restart),
    )
    return Call("POST", "/v1/process", json=body.to_wire())


# -- services (SPEC section 8) ----------------------------------------------------------

#: The server's waitFor.timeoutMs when a start gives none.
DEFAULT_READY_TIMEOUT_MS = 60_000
#: The longest one wait request asks the server to hold (a longer wait asks again).
_WAIT_CHUNK = 30.0
Until = Literal["exit", "ready"]
#: A status a list may be filtered by: running (also starting), exited, or a status.
StatusFilter = Literal["running", "exited", "starting", "stopped", "killed"]


def _wait_for(wait_for: WaitFor | str | None) -> WaitFor | None:
    return WaitFor.parse(wait_for) if isinstance(wait_for, str) else wait_for


def _restart(restart: Restart | str | None) -> Restart | None:
    return Restart.parse(restart) if isinstance(restart, str) else restart


def restart_http_timeout(timeout: float | None) -> float | None:
    """The HTTP timeout of a restart: the client's, and the server's wait for the run to end."""
    return None if timeout is None else timeout + 60.0


def start_http_timeout(call: Call, timeout: float | None) -> float | None:
    """The HTTP timeout of a start: the client's, stretched to outlast its waitFor."""
    wait_for = (call.json or {}).get("waitFor")
    if timeout is None or not isinstance(wait_for, dict):
        return timeout
    ready_ms = wait_for.get("timeoutMs", DEFAULT_READY_TIMEOUT_MS)
    return (ready_ms if isinstance(ready_ms, int) else DEFAULT_READY_TIMEOUT_MS) / 1000 + timeout


def filter_params(
    status: StatusFilter | None, labels: Mapping[str, str] | Sequence[str] | None, name: str | None
) -> dict[str, Any]:
    """``labels``: ``{"k": "v"}``, or ``["k=v", "k"]`` (``k``: has the label)."""
    params: dict[str, Any] = {}
    if status is not None:
        params["status"] = status
    if labels:
        if isinstance(labels, str):
            raise TypeError("labels must be a mapping or a sequence of 'key=value' strings, not a string")
        params["label"] = (
            [f"{k}={v}" for k, v in labels.items()] if isinstance(labels, Mapping) else [str(x) for x in labels]
        )
    if name is not None:
        params["name"] = name
    return params


class LongWait:
    """A wait for the exit or readiness through ``GET .../wait``, asked again until the deadline.

    One request waits on the server (no polling). A server that restarts meanwhile is
    asked again after a growing delay, up to ``attempts`` failures in a row, once it has
    answered at least once (a server never reached is an error at once).
    """

    def __init__(self, process_id: str, until: Until, timeout: float | None, attempts: int = 0) -> None:
        if until not in ("exit", "ready"):
            raise ValueError(f"until must be 'exit' or 'ready', not {until!r}")
        self.process_id = process_id
        self.until = until
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.failures = Backoff(attempts)
        self.reached = False

    def failed(self, exc: ConnectionFailed) -> float:
        """A request could not reach the server: the delay before asking again, or ``exc``."""
        # A connection dropped while the server held the wait means it was there (it
        # restarts, say); one refused from the start may be a wrong address.
        self.reached = self.reached or not isinstance(exc.__cause__, httpx.ConnectError)
        delay = self.failures.failed() if self.reached else None
        if delay is None:
            raise exc
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise self._timed_out()
            delay = min(delay, left)
        return delay

    def _timed_out(self) -> TimeoutError:
        state = "had not become ready" if self.until == "ready" else "was still running"
        return TimeoutError(f"process {self.process_id} {state} after {self.timeout} s")

    def call(self, path: str, client_timeout: float | None) -> tuple[Call, float | None]:
        """The next request and its HTTP timeout."""
        chunk = _WAIT_CHUNK
        if self.deadline is not None:
            chunk = max(0.0, min(chunk, self.deadline - time.monotonic()))
        params = {"until": self.until, "timeoutMs": str(round(chunk * 1000))}
        return Call("GET", path, params=params), None if client_timeout is None else chunk + client_timeout

    def done(self, process: Process | ProcessInfo) -> bool:
        """Whether the wait is over; TimeoutError once past the deadline."""
        self.reached = True
        self.failures.reset()
        if process.exited or (self.until == "ready" and process.ready):
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise self._timed_out()
        return False


# -- /v1/processes (the current dialect) ------------------------------------------------


def processes_path(process_id: str, action: str = "") -> str:
    path = f"/v1/processes/{quote(process_id, safe='')}"
    return f"{path}/{action}" if action else path


def create_call(
    command: str,
    args: Sequence[str],
    cwd: str | None,
    env: Mapping[str, str] | None,
    tty: bool,
    interactive: bool,
    terminal_size: tuple[int, int] | None,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    wait_for: WaitFor | str | None = None,
    restart: Restart | str | None = None,
) -> Call:
    body = CreateProcess(
        command=command,
        args=_args(args),
        cwd=cwd,
        env=dict(env or {}),
        tty=tty,
        interactive=interactive,
        terminal_size=_size(terminal_size),
        name=name,
        labels=None if labels is None else dict(labels),
        wait_for=_wait_for(wait_for),
        restart=_restart(restart),
    )
    return Call("POST", "/v1/processes", json=body.to_wire())


def run_call(
    command: str,
    args: Sequence[str],
    cwd: str | None,
    env: Mapping[str, str] | None,
    timeout: float | None,
    max_output_bytes: int | None,
) -> Call:
    """``timeout`` in seconds (the wire's is in ms); None: the server's default."""
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be more than 0 seconds, got {timeout}")
    body = RunProcess(
        command=command,
        args=_args(args),
        cwd=cwd,
        env=dict(env or {}),
        timeout_ms=None if timeout is None else max(1, round(timeout * 1000)),
        max_output_bytes=max_output_bytes,
    )
    return Call("POST", "/v1/processes/run", json=body.to_wire())


def run_http_timeout(call: Call, timeout: float | None) -> float | None:
    """The HTTP timeout of a run: the client's, stretched to outlast the run's own."""
    if timeout is None or call.json is None:
        return timeout
    run_ms = call.json.get("timeoutMs")
    if not isinstance(run_ms, int):
        # The server's default applies, which the client does not know: its maximum is 300 s.
        return max(timeout, 300.0 + timeout)
    return run_ms / 1000 + timeout


def list_call(owner: ProcessOwner | None, filters: dict[str, Any] | None = None) -> Call:
    params = dict(filters or {})
    if owner is not None:
        params["owner"] = owner
    return Call("GET", "/v1/processes", params=params or None)


def signal_call(process_id: str, action: str, wait: float | None) -> Call:
    """Stop or kill; ``wait`` seconds for the exit before the answer (None: the server's default)."""
    params = None if wait is None else {"waitMs": str(max(0, round(wait * 1000)))}
    return Call("POST", processes_path(process_id, action), params=params)


def input_call(process_id: str, data: bytes | str, eof: bool) -> Call:
    """Input for a terminal or stdin: ``str`` goes as UTF-8, ``bytes`` as base64."""
    body: dict[str, Any]
    if isinstance(data, str):
        body = {"data": data, "encoding": "utf8"}
    elif isinstance(data, (bytes, bytearray, memoryview)):
        body = {"data": base64.b64encode(data).decode("ascii"), "encoding": "base64"}
    else:
        raise TypeError(f"input data must be str or bytes, not {type(data).__name__}")
    if eof:
        body["eof"] = True
    return Call("POST", processes_path(process_id, "input"), json=body)


def resize_call(process_id: str, cols: int, rows: int) -> Call:
    return Call("POST", processes_path(process_id, "terminal/resize"), json={"cols": cols, "rows": rows})


def set_config_call(config: ProcessConfig) -> Call:
    return Call("POST", "/v1/processes/config", json=config.to_wire())


def entries_params(
    stream: LogsStream | None, since: int | None, tail: int | None, *, follow: bool = False
) -> dict[str, str]:
    params: dict[str, str] = {}
    if stream is not None:
        params["stream"] = stream
    if since is not None:
        params["since"] = str(since)
    if tail is not None:
        params["tail"] = str(tail)
    if follow:
        params["follow"] = "true"
    return params


def logs_params(
    stream: StreamName, tail: int | None, strip_timestamps: bool, *, follow: bool = False
) -> dict[str, str]:
    params: dict[str, str] = {"stream": stream}
    if tail is not None:
        params["tail"] = str(tail)
    if strip_timestamps:
        params["strip_timestamps"] = "true"
    if follow:
        params["follow"] = "true"
    return params


def connection_failed(url: str, exc: Exception) -> ConnectionFailed:
    reason = str(exc) or type(exc).__name__
    return ConnectionFailed(f"cannot reach the sandbox-agent server at {url}: {reason}")


def problem(response: httpx.Response) -> ProblemError:
    """The error for an HTTP error response, with the problem+json detail when there is one.

    The response body must have been read.
    """
    detail = title = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = body.get("detail")
        title = body.get("title")
    if not isinstance(detail, str) or not detail:
        text = response.text.strip()
        detail = f"{response.status_code} {response.reason_phrase}" + (f": {text[:200]}" if text else "")
    return error_for_status(response.status_code, detail, title if isinstance(title, str) else None)


def check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise problem(response)
    return response


# -- Server-Sent Events -------------------------------------------------------------


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None


@dataclass
class SSEDecoder:
    """Turns the lines of a ``text/event-stream`` into events (WHATWG parsing rules)."""

    _data: list[str] = field(default_factory=list)
    _event: str | None = None
    _id: str | None = None
    _fields: bool = False

    def feed(self, line: str) -> Event | None:
        if not line:
            if not self._fields:
                return None
            event = Event(self._event or "message", "\n".join(self._data), self._id)
            self._data, self._event, self._id, self._fields = [], None, None, False
            return event
        if line.startswith(":"):
            return None  # a comment: the keepalive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        else:
            return None
        self._fields = True
        return None


def _as_event_line(line: str) -> str:
    # A live event renders a carriage return inside a line as a newline and drops a
    # trailing one (see server/_sse.py): snapshot lines get the same treatment, so a
    # line reads the same whichever way it reached the client.
    return line.removesuffix("\r").replace("\r", "\n")


# -- following ------------------------------------------------------------------------


class Backoff:
    """Bounded, growing delays between attempts; ``reset`` once an attempt succeeded."""

    def __init__(self, attempts: int, first: float = _BACKOFF_FIRST, maximum: float = _BACKOFF_MAX) -> None:
        self.attempts = attempts
        self.first = first
        self.maximum = maximum
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def failed(self) -> float | None:
        """The delay before the next attempt, or None when no attempt is left."""
        self.failures += 1
        if self.failures > self.attempts:
            return None
        return float(min(self.first * 2.0 ** (self.failures - 1), self.maximum))


class Follow:
    """The state of one follow across its connections: what to ask, what to yield.

    The first connection gets a snapshot, then one event per line; each event's id is
    the position just past it. After a drop, the next connection sends the last id seen
    as ``Last-Event-ID`` and the server resumes right after it, with no snapshot: no line
    is lost or repeated. The follow is over at the ``exit`` event.
    """

    def __init__(
        self,
        url: str,
        process_id: str,
        *,
        stream: StreamName,
        tail: int | None,
        strip_timestamps: bool,
        attempts: int,
    ) -> None:
        self.url = url
        self.path = process_path(process_id, "logs")
        self.params = logs_params(stream, tail, strip_timestamps, follow=True)
        self.backoff = Backoff(attempts)
        self.last_id: str | None = None
        self.snapshot_seen = False
        self.ever_connected = False
        #: The exit event's data ({status, exitCode, exitSignal}) once the follow is over.
        self.exit: dict[str, Any] | None = None
        self._decoder = SSEDecoder()
        self._heard = False

    @property
    def done(self) -> bool:
        return self.exit is not None

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        return headers

    def connected(self, response: httpx.Response) -> bool:
        """Whether to read this response's events; False: retry later. Raises when hopeless.

        An error response's body must have been read.
        """
        if response.status_code >= 400:
            error = problem(response)
            # A server shutting down answers 5xx for a moment; a first connection that
            # fails is a caller's mistake or a broken server, reported at once.
            if isinstance(error, ServerError) and self.ever_connected:
                return False
            raise error
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            raise ServerError(
                f"expected an event stream from {self.url}{self.path}, got {content_type or 'no content type'}; "
                "is this a sandbox-agent server?",
                status=response.status_code,
            )
        self.ever_connected = True
        return True

    def received(self) -> None:
        """The server sent something: the link works, failures so far are forgiven."""
        self.backoff.reset()

    def request(self, timeout: httpx.Timeout) -> dict[str, Any]:
        """Keyword arguments for ``httpx.Client.stream`` for the next connection.

        Each connection gets a fresh SSE decoder: an event cut by the drop is discarded.
        """
        self._decoder = SSEDecoder()
        self._heard = False
        return {"method": "GET", "url": self.path, "params": self.params, "headers": self.headers(), "timeout": timeout}

    def feed(self, line: str) -> list[str]:
        """The log lines that one line of the event stream completes (often none)."""
        if not self._heard:
            self._heard = True
            self.received()
        event = self._decoder.feed(line)
        return [] if event is None else self.handle(event)

    def handle(self, event: Event) -> list[str]:
        """The lines ``event`` brings (the snapshot brings several)."""
        if event.id is not None:
            self.last_id = event.id
        if event.event == "exit":
            self.exit = json.loads(event.data) if event.data else {}
            return []
        if event.event != "message":
            return []  # a kind of event this client does not know: skip it
        if not self.snapshot_seen:
            self.snapshot_seen = True
            content: str = json.loads(event.data)["content"]
            return [_as_event_line(line) for line in content.split("\n")[:-1]]
        return [event.data]

    def dropped(self, exc: Exception | None) -> float:
        """The connection ended before the exit event: the delay before reconnecting.

        Raises ``ConnectionFailed`` when the first connection failed, when the server
        gives no ids to resume from, or after too many failed attempts in a row.
        """
        if exc is not None and not self.ever_connected:
            raise connection_failed(self.url, exc) from exc
        if self.snapshot_seen and self.last_id is None:
            raise ConnectionFailed(f"the follow of {self.path} dropped and the server sent no event id to resume from")
        delay = self.backoff.failed()
        if delay is None:
            reason = f": {exc}" if exc is not None else ""
            raise ConnectionFailed(
                f"lost the follow of {self.url}{self.path} and could not reconnect "
                f"after {self.backoff.attempts} attempts{reason}"
            ) from exc
        return delay


class EntryFollow(Follow):
    """A follow of ``/v1/processes/{id}/logs``: ``log`` events, each id its entry's sequence.

    No snapshot: every entry comes as its own event, so a resume after a drop asks for the
    entries after the last sequence seen.
    """

    def __init__(
        self,
        url: str,
        process_id: str,
        *,
        stream: LogsStream | None,
        since: int | None,
        tail: int | None,
        attempts: int,
    ) -> None:
        super().__init__(url, process_id, stream="combined", tail=None, strip_timestamps=False, attempts=attempts)
        self.path = processes_path(process_id, "logs")
        self.params = entries_params(stream, since, tail, follow=True)

    def request(self, timeout: httpx.Timeout) -> dict[str, Any]:
        # Once an entry was seen, Last-Event-ID says where to resume; a tail would cut it.
        request = super().request(timeout)
        if self.last_id is not None:
            request["params"] = {k: v for k, v in self.params.items() if k != "tail"}
        return request

    def feed_entries(self, line: str) -> list[ProcessLogEntry]:
        if not self._heard:
            self._heard = True
            self.received()
        event = self._decoder.feed(line)
        if event is None:
            return []
        if event.id is not None:
            self.last_id = event.id
        if event.event == "exit":
            self.exit = json.loads(event.data) if event.data else {}
            return []
        if event.event != "log":
            return []
        return [ProcessLogEntry.from_wire(json.loads(event.data))]


class EventFollow(Follow, Generic[_P]):
    """A follow of ``GET /v1/events``: it never ends by itself; after a drop (a restart of
    the server), it resumes after the last event seen, or gets a ``reset``."""

    _KINDS = ("created", "ready", "restarted", "exited", "deleted")

    def __init__(self, url: str, model: type[_P], *, last_event_id: str | None, attempts: int) -> None:
        super().__init__(url, "", stream="combined", tail=None, strip_timestamps=False, attempts=attempts)
        self.model: type[_P] = model
        self.path = "/v1/events"
        self.params = {"dialect": "process" if model is Process else "processes"}
        self.last_id = last_event_id

    def feed_events(self, line: str) -> list[ProcessEvent[_P]]:
        if not self._heard:
            self._heard = True
            self.received()
        event = self._decoder.feed(line)
        if event is None:
            return []
        if event.id is not None:
            self.last_id = event.id
        kind: EventKind
        if event.event == "reset":
            listed = json.loads(event.data)["processes"]
            return [ProcessEvent("reset", event.id, processes=[self.model.from_wire(p) for p in listed])]
        if event.event not in self._KINDS:
            return []  # a kind this client does not know
        kind = event.event  # type: ignore[assignment]
        return [ProcessEvent(kind, event.id, process=self.model.from_wire(json.loads(event.data)))]
