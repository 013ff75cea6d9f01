"""The published TypeScript SDK (``sandbox-agent@0.4.2`` from npm) against our server.

``tests/reference/sdk_processes.mjs`` calls each SDK method and prints what it got; this
test checks it. The SDK comes with the reference install (see test_reference_diff.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import REFERENCE_DIR, Server


@pytest.fixture(scope="module")
def sdk_results(reference_installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: install Node.js 18+ to run the TypeScript SDK tests")
    server = Server(tmp_path_factory.mktemp("sdk") / "data", token="sdk-secret").start()
    try:
        result = subprocess.run(
            [node, str(REFERENCE_DIR / "sdk_processes.mjs"), server.url, "sdk-secret"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        server.assert_no_leftovers()
    finally:
        server.stop()
    results = json.loads(result.stdout)
    for name, step in results.items():
        assert "crashed" not in step, f"{name}: {step['crashed']}"
    return results


def test_config(sdk_results: Any) -> None:
    config = sdk_results["config"]
    assert config["before"]["maxOutputBytes"] == 1048576
    assert config["set"]["maxOutputBytes"] == config["after"]["maxOutputBytes"] == 4
    refused = config["refused"]["error"]
    assert refused["isSandboxAgentError"] is True
    assert refused["status"] == 400
    assert refused["problem"]["type"] == "urn:sandbox-agent:error:invalid_request"


def test_run(sdk_results: Any) -> None:
    done, timed_out = sdk_results["run"]["done"], sdk_results["run"]["timedOut"]
    assert (done["exitCode"], done["stdout"], done["stderr"], done["timedOut"]) == (3, "out\n", "err\n", False)
    assert timed_out["timedOut"] is True
    assert timed_out["exitCode"] is None


def test_process_lifecycle(sdk_results: Any) -> None:
    life = sdk_results["lifecycle"]
    created = life["created"]
    assert created["status"] == "running"
    assert created["owner"] == "user"
    assert life["got"]["id"] == created["id"]
    assert created["id"] in life["listed"]
    assert life["none"] == []
    assert life["logsStream"] == "combined"
    assert sorted((e["stream"], e["text"]) for e in life["logs"]) == [("stderr", "two\n"), ("stdout", "one\n")]
    assert [e["sequence"] for e in life["logs"]] == [1, 2]
    assert life["stderrOnly"] == ["two\n"]
    assert life["tail"] == [2]
    assert life["deleteRunning"]["error"]["status"] == 409
    assert life["deleteRunning"]["error"]["problem"]["type"] == "urn:sandbox-agent:error:conflict"
    # since=1: only the second entry; then the stream ended by itself (our exit event).
    assert [e["sequence"] for e in life["followed"]] == [2]
    assert life["stopped"]["status"] == "exited"
    assert "pid" not in life["stopped"]
    assert life["killed"]["status"] == "exited"
    assert life["killed"]["exitSignal"] == 9
    assert life["deleted"] == [None, None]  # deleteProcess resolves to undefined
    assert life["gone"]["error"]["status"] == 404
    assert life["gone"]["error"]["problem"]["type"] == "urn:sandbox-agent:error:not_found"
