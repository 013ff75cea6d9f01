"""list (GET /v1/process with many records) and churn (thousands of short processes:
zombies, fds, memory)."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import httpx

from .. import _harness as h
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
            for _ in range(3):
                server.http.get("/v1/process")
            samples = []
            body = 0
            for _ in range(sizes.list_requests):
                t1 = time.perf_counter()
                response = server.http.get("/v1/process")
                samples.append(time.perf_counter() - t1)
                body = len(response.content)
            p50 = 1000 * h.median(samples)
            goal = size == max(sizes.list_sizes)
            out.rows.append(
                h.Row(
                    "list",
                    f"GET /v1/process, {size:,} records: p50 (ms, n={len(samples)})",
                    p50,
                    "n/a: no floor for this",
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


def run_churn(ctx: Context) -> h.Outcome:
    count = ctx.sizes.churn
    out = h.Outcome()
    with OurServer(ctx.scratch) as server:
        # Warm up, so that first-use allocations are not counted as growth.
        for _ in range(20):
            server.start(TRUE)
        h.wait_until(lambda: _all_exited(server, 20), 30, 0.01)
        for process in server.processes():
            server.http.delete(f"/v1/process/{process['id']}")
        time.sleep(0.5)
        before = _server_side(server)
        t0 = time.perf_counter()
        ids = [server.start(TRUE)["id"] for _ in range(count)]
        started = time.perf_counter() - t0
        h.wait_until(lambda: _all_exited(server, count), 120, 0.05, "the churn to exit")
        time.sleep(0.5)
        zombies_running = _zombies(server)
        retained = _server_side(server)
        for process_id in ids:
            server.http.delete(f"/v1/process/{process_id}")
        time.sleep(0.5)
        after = _server_side(server)
        zombies = _zombies(server)
        leftovers = [p for p in h.descendants(server.pid) if p not in server.launcher_pids()]
    fds = after["fds"] - before["fds"]
    growth = 100 * (after["pss_mb"] - before["pss_mb"]) / before["pss_mb"]
    rss_growth = 100 * (after["rss_mb"] - before["rss_mb"]) / before["rss_mb"]
    kept_growth = 100 * (retained["pss_mb"] - before["pss_mb"]) / before["pss_mb"]
    na = ("n/a: no floor for this", _NO_PEER_CHURN, _NO_PEER_CHURN)
    out.rows += [
        h.Row("churn", f"{count:,} `true` back to back: zombies left", float(len(zombies)), *na, "0", not zombies),
        h.Row("churn", "server fds after - before", float(fds), *na, "0", fds <= 0),
        h.Row(
            "churn",
            "server PSS growth, records deleted (%)",
            growth,
            *na,
            "< 10%",
            growth < 10,
        ),
        h.Row("churn", f"server PSS growth, {count:,} records kept (%)", kept_growth, *na),
        h.Row("churn", "starts per second, one at a time", count / started, *na, higher=True),
    ]
    out.notes.append(
        f"churn: server PSS {before['pss_mb']:.1f} → {retained['pss_mb']:.1f} MB with the records → "
        f"{after['pss_mb']:.1f} MB after deleting them (RSS {before['rss_mb']:.1f} → {after['rss_mb']:.1f} MB, "
        f"{rss_growth:+.1f}%); fds {before['fds']:.0f} → {retained['fds']:.0f} → {after['fds']:.0f}; "
        f"zombies right after the burst: {len(zombies_running)}; processes left under the server: {leftovers}."
    )
    out.raw = {"before": before, "retained": retained, "after": after, "zombies": zombies, "started_s": started}
    return out
