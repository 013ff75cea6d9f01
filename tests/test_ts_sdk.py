"""The published TypeScript SDK (``sandbox-agent@0.4.2`` from npm) against our server.

``tests/reference/sdk_processes.mjs`` calls each SDK method and prints what it got; this
test checks it. The SDK comes with the reference install (see test_reference_diff.py).
Both servers need a token, so the terminal's WebSocket is reached the SDK's way, with
``?access_token=`` in its URL. The input and terminal steps also run against the original
server (0.4.2), and the same checks hold for both where the two agree: that shows the
script is right. Where we differ on purpose, the check says which entry of DIFFERENCES
(test_reference_diff.py) it is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import REFERENCE_DIR, Reference, Server
from test_reference_diff import DIFFERENCES

TOKEN = "sdk-secret"
#: The steps that also run against the original (its follow never ends: not "lifecycle").
BOTH_STEPS = ("input", "terminal", "terminalSessions")


def run_script(base_url: str, steps: tuple[str, ...] = ()) -> Any:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: install Node.js 18+ to run the TypeScript SDK tests")
    command = [node, str(REFERENCE_DIR / "sdk_processes.mjs"), base_url, TOKEN]
    if steps:
        command.append(",".join(steps))
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    for name, step in results.items():
        assert "crashed" not in step, f"{name}: {step['crashed']}"
    return results


@pytest.fixture(scope="module")
def sdk_results(reference_installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = Server(tmp_path_factory.mktemp("sdk") / "data", token=TOKEN).start()
    try:
        results = run_script(server.url)
        server.assert_no_leftovers()
    finally:
        server.stop()
    return results


@pytest.fixture(scope="module")
def reference_results(reference_installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    reference = Reference(tmp_path_factory.mktemp("sdk-reference"), token=TOKEN)
    try:
        return run_script(reference.url, BOTH_STEPS)
    finally:
        reference.stop()


@pytest.fixture(params=["ours", "original"])
def both_results(request: pytest.FixtureRequest) -> tuple[str, Any]:
    """(which server, its results) for each of the two servers."""
    fixture = "sdk_results" if request.param == "ours" else "reference_results"
    return request.param, request.getfixturevalue(fixture)


def problem_of(step: dict[str, Any], status: int, kind: str) -> dict[str, Any]:
    error = step["error"]
    assert error is not None, "the SDK call did not fail"
    assert error["isSandboxAgentError"] is True
    assert error["status"] == status, error
    problem: dict[str, Any] = error["problem"]
    assert problem["type"] == f"urn:sandbox-agent:error:{kind}", problem
    assert problem["status"] == status
    return problem


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


def test_input(both_results: tuple[str, Any]) -> None:
    _, results = both_results
    step = results["input"]
    # base64 by default, utf8 and text as is; bytesWritten counts bytes, not characters.
    assert step["written"] == [{"bytesWritten": 4}, {"bytesWritten": 5}, {"bytesWritten": 6}, {"bytesWritten": 0}]
    assert step["echoed"] == "one\ntwó\nthree\n"
    problem_of(step["badBase64"], 400, "invalid_request")
    problem_of(step["badEncoding"], 400, "invalid_request")
    assert problem_of(step["tooBig"], 413, "invalid_request")["title"] == "Payload Too Large"
    problem_of(step["unknown"], 404, "not_found")
    problem_of(step["exited"], 409, "conflict")


def test_terminal_session(both_results: tuple[str, Any]) -> None:
    which, results = both_results
    step = results["terminal"]
    assert step["resized"] == {"cols": 100, "rows": 30}
    # The SDK puts the token in the query string: the only way our server accepted it here.
    prefix = "ws://127.0.0.1:"
    path = f"/v1/processes/{step['id']}/terminal/ws"
    assert step["url"].startswith(prefix)
    assert step["url"].endswith(f"{path}?access_token={TOKEN}")
    assert step["otherUrl"].endswith(f"{path}?access_token=other")
    assert step["urlWithoutToken"].endswith(path)
    assert step["ready"] == [{"type": "ready", "processId": step["id"]}]
    assert step["exit"] == [{"type": "exit", "exitCode": 7}]
    assert step["errors"] == []
    assert step["closes"] == 1
    output = step["output"]
    # In order: the shell's answer, the size set over HTTP, the size set through the session.
    answer, first, second = output.index("answer-42\r\n"), output.index("30 100\r\n"), output.index("20 50\r\n")
    assert answer < first < second
    assert "# exit 7\r\n" in output or "$ exit 7\r\n" in output
    if which == "original":
        # Its reader's EIO at the exit goes to the clients as output; ours is not output.
        assert output.endswith("\n[process stream error: I/O error (os error 5)]\n")
        assert "no-eio-output" in DIFFERENCES
    else:
        assert "process stream error" not in output
    assert step["after"] == {"status": "exited", "exitCode": 7}
    problem_of(step["resizeExited"], 409, "conflict")
    problem_of(step["resizePipe"], 409, "conflict")
    problem_of(step["resizeUnknown"], 404, "not_found")


def test_terminal_sessions_close_kill_errors_and_token(both_results: tuple[str, Any]) -> None:
    _, results = both_results
    step = results["terminalSessions"]
    # close() ends the session, not the process.
    assert step["afterClose"] == "running"
    assert step["firstExit"] == step["firstErrors"] == []
    # A frame that is not JSON: an error frame, and the socket stays open.
    ready, error = step["rawFrames"]
    assert ready["type"] == "ready"
    assert set(error) == {"type", "message"}
    assert error["type"] == "error"
    assert error["message"].startswith("invalid terminal frame")
    assert step["stillOpen"] is True
    # A wrong access_token: refused before the upgrade.
    assert step["wrongToken"] == "Unexpected server response: 401"
    # Killed: the exit frame holds a null exitCode (the key is there).
    assert step["killedExit"] == [{"type": "exit", "exitCode": None}]
    assert step["killedErrors"] == []
