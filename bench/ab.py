"""Two builds of our server side by side: this checkout and another git revision, asked in
turn request by request, so that the machine's swings touch both alike::

    python -m bench.ab REV                  # start-to-exit and run, 300 samples each
    python -m bench.ab REV --what start -n 500 --gap 0

The figures of one build move by 20-50% from one run to the next on a shared machine, far
more than most changes do; two builds interleaved in one run see the same machine, so
their ratio is what a change did. Each build runs from its own ``src/`` (the revision's,
taken with ``git archive``, through PYTHONPATH) under this interpreter and its packages.

- ``start``: POST /v1/processes of ``true``, then GET until it reports exited (the DELETE
  after it is not timed; with ``--keep``, none: the processes pile up, as they do for an
  agent that leaves them to retention);
- ``run``: POST /v1/processes/run of ``echo hi``;
- ``create``: POST /v1/processes of ``sleep 60`` until its answer (what a caller starting
  a dev server waits for; the kill, the wait for its exit and the DELETE after it are
  not timed);
- ``follow``: print → receive delay of a line printed every 10 ms, one follower over
  ``/v1/processes/{id}/logs?follow=true`` (the hot-path bench's follow-delay); ``-n``
  rounds of 2 s per build, builds in turn round by round;
- ``ingest``: the hot-path bench's big writer, a child writing 200 MB of 100-byte lines
  in 1 MB writes, until the logs API's last entry is its last line; ``-n`` rounds per
  build, in turn. Prints MB/s (p50 over rounds) and the CPU per MB of the server and all
  it ran (the supervisor and the writer).

Prints, per build and scenario, the p50 and p90 round trip and the CPU per request of the
server and all it ran, then this checkout's p50 over the revision's.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import _gen
from . import _harness as h
from ._rawhttp import RawHttp
from .ours import OurServer
from .scenarios.hotpath import clock_args, follow_entries, ours_v1processes
from .scenarios.hotscale import Writes, writer_api

ROOT = h.BENCH_DIR.parent
_WARMUP = 10
_START = RawHttp.build("POST", "/v1/processes", {"command": "true", "args": []})
_RUN = RawHttp.build("POST", "/v1/processes/run", {"command": "echo", "args": ["hi"]})
_CREATE = RawHttp.build("POST", "/v1/processes", {"command": "sleep", "args": ["60"]})
#: What the ``ingest`` writer writes, in MB.
_INGEST_MB = h.FULL.writer_lines * _gen.LINE_LEN / 1e6


def _checkout(rev: str, into: Path) -> Path:
    """The ``src/`` of ``rev``, extracted under ``into``."""
    done = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"git archive {rev}: {done.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        archive.extractall(into, filter="data")
    return into / "src"


def _start(http: RawHttp, poll: float = 0.0) -> str | None:
    """Start ``true`` and poll until it exited (at once, then every ``poll`` seconds, as
    the hot-path bench does with 1 ms); its id, to delete untimed."""
    status, body = http.send(_START)
    if status != 200:
        raise RuntimeError(f"start: {status} {body[:300]!r}")
    info = json.loads(body)
    get = RawHttp.build("GET", f"/v1/processes/{info['id']}")
    polls = 0
    while info["status"] != "exited":
        if polls and poll:
            time.sleep(poll)
        polls += 1
        status, body = http.send(get)
        info = json.loads(body)
    return str(info["id"])


def _create(http: RawHttp) -> str | None:
    """Start ``sleep 60``; its id, to kill and delete untimed."""
    status, body = http.send(_CREATE)
    if status != 200:
        raise RuntimeError(f"create: {status} {body[:300]!r}")
    return str(json.loads(body)["id"])


def _end(http: RawHttp, process_id: str) -> None:
    """Kill a process started by ``_create`` and wait until it exited (untimed)."""
    http.request("POST", f"/v1/processes/{process_id}/kill")
    get = RawHttp.build("GET", f"/v1/processes/{process_id}")
    h.wait_until(lambda: json.loads(http.send(get)[1])["status"] == "exited", 10, 0.001, "a killed sleep to exit")


def _run(http: RawHttp) -> str | None:
    status, body = http.send(_RUN)
    if status != 200:
        raise RuntimeError(f"run: {status} {body[:300]!r}")
    return None


def _tree(pid: int) -> list[int]:
    """The server and its launcher: with what they reaped, all a build ran."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [pid, *(int(child) for child in f.read().split())]
    except OSError:
        return [pid]


def _measure(
    servers: dict[str, OurServer], what: str, n: int, gap: float, keep: bool = False, poll: float = 0.0
) -> dict[str, tuple[list[float], float]]:
    """Per build: the round trips (s) and CPU per request (ms), builds taking turns;
    ``keep``: started processes are not deleted; ``poll``: seconds between a start's GETs."""
    samples: dict[str, Callable[[RawHttp], str | None]] = {
        "start": functools.partial(_start, poll=poll),
        "run": _run,
        "create": _create,
    }
    sample = samples[what]
    https = {name: RawHttp(server.port) for name, server in servers.items()}
    times: dict[str, list[float]] = {name: [] for name in servers}
    pids = {name: _tree(server.pid) for name, server in servers.items()}
    cpu0: dict[str, float] = {}
    names = list(servers)
    try:
        for i in range(_WARMUP + n):
            if i == _WARMUP:
                cpu0 = {name: h.cpu_seconds_reaped(pids[name]) for name in names}
            for name in names if i % 2 == 0 else reversed(names):
                time.sleep(gap)
                t0 = time.perf_counter()
                process_id = sample(https[name])
                if i >= _WARMUP:
                    times[name].append(time.perf_counter() - t0)
                if process_id is not None and what == "create":
                    _end(https[name], process_id)
                if process_id is not None and not keep:
                    https[name].request("DELETE", f"/v1/processes/{process_id}")
        time.sleep(0.2)  # the last supervisors end and are reaped
        cpu = {name: 1000 * (h.cpu_seconds_reaped(pids[name]) - cpu0[name]) / n for name in names}
    finally:
        for http in https.values():
            http.close()
    return {name: (times[name], cpu[name]) for name in names}


