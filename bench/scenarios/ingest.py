"""ingest-bulk, ingest-lines and their fidelity: a child writes N 100-byte lines.

The clock starts just before the start request and stops when the log file holds every
line (its exact expected size; a system that loses lines is timed to its last growth
after the child exited). Then stdout's log, prefixes removed, is compared byte for byte
with the generator's output.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import _fidelity, _gen
from .. import _harness as h
from ..ours import OurServer
from ..peers import Pm2, Program, Supervisord
from ._context import Context

_SYSTEMS = ("ours", "floor", "supervisord", "pm2")


@dataclass
class Runs:
    seconds: list[float] = field(default_factory=list)
    fidelity: list[_fidelity.Fidelity] = field(default_factory=list)
    timeouts: int = 0
    error: str | None = None


class _Job:
    """One ingest run of one system: time it, then check its log."""

    def __init__(self, mode: str, count: int, expected: bytes, timeout: float) -> None:
        self.mode = mode
        self.count = count
        self.expected = expected
        self.timeout = timeout
        self.command = [h.PYTHON, h.GEN, mode, str(count)]

    def measure(
        self,
        runs: Runs,
        path: str,
        prefix: re.Pattern[bytes] | None,
        started: float,
        exited: Callable[[], bool],
    ) -> None:
        size = self.count * (_fidelity.prefix_len(prefix) + _gen.LINE_LEN)
        try:
            seconds, _complete = h.wait_log_complete(path, size, started, exited, self.timeout)
        except h.Timeout:
            runs.timeouts += 1
        else:
            runs.seconds.append(seconds)
        with open(path, "rb") as f:
            data = f.read()
        runs.fidelity.append(_fidelity.check(data, self.expected, self.count, prefix))


def _floor(job: _Job, scratch: str, runs: Runs) -> None:
    path = os.path.join(scratch, f"floor-{job.mode}.out")
    with open(path, "wb") as out:
        started = time.perf_counter()
        gen = subprocess.Popen(job.command, stdout=subprocess.PIPE)
        cat = subprocess.Popen(["cat"], stdin=gen.stdout, stdout=out)
    assert gen.stdout is not None
    gen.stdout.close()
    try:
        job.measure(runs, path, None, started, lambda: gen.poll() is not None and cat.poll() is not None)
    finally:
        for proc in (gen, cat):
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
        os.unlink(path)


def _ours(job: _Job, server: OurServer, runs: Runs) -> None:
    started = time.perf_counter()
    process = server.start(job.command[0], job.command[1:])
    try:
        path = process["logPaths"]["stdout"]
        job.measure(runs, path, _fidelity.OURS_PREFIX, started, lambda: server.exited(process["id"]))
    finally:
        server.http.post(f"/v1/process/{process['id']}/kill")
        h.wait_until(lambda: server.exited(process["id"]), 30, 0.01, "the generator to exit")
        server.http.delete(f"/v1/process/{process['id']}")


def _supervisord(job: _Job, ctx: Context, runs: Runs) -> None:
    with Supervisord(ctx.scratch, {"gen": Program(job.command)}) as sd:
        started = time.perf_counter()
        sd.rpc.supervisor.startProcess("gen", False)
        job.measure(
            runs, sd.log_path("gen"), None, started, lambda: sd.states()["gen:gen"] in ("EXITED", "STOPPED", "FATAL")
        )


def _pm2(job: _Job, pm: Pm2, run: int, runs: Runs) -> None:
    name = f"gen-{job.mode}-{run}"
    started = time.perf_counter()
    pm.start([pm.app(name, job.command)])

    def exited() -> bool:
        return any(p["name"] == name and p["status"] != "online" for p in pm.list())

    try:
        job.measure(runs, pm.log_path(name), _fidelity.PM2_PREFIX, started, exited)
    finally:
        with contextlib.suppress(RuntimeError):
            pm.call("stop", names=[name])
        os.unlink(pm.log_path(name))


def _run_all(ctx: Context, mode: str, count: int) -> dict[str, Runs]:
    sizes = ctx.sizes
    job = _Job(mode, count, _fidelity.expected_output(count), sizes.ingest_timeout)
    results = {name: Runs() for name in _SYSTEMS}
    pm: Pm2 | None = None
    for name in ("supervisord", "pm2"):
        results[name].error = ctx.peer_na(name)
    # Uncapped, so that stdout.log holds every line to check (the default cap, 64 MiB
    # per log, would rotate most of a 200 MB run away: the hot-path bench's big writer
    # measures ours with it, through the logs API).
    with OurServer(ctx.scratch, options=("--max-log-bytes", "0")) as server, contextlib.ExitStack() as stack:
        if results["pm2"].error is None:
            pm = stack.enter_context(Pm2(ctx.scratch))
        # Interleaved, so that a burst of noise on the machine hits every system alike.
        for run in range(sizes.ingest_runs):
            _floor(job, str(server.dir), results["floor"])
            _ours(job, server, results["ours"])
            if run >= sizes.ingest_peer_runs:
                continue
            if results["supervisord"].error is None:
                _supervisord(job, ctx, results["supervisord"])
            if pm is not None:
                _pm2(job, pm, run, results["pm2"])
    return results


def _runs(ctx: Context) -> str:
    sizes = ctx.sizes
    return f" of {sizes.ingest_runs}, peers {sizes.ingest_peer_runs}" if sizes.ingest_runs > 1 else ""


def _median_or_why(runs: Runs, convert: Callable[[float], float]) -> h.Value:
    if runs.error is not None:
        return f"n/a: {runs.error}"
    if not runs.seconds:
        return "timeout"
    return convert(h.median(runs.seconds))


def _fidelity_cell(runs: Runs) -> h.Value:
    if runs.error is not None:
        return f"n/a: {runs.error}"
    bad = [f for f in runs.fidelity if not f.exact]
    if not bad:
        return f"exact {len(runs.fidelity)}/{len(runs.fidelity)}"
    worst = max(bad, key=lambda f: f.lost + f.corrupted + f.duplicated)
    return f"{len(bad)}/{len(runs.fidelity)} bad; worst: {worst.describe()}"


def _fidelity_row(label: str, results: dict[str, Runs]) -> h.Row:
    ours = results["ours"]
    return h.Row(
        "fidelity",
        f"{label}: stdout log minus prefixes == child's bytes",
        _fidelity_cell(ours),
        _fidelity_cell(results["floor"]),
        _fidelity_cell(results["supervisord"]),
        _fidelity_cell(results["pm2"]),
        "exact in every run",
        all(f.exact for f in ours.fidelity) and not ours.timeouts,
    )


def _raw(results: dict[str, Runs]) -> dict[str, object]:
    return {
        name: {
            "seconds": r.seconds,
            "timeouts": r.timeouts,
            "error": r.error,
            "fidelity": [f.__dict__ for f in r.fidelity],
        }
        for name, r in results.items()
    }


def run_bulk(ctx: Context) -> h.Outcome:
    count = ctx.sizes.bulk_lines
    results = _run_all(ctx, "bulk", count)
    megabytes = count * _gen.LINE_LEN / 1e6

    def mbps(seconds: float) -> float:
        return megabytes / seconds

    cells = {name: _median_or_why(results[name], mbps) for name in _SYSTEMS}
    ours, floor, pm2 = cells["ours"], cells["floor"], cells["pm2"]
    met = h.at_least(ours, 0.5 * floor) if isinstance(floor, float) else None
    if met and isinstance(pm2, float) and isinstance(ours, float):
        met = ours > pm2
    out = h.Outcome()
    out.rows.append(
        h.Row(
            "ingest-bulk",
            f"{megabytes:g} MB of 100-byte lines: MB/s until all logged (median{_runs(ctx)})",
            ours,
            floor,
            cells["supervisord"],
            pm2,
            "≥ 0.5x floor, > pm2",
            met,
            higher=True,
        )
    )
    out.rows.append(_fidelity_row("bulk", results))
    out.notes.append(
        "ingest: floor = the same generator piped into `cat > file`; supervisord writes no timestamps "
        "(it has no such option), pm2 runs with --time; ours writes stdout.log and combined.log (twice the bytes), "
        "uncapped (--max-log-bytes 0), so that its stdout.log holds every line to check."
    )
    out.raw = _raw(results)
    return out


def run_lines(ctx: Context) -> h.Outcome:
    count = ctx.sizes.lines_lines
    results = _run_all(ctx, "lines", count)
    cells = {name: _median_or_why(results[name], float) for name in _SYSTEMS}
    ours, floor = cells["ours"], cells["floor"]
    met = h.at_most(ours, 1.5 * floor) if isinstance(floor, float) else None
    out = h.Outcome()
    out.rows.append(
        h.Row(
            "ingest-lines",
            f"{count:,} lines, one write each: s until all logged (median{_runs(ctx)})",
            ours,
            floor,
            cells["supervisord"],
            cells["pm2"],
            "≤ 1.5x floor",
            met,
        )
    )
    out.rows.append(_fidelity_row("lines", results))
    out.raw = _raw(results)
    return out
