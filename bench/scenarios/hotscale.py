"""The hot path at scale, beside the original server in the same run (issue 11):

- follow-many: a line every 10 ms, followed by many clients at once (100) over
  ``/v1/processes/{id}/logs?follow=true``; print → receive delay;
- big-writer: a child writes 200 MB; seconds until it has finished writing (is a build
  slowed by its logging?) and until the logs API holds its last line, beside the pipe+file
  floor;
- memory-pythons: the memory scenario's idle footprint and growth per idle `sleep`, once
  under each Python the package claims.

Ours and the original take turns round by round (the first of each round alternates).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import platform
import selectors
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import _gen
from .. import _harness as h
from .._rawhttp import RawHttp
from ..ours import OurServer
from ._context import Context
from .fleet import original_memory, ours_memory
from .hotpath import (
    _CLOCK_INTERVAL,
    _GOAL,
    SseDelays,
    _Api,
    _original,
    _original_server,
    _ratio_met,
    follow_request,
    ours_v1processes,
    read_head,
)

#: After the clock's last line, how long a follower still waits for it (the original sends
#: no exit event, so its followers always wait this long).
_GRACE = 2.0
#: How often the logs API is asked for its last entry once the big writer has written all:
#: not before, for a poll perturbs what it measures (the original's tail read is costly).
_WRITER_POLL = 0.005
#: Goal of issue 11 for ingest: MB/s until all is logged, against the pipe+file floor.
_INGEST_GOAL = 0.6
#: The Pythons the package claims (pyproject's classifiers).
PYTHONS = ("3.11", "3.12", "3.13")
ROOT = h.BENCH_DIR.parent


# -- follow-many -----------------------------------------------------------------------------


@dataclass
class _ManyRound:
    p50: float
    p99: float
    delays: list[float]
    lines_min: int
    lines_max: int
    client_cpu: float
    server_cpu: float


def _connect_followers(port: int, process_id: str, count: int) -> list[tuple[socket.socket, bytes, bytes]]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            socks.append(sock)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(follow_request(process_id))
        return [(sock, *read_head(sock, process_id)) for sock in socks]
    except BaseException:
        for sock in socks:
            sock.close()
        raise


def _receive_all(socks: list[socket.socket], until: float) -> list[list[tuple[float, bytes]]]:
    """Every chunk each socket receives, with its receive time (time.time()), until each has
    had an exit event or ``until`` (monotonic). Parsing waits for the end: the loop only reads
    and stamps, so that the client stays light however many followers there are."""
    received: list[list[tuple[float, bytes]]] = [[] for _ in socks]
    tails = [b""] * len(socks)
    with selectors.DefaultSelector() as selector:
        for index, sock in enumerate(socks):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, index)
        open_count = len(socks)
        while open_count and time.monotonic() < until:
            for key, _ in selector.select(0.2):
                index = key.data
                try:
                    chunk = socks[index].recv(262144)
                except BlockingIOError:
                    continue
                now = time.time()
                window = tails[index] + chunk
                if chunk:
                    received[index].append((now, chunk))
                    tails[index] = window[-16:]
                if not chunk or b"event: exit" in window:
                    selector.unregister(socks[index])
                    open_count -= 1
    return received


def _many_round(api: _Api, cpu_pids: list[int], followers: int, seconds: float, scratch: Path) -> _ManyRound:
    go = scratch / f"go-{api.name}-{time.monotonic_ns()}"
    args = [h.GEN, "clock", str(seconds), str(_CLOCK_INTERVAL), str(go)]
    with RawHttp(api.port) as http:
        status, body = http.send(api.create(h.PYTHON, args))
    if status != api.created:
        raise RuntimeError(f"{api.name}: start the clock: {status} {body[:300]!r}")
    process_id = json.loads(body)["id"]
    connected = _connect_followers(api.port, process_id, followers)
    try:
        subscribed = time.time()
        cpu0 = h.cpu_seconds_reaped(cpu_pids)
        client0 = time.thread_time()
        go.touch()
        received = _receive_all([sock for sock, _, _ in connected], time.monotonic() + seconds + _GRACE)
        client_cpu = time.thread_time() - client0
    finally:
        for sock, _, _ in connected:
            sock.close()
    # A new connection: a server may close one left idle for the round (uvicorn after 5 s).
    with RawHttp(api.port) as http:
        get = RawHttp.build("GET", f"/v1/processes/{process_id}")
        h.wait_until(lambda: json.loads(http.send(get)[1])["status"] == "exited", 30, 0.01, "the clock to exit")
        time.sleep(0.2)  # its supervisor (ours) ends and is reaped
        server_cpu = h.cpu_seconds_reaped(cpu_pids) - cpu0
        http.request("DELETE", f"/v1/processes/{process_id}")
    go.unlink()
    per_follower = []
    for (_, head, rest), chunks in zip(connected, received, strict=True):
        parser = SseDelays(head, subscribed)
        if rest:
            parser.feed(subscribed, rest)
        for now, chunk in chunks:
            parser.feed(now, chunk)
        per_follower.append(parser.delays)
    delays = [d for got in per_follower for d in got]
    counts = [len(got) for got in per_follower]
    return _ManyRound(
        p50=1000 * h.percentile(delays, 50),
        p99=1000 * h.percentile(delays, 99),
        delays=delays,
        lines_min=min(counts),
        lines_max=max(counts),
        client_cpu=client_cpu / seconds,
        server_cpu=server_cpu / seconds,
    )


def run_follow_many(ctx: Context) -> h.Outcome:
    sizes = ctx.sizes
    seconds, rounds, followers = sizes.follow_seconds, sizes.hot_follow_rounds, sizes.hot_followers
    original_na = ctx.peer_na("original")
    got: dict[str, list[_ManyRound]] = {"ours": [], "original": []}
    with OurServer(ctx.scratch) as ours, _original_server(ctx) as original:
        runs = {"ours": (ours_v1processes(ours), [ours.pid, *ours.launcher_pids()])}
        if original is not None:
            runs["original"] = (_original(original), [original.pid])
        names = list(runs)
        for i in range(rounds):
            for name in names if i % 2 == 0 else reversed(names):
                api, pids = runs[name]
                got[name].append(_many_round(api, pids, followers, seconds, ours.dir))

    def cell(name: str, key: str) -> h.Value:
        if name == "original" and original_na:
            return f"n/a: {original_na}"
        return h.median(getattr(r, key) for r in got[name])

    out = h.Outcome()
    n = sum(len(r.delays) for r in got["ours"])
    for p in (50, 99):
        value, orig = cell("ours", f"p{p}"), cell("original", f"p{p}")
        out.rows.append(
            h.Row(
                "follow-many",
                f"{followers} followers of a line every 10 ms, print → receive, p{p} "
                f"(ms, median of {rounds} round(s), n={n})",
                value,
                original=orig,
                goal=_GOAL,
                met=_ratio_met(value, orig),
            )
        )
    out.rows.append(
        h.Row(
            "follow-many",
            "server and all it reaped (the clock too), CPU over a round (% of one core)",
            100 * h.median(r.server_cpu for r in got["ours"]),
            original=f"n/a: {original_na}" if original_na else 100 * h.median(r.server_cpu for r in got["original"]),
        )
    )
    lines = {name: (min(r.lines_min for r in rs), max(r.lines_max for r in rs)) for name, rs in got.items() if rs}
    client = max((r.client_cpu for rs in got.values() for r in rs), default=0.0)
    out.notes.append(
        f"follow-many: {rounds} round(s) per server, in turn; the child prints time.time() every 10 ms for "
        f"{seconds:g} s once all {followers} raw-socket followers of /v1/processes/{{id}}/logs?follow=true have "
        "their response headers; one selector loop reads and stamps every chunk and parses after the round. "
        f"The measuring client's own CPU: at most {100 * client:.0f}% of one core in any round, so it is not "
        "the bottleneck (the machine has "
        f"{os.cpu_count()} cores). Lines per follower (min-max over followers and rounds): "
        + ", ".join(f"{name} {lo}-{hi}" for name, (lo, hi) in lines.items())
        + "; p50/p99 are medians of the per-round figures."
    )
    out.raw = {name: [r.__dict__ for r in rs] for name, rs in got.items()}
    return out


# -- big-writer -------------------------------------------------------------------------------


@dataclass
class Writes:
    #: From the writer's first write to its last write's return.
    writing: list[float] = field(default_factory=list)
    #: From just before the start (request) until the writer's last write returned.
    written: list[float] = field(default_factory=list)
    #: From just before the start (request) until the logs hold it all.
    logged: list[float] = field(default_factory=list)


def _read_done(path: Path, t0: float, timeout: float, into: Writes) -> None:
    h.wait_until(path.exists, timeout, 0.005, f"the writer's {path.name}")
    start, end = (float(word) for word in path.read_bytes().split())
    path.unlink()
    into.writing.append(end - start)
    into.written.append(end - t0)


def _writer_floor(count: int, scratch: Path, timeout: float, into: Writes) -> None:
    done, out = scratch / "done-floor", scratch / "floor.out"
    size = count * _gen.LINE_LEN
    with open(out, "wb") as sink:
        t0 = time.monotonic()
        gen = subprocess.Popen([h.PYTHON, h.GEN, "bulk", str(count), str(done)], stdout=subprocess.PIPE)
        cat = subprocess.Popen(["cat"], stdin=gen.stdout, stdout=sink)
    assert gen.stdout is not None
    gen.stdout.close()
    try:
        h.wait_until(lambda: os.stat(out).st_size >= size, timeout, 0.001, "the floor's file")
        into.logged.append(time.monotonic() - t0)
        _read_done(done, t0, timeout, into)
    finally:
        for proc in (gen, cat):
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
        out.unlink()


def writer_api(api: _Api, count: int, scratch: Path, timeout: float, into: Writes) -> None:
    done = scratch / f"done-{api.name}"
    last = _gen.expected_line(count - 1)
    with RawHttp(api.port) as http:
        t0 = time.monotonic()
        status, body = http.send(api.create(h.PYTHON, [h.GEN, "bulk", str(count), str(done)]))
        if status != api.created:
            raise RuntimeError(f"{api.name}: start the writer: {status} {body[:300]!r}")
        process_id = json.loads(body)["id"]
        tail = RawHttp.build("GET", f"/v1/processes/{process_id}/logs?tail=1")

        def holds_the_last_line() -> bool:
            status, body = http.send(tail)
            if status != 200:
                raise RuntimeError(f"{api.name}: logs: {status} {body[:300]!r}")
            entries = json.loads(body)["entries"]
            return bool(entries) and base64.b64decode(entries[-1]["data"]).endswith(last)

        h.wait_until(done.exists, timeout, 0.001, f"the writer's {done.name}")
        h.wait_until(holds_the_last_line, timeout, _WRITER_POLL, f"{api.name}'s logs to hold the last line")
        into.logged.append(time.monotonic() - t0)
        _read_done(done, t0, timeout, into)
        get = RawHttp.build("GET", f"/v1/processes/{process_id}")
        info = h.wait_until(
            lambda: (got := json.loads(http.send(get)[1]))["status"] == "exited" and got, 30, 0.01, "the writer's exit"
        )
        if info.get("exitCode") != 0:
            raise RuntimeError(f"{api.name}: the writer ended with {info}")
        http.request("DELETE", f"/v1/processes/{process_id}")


def run_big_writer(ctx: Context) -> h.Outcome:
    sizes = ctx.sizes
    count, rounds, timeout = sizes.writer_lines, sizes.writer_rounds, sizes.ingest_timeout
    megabytes = count * _gen.LINE_LEN / 1e6
    original_na = ctx.peer_na("original")
    got = {"floor": Writes(), "ours": Writes(), "original": Writes()}
    with OurServer(ctx.scratch) as ours, _original_server(ctx) as original:
        scratch = ours.dir
        steps = {
            "floor": lambda: _writer_floor(count, scratch, timeout, got["floor"]),
            "ours": lambda: writer_api(ours_v1processes(ours), count, scratch, timeout, got["ours"]),
        }
        if original is not None:
            api = _original(original)
            steps["original"] = lambda: writer_api(api, count, scratch, timeout, got["original"])
        names = list(steps)
        for i in range(rounds):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                steps[name]()

    def cell(name: str, key: str, convert: bool = False) -> h.Value:
        if name == "original" and original_na:
            return f"n/a: {original_na}"
        value = h.median(getattr(got[name], key))
        return megabytes / value if convert else value

    writing = {name: cell(name, "writing") for name in got}
    written = {name: cell(name, "written") for name in got}
    mbps = {name: cell(name, "logged", convert=True) for name in got}
    floor_mbps = mbps["floor"]
    met = h.at_least(mbps["ours"], _INGEST_GOAL * floor_mbps) if isinstance(floor_mbps, float) else None
    out = h.Outcome()
    out.rows += [
        h.Row(
            "big-writer",
            f"{megabytes:g} MB writer: the child's writing time, first write → last returned (s, median of {rounds})",
            writing["ours"],
            writing["floor"],
            original=writing["original"],
            goal=_GOAL,
            met=_ratio_met(writing["ours"], writing["original"]),
        ),
        h.Row(
            "big-writer",
            f"{megabytes:g} MB writer: s from the start request until the child has finished writing",
            written["ours"],
            written["floor"],
            original=written["original"],
        ),
        h.Row(
            "big-writer",
            f"{megabytes:g} MB writer: MB/s until the logs API holds its last line (median of {rounds})",
            mbps["ours"],
            floor_mbps,
            original=mbps["original"],
            goal=f"≥ {_INGEST_GOAL:g}x floor",
            met=met,
            higher=True,
        ),
    ]
    out.notes.append(
        f"big-writer: `_gen.py bulk` ({megabytes:g} MB of 100-byte lines in 1 MB writes) records when its last "
        "write returned; floor = the same piped into `cat > file`, logged when the file has every byte (stat "
        f"every 1 ms); ours and the original: logged when GET /v1/processes/{{id}}/logs?tail=1 ends with the last line "
        f"(asked every {1000 * _WRITER_POLL:g} ms once the writer is done: polling during the writing slowed the "
        "original 3x). Both servers with their defaults: ours rotates "
        "each log at 64 MiB (--max-log-bytes) and writes stdout.log and combined.log, timestamped; the original "
        "keeps the last 10 MiB per process in memory (maxLogBytesPerProcess)."
    )
    out.raw = {name: w.__dict__ for name, w in got.items()}
    return out


# -- memory-pythons ---------------------------------------------------------------------------


def _candidates(version: str) -> list[str]:
    """Where a venv of ``version`` may be: this checkout's ``.venv-X.Y`` (scripts/test-pythons
    makes them), else the main checkout's when this is a git worktree."""
    roots = [ROOT]
    common = subprocess.run(
        ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if common and Path(common).parent != ROOT:
        roots.append(Path(common).parent)
    return [str(root / f".venv-{version}" / "bin" / "python") for root in roots]


def find_pythons() -> dict[str, tuple[str, str] | str]:
    """Per claimed version: (interpreter, exact version) that runs this checkout's server, or
    why none does. Other venvs run this checkout's code through PYTHONPATH."""
    found: dict[str, tuple[str, str] | str] = {}
    src = str(ROOT / "src")
    for version in PYTHONS:
        if platform.python_version().rsplit(".", 1)[0] == version:
            found[version] = (h.PYTHON, platform.python_version())
            continue
        found[version] = f"no .venv-{version} with the server's dependencies (scripts/test-pythons makes one)"
        for python in _candidates(version):
            if not os.access(python, os.X_OK):
                continue
            probe = "import platform, fastapi, uvicorn, uvloop, httptools, websockets, sandbox_agent\n"
            probe += "print(platform.python_version())"
            done = subprocess.run(
                [python, "-c", probe], env={**os.environ, "PYTHONPATH": src}, capture_output=True, text=True
            )
            if done.returncode == 0:
                found[version] = (python, done.stdout.strip())
                break
    return found


def run_memory_pythons(ctx: Context) -> h.Outcome:
    n = ctx.sizes.fleet
    original_na = ctx.peer_na("original")
    out = h.Outcome()
    raw: dict[str, object] = {}
    for version, found in find_pythons().items():
        if isinstance(found, str):
            out.rows.append(h.Row("memory-pythons", f"Python {version}", f"n/a: {found}"))
            continue
        python, exact = found
        env = {"PYTHONPATH": str(ROOT / "src")} if python != h.PYTHON else None
        ours = ours_memory(ctx, n, python, env)
        orig: dict[str, float] | str = f"n/a: {original_na}" if original_na else original_memory(ctx, n)
        raw[version] = {"python": python, "version": exact, "ours": ours, "original": orig}
        growth = (ours["total"] - ours["idle"]) / n
        orig_idle = orig if isinstance(orig, str) else orig["idle"]
        orig_growth = orig if isinstance(orig, str) else (orig["total"] - orig["idle"]) / n
        out.rows += [
            h.Row(
                "memory-pythons",
                f"Python {exact}: idle server + all it runs, PSS (MB)",
                ours["idle"],
                original=orig_idle,
                goal="≤ 30 MB",
                met=h.at_most(ours["idle"], 30.0),
            ),
            h.Row(
                "memory-pythons",
                f"Python {exact}: growth per idle `sleep` process, PSS (MB, {n} processes)",
                growth,
                original=orig_growth,
                goal="≤ 1.0 MB",
                met=h.at_most(growth, 1.0),
            ),
        ]
    out.notes.append(
        "memory-pythons: the memory scenario's method (PSS from smaps_rollup after a first `true`, then with "
        f"{n} idle `sleep`) with our server under each Python the package claims (venvs other than the running "
        "one run this checkout's src/ through PYTHONPATH); the original (Rust) is measured again beside each row. "
        + "; ".join(f"{v}: {r['python']}" for v, r in raw.items() if isinstance(r, dict))
    )
    out.raw = raw
    return out


__all__ = ["find_pythons", "run_big_writer", "run_follow_many", "run_memory_pythons"]
