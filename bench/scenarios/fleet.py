"""memory (what N idle processes cost beside themselves) and stop (N running `sleep`
stopped, until all report exited)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .. import _harness as h
from .._rawhttp import RawHttp
from ..ours import EXITED, OurServer
from ..peers import Original, Pm2, Program, Supervisord
from ._context import Context
from .spawn import SLEEP, TRUE

#: How often "have they all exited yet?" is asked (of us, and of pm2).
_POLL = 0.005


def _ours_fleet(server: OurServer, count: int) -> set[str]:
    ids = {server.start(SLEEP, ["3600"])["id"] for _ in range(count)}
    h.wait_until(
        lambda: sum(1 for p in server.processes() if p["id"] in ids and p["status"] == "running") == count, 30, 0.005
    )
    return ids


# -- memory -------------------------------------------------------------------------


def ours_memory(
    ctx: Context, count: int, python: str = h.PYTHON, env: dict[str, str] | None = None
) -> dict[str, float]:
    """PSS (MB) of our idle server and launcher, then of its parts with ``count`` idle `sleep`."""
    with OurServer(ctx.scratch, python, env) as server:
        server.start(TRUE)  # the first spawn's imports and the launcher are part of idle
        time.sleep(ctx.sizes.settle)
        # Everything it runs: the launcher and its spare supervisor (a grandchild) too.
        idle = h.pss_mb({server.pid, *h.descendants(server.pid)})
        _ours_fleet(server, count)
        time.sleep(ctx.sizes.settle)
        parts = server.overhead_pids()
        found = len(parts["supervisors"])
        if found != count:
            raise RuntimeError(f"found {found} supervisors for {count} processes")
        mb = {name: h.pss_mb(pids) for name, pids in parts.items()}
    return {"idle": idle, **mb, "total": sum(mb.values())}


def _sd_memory(ctx: Context, count: int) -> dict[str, float]:
    with Supervisord(ctx.scratch, {"sleep": Program([SLEEP, "3600"], numprocs=count)}) as sd:
        time.sleep(ctx.sizes.settle)
        idle = h.pss_mb([sd.pid])
        with ThreadPoolExecutor(count) as pool:
            sd.each("startProcess", sd.process_names("sleep"), sd.proxies(count), pool)
        time.sleep(ctx.sizes.settle)
        managed = sd.managed_pids()
        total = h.pss_mb([sd.pid, *(p for p in h.descendants(sd.pid) if p not in managed)])
    return {"idle": idle, "total": total}


def _pm2_memory(ctx: Context, count: int) -> dict[str, float]:
    with Pm2(ctx.scratch) as pm:
        time.sleep(ctx.sizes.settle)
        idle = h.pss_mb(pm.overhead_pids())
        pm.start([pm.app(f"sleep{i}", [SLEEP, "3600"]) for i in range(count)])
        h.wait_until(lambda: sum(1 for p in pm.list() if p["status"] == "online") == count, 30, 0.005)
        time.sleep(ctx.sizes.settle)
        total = h.pss_mb(pm.overhead_pids())
    return {"idle": idle, "total": total}


def original_memory(ctx: Context, count: int) -> dict[str, float]:
    with Original(ctx.scratch) as original:
        original.start(TRUE)  # as for ours: a first spawn is part of idle
        time.sleep(ctx.sizes.settle)
        idle = h.pss_mb(original.overhead_pids())
        ids = {original.start(SLEEP, ["3600"])["id"] for _ in range(count)}

        def all_running() -> bool:
            return sum(1 for p in original.processes() if p["id"] in ids and p["status"] == "running") == count

        h.wait_until(all_running, 30, 0.005, "the original's fleet to run")
        time.sleep(ctx.sizes.settle)
        total = h.pss_mb(original.overhead_pids())
    return {"idle": idle, "total": total}


def _peer(ctx: Context, name: str, measure: Callable[[Context, int], dict[str, float]]) -> dict[str, float] | str:
    why = ctx.peer_na(name)
    return f"n/a: {why}" if why is not None else measure(ctx, ctx.sizes.fleet)


def run_memory(ctx: Context) -> h.Outcome:
    n = ctx.sizes.fleet
    ours = ours_memory(ctx, n)
    peers = {"supervisord": _peer(ctx, "supervisord", _sd_memory), "pm2": _peer(ctx, "pm2", _pm2_memory)}
    peers["original"] = _peer(ctx, "original", original_memory)

    def cell(name: str, key: str, per: bool) -> h.Value:
        got = peers[name]
        if isinstance(got, str):
            return got
        if key == "marginal":
            return (got["total"] - got["idle"]) / n
        return got[key] / n if per else got[key]

    out = h.Outcome()
    no_floor = "n/a: the floor runs nothing beside the process"
    per_sup = ours["supervisors"] / n
    per_all = ours["total"] / n
    marginal = (ours["total"] - ours["idle"]) / n
    out.rows += [
        h.Row(
            "memory",
            "idle server + everything it runs, PSS (MB)",
            ours["idle"],
            no_floor,
            cell("supervisord", "idle", False),
            cell("pm2", "idle", False),
            "≤ 30 MB",
            h.at_most(ours["idle"], 30.0),
            original=cell("original", "idle", False),
        ),
        h.Row(
            "memory",
            f"supervisors alone, PSS per managed process (MB, {n} idle `sleep`)",
            per_sup,
            no_floor,
            "n/a: no per-process helper (one daemon)",
            "n/a: no per-process helper (one daemon)",
            "≤ 2 MB",
            h.at_most(per_sup, 2.0),
        ),
        h.Row(
            "memory",
            "server + launcher + supervisors / processes, PSS (MB)",
            per_all,
            no_floor,
            cell("supervisord", "total", True),
            cell("pm2", "total", True),
            "≤ 2 MB",
            h.at_most(per_all, 2.0),
            original=cell("original", "total", True),
        ),
        h.Row(
            "memory",
            "growth per idle process: (total - idle total) / processes, PSS (MB)",
            marginal,
            no_floor,
            cell("supervisord", "marginal", True),
            cell("pm2", "marginal", True),
            "≤ 1.0 MB",
            h.at_most(marginal, 1.0),
            original=cell("original", "marginal", True),
        ),
        h.Row(
            "memory",
            "total PSS beside the processes (MB): server / launcher / supervisors",
            ours["total"],
            no_floor,
            cell("supervisord", "total", False),
            cell("pm2", "total", False),
            original=cell("original", "total", False),
        ),
    ]
    out.notes.append(
        f"memory: ours = server {ours['server']:.1f} MB + launcher {ours['helpers']:.1f} MB + "
        f"{n} supervisors {ours['supervisors']:.1f} MB (idle server + launcher: {ours['idle']:.1f} MB); "
        "peers = their daemon(s); the original = its server and anything it runs but the managed `sleep`s "
        "(started through its /v1/processes). PSS from /proc/<pid>/smaps_rollup."
    )
    out.raw = {"ours": ours, **peers}
    return out


# -- stop -----------------------------------------------------------------------------


def _stop_all(port: int, ids: set[str]) -> float:
    with RawHttp(port, len(ids)) as http:
        t0 = time.perf_counter()
        for status, body in http.many([RawHttp.build("POST", f"/v1/process/{i}/stop") for i in ids]):
            if status != 204:
                raise RuntimeError(f"stop: {status} {body[:300]!r}")

        def all_exited() -> bool:
            listed = http.get_json("/v1/process")["processes"]
            return all(p["status"] in EXITED for p in listed if p["id"] in ids)

        h.wait_until(all_exited, 30, _POLL, "our fleet to stop")
        return time.perf_counter() - t0


def _ours_stop(ctx: Context, count: int, rounds: int) -> list[float]:
    with OurServer(ctx.scratch) as server:
        return [_stop_all(server.port, _ours_fleet(server, count)) for _ in range(rounds)]


def _floor_stop(count: int, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        procs = [subprocess.Popen([SLEEP, "3600"]) for _ in range(count)]
        t0 = time.perf_counter()
        for proc in procs:
            os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait()
        times.append(time.perf_counter() - t0)
    return times


def _sd_stop(ctx: Context, count: int, rounds: int) -> list[float]:
    times = []
    with (
        Supervisord(ctx.scratch, {"sleep": Program([SLEEP, "3600"], numprocs=count)}) as sd,
        ThreadPoolExecutor(count) as pool,
    ):
        names = sd.process_names("sleep")
        proxies = sd.proxies(count)
        for _ in range(rounds):
            sd.each("startProcess", names, proxies, pool)
            t0 = time.perf_counter()
            sd.each("stopProcess", names, proxies, pool)
            times.append(time.perf_counter() - t0)
            if any(state != "STOPPED" for state in sd.states().values()):
                raise RuntimeError("supervisord said stopped while some still run")
    return times


def _pm2_stop(ctx: Context, count: int, rounds: int) -> list[float]:
    times = []
    with Pm2(ctx.scratch) as pm:
        for r in range(rounds):
            names = [f"sleep{r}-{i}" for i in range(count)]
            pm.start([pm.app(name, [SLEEP, "3600"]) for name in names])
            h.wait_until(lambda: sum(1 for p in pm.list() if p["status"] == "online") == count, 30, 0.005)
            t0 = time.perf_counter()
            pm.call("stop", names=names)
            h.wait_until(lambda: all(p["status"] == "stopped" for p in pm.list()), 30, _POLL)
            times.append(time.perf_counter() - t0)
            pm.call("delete")
    return times


def run_stop(ctx: Context) -> h.Outcome:
    n = ctx.sizes.fleet
    rounds = 3 if n >= 20 else 1
    ours = _ours_stop(ctx, n, rounds)
    floor = _floor_stop(n, rounds)

    def peer(name: str, measure: Callable[[Context, int, int], list[float]]) -> list[float] | str:
        why = ctx.peer_na(name)
        return f"n/a: {why}" if why is not None else measure(ctx, n, rounds)

    sd, pm2 = peer("supervisord", _sd_stop), peer("pm2", _pm2_stop)

    def cell(samples: list[float] | str) -> h.Value:
        return samples if isinstance(samples, str) else h.median(samples)

    median = h.median(ours)
    out = h.Outcome()
    out.rows.append(
        h.Row(
            "stop",
            f"stop {n} running `sleep` until all report exited (s, median of {rounds})",
            median,
            h.median(floor),
            cell(sd),
            cell(pm2),
            "< 0.3 s",
            median < 0.3,
        )
    )
    out.notes.append(
        "stop: ours = the 50 stop requests in flight at once on open connections (raw sockets), then "
        "GET /v1/process polled every 5 ms; "
        "floor = SIGTERM + wait from Python; supervisord = stopProcess(wait=True) for each at once "
        "(threads), each returning once STOPPED; "
        "pm2 = pm2.stop() of each app concurrently, then pm2.list()."
    )
    out.raw = {"ours": ours, "floor": floor, "supervisord": sd, "pm2": pm2}
    return out
