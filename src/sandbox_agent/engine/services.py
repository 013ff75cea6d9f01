"""Services (SPEC section 8): names, labels, readiness, lifecycle events, list filters.

A mixin of the manager (``manager.py``). What a start request asked for beyond a plain
process (``Service``) is kept by the engine in ``service.json`` next to the supervisor's
``state.json``, written before the process starts and replaced (atomically) when it becomes
ready, so that names, labels and readiness survive a restart of the server. A process that
was not yet ready when the server went down is watched again from the start of its log.

A restart policy is carried out by the supervisor (``supervisor.py``), with or without a
server; the engine learns of each restart through the state record (``restarts`` grows)
and then publishes ``restarted``, marks the process not ready and watches its readiness
again from where the new run's output starts. ``ready`` is kept in service.json with the
run it held for (``readyRun``), so a restart while no server was up is not taken for ready.

A name is unique among running processes; wherever an id is taken, a name is too, and
resolves to the running process of that name, else to the newest one that has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import ssl
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._exceptions import BadRequest, Conflict, ReadinessTimeout
from ..supervisor.ondisk import (
    DEFAULT_BACKOFF_MS,
    MAX_BACKOFF_MS,
    RESTART_POLICIES,
    STREAM_TAGS,
    TIMESTAMP_PREFIX_LEN,
    read_json,
    write_json_atomic,
)
from . import proctree
from .events import EventLog
from .ids import ID_PATTERN
from .logs import feed as logfeed
from .records import Record
from .state import ManagerState

logger = logging.getLogger("sandbox_agent.engine")

SERVICE_FILE = "service.json"
#: Lowercase letters, digits, ``-``, ``_`` and ``.``, starting with a letter or digit (a
#: leading ``-`` would read as an option on a command line, ``.`` and ``..`` as paths).
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: Names that ``/v1/processes/<name>`` would not reach (fixed routes).
RESERVED_NAMES = frozenset({"config", "run"})
MAX_LABELS = 64
LABEL_KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
MAX_LABEL_VALUE = 256
#: A log pattern is matched against each line on its own, with Python's ``re``; lines are
#: bounded by the supervisor's split of endless lines, patterns by this cap.
MAX_PATTERN = 512
MAX_URL = 2048
DEFAULT_READY_TIMEOUT_MS = 60_000
MAX_READY_TIMEOUT_MS = 300_000
#: Port and HTTP checks: first retry after this long, then backing off to the max.
_PROBE_FIRST = 0.05
_PROBE_MAX = 0.5
_HTTP_TIMEOUT = 2.0

StatusFilter = Literal["running", "exited", "starting", "stopped", "killed"]
STATUS_FILTERS: tuple[str, ...] = ("running", "exited", "starting", "stopped", "killed")


@dataclass(frozen=True)
class WaitFor:
    """What makes a process ready: every condition given must hold."""

    port: int | None = None
    log_pattern: str | None = None
    #: An http:// or https:// URL that must answer a GET with 2xx or 3xx.
    http_get: str | None = None
    #: How long the start waits (0: it answers at once); the watch goes on until the exit.
    timeout_ms: int = DEFAULT_READY_TIMEOUT_MS

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.port is not None:
            data["port"] = self.port
        if self.log_pattern is not None:
            data["logPattern"] = self.log_pattern
        if self.http_get is not None:
            data["httpGet"] = self.http_get
        data["timeoutMs"] = self.timeout_ms
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WaitFor:
        return cls(data.get("port"), data.get("logPattern"), data.get("httpGet"), data.get("timeoutMs", 0))


#: The smallest first backoff: a crash loop must leave the machine some room.
MIN_BACKOFF_MS = 10


@dataclass(frozen=True)
class RestartPolicy:
    """When the supervisor starts the command again (``ondisk.RESTART_POLICIES``).

    ``max_restarts`` bounds the restarts in a row (None: no bound); a run that stayed up
    60 s starts a new row. The wait doubles from ``backoff_ms`` at each restart of a row,
    up to 30 s.
    """

    policy: str = "never"
    max_restarts: int | None = None
    backoff_ms: int = DEFAULT_BACKOFF_MS

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "maxRestarts": self.max_restarts, "backoffMs": self.backoff_ms}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RestartPolicy:
        return cls(data["policy"], data.get("maxRestarts"), data.get("backoffMs", DEFAULT_BACKOFF_MS))


def check_restart(restart: RestartPolicy) -> RestartPolicy:
    if restart.policy not in RESTART_POLICIES:
        raise BadRequest(f"restart.policy {restart.policy[:40]!r} is not one of {', '.join(RESTART_POLICIES)}")
    if restart.max_restarts is not None and restart.max_restarts < 0:
        raise BadRequest(f"restart.maxRestarts {restart.max_restarts} is negative; give 0 or more, or leave it out")
    if not MIN_BACKOFF_MS <= restart.backoff_ms <= MAX_BACKOFF_MS:
        raise BadRequest(
            f"restart.backoffMs {restart.backoff_ms} is out of range; give {MIN_BACKOFF_MS} to {MAX_BACKOFF_MS} "
            "(the first wait; it doubles at each restart in a row, up to 30 s)"
        )
    return restart


@dataclass
class Service:
    """A process's name, labels, restart policy and readiness."""

    name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    wait_for: WaitFor | None = None
    ready: bool = False
    restart: RestartPolicy | None = None
    waiters: list[asyncio.Future[None]] = field(default_factory=list, repr=False)
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def copy(self) -> Service:
        return Service(self.name, dict(self.labels), self.wait_for, self.ready, self.restart)

    def to_json(self, run: int = 0) -> dict[str, Any]:
        """``run``: the restarts count of the run that ``ready`` holds for."""
        return {
            "name": self.name,
            "labels": self.labels,
            "waitFor": None if self.wait_for is None else self.wait_for.to_json(),
            "ready": self.ready,
            "readyRun": run,
            "restart": None if self.restart is None else self.restart.to_json(),
        }


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise BadRequest(
            f"name {name[:80]!r} is not usable: give 1 to 64 lowercase letters, digits, '-', '_' or '.', "
            "starting with a letter or a digit (for example 'web' or 'api-server')"
        )
    if ID_PATTERN.fullmatch(name):
        raise BadRequest(f"name {name!r} reads as a process id (26 letters and digits); choose a shorter name")
    if name in RESERVED_NAMES:
        raise BadRequest(f"name {name!r} is taken by a route of the API; choose another name")
    return name


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise BadRequest(f"{len(labels)} labels given; a process takes at most {MAX_LABELS}")
    for key, value in labels.items():
        if not LABEL_KEY_PATTERN.fullmatch(key):
            raise BadRequest(
                f"label name {key[:80]!r} is not usable: give 1 to 128 letters, digits, '.', '_', '/' or '-', "
                "starting with a letter or a digit"
            )
        if len(value) > MAX_LABEL_VALUE or "\x00" in value:
            raise BadRequest(f"label {key!r}: its value must be at most {MAX_LABEL_VALUE} characters, without NUL")
    return dict(labels)


