"""The OpenAPI document is true: schemathesis, every check, against a real server.

It generates requests from /openapi.json (valid ones and broken ones), sends them, and
checks each answer against the document: status codes, content types, bodies, the Allow
header of a 405, that valid data is accepted and invalid data refused, no 5xx. The one
exception, a start that names no executable, is in tests/fuzz/schemathesis.toml.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Server

pytestmark = [pytest.mark.fuzz, pytest.mark.slow]

FUZZ_DIR = Path(__file__).parent / "fuzz"


def test_schemathesis_finds_no_failure(server: Server, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is missing: install the fuzz extra (scripts/install test does)"
    result = subprocess.run(
        # A fixed seed, so that a run starts the same way every time; the time budget
        # bounds the suite (change the seed to explore further).
        [
            st,
            "run",
            f"{server.url}/openapi.json",
            # Every check runs (schemathesis's default); the few per-operation exceptions,
            # each with its reason, are in fuzz/schemathesis.toml (--checks on the command
            # line would override them).
            "--seed",
            "20261128",
            "--max-examples",
            "15",
            # The stateful phase follows what earlier requests did to the server: not the
            # same run twice. The other phases cover every operation on their own.
            "--phases",
            "examples,coverage,fuzzing",
            "--max-time",
            "40",
            "--workers",
            "1",
        ],
        cwd=FUZZ_DIR,
        capture_output=True,
        text=True,
        timeout=170,  # the time budget above, with room
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SCHEMATHESIS_HOOKS": ""},
    )
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary
    assert " passed" in summary
    assert "failure" not in summary.split("Test cases:")[-1], summary
