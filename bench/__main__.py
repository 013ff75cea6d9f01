"""Run the benchmark suite and print the table::

    .venv/bin/python -m bench                      # everything, full sizes (3-5 minutes here)
    .venv/bin/python -m bench --quick              # small sizes, under a minute
    .venv/bin/python -m bench --only spawn --only list
    .venv/bin/python -m bench --peers none         # ours and the floor only

Peers are installed on first use into bench/.peers/ (supervisor from PyPI, pm2 and the
original sandbox-agent server from npm);
results go to bench/results/<time>.json as well.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from . import _harness as h
from . import _table, peers
from .scenarios import ALIASES, SCENARIOS, Context

RESULTS_DIR = h.BENCH_DIR / "results"


class ScenarioTimeout(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not figures to quote")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SCENARIO",
        help=f"run only these (repeatable or comma-separated): {', '.join([*SCENARIOS, *ALIASES])}",
    )
    parser.add_argument("--peers", default="supervisord,pm2,original", help="peers to compare with, or 'none'")
    parser.add_argument("--no-install", action="store_true", help="use only peers already in bench/.peers/")
    parser.add_argument("--install-only", action="store_true", help="install the peers into bench/.peers/, run nothing")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    parser.add_argument("--time-limit", type=float, help="seconds allowed per scenario (default 240, quick 60)")
    return parser


def select(only: list[str]) -> list[str]:
    wanted: list[str] = []
    for item in only:
        for name in filter(None, (part.strip() for part in item.split(","))):
            if name in ALIASES:
                wanted += ALIASES[name]
            elif name in SCENARIOS:
                wanted.append(name)
            else:
                raise SystemExit(f"unknown scenario {name!r}; choose from {', '.join([*SCENARIOS, *ALIASES])}")
    return [name for name in SCENARIOS if not wanted or name in wanted]


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expired(signum: int, frame: FrameType | None) -> None:
        raise ScenarioTimeout(f"took more than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def machine(avail: peers.Availability) -> dict[str, Any]:
    from sandbox_agent import __version__

    meminfo = Path("/proc/meminfo").read_text().splitlines()
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    mem = next((line.split()[1] for line in meminfo if line.startswith("MemTotal")), "0")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    node = shutil.which("node")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(int(mem) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip() if node else None,
        "sandbox_agent": __version__,
        "commit": commit.stdout.strip(),
        "supervisor": avail.supervisord_version or avail.supervisord,
        "pm2": avail.pm2_version or avail.pm2,
        "original": avail.original_version or avail.original,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = select(args.only)
    sizes = h.QUICK if args.quick else h.FULL
    limit = args.time_limit or (60.0 if args.quick else 240.0)
    wanted_peers = [] if args.peers == "none" else [p.strip() for p in args.peers.split(",")]
    began = time.monotonic()
    print(f"installing/checking peers: {', '.join(wanted_peers) or 'none'}", flush=True)
    avail = peers.check(wanted_peers, allow_install=not args.no_install)
    for name in ("supervisord", "pm2", "original"):
        if getattr(avail, name) and name in wanted_peers:
            print(f"  {name} skipped: {getattr(avail, name)}", flush=True)
    if args.install_only:
        return 0
    info = machine(avail)
    scratch = Path(tempfile.mkdtemp(prefix="sandbox-agent-bench-"))
    ctx = Context(sizes=sizes, scratch=scratch, peers=avail)
    outcomes: dict[str, h.Outcome] = {}
    runs: dict[str, Any] = {}
    failed = []
    try:
        for name in names:
            print(f"running {name} ...", flush=True)
            load = h.loadavg()
            t0 = time.monotonic()
            try:
                with time_limit(limit):
                    outcome = SCENARIOS[name](ctx)
            except Exception as exc:
                failed.append(name)
                traceback.print_exc()
                outcome = h.Outcome(rows=[h.Row(name, f"ERROR: {type(exc).__name__}: {exc}"[:160], "error")])
                outcome.raw["traceback"] = traceback.format_exc()
            seconds = time.monotonic() - t0
            outcomes[name] = outcome
            runs[name] = {"seconds": seconds, "loadavg_before": load, "loadavg_after": h.loadavg()}
            print(f"  {name}: {seconds:.1f} s (load {load} → {runs[name]['loadavg_after']})", flush=True)
    finally:
        left = h.marked_pids()
        if left:
            print(f"WARNING: processes left behind, killed: {left}", flush=True)
            h.kill_all(left)
        shutil.rmtree(scratch, ignore_errors=True)
    rows = [row for outcome in outcomes.values() for row in outcome.rows]
    notes = [note for outcome in outcomes.values() for note in outcome.notes]
    total = time.monotonic() - began
    print()
    print(_table.render(rows, notes, info, quick=args.quick, total=total))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / time.strftime("bench-%Y%m%d-%H%M%S.json")
    document = {
        "machine": info,
        "quick": args.quick,
        "sizes": dataclasses.asdict(sizes),
        "total_seconds": total,
        "scenarios": runs,
        "rows": [dataclasses.asdict(row) for row in rows],
        "notes": notes,
        "raw": {name: outcome.raw for name, outcome in outcomes.items()},
        "left_behind": left,
    }
    path.write_text(json.dumps(document, indent=1, default=str))
    print(f"\nresults: {path}")
    return 1 if failed or left else 0


if __name__ == "__main__":
    sys.exit(main())