def check_wait_for(wait_for: WaitFor) -> WaitFor:
    if wait_for.port is None and wait_for.log_pattern is None and wait_for.http_get is None:
        raise BadRequest("waitFor needs at least one of port, logPattern or httpGet")
    if wait_for.port is not None and not 1 <= wait_for.port <= 65535:
        raise BadRequest(f"waitFor.port {wait_for.port} is not a TCP port; give 1 to 65535")
    if wait_for.log_pattern is not None:
        compile_pattern(wait_for.log_pattern)
    if wait_for.http_get is not None:
        split_url(wait_for.http_get)
    if not 0 <= wait_for.timeout_ms <= MAX_READY_TIMEOUT_MS:
        raise BadRequest(
            f"waitFor.timeoutMs {wait_for.timeout_ms} is out of range; give 0 (answer at once) to "
            f"{MAX_READY_TIMEOUT_MS}, and wait longer with GET .../wait?until=ready"
        )
    return wait_for


def compile_pattern(pattern: str) -> re.Pattern[str]:
    if not pattern or len(pattern) > MAX_PATTERN:
        raise BadRequest(f"waitFor.logPattern must be 1 to {MAX_PATTERN} characters long")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise BadRequest(
            f"waitFor.logPattern {pattern[:80]!r} is not a regular expression (Python re): {exc}"
        ) from None


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of an http:// or https:// URL."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadRequest(f"waitFor.httpGet {url[:80]!r} is not a URL: {exc}") from None
    if len(url) > MAX_URL or parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(
            f"waitFor.httpGet {url[:80]!r} is not usable: give an http:// or https:// URL with a host, at most "
            f"{MAX_URL} characters (for example http://127.0.0.1:3000/health)"
        )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def parse_label_filter(text: str) -> tuple[str, str | None]:
    """``k=v`` (label k is v) or ``k`` (label k is set)."""
    key, sep, value = text.partition("=")
    return key, value if sep else None  # "=v": no label has an empty key, so it matches none


