"""follow-latency (one SSE follower of a child printing its clock) and fan-out (many
followers of a chatty child: nothing lost, server CPU)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

from .. import _harness as h
from ..ours import OurServer
from ..peers import Pm2
from ._context import Context

_CLOCK_LINE = re.compile(rb"^data: (\d+\.\d+)\r?$", re.MULTILINE)
_INTERVAL = 0.01


def follow_clock(server: OurServer, process_id: str, timeout: float) -> list[float]:
    """receive time - printed time of every live line, read with a raw socket."""
    path = f"/v1/process/{process_id}/logs?follow=true&stream=stdout&strip_timestamps=true&tail=0"
    delays: list[float] = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        tail = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            now = time.time()
            if not chunk:
                break
            data = tail + chunk
            cut = data.rfind(b"\n") + 1
            complete, tail = data[:cut], data[cut:]
            delays.extend(now - float(stamp) for stamp in _CLOCK_LINE.findall(complete))
            if b"\nevent: exit" in complete:
                break
    return delays


def _pm2_latency(ctx: Context, seconds: float) -> list[float] | str:
    if (why := ctx.peer_na("pm2")) is not None:
        return f"n/a: {why}"
    with Pm2(ctx.scratch) as pm:
        app = pm.app("clock", [h.PYTHON, h.GEN, "clock", str(seconds), str(_INTERVAL)])
        delays: list[float] = pm.call("latency", timeout=seconds + 60, app=app)["delays"]
    # The first lines can predate the subscription being in place: skip the first 100 ms.
    return delays[10:]


def run_latency(ctx: Context) -> h.Outcome:
    seconds = ctx.sizes.follow_seconds
    out = h.Outcome()
    with OurServer(ctx.scratch) as server:
        process = server.start(h.PYTHON, [h.GEN, "clock", str(seconds), str(_INTERVAL)])
        delays = follow_clock(server, process["id"], seconds + 30)
    pm2 = _pm2_latency(ctx, seconds)
    sd_why = ctx.peer_na("supervisord") or "no push follow: its XML-RPC tailProcessStdoutLog has to be polled"
    sd: h.Value = f"n/a: {sd_why}"

    def stat(samples: list[float] | str, p: float) -> h.Value:
        return samples if isinstance(samples, str) else 1000 * h.percentile(samples, p)

    for p, goal in ((50, 5.0), (99, 25.0)):
        ours = 1000 * h.percentile(delays, p)
        out.rows.append(
            h.Row(
                "follow-latency",
                f"print → SSE receive, p{p} (ms, n={len(delays)})",
                ours,
                h.NO_FLOOR,
                sd,
                stat(pm2, p),
                f"≤ {goal:g} ms",
                h.at_most(ours, goal),
            )
        )
    out.notes.append(
        "follow-latency: the child prints time.time() every 10 ms; ours is read by one raw-socket SSE "
        "follower (stream=stdout, strip_timestamps); pm2's figure is its log bus (pm2.launchBus, what "
        "`pm2 logs` uses) received in a node client."
    )
    out.raw = {"ours": delays, "pm2": pm2}
    return out


class _CpuSampler:
    """CPU seconds used by a process that may exit before we look: sampled every 50 ms."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.first: float | None = None
        self.last: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self.pid is not None and not self._stop.wait(0.05 if self.first is not None else 0):
            try:
                self.last = h.cpu_seconds(self.pid)
            except (OSError, ValueError):
                return
            if self.first is None:
                self.first = self.last

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join()
        return None if self.first is None or self.last is None else self.last - self.first


def run_fanout(ctx: Context) -> h.Outcome:
    sizes = ctx.sizes
    followers, rate, seconds = sizes.fanout_followers, sizes.fanout_rate, sizes.fanout_seconds
    expected = int(rate * seconds)
    out = h.Outcome()
    with OurServer(ctx.scratch) as server:
        go = Path(server.dir) / "go"
        process = server.start(h.PYTHON, [h.GEN, "rate", str(rate), str(seconds), str(go)])
        numbers = [str(followers), str(expected), str(seconds + 60)]
        client = subprocess.Popen(
            [h.PYTHON, str(h.BENCH_DIR / "_fanout.py"), "127.0.0.1", str(server.port), process["id"], *numbers],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdout is not None
        try:
            if client.stdout.readline().strip() != "ready":
                raise RuntimeError("the fan-out client did not get ready")
            cpu0, wall0 = h.cpu_seconds(server.pid), time.perf_counter()
            supervisor = _CpuSampler(next(iter(server.supervisor_pids()), None))
            go.touch()
            line = client.stdout.readline()
            wall = time.perf_counter() - wall0
            cpu = h.cpu_seconds(server.pid) - cpu0
            sup_cpu = supervisor.stop()
            result = json.loads(line)
        finally:
            client.kill()
            client.wait()
            client.stdout.close()
    got = result["followers"]
    complete = sum(1 for f in got if f["complete"])
    lost = sum(max(0, expected - f["lines"]) for f in got)
    cpu_pct = 100 * cpu / wall
    done = [f["seconds"] for f in got if f["seconds"] is not None]
    lines_per_read = sum(f["lines"] for f in got) / max(1, sum(f["reads"] for f in got))
    out.rows.append(
        h.Row(
            "fan-out",
            f"{followers} followers x {expected:,} lines: followers with every line",
            f"{complete}/{followers} (lost {lost:,})",
            goal="all, nothing lost",
            met=complete == followers,
        )
    )
    out.rows.append(
        h.Row(
            "fan-out",
            f"server CPU over the {seconds:g} s of writing + delivery (% of one core)",
            cpu_pct,
            goal="< 100%",
            met=cpu_pct < 100,
        )
    )
    na = "n/a: no HTTP follow API to fan out (pm2 logs / supervisorctl tail are single clients)"
    for row in out.rows[-2:]:
        row.floor, row.supervisord, row.pm2 = h.NO_FLOOR, na, na
    out.notes.append(
        f"fan-out: {rate:,} lines/s for {seconds:g} s; window {wall:.2f} s from the child's first line to the "
        f"last follower's exit event (the last follower finished {max(done, default=float('nan')):.2f} s after "
        f"the start); supervisor CPU {'' if sup_cpu is None else f'{100 * sup_cpu / wall:.0f}%'}; "
        f"{lines_per_read:.1f} lines per read by a follower (the child writes one line every "
        f"{1e6 / rate:.0f} µs)."
    )
    out.raw = {"wall": wall, "cpu": cpu, "supervisor_cpu": sup_cpu, "followers": got}
    return out
