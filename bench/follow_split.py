"""Where a followed line's delay goes: print → the line in combined.log → the follower.

    python -m bench.follow_split [--rounds 3] [--seconds 5] [--no-install]

A child prints its clock every 10 ms (the hot-path bench's follow-delay). For ours, a
second process watches the process's combined.log with inotify and stamps each line when
it is in the file: that is the supervisor's leg (pipe, read, timestamp, write). The
follower over ``/v1/processes/{id}/logs?follow=true`` stamps it on receipt: the rest is
the server's leg (inotify, read, render, send) and the follower's wake-up. The original
is followed the same way in the same run, the rounds alternating, as a baseline. The
watcher's own wake-up is in the first figure, so it is an upper bound of that leg.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import multiprocessing
import os
import select
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

from . import _harness as h
from .ours import OurServer
from .peers import Original, PeerUnavailable, install_original
from .scenarios.hotpath import _CLOCK_INTERVAL, _follow_sampler, _original, clock_args, follow_entries


def _watch(paths: Connection, seconds: float, out: str) -> None:
    """Stamp each clock line as it lands in the log whose path comes on ``paths``: now -
    printed, to ``out`` (JSON). Ready (it says so on ``paths``) before the clock starts, so
    that its interpreter's start-up (half a second on a busy machine) does not miss the
    clock's first lines."""
    from sandbox_agent.engine.logs.inotify import IN_MODIFY, Inotify

    notify = Inotify.create()
    if notify is None:
        raise SystemExit("no inotify here")
    paths.send("ready")
    path = paths.recv()
    notify.add_watch(path, IN_MODIFY)
    delays: list[float] = []
    with open(path, "rb") as log:
        log.seek(0, os.SEEK_END)
        rest = b""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not select.select([notify.fd], [], [], 0.2)[0]:
                continue
            notify.read()
            now = time.time()
            *lines, rest = (rest + log.read()).split(b"\n")
            for line in lines:
                with contextlib.suppress(ValueError, IndexError):
                    delays.append(now - float(line.split()[-1]))
    notify.close()
    Path(out).write_text(json.dumps(delays))


def _start_clock(http: httpx.Client, seconds: float) -> str:
    response = http.post("/v1/processes", json={"command": h.PYTHON, "args": clock_args(seconds)})
    if response.status_code != 200:
        raise RuntimeError(f"start the clock: {response.status_code} {response.text[:300]}")
    return str(response.json()["id"])


def _ours_round(server: OurServer, seconds: float, scratch: Path) -> tuple[list[float], list[float]]:
    context = multiprocessing.get_context("spawn")
    to_watcher, watcher_end = context.Pipe()
    out = str(scratch / f"watch-{time.monotonic_ns()}.json")
    watcher = context.Process(target=_watch, args=(watcher_end, seconds + 0.5, out))
    watcher.start()
    try:
        if not to_watcher.poll(60):
            raise RuntimeError("the log watcher did not start within 60 s")
        to_watcher.recv()
        process_id = _start_clock(server.http, seconds)
        paths = glob.glob(str(server.data_dir / "**" / process_id / "combined.log"), recursive=True)
        if len(paths) != 1:
            raise RuntimeError(f"combined.log of {process_id}: found {paths}")
        to_watcher.send(paths[0])
        follower = follow_entries(server.port, process_id, seconds + 1.0)
    finally:
        to_watcher.close()
        watcher.join(seconds + 30)
    in_file = json.loads(Path(out).read_text())
    return in_file, follower


def _quantiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{h.percentile(values, 50) * 1000:.3f} / {h.percentile(values, 99) * 1000:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-install", action="store_true", help="leave the original out unless it is installed")
    args = parser.parse_args()
    in_file: list[float] = []
    ours: list[float] = []
    original: list[float] = []
    why_not = None
    try:
        install_original(allow=not args.no_install)
    except PeerUnavailable as exc:
        why_not = f"n/a: {exc}"
    with tempfile.TemporaryDirectory(prefix="follow-split-") as tmp:
        scratch = Path(tmp)
        with OurServer(scratch) as server, contextlib.nullcontext() if why_not else Original(scratch) as peer:
            follow_original = None if peer is None else _follow_sampler(_original(peer), args.seconds)
            for i in range(args.rounds):
                for turn in ("ours", "original") if i % 2 == 0 else ("original", "ours"):
                    if turn == "ours":
                        file_part, follower = _ours_round(server, args.seconds, scratch)
                        in_file += file_part
                        ours += follower
                    elif follow_original is not None:
                        original += follow_original()
    print(f"a line every {_CLOCK_INTERVAL * 1000:.0f} ms, {args.rounds} rounds of {args.seconds:g} s; p50 / p99 (ms)")
    print(f"  ours: print -> line in combined.log (supervisor)  {_quantiles(in_file)}  ({len(in_file)} lines)")
    print(f"  ours: print -> follower receives it               {_quantiles(ours)}  ({len(ours)} lines)")
    if why_not:
        print(f"  original: {why_not}")
    else:
        print(f"  original: print -> follower receives it           {_quantiles(original)}  ({len(original)} lines)")


if __name__ == "__main__":
    main()