# -- readiness probes ----------------------------------------------------------------


async def _http_ok(url: str) -> bool:
    scheme, host, port, path = split_url(url)
    context = None
    if scheme == "https":
        # A readiness check of a local dev server, often on a self-signed certificate.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    writer = None
    try:
        async with asyncio.timeout(_HTTP_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port, ssl=context)
            hostport = host if ":" not in host else f"[{host}]"
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {hostport}:{port}\r\nUser-Agent: sandbox-agent\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            line = await reader.readline()
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    parts = line.split()
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1][:1] in (b"2", b"3")


async def _until(check: Any, record: Record) -> bool:
    """Retry ``check()`` with backoff until it is true (True) or the process exited (False)."""
    delay = _PROBE_FIRST
    while not record.exited:
        if await check():
            return True
        await asyncio.sleep(delay)
        delay = min(delay * 2, _PROBE_MAX)
    return False


# -- the mixin ---------------------------------------------------------------------


class ServiceTracking(ManagerState):
    """The manager's names, labels, readiness and events (see ``ProcessManager``)."""

    _names: dict[str, list[Record]]
    #: Names of starts under way, reserved until their record exists.
    _naming: set[str]
    events: EventLog

    if TYPE_CHECKING:

        async def follow(
            self, process_id: str, *, stream: Any = "combined", tail: int | None = None, resume_from: int | None = None
        ) -> Any: ...

        def _sorted(self) -> list[Record]: ...

    def _init_services(self) -> None:
        self._names = {}
        self._naming = set()
        self.events = EventLog()

    def _by_name(self, name: str) -> Record | None:
        """The running process of that name, else the newest of those that had it."""
        found = [r for r in self._names.get(name, ()) if self._records.get(r.id) is r]
        if not found:
            return None
        running = [r for r in found if not r.exited]
        return max(running or found, key=lambda r: r.sort_key)

    def select(self, *, status: str | None = None, labels: Iterable[str] = (), name: str | None = None) -> list[Record]:
        """The processes (newest first) that match every filter given.

        ``status``: running (also starting), exited, or one of the statuses; ``labels``:
        ``k=v`` or ``k`` each; ``name``: every process that has that name.
        """
        if status is not None and status not in STATUS_FILTERS:
            raise BadRequest(f"status {status[:40]!r} is not one of {', '.join(STATUS_FILTERS)}")
        # An empty filter (a cleared form field) filters nothing.
        wanted = [parse_label_filter(text) for text in labels if text]
        if name:
            records = sorted(
                (r for r in self._names.get(name, ()) if self._records.get(r.id) is r),
                key=lambda r: r.sort_key,
                reverse=True,
            )
        else:
            records = list(self._sorted())
        if status == "running":
            records = [r for r in records if not r.exited]
        elif status == "exited":
            records = [r for r in records if r.exited]
        elif status is not None:
            records = [r for r in records if r.status == status]
        for key, value in wanted:
            records = [
                r
                for r in records
                if r.service is not None
                and key in r.service.labels
                and (value is None or r.service.labels[key] == value)
            ]
        return records

    # -- start --------------------------------------------------------------------

    def _prepare_service(
        self,
        name: str | None,
        labels: dict[str, str] | None,
        wait_for: WaitFor | None,
        restart: RestartPolicy | None = None,
    ) -> Service | None:
        """Check what a start asks for; reserve its name (release with ``_release_name``)."""
        if name is None and not labels and wait_for is None and restart is None:
            return None
        service = Service(
            name=None if name is None else check_name(name),
            labels=check_labels(labels or {}),
            wait_for=None if wait_for is None else check_wait_for(wait_for),
            restart=None if restart is None else check_restart(restart),
        )
        if name is not None:
            holder = self._by_name(name)
            if name in self._naming or (holder is not None and not holder.exited):
                which = "" if holder is None or holder.exited else f" (process {holder.id})"
                raise Conflict(
                    f"a running process is already named {name!r}{which}; stop it first, or choose another name"
                )
            self._naming.add(name)
        return service

    def _release_name(self, service: Service | None) -> None:
        if service is not None and service.name is not None:
            self._naming.discard(service.name)

    @staticmethod
    def _write_service(pid_dir: str, service: Service, run: int = 0) -> None:
        write_json_atomic(os.path.join(pid_dir, SERVICE_FILE), service.to_json(run))

    def _service_created(self, record: Record, service: Service | None) -> None:
        """A start's record exists: index its name, tell subscribers, watch its readiness."""
        if service is not None:
            self._attach(record, service)
        self.events.publish("created", record)

    def _attach(self, record: Record, service: Service) -> None:
        record.service = service
        record.cache.clear()
        if service.name is not None:
            same = [r for r in self._names.get(service.name, ()) if self._records.get(r.id) is r]
            self._names[service.name] = [*same, record]
        if service.wait_for is not None and not service.ready and not record.exited and not record.restarting:
            service.task = asyncio.create_task(self._watch_readiness(record, service))

    def _load_services(self) -> None:
        """At start-up: the names, labels and readiness of the records just loaded."""
        for record in self._records.values():
            path = os.path.join(record.dir, SERVICE_FILE)
            try:
                data = read_json(path)
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                logger.error("process %s: unusable %s (%s); shown without name or labels", record.id, path, exc)
                continue
            try:
                wait_for = data.get("waitFor")
                restart = data.get("restart")
                service = Service(
                    name=data.get("name"),
                    labels=dict(data.get("labels") or {}),
                    wait_for=None if not wait_for else WaitFor.from_json(wait_for),
                    # Ready for the run it held for: a restart since then is not ready yet.
                    ready=bool(data.get("ready")) and data.get("readyRun", 0) == record.restarts,
                    restart=None if not restart else RestartPolicy.from_json(restart),
                )
            except (TypeError, ValueError, AttributeError) as exc:
                logger.error("process %s: unusable %s (%s); shown without name or labels", record.id, path, exc)
                continue
            self._attach(record, service)

    # -- readiness ------------------------------------------------------------------

    async def _watch_readiness(self, record: Record, service: Service) -> None:
        wait_for = service.wait_for
        assert wait_for is not None
        run = record.restarts
        try:
            if wait_for.log_pattern is not None and not await self._log_matches(
                record, wait_for.log_pattern, record.run_log_offset
            ):
                return
            pid = record.pid
            port = wait_for.port
            if port is not None:
                if pid is None:
                    return  # no process to look at: never ready

                async def listening() -> bool:
                    return await asyncio.to_thread(proctree.listens_on, pid, port)

                if not await _until(listening, record):
                    return
            url = wait_for.http_get
            if url is not None and not await _until(lambda: _http_ok(url), record):
                return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("process %s: watching its readiness failed", record.id)
            return
        if record.exited or record.restarts != run or record.restarting:
            return
        service.ready = True
        record.cache.clear()
        self._wake(service)
        self.events.publish("ready", record)
        try:
            await asyncio.to_thread(self._write_service, record.dir, service, run)
        except OSError as exc:
            logger.error("process %s: cannot record that it is ready (%s)", record.id, exc)

    async def _log_matches(self, record: Record, pattern: str, start: int) -> bool:
        """Whether a line of its output (from logical offset ``start`` of combined.log,
        where the current run's output starts) matches, before it exits."""
        regex = re.compile(pattern)
        events = await self.follow(record.id, stream="combined", resume_from=start)
        skip = TIMESTAMP_PREFIX_LEN + len(STREAM_TAGS["stdout"])
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, logfeed.Lines):
                    for segment in event.segments:
                        for line in segment.raw.split(b"\n"):
                            if regex.search(line[skip:].decode("utf-8", "replace")):
                                return True
                elif isinstance(event, logfeed.Exit):
                    return False
        return False

    @staticmethod
    def _wake(service: Service) -> None:
        for waiter in service.waiters:
            if not waiter.done():
                waiter.set_result(None)
        service.waiters.clear()

    async def _wait_ready(self, record: Record, timeout_ms: int) -> None:
        service = record.service
        if service is None or service.wait_for is None:
            raise BadRequest(
                f"process {record.id} was started without waitFor: it has no readiness to wait for; "
                "wait until=exit, or start it with waitFor"
            )
        if service.ready or record.exited:
            return
        waiter = asyncio.get_running_loop().create_future()
        service.waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                await waiter
        except TimeoutError:
            pass
        finally:
            if waiter in service.waiters:
                service.waiters.remove(waiter)

    async def _start_ready(self, record: Record) -> None:
        """A start with waitFor: answer once ready (or exited); ReadinessTimeout after its timeoutMs."""
        service = record.service
        if service is None or service.wait_for is None or not service.wait_for.timeout_ms:
            return
        await self._wait_ready(record, service.wait_for.timeout_ms)
        if not service.ready and not record.exited:
            named = f" ({service.name})" if service.name else ""
            raise ReadinessTimeout(
                f"process {record.id}{named} is running but was not ready within {service.wait_for.timeout_ms} ms "
                f"(waitFor {json.dumps(service.wait_for.to_json())}); it was left running: read its logs, wait "
                f"longer with GET /v1/process/{record.id}/wait?until=ready, or stop it"
            )

    # -- hooks of the lifecycle ------------------------------------------------------

    def _run_changed(self, record: Record, before: dict[str, Any]) -> None:
        """A new state record of a running process: a run ended (waiting to restart) or
        the next one started."""
        restarted = record.restarts != before.get("restarts", 0)
        ended = record.restarting and before.get("restartAt") is None
        if not (restarted or ended):
            return
        service = record.service
        if service is not None and service.wait_for is not None:
            if service.task is not None:
                service.task.cancel()
                service.task = None
            service.ready = False
            if not record.restarting:
                service.task = asyncio.create_task(self._watch_readiness(record, service))
        if restarted:
            for waiter in record.run_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            record.run_waiters.clear()
            self.events.publish("restarted", record)

    def _service_exited(self, record: Record) -> None:
        service = record.service
        if service is not None:
            if service.task is not None:
                service.task.cancel()
                service.task = None
            self._wake(service)
        self.events.publish("exited", record)

    def _service_forgotten(self, record: Record) -> None:
        service = record.service
        if service is not None:
            if service.task is not None:
                service.task.cancel()
                service.task = None
            self._wake(service)
            if service.name is not None:
                kept = [r for r in self._names.get(service.name, ()) if r is not record]
                if kept:
                    self._names[service.name] = kept
                else:
                    self._names.pop(service.name, None)
        self.events.publish("deleted", record)
