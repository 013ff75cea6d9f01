"""Engine records as the wire JSON of each dialect, rendered once per state change.

Rendered by hand rather than through the schemas: a list of thousands of processes is
the records' cached bytes joined, not thousands of model validations.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from ..engine import Record
from ..engine.logs.store import LogRead

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
        cached = record.cache["v1"] = _encode(data).encode()
    return cached


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
