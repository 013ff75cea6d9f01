"""What every scenario needs: sizes, result rows, statistics, and /proc helpers."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
GEN = str(BENCH_DIR / "_gen.py")
PYTHON = sys.executable
#: Put in the environment of every server and peer daemon the suite starts, so that
#: whatever they leave behind can be found and ended at the end of the run.
MARKER_VAR = "SANDBOX_AGENT_BENCH_MARKER"
MARKER = f"{os.getpid()}-{int(time.time())}"

#: A figure: a number, or a word such as "exact" / "n/a: why" / "timeout".
Value = float | str | None
#: The cell of a scenario for which the issue defines no floor.
NO_FLOOR = "n/a: the issue defines no floor for this scenario"


@dataclass(frozen=True)
class Sizes:
    spawn_starts: int = 100
    fleet: int = 50
    bulk_lines: int = 2_000_000
    lines_lines: int = 1_000_000
    ingest_runs: int = 5
    #: pm2 takes seconds per ingest run: fewer runs of the peers.
    ingest_peer_runs: int = 3
    ingest_timeout: float = 60.0
    follow_seconds: float = 5.0
    fanout_followers: int = 100
    fanout_rate: int = 5_000
    fanout_seconds: float = 10.0
    list_sizes: tuple[int, ...] = (500, 5_000)
    list_requests: int = 30
    churn: int = 2_000
    #: Hot path beside the original: interleaved rounds of start-to-exit-visible and run,
    #: and rounds of follow_seconds of the 10 ms clock per server.
    hot_rounds: int = 150
    hot_follow_rounds: int = 3
    #: Followers of the same 10 ms clock (follow-many), each round follow_seconds long.
    hot_followers: int = 100
    #: The big writer beside the original: 100-byte lines (2,000,000 = 200 MB), rounds.
    writer_lines: int = 2_000_000
    writer_rounds: int = 3
    #: Pause before memory is read, for pages touched at start-up to settle.
    settle: float = 0.5


FULL = Sizes()
QUICK = Sizes(
    spawn_starts=20,
    fleet=8,
    bulk_lines=50_000,
    lines_lines=20_000,
    ingest_runs=1,
    ingest_peer_runs=1,
    ingest_timeout=20.0,
    follow_seconds=1.0,
    fanout_followers=8,
    fanout_rate=1_000,
    fanout_seconds=1.0,
    list_sizes=(20, 60),
    list_requests=5,
    churn=60,
    hot_rounds=10,
    hot_follow_rounds=1,
    hot_followers=4,
    writer_lines=20_000,
    writer_rounds=1,
    settle=0.1,
)


@dataclass
class Row:
    """One line of the table. ``higher`` says whether a bigger figure is better."""

    scenario: str
    metric: str
    ours: Value
    floor: Value = None
    supervisord: Value = None
    pm2: Value = None
    goal: str = ""
    met: bool | None = None
    higher: bool = False
    #: The original sandbox-agent server (npm @sandbox-agent/cli-linux-x64).
    original: Value = None

    def ratio(self, other: Value) -> float | None:
        if isinstance(self.ours, float | int) and isinstance(other, float | int) and other > 0 and self.ours >= 0:
            return float(self.ours) / float(other)
        return None


@dataclass
class Outcome:
    """What one scenario returns: its rows, notes for the reader, raw figures for the JSON."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


# -- statistics ---------------------------------------------------------------


def percentile(values: Iterable[float], p: float) -> float:
    """Linear-interpolated percentile, ``p`` in [0, 100]."""
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def at_most(value: Value, limit: float) -> bool | None:
    return value <= limit if isinstance(value, float | int) else None


def at_least(value: Value, limit: float) -> bool | None:
    return value >= limit if isinstance(value, float | int) else None


# -- waiting and timing -----------------------------------------------------------


class Timeout(Exception):
    pass


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.002, what: str = "") -> Any:
    """Poll ``predicate`` until truthy; Timeout after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout:g} s waiting for {what or 'a condition'}")
        time.sleep(interval)


def wait_log_complete(
    path: str,
    expected_size: int,
    started: float,
    exited: Callable[[], bool],
    timeout: float,
    quiet: float = 2.0,
) -> tuple[float, bool]:
    """Seconds from ``started`` (perf_counter) until ``path`` holds all its bytes.

    Complete when the file reaches ``expected_size``; a system that loses bytes never
    does, so once ``exited()`` and the file has not grown for ``quiet`` seconds the time
    of its last growth is taken, and the second value is False.
    """
    last_size = -1
    last_growth = time.perf_counter()
    exit_seen = False
    next_exit_check = 0.0
    deadline = started + timeout
    while True:
        now = time.perf_counter()
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            size = 0
        if size != last_size:
            last_size, last_growth = size, now
        if size >= expected_size:
            return now - started, True
        if now >= next_exit_check:
            exit_seen = exit_seen or exited()
            next_exit_check = now + 0.05
        if exit_seen and now - last_growth > quiet:
            return last_growth - started, False
        if now > deadline:
            raise Timeout(f"{path} still at {size} of {expected_size} bytes after {timeout:g} s")
        time.sleep(0.001)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# -- /proc ------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[bytes]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # Field 2 (the command) may hold spaces and parentheses: split after its end.
    return stat[stat.rindex(b")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid``, in seconds."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_reaped(pids: Iterable[int]) -> float:
    """utime + stime of ``pids`` and of the children they reaped (cutime + cstime), in seconds."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        total += sum(int(value) for value in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid), or None if gone."""
    try:
        fields = _stat_fields(pid)
    except (OSError, ValueError):
        return None
    return fields[0].decode(), int(fields[1])


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(p) for p in f.read().split())
    return found


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def all_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def zombies_of(parents: set[int]) -> list[int]:
    """Zombie processes whose parent is one of ``parents``."""
    found = []
    for pid in all_pids():
        state = proc_state(pid)
        if state is not None and state[0] == "Z" and state[1] in parents:
            found.append(pid)
    return found


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


_ROLLUP = re.compile(rb"^(Pss|Rss):\s+(\d+) kB", re.MULTILINE)


def memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of ``pid`` in kB from smaps_rollup; (0, 0) if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            text = f.read()
    except OSError:
        return 0, 0
    values = {name: int(kb) for name, kb in _ROLLUP.findall(text)}
    return values.get(b"Pss", 0), values.get(b"Rss", 0)


def pss_mb(pids: Iterable[int]) -> float:
    return sum(memory_kb(pid)[0] for pid in pids) / 1024


def alive(pid: int) -> bool:
    state = proc_state(pid)
    return state is not None and state[0] != "Z"


def marked_pids(marker: str = MARKER) -> list[int]:
    """Live processes whose environment carries this run's marker."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if needle in environ and alive(pid):
            found.append(pid)
    return found


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def marked_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, MARKER_VAR: MARKER, **(extra or {})}
