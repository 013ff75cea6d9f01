"""State files are replaced atomically: a crash at any instant leaves old or new, whole."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

from conftest import wait_for
from sandbox_agent.supervisor.ondisk import read_json, write_json_atomic

WRITER = """
import sys
from sandbox_agent.supervisor.ondisk import write_json_atomic
path = sys.argv[1]
i = 0
while True:
    write_json_atomic(path, {"i": i, "pad": "x" * (i * 37 % 20000)})
    i += 1
"""


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    path = str(tmp_path / "state.json")
    write_json_atomic(path, {"a": 1, "b": "é"})
    assert read_json(path) == {"a": 1, "b": "é"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_writer_killed_at_any_instant_leaves_a_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    rng = random.Random(7)
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
        try:
            threshold = rng.randrange(5, 400)

            def past_threshold(threshold: int = threshold) -> bool:
                try:
                    return int(json.loads(path.read_bytes())["i"]) >= threshold
                except (FileNotFoundError, ValueError):
                    return False

            wait_for(past_threshold, 30, "the writer to get going")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        data = json.loads(path.read_bytes())  # never torn
        assert data["pad"] == "x" * (data["i"] * 37 % 20000)
        for leftover in tmp_path.glob("*.tmp"):
            leftover.unlink()  # a crash may leave the temporary file: the server sweeps those