def _measure_follow(servers: dict[str, OurServer], rounds: int) -> dict[str, tuple[list[float], float]]:
    """Per build: the delays (s) of every followed line and CPU per line (ms), builds
    taking turns round by round."""
    seconds = 2.0
    start = RawHttp.build("POST", "/v1/processes", {"command": h.PYTHON, "args": clock_args(seconds)})
    delays: dict[str, list[float]] = {name: [] for name in servers}
    cpu: dict[str, float] = dict.fromkeys(servers, 0.0)
    names = list(servers)
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            with RawHttp(servers[name].port) as http:
                status, body = http.send(start)
                if status != 200:
                    raise RuntimeError(f"start the clock: {status} {body[:300]!r}")
                process_id = json.loads(body)["id"]
                before = h.cpu_seconds(servers[name].pid)
                delays[name] += follow_entries(servers[name].port, process_id, seconds + 1.0)
                cpu[name] += h.cpu_seconds(servers[name].pid) - before
                http.request("DELETE", f"/v1/processes/{process_id}")
    return {name: (delays[name], 1000 * cpu[name] / max(1, len(delays[name]))) for name in names}


def _measure_ingest(servers: dict[str, OurServer], rounds: int) -> dict[str, tuple[list[float], float]]:
    """Per build: the seconds from the writer's start until the logs hold its last line,
    and CPU per MB (ms), builds taking turns round by round."""
    got = {name: Writes() for name in servers}
    cpu: dict[str, float] = dict.fromkeys(servers, 0.0)
    names = list(servers)
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            server = servers[name]
            pids = _tree(server.pid)
            before = h.cpu_seconds_reaped(pids)
            writer_api(ours_v1processes(server), h.FULL.writer_lines, server.dir, h.FULL.ingest_timeout, got[name])
            cpu[name] += h.cpu_seconds_reaped(pids) - before
    return {name: (got[name].logged, 1000 * cpu[name] / (_INGEST_MB * rounds)) for name in names}


def _machine() -> str:
    cpus = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpus if line.startswith("model name")), "?")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    python = sys.version.split()[0]
    return f"this checkout at {head.stdout.strip() or '?'} on {os.cpu_count()} x {model}, Python {python}"


def _ms(values: list[float], p: int) -> float:
    return 1000 * h.percentile(values, p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the git revision to compare this checkout with (HEAD~1, a tag, a hash)")
    parser.add_argument("--what", choices=["start", "run", "create", "follow", "ingest", "both"], default="both")
    parser.add_argument("-n", type=int, default=300, help="samples per build and scenario (default 300)")
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between requests (default 0.02)")
    parser.add_argument("--keep", action="store_true", help="start: leave the processes, do not delete them")
    parser.add_argument(
        "--poll", type=float, default=0.0, help="start: ms between GETs after the first (the hot-path bench: 1)"
    )
    args = parser.parse_args(argv)
    scenarios = ["start", "run"] if args.what == "both" else [args.what]
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as scratch:
        src = _checkout(args.rev, Path(scratch) / "rev")
        builds = {"this checkout": None, args.rev: {"PYTHONPATH": str(src)}}
        with contextlib.ExitStack() as stack:
            servers = {name: stack.enter_context(OurServer(Path(scratch), env=env)) for name, env in builds.items()}
            print(f"{_machine()}; {args.n} samples per build, {args.gap * 1000:g} ms apart, builds in turn")
            for what in scenarios:
                if what == "follow":
                    results = _measure_follow(servers, args.n)
                elif what == "ingest":
                    results = _measure_ingest(servers, args.n)
                else:
                    results = _measure(servers, what, args.n, args.gap, args.keep, args.poll / 1000)
                for name, (times, cpu) in results.items():
                    if what == "ingest":
                        mbps = _INGEST_MB / h.median(times)
                        print(f"{what:5} {name:>15}: p50 {mbps:.0f} MB/s, CPU {cpu:.2f} ms per MB")
                        continue
                    print(
                        f"{what:5} {name:>15}: p50 {_ms(times, 50):.3f} ms, p90 {_ms(times, 90):.3f} ms, "
                        f"p99 {_ms(times, 99):.3f} ms, "
                        f"CPU {cpu:.2f} ms per {'line' if what == 'follow' else 'request'}"
                    )
                this, other = (h.median(results[name][0]) for name in builds)
                if what == "ingest":
                    print(f"{what:5} this checkout / {args.rev}: MB/s {other / this:.3f}x")
                else:
                    print(f"{what:5} this checkout / {args.rev}: p50 {this / other:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
