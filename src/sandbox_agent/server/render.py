"""Engine records as the wire JSON of each dialect, rendered once per state change.

Rendered by hand rather than through the schemas: a list of thousands of processes is
the records' cached bytes joined, not thousands of model validations.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterable

from ..engine import Record
from ..engine.config import ProcessConfig
from ..engine.logs.entries import Entry
from ..engine.logs.store import LogRead
from ..engine.run import RunResult

_encode = json.JSONEncoder(separators=(",", ":")).encode


def process_v1(record: Record) -> bytes:
    """A process as ``/v1/process`` shows it (``schemas.Process``)."""
    cached: bytes | None = record.cache.get("v1")
    if cached is None:
        data: dict[str, object] = {
            "id": record.id,
            "command": record.command,
            "args": record.args,
            "status": record.status,
            "exitCode": record.exit_code,
            "exitSignal": record.exit_signal,
            "logPaths": record.log_paths,
            "startedAt": int(record.started_at),
        }
        stopped = record.stopped_at
        if stopped is not None:
            data["stoppedAt"] = int(stopped)
        data["cwd"] = record.cwd
        data["pid"] = record.pid
        dropped = record.log_bytes_dropped
        if dropped:
            data["logBytesDropped"] = dropped
        _service_fields(record, data)
        if record.state_unsaved:
            data["stateUnsaved"] = True
        cached = record.cache["v1"] = _encode(data).encode()
    return _with_descendants(record, _with_live(record, cached))


def _with_descendants(record: Record, rendered: bytes) -> bytes:
    """``rendered`` with ``"descendantsRunning":true`` while processes the (exited)
    command started still run: read at each request, never cached."""
    if record.supervisor_pid is not None and record.descendants_running:
        return rendered[:-1] + b',"descendantsRunning":true}'
    return rendered


def _service_fields(record: Record, data: dict[str, object]) -> None:
    """Name, labels, restarts and readiness (SPEC section 8): absent for a plain process."""
    service = record.service
    if service is None:
        if record.restarts:  # restarted on request
            data["restarts"] = record.restarts
        return
    if service.name is not None:
        data["name"] = service.name
    if service.labels:
        data["labels"] = service.labels
    data["restarts"] = record.restarts
    if service.restart is not None:
        data["restart"] = service.restart.to_json()
    if record.restarting:
        data["restarting"] = True
    if service.wait_for is not None:
        data["ready"] = service.ready


def _with_live(record: Record, rendered: bytes) -> bytes:
    """The latest sample of a running process (ports, usage) spliced in: it changes every
    second, the rest of the object only with the state."""
    live = record.live
    if live is None or record.exited:
        return rendered
    return rendered[:-1] + live.fragment + b"}"


def process_list_v1(records: list[Record]) -> bytes:
    return b'{"processes":[' + b",".join(process_v1(record) for record in records) + b"]}"


def logs_v1(content: str, lines: int) -> bytes:
    return _encode({"content": content, "lines": lines}).encode()


async def logs_v1_stream(reader: LogRead) -> AsyncIterator[bytes]:
    """``{"content": ..., "lines": N}`` written piece by piece: ``lines`` comes last, once counted."""
    try:
        yield b'{"content":"'
        while (piece := await asyncio.to_thread(reader.next)) is not None:
            yield _encode(piece)[1:-1].encode()
        yield b'","lines":%d}' % reader.lines
    finally:
        reader.close()


# -- /v1/processes ------------------------------------------------------------------


def process_info(record: Record) -> bytes:
    """A process as ``/v1/processes`` shows it (``schemas.ProcessInfo``): the original's
    keys in its order, optional ones left out rather than null."""
    cached: bytes | None = record.cache.get("processes")
    if cached is None:
        data: dict[str, object] = {"id": record.id, "command": record.command, "args": record.args}
        if record.cwd is not None:
            data["cwd"] = record.cwd
        data["tty"] = record.tty
        data["interactive"] = record.interactive
        data["owner"] = "user"  # every process here was started through the API
        exited = record.exited
        data["status"] = "exited" if exited else "running"
        if not exited and record.pid is not None:
            data["pid"] = record.pid
        if record.exit_code is not None:
            data["exitCode"] = record.exit_code
        data["createdAtMs"] = int(record.started_at * 1000)
        stopped = record.stopped_at
        if stopped is not None:
            data["exitedAtMs"] = int(stopped * 1000)
        if record.exit_signal is not None:
            data["exitSignal"] = record.exit_signal
        size = record.terminal_size
        if size is not None:
            data["terminalSize"] = {"cols": size[0], "rows": size[1]}
        dropped = record.log_bytes_dropped
        if dropped:
            data["logBytesDropped"] = dropped
        _service_fields(record, data)
        if record.state_unsaved:
            data["stateUnsaved"] = True
        cached = record.cache["processes"] = _encode(data).encode()
    return _with_descendants(record, _with_live(record, cached))


def process_info_list(records: Iterable[Record]) -> bytes:
    return b'{"processes":[' + b",".join(process_info(record) for record in records) + b"]}"


def log_entry(entry: Entry) -> bytes:
    # By hand: a follow renders every line, and this is four times a json.dumps.
    return b'{"sequence":%d,"stream":"%s","timestampMs":%d,"data":"%s","encoding":"base64"}' % (
        entry.sequence,
        entry.stream.encode(),
        entry.timestamp_ms,
        base64.b64encode(entry.data),
    )


def log_entries(process_id: str, stream: str, entries: list[Entry]) -> bytes:
    head = _encode({"processId": process_id, "stream": stream}).encode()[:-1]
    return head + b',"entries":[' + b",".join(log_entry(entry) for entry in entries) + b"]}"


def process_config(config: ProcessConfig) -> bytes:
    return _encode(config.to_wire()).encode()


def run_result(result: RunResult) -> bytes:
    """The answer of a run, keys in the original's order; output decoded as UTF-8 with
    replacement characters."""
    return _encode(
        {
            "exitCode": result.exit_code,
            "timedOut": result.timed_out,
            "stdout": result.stdout.decode("utf-8", "replace"),
            "stderr": result.stderr.decode("utf-8", "replace"),
            "stdoutTruncated": result.stdout_truncated,
            "stderrTruncated": result.stderr_truncated,
            "durationMs": result.duration_ms,
        }
    ).encode()


def exit_data(state: dict[str, object]) -> bytes:
    """The data of the ``exit`` event that ends a follow (extension)."""
    return _encode(
        {"status": "exited", "exitCode": state.get("exitCode"), "exitSignal": state.get("exitSignal")}
    ).encode()
