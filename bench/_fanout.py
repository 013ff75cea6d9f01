"""Many SSE followers of one process, in a process of their own (so that their parsing is
not charged to the benchmark's clock). Raw sockets, no HTTP library in the way::

    python -m bench._fanout HOST PORT PROCESS_ID FOLLOWERS EXPECTED_LINES TIMEOUT

Prints ``ready`` once every follower has its snapshot, then one JSON line: per follower
the lines received, whether they were exactly 0..EXPECTED-1 in order, and when it got
the exit event (seconds after ready).

Chunked transfer framing needs no decoding here: a chunk is one rendered SSE piece, so
its size line never sits inside a ``data:`` line.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from typing import Any

_DATA = re.compile(rb"^data: (\d{8}) ", re.MULTILINE)
_SNAPSHOT = re.compile(rb"^data: \{", re.MULTILINE)


class Follower:
    def __init__(self) -> None:
        self.lines = 0
        self.reads = 0
        self.in_order = True
        self.snapshot = asyncio.Event()
        self.done_at: float | None = None
        self.error: str | None = None

    async def run(self, host: str, port: int, path: str) -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            self.error = str(exc)
            self.snapshot.set()
            return
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
        tail = b""
        try:
            while True:
                chunk = await reader.read(256 * 1024)
                if not chunk:
                    break
                self.reads += 1
                data = tail + chunk
                cut = data.rfind(b"\n") + 1
                complete, tail = data[:cut], data[cut:]
                if not self.snapshot.is_set() and _SNAPSHOT.search(complete):
                    self.snapshot.set()
                numbers = _DATA.findall(complete)
                if numbers:
                    if int(numbers[0]) != self.lines or int(numbers[-1]) != self.lines + len(numbers) - 1:
                        self.in_order = False
                    self.lines += len(numbers)
                if b"\nevent: exit" in complete:
                    self.done_at = time.monotonic()
                    break
        except OSError as exc:
            self.error = str(exc)
        finally:
            self.snapshot.set()
            writer.close()


async def main(host: str, port: int, process_id: str, count: int, expected: int, limit: float) -> dict[str, Any]:
    path = f"/v1/process/{process_id}/logs?follow=true&stream=stdout&strip_timestamps=true&tail=0"
    followers = [Follower() for _ in range(count)]
    tasks = [asyncio.create_task(f.run(host, port, path)) for f in followers]
    await asyncio.wait_for(asyncio.gather(*(f.snapshot.wait() for f in followers)), 60)
    ready = time.monotonic()
    print("ready", flush=True)
    _done, pending = await asyncio.wait(tasks, timeout=limit)
    for task in pending:
        task.cancel()
    return {
        "followers": [
            {
                "lines": f.lines,
                "reads": f.reads,
                "complete": f.in_order and f.lines == expected,
                "seconds": None if f.done_at is None else f.done_at - ready,
                "error": f.error,
            }
            for f in followers
        ]
    }


if __name__ == "__main__":
    host, port, pid, n, expected, timeout = sys.argv[1:7]
    result = asyncio.run(main(host, int(port), pid, int(n), int(expected), float(timeout)))
    print(json.dumps(result), flush=True)
