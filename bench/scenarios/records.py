"""list (GET /v1/process with many records) and churn (thousands of short processes:
zombies, fds, memory)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from functools import partial

import httpx

from .. import _harness as h
from .._rawhttp import RawHttp
from ..ours import EXITED, OurServer
from ._context import Context
from .spawn import TRUE

_NO_PEER_LIST = "n/a: keeps no records of finished ad-hoc runs (only configured programs/apps)"
_NO_PEER_CHURN = "n/a: not an API for one-shot processes"


async def _start_many(url: str, count: int, concurrency: int = 16) -> None:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def one() -> None:
            async with limit:
                response = await client.post("/v1/process", json={"command": TRUE})
                response.raise_for_status()

        await asyncio.gather(*(one() for _ in range(count)))


def _all_exited(server: OurServer, count: int) -> bool:
    listed = server.processes()
    return len(listed) >= count and all(p["status"] in EXITED for p in listed)


def run_list(ctx: Context) -> h.Outcome:
    sizes = ctx.sizes
    out = h.Outcome()
    with OurServer(ctx.scratch) as server:
        made = 0
        for size in sizes.list_sizes:
            t0 = time.perf_counter()
            asyncio.run(_start_many(server.url, size - made))
            new, made = size - made, size
            h.wait_until(partial(_all_exited, server, size), 120, 0.05, f"{size} records to exit")
            created = time.perf_counter() - t0
            samples = []
            body = 0
            with RawHttp(server.port) as http:
                for i in range(sizes.list_requests + 3):  # 3 to warm up
                    t1 = time.perf_counter()
                    status, content = http.request("GET", "/v1/process")
                    if i >= 3:
                        samples.append(time.perf_counter() - t1)
                    body = len(content)
                    if status != 200:
                        raise RuntimeError(f"list: {status}")
            p50 = 1000 * h.median(samples)
            goal = size == max(sizes.list_sizes)
            out.rows.append(
                h.Row(
                    "list",
                    f"GET /v1/process, {size:,} records: p50 (ms, n={len(samples)})",
                    p50,
                    h.NO_FLOOR,
                    _NO_PEER_LIST,
                    _NO_PEER_LIST,
                    "≤ 50 ms" if goal else "",
                    h.at_most(p50, 50) if goal else None,
                )
            )
            out.notes.append(
                f"list {size:,}: body {body / 1e6:.2f} MB; p95 {1000 * h.percentile(samples, 95):.1f} ms; "
                f"{new:,} records created at {new / created:.0f}/s (16 requests in flight)."
            )
            out.raw[str(size)] = {"samples": samples, "body_bytes": body, "create_seconds": created}
    return out


def _server_side(server: OurServer) -> dict[str, float]:
    pss, rss = h.memory_kb(server.pid)
    return {"fds": h.fd_count(server.pid), "pss_mb": pss / 1024, "rss_mb": rss / 1024}


def _zombies(server: OurServer) -> list[int]:
    return h.zombies_of({server.pid} | server.launcher_pids())


def _churn(server: OurServer, count: int, *, delete: bool, lag: int = 20) -> float:
    """Start ``count`` `true` one after the other; with ``delete``, delete each record once
    it has exited (``lag`` starts later), as a long-lived client that cleans up does.
    Returns the seconds the starts took."""
    pending: deque[str] = deque()
    start = RawHttp.build("POST", "/v1/process", {"command": TRUE})
    with RawHttp(server.port) as http:
        t0 = time.perf_counter()
        for _ in range(count):
            status, body = http.send(start)
            if status != 201:
                raise RuntimeError(f"start true: {status} {body[:300]!r}")
            pending.append(json.loads(body)["id"])
            while delete and len(pending) > lag:
                process_id = pending.popleft()
                if http.request("DELETE", f"/v1/process/{process_id}")[0] == 400:  # still running
                    pending.append(process_id)
                    break
        elapsed = time.perf_counter() - t0
        h.wait_until(lambda: _all_exited(server, 0), 120, 0.05, "the churn to exit")
        while delete and pending:
            http.request("DELETE", f"/v1/process/{pending.popleft()}")
    return elapsed


def run_churn(ctx: Context) -> h.Outcome:
    count = ctx.sizes.churn
    out = h.Outcome()
    with OurServer(ctx.scratch) as server:
        # Warm up, so that first-use allocations are not counted as growth.
        _churn(server, 50, delete=True)
        time.sleep(ctx.sizes.settle)
        before = _server_side(server)
        started = _churn(server, count, delete=True)
        time.sleep(ctx.sizes.settle)
        after = _server_side(server)
        zombies = _zombies(server)
        ours = server.launcher_pids() | server.spare_pids()
        leftovers = [p for p in h.descendants(server.pid) if p not in ours]
        # Then the same number kept as records, for what a record costs the server.
        _churn(server, count, delete=False)
        time.sleep(ctx.sizes.settle)
        kept = _server_side(server)
        zombies_kept = _zombies(server)
    fds = after["fds"] - before["fds"]
    growth = 100 * (after["pss_mb"] - before["pss_mb"]) / before["pss_mb"]
    rss_growth = 100 * (after["rss_mb"] - before["rss_mb"]) / before["rss_mb"]
    per_record_kb = 1024 * (kept["pss_mb"] - after["pss_mb"]) / count
    na = (h.NO_FLOOR, _NO_PEER_CHURN, _NO_PEER_CHURN)
    out.rows += [
        h.Row("churn", f"{count:,} `true` back to back: zombies left", float(len(zombies)), *na, "0", not zombies),
        h.Row("churn", "server fds after - before", float(fds), *na, "0", fds <= 0),
        h.Row(
            "churn", "server RSS growth, each record deleted once exited (%)", rss_growth, *na, "< 10%", rss_growth < 10
        ),
        h.Row("churn", "server PSS growth, same (%)", growth, *na),
        h.Row("churn", f"server PSS per kept record, {count:,} kept (kB)", per_record_kb, *na),
        h.Row("churn", "starts per second, one at a time", count / started, *na, higher=True),
    ]
    out.notes.append(
        "churn: PSS also moves when other processes (the launcher, or other servers and tests on the machine) "
        "map the same libraries; RSS and the private part do not. "
        f"Server PSS {before['pss_mb']:.1f} → {after['pss_mb']:.1f} MB (RSS {before['rss_mb']:.1f} → "
        f"{after['rss_mb']:.1f} MB, {rss_growth:+.1f}%), fds {before['fds']:.0f} → {after['fds']:.0f}, with every "
        f"record deleted once exited; then {count:,} records kept: PSS {kept['pss_mb']:.1f} MB, fds "
        f"{kept['fds']:.0f}, zombies {len(zombies_kept)}; processes left under the server: {leftovers}."
    )
    out.raw = {"before": before, "after": after, "kept": kept, "zombies": zombies, "started_s": started}
    return out
