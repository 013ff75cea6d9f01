"""The benchmark suite at tiny sizes, so that it does not rot. No network: the peers
(supervisord, pm2, the original server) take part only if a full run (or
``python -m bench --install-only``) already installed them in bench/.peers/.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / ".peers"
SCENARIOS = ["spawn", "ingest-bulk", "ingest-lines", "fidelity", "follow-latency", "fan-out", "memory"]
SCENARIOS += ["list", "stop", "churn", "exit-visible", "run-echo", "follow-delay"]
SCENARIOS += ["follow-many", "big-writer", "memory-pythons"]
#: What marks each peer installed in bench/.peers/.
PEER_FILES = {
    "supervisord": PEERS / "supervisor" / "bin" / "supervisord",
    "pm2": PEERS / "pm2" / "node_modules" / "pm2" / "package.json",
    "original": PEERS / "original" / "node_modules" / "@sandbox-agent" / "cli-linux-x64" / "bin" / "sandbox-agent",
}

pytestmark = pytest.mark.slow


def installed_peers() -> list[str]:
    return [name for name, path in PEER_FILES.items() if path.exists()]


def peers_installed() -> bool:
    return all(name in installed_peers() for name in ("supervisord", "pm2"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    results = tmp_path_factory.mktemp("bench-results")
    args = [sys.executable, "-m", "bench", "--quick", "--no-install", "--results-dir", str(results)]
    args += ["--peers", ",".join(installed_peers()) or "none"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=170, check=False)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    (path,) = results.glob("bench-*.json")
    document: dict[str, Any] = json.loads(path.read_text())
    document["stdout"] = done.stdout
    return document


def test_every_scenario_reports_ours_and_the_floor(run: dict[str, Any]) -> None:
    scenarios = {row["scenario"] for row in run["rows"]}
    assert scenarios == set(SCENARIOS)
    for row in run["rows"]:
        assert not str(row["metric"]).startswith("ERROR"), row
        assert row["ours"] is not None, row
    with_floor = ("spawn", "ingest-bulk", "ingest-lines", "big-writer")
    floors = [row["floor"] for row in run["rows"] if row["scenario"] in with_floor]
    assert all(isinstance(value, float) for value in floors), floors
    assert "| scenario" in run["stdout"]
    assert run["left_behind"] == []


def test_our_logs_are_exact(run: dict[str, Any]) -> None:
    fidelity = [row for row in run["rows"] if row["scenario"] == "fidelity"]
    assert len(fidelity) == 2
    assert all(str(row["ours"]).startswith("exact") for row in fidelity), fidelity


def test_peers(run: dict[str, Any]) -> None:
    if not peers_installed():
        pytest.skip("peers skipped: supervisord and pm2 are not in bench/.peers (`python -m bench` installs them)")
    stop = next(row for row in run["rows"] if row["scenario"] == "stop")
    assert isinstance(stop["supervisord"], float), stop
    assert isinstance(stop["pm2"], float), stop


def test_original(run: dict[str, Any]) -> None:
    if "original" not in installed_peers():
        pytest.skip("the original server is not in bench/.peers (`python -m bench --install-only` installs it)")
    hot = [row for row in run["rows"] if row["scenario"] in ("exit-visible", "run-echo", "follow-delay")]
    assert len(hot) == 12, hot
    assert all(isinstance(row["original"], float) for row in hot), hot
    idle = next(row for row in run["rows"] if row["metric"].startswith("idle server"))
    assert isinstance(idle["original"], float), idle
    scale = [row for row in run["rows"] if row["scenario"] in ("follow-many", "big-writer")]
    assert len(scale) == 6, scale
    assert all(isinstance(row["original"], float) for row in scale), scale
    # This Python at least has a row, beside the original.
    pythons = [row for row in run["rows"] if row["scenario"] == "memory-pythons"]
    here = f"Python {sys.version_info[0]}.{sys.version_info[1]}."
    mine = [row for row in pythons if row["metric"].startswith(here)]
    assert len(mine) == 2, pythons
    assert all(isinstance(row["original"], float) and isinstance(row["ours"], float) for row in mine), mine
    assert "ours/orig" in run["stdout"]


def test_ab_sets_two_builds_side_by_side() -> None:
    """``python -m bench.ab REV`` runs this checkout and REV's ``src/`` in turn and prints
    both builds' figures and their ratio, for each scenario."""
    args = [sys.executable, "-m", "bench.ab", "HEAD", "-n", "5", "--gap", "0"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    lines = done.stdout.splitlines()
    assert "5 samples per build" in lines[0]
    for what in ("start", "run"):
        for build in ("this checkout", "HEAD"):
            (line,) = [line for line in lines if line.split(":")[0].split() == [what, *build.split()]]
            p50, p90 = (float(part.split()[1]) for part in line.split(": ", 1)[1].split(", ")[:2])
            assert 0 < p50 <= p90, line
        (ratio,) = [line for line in lines if line.startswith(f"{what} ") and "this checkout / HEAD" in line]
        assert float(ratio.rsplit(" ", 1)[1].rstrip("x")) > 0


def test_follow_split_stamps_every_line_in_the_file_and_at_the_follower() -> None:
    args = [sys.executable, "-m", "bench.follow_split", "--rounds", "1", "--seconds", "1", "--no-install"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    counts = [int(line.rsplit("(", 1)[1].split()[0]) for line in done.stdout.splitlines() if "ours:" in line]
    # A line every 10 ms for a second: both stamps saw most of them (the first few may
    # come before the follower and the watcher are in place).
    assert len(counts) == 2, done.stdout
    assert all(count >= 50 for count in counts), done.stdout
