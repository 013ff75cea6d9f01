"""Our server under test: a real ``sandbox-agent server`` on a free port, a fresh data dir."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from . import _harness as h

EXITED = ("stopped", "killed")


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


class OurServer:
    """``with OurServer() as server:`` starts it; leaving kills what it runs and stops it."""

    def __init__(
        self, scratch: Path, python: str = h.PYTHON, env: dict[str, str] | None = None, options: tuple[str, ...] = ()
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ours-", dir=scratch))
        #: More options for ``sandbox-agent server`` (``--max-log-bytes 0``).
        self.options = options
        #: The interpreter that runs the server (and so its launcher and supervisors).
        self.python = python
        self.env = env
        self.data_dir = self.dir / "data"
        self.port = h.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        # No keep-alive for these untimed calls: uvicorn closes a connection idle for 5 s,
        # and a request sent just then on the stale connection fails with ReadError.
        self.http = httpx.Client(base_url=self.url, timeout=60, limits=httpx.Limits(max_keepalive_connections=0))

    def __enter__(self) -> OurServer:
        args = [self.python, "-m", "sandbox_agent", "server", "--port", str(self.port)]
        args += ["--data-dir", str(self.data_dir), *self.options]
        with open(self.dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [*args, "--log-level", "warning"], env=h.marked_env(self.env), stdout=log, stderr=subprocess.STDOUT
            )
        h.wait_until(self._healthy, 30, 0.02, f"our server on port {self.port} (log {self.dir / 'server.log'})")
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.dir / "server.log").read_text()
            raise RuntimeError(f"our server exited with {self.proc.returncode}: {log}")
        try:
            return self.http.get("/v1/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # -- the API -------------------------------------------------------------------

    def start(self, command: str, args: list[str] | None = None) -> dict[str, Any]:
        response = self.http.post("/v1/process", json={"command": command, "args": args or []})
        if response.status_code != 201:
            raise RuntimeError(f"start {command}: {response.status_code} {response.text}")
        data: dict[str, Any] = response.json()
        return data

    def get(self, process_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.http.get(f"/v1/process/{process_id}").json()
        return data

    def processes(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.http.get("/v1/process").json()["processes"]
        return data

    def exited(self, process_id: str) -> bool:
        return self.get(process_id)["status"] in EXITED

    def all_exited(self, ids: set[str]) -> bool:
        return all(p["status"] in EXITED for p in self.processes() if p["id"] in ids)

    # -- what runs beside the managed processes ------------------------------------------

    def states(self) -> list[dict[str, Any]]:
        found = []
        for path in (self.data_dir / "processes").glob("*/state.json"):
            with contextlib.suppress(OSError, ValueError):
                found.append(json.loads(path.read_bytes()))
        return found

    def supervisor_pids(self) -> set[int]:
        running = (s["supervisorPid"] for s in self.states() if s.get("status") == "running")
        return {pid for pid in running if h.alive(pid)}

    def managed_pids(self) -> set[int]:
        return {s["pid"] for s in self.states() if s.get("status") == "running" and isinstance(s.get("pid"), int)}

    def launcher_pids(self) -> set[int]:
        return set(h.children(self.pid))

    def spare_pids(self) -> set[int]:
        """The launcher's spare supervisors (named ``sa-spare``): ours, never left behind."""
        return {pid for launcher in self.launcher_pids() for pid in h.children(launcher) if _comm(pid) == "sa-spare"}

    def overhead_pids(self) -> dict[str, set[int]]:
        """The server, the launcher and other helpers, and the supervisors: all but the managed."""
        managed = self.managed_pids()
        supervisors = self.supervisor_pids()
        others = {p for p in h.descendants(self.pid) if p not in managed and p not in supervisors}
        return {"server": {self.pid}, "helpers": others, "supervisors": supervisors}

    # -- cleanup ---------------------------------------------------------------------

    def kill_running(self) -> None:
        running = [s for s in self.states() if s.get("status") == "running"]
        for state in running:
            with contextlib.suppress(httpx.HTTPError):
                self.http.post(f"/v1/process/{state['id']}/kill")
        pids = {s["supervisorPid"] for s in running} | {s["pid"] for s in running if s.get("pid")}
        with contextlib.suppress(h.Timeout):
            h.wait_until(lambda: not any(h.alive(p) for p in pids), 10, 0.01, "killed processes to end")
        h.kill_all(p for p in pids if h.alive(p))

    def close(self) -> None:
        if self.proc is not None:
            try:
                if self.proc.poll() is None:
                    self.kill_running()
            finally:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                self.proc = None
        self.http.close()
        shutil.rmtree(self.dir, ignore_errors=True)
