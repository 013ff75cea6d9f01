"""Sampling running processes: the TCP ports their trees listen on, and CPU and memory.

One background task, once a second while anything runs: a thread reads /proc
(``proctree.py``) for every running process at once, and the loop then stores each
record's ``Sample``, with its wire fragment rendered once. A request never reads /proc:
it shows the latest sample, at most about a second old (absent until the first one).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import proctree
from .records import Record

logger = logging.getLogger("sandbox_agent.engine")

INTERVAL = 1.0


@dataclass(frozen=True)
class Sample:
    ports: list[int]
    #: Of the whole tree: 100 is one core busy all the time.
    cpu_percent: float
    #: Resident memory of the whole tree (pages shared by its members are counted in each).
    rss_bytes: int
    #: ``,"ports":[...],"usage":{...}``: spliced into a rendered process object.
    fragment: bytes = field(repr=False, default=b"")


@dataclass(frozen=True)
class _Reading:
    ports: list[int]
    cpu_ticks: int
    rss_bytes: int
    at: float


def _read(pids: list[int]) -> dict[int, _Reading]:
    """One round: the tree of each pid, off the event loop."""
    stats = proctree.scan()
    children = proctree.children_map(stats)
    sockets: dict[str | None, dict[int, int]] = {}
    now = time.monotonic()
    readings = {}
    for pid in pids:
        if pid not in stats:
            continue
        members = proctree.tree(pid, children)
        readings[pid] = _Reading(
            proctree.tree_ports(pid, members, sockets),
            sum(stats[m].cpu_ticks for m in members if m in stats),
            sum(stats[m].rss_bytes for m in members if m in stats),
            now,
        )
    return readings


def _fragment(ports: list[int], cpu: float, rss: int) -> bytes:
    usage = json.dumps({"cpuPercent": cpu, "rssBytes": rss}, separators=(",", ":"))
    return b',"ports":%s,"usage":%s' % (json.dumps(ports, separators=(",", ":")).encode(), usage.encode())


class Sampler:
    """Keeps ``record.live`` of the running records that ``running()`` gives up to date."""

    def __init__(self, running: Callable[[], Iterable[Record]], interval: float = INTERVAL) -> None:
        self._running = running
        self._interval = interval
        self._previous: dict[str, _Reading] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:  # a sample is worth a log line, never the task
                logger.exception("sampling the running processes failed")
            await asyncio.sleep(self._interval)

    async def sample(self) -> None:
        records = [r for r in self._running() if not r.exited and r.pid is not None]
        if not records:
            self._previous.clear()
            return
        readings = await asyncio.to_thread(_read, [r.pid for r in records if r.pid is not None])
        previous, self._previous = self._previous, {}
        for record in records:
            reading = readings.get(record.pid) if record.pid is not None else None
            if reading is None or record.exited:
                continue
            self._previous[record.id] = reading
            before = previous.get(record.id)
            cpu = 0.0
            if before is not None and reading.at > before.at:
                ticks = max(0, reading.cpu_ticks - before.cpu_ticks)
                cpu = round(100 * ticks / proctree.CLOCK_TICKS / (reading.at - before.at), 1)
            values = (reading.ports, cpu, reading.rss_bytes)
            live = record.live
            if live is None or (live.ports, live.cpu_percent, live.rss_bytes) != values:
                record.live = Sample(*values, fragment=_fragment(*values))
