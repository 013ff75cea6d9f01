"""spawn: sequential starts of ``true`` (p50/p95), and 50 ``sleep`` until all run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from .. import _harness as h
from .._rawhttp import RawHttp
from ..ours import OurServer
from ..peers import Pm2, Program, Supervisord
from ._context import Context

TRUE = shutil.which("true") or "/bin/true"
SLEEP = shutil.which("sleep") or "/bin/sleep"
_ROUNDS_FULL = 3


def _floor_true(count: int) -> list[float]:
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.execv(TRUE, [TRUE])
            finally:
                os._exit(127)
        os.waitpid(pid, 0)
        samples.append(time.perf_counter() - t0)
    return samples


def _floor_fleet(count: int) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen([SLEEP, "3600"]) for _ in range(count)]
    elapsed = time.perf_counter() - t0
    for proc in procs:
        proc.kill()
        proc.wait()
    return elapsed


def _ours_true(server: OurServer, count: int) -> list[float]:
    request = RawHttp.build("POST", "/v1/process", {"command": TRUE})
    samples = []
    with RawHttp(server.port) as http:
        for i in range(count + 5):  # the first 5 warm up: first-request imports
            t0 = time.perf_counter()
            status, body = http.send(request)
            if status != 201:
                raise RuntimeError(f"start true: {status} {body[:300]!r}")
            if i >= 5:
                samples.append(time.perf_counter() - t0)
    return samples


def _ours_fleet(server: OurServer, count: int) -> float:
    request = RawHttp.build("POST", "/v1/process", {"command": SLEEP, "args": ["3600"]})
    with RawHttp(server.port, count) as http:
        t0 = time.perf_counter()
        ids = {json.loads(body)["id"] for _status, body in http.many([request] * count)}

        def all_running() -> bool:
            listed = http.get_json("/v1/process")["processes"]
            return sum(1 for p in listed if p["id"] in ids and p["status"] == "running") == count

        h.wait_until(all_running, 30, 0.005, "the fleet to run")
        elapsed = time.perf_counter() - t0
    server.kill_running()
    return elapsed


def _supervisord(ctx: Context, count: int, fleet: int, rounds: int) -> tuple[list[float], list[float]]:
    starts: list[float] = []
    fleets: list[float] = []
    programs = {"true": Program([TRUE], numprocs=count), "sleep": Program([SLEEP, "3600"], numprocs=fleet)}
    with Supervisord(ctx.scratch, programs) as sd, ThreadPoolExecutor(fleet) as pool:
        for name in sd.process_names("true"):
            t0 = time.perf_counter()
            try:
                sd.rpc.supervisor.startProcess(name, True)
            except xmlrpc.client.Fault as exc:
                # `true` may be gone before supervisord looks again: it did start.
                if "ABNORMAL_TERMINATION" not in exc.faultString:
                    raise
            starts.append(time.perf_counter() - t0)
        names = sd.process_names("sleep")
        proxies = sd.proxies(fleet)
        for _ in range(rounds):
            t0 = time.perf_counter()
            sd.each("startProcess", names, proxies, pool)
            fleets.append(time.perf_counter() - t0)
            sd.each("stopProcess", names, proxies, pool)
    return starts, fleets


def _pm2_online(pm: Pm2, names: set[str]) -> bool:
    return sum(1 for p in pm.list() if p["name"] in names and p["status"] == "online") == len(names)


def _pm2(ctx: Context, count: int, fleet: int, rounds: int) -> tuple[list[float], list[float]]:
    starts: list[float] = []
    fleets: list[float] = []
    with Pm2(ctx.scratch) as pm:
        for i in range(count):
            app = pm.app(f"true{i}", [TRUE])
            t0 = time.perf_counter()
            pm.start([app])
            starts.append(time.perf_counter() - t0)
        for r in range(rounds):
            apps = [pm.app(f"sleep{r}-{i}", [SLEEP, "3600"]) for i in range(fleet)]
            names = {a["name"] for a in apps}
            t0 = time.perf_counter()
            pm.start(apps)
            h.wait_until(partial(_pm2_online, pm, names), 30, 0.005, "pm2's fleet to run")
            fleets.append(time.perf_counter() - t0)
            pm.call("stop", names=sorted(names))
    return starts, fleets


def run_spawn(ctx: Context) -> h.Outcome:
    sizes = ctx.sizes
    rounds = _ROUNDS_FULL if sizes.fleet >= 20 else 1
    out = h.Outcome()
    floor_true = _floor_true(sizes.spawn_starts)
    floor_fleet = [_floor_fleet(sizes.fleet) for _ in range(rounds)]
    with OurServer(ctx.scratch) as server:
        ours_true = _ours_true(server, sizes.spawn_starts)
        ours_fleet = [_ours_fleet(server, sizes.fleet) for _ in range(rounds)]
    peer: dict[str, tuple[list[float], list[float]] | str] = {}
    if (why := ctx.peer_na("supervisord")) is None:
        peer["supervisord"] = _supervisord(ctx, sizes.spawn_starts, sizes.fleet, rounds)
    else:
        peer["supervisord"] = why
    if (why := ctx.peer_na("pm2")) is None:
        peer["pm2"] = _pm2(ctx, sizes.spawn_starts, sizes.fleet, rounds)
    else:
        peer["pm2"] = why

    def cell(name: str, which: int, stat: float | None) -> h.Value:
        got = peer[name]
        if isinstance(got, str):
            return f"n/a: {got}"
        samples = got[which]
        return 1000 * (h.median(samples) if stat is None else h.percentile(samples, stat))

    p50 = 1000 * h.median(ours_true)
    out.rows.append(
        h.Row(
            "spawn",
            f"start `true`, p50 per start (ms, n={sizes.spawn_starts})",
            p50,
            1000 * h.median(floor_true),
            cell("supervisord", 0, None),
            cell("pm2", 0, None),
            "≤ 10 ms",
            h.at_most(p50, 10),
        )
    )
    out.rows.append(
        h.Row(
            "spawn",
            "start `true`, p95 per start (ms)",
            1000 * h.percentile(ours_true, 95),
            1000 * h.percentile(floor_true, 95),
            cell("supervisord", 0, 95),
            cell("pm2", 0, 95),
        )
    )
    fleet_ms = 1000 * h.median(ours_fleet)
    out.rows.append(
        h.Row(
            "spawn",
            f"{sizes.fleet} `sleep` until all running (ms, median of {rounds})",
            fleet_ms,
            1000 * h.median(floor_fleet),
            cell("supervisord", 1, None),
            cell("pm2", 1, None),
        )
    )
    out.notes.append(
        "spawn: ours = POST /v1/process (returns once the command runs); floor = fork+exec+wait of `true` "
        "and Popen of each `sleep`; supervisord = startProcess(wait=True) of pre-declared programs "
        "(for the fleet: all at once from threads) "
        "(it cannot start an ad-hoc command); pm2 = pm2.start() of a new app per call. "
        "Ours are sent from a raw-socket client (an HTTP library would take a core from the server); the fleet "
        "is 50 requests in flight on 50 open connections, then GET /v1/process polled until all run."
    )
    out.raw = {"ours_true": ours_true, "floor_true": floor_true, "ours_fleet": ours_fleet, "floor_fleet": floor_fleet}
    for name, got in peer.items():
        if not isinstance(got, str):
            out.raw[f"{name}_true"], out.raw[f"{name}_fleet"] = got
    return out
