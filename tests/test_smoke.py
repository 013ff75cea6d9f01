from __future__ import annotations

import httpx

from conftest import py, start, wait_exited


def test_start_and_exit(client: httpx.Client) -> None:
    process = start(client, py("print('hello'); raise SystemExit(3)"))
    final = wait_exited(client, process["id"])
    assert final["status"] == "stopped"
    assert final["exitCode"] == 3
    logs = client.get(f"/v1/process/{process['id']}/logs", params={"strip_timestamps": "true"}).json()
    assert logs == {"content": "[stdout] hello\n", "lines": 1}
