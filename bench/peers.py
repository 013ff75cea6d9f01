"""The peers: supervisord (PyPI, over XML-RPC), pm2 (npm, through its programmatic API),
and the original sandbox-agent server (npm ``@sandbox-agent/cli-linux-x64``, over its own
``/v1/processes``).

All are installed by the suite into ``bench/.peers/`` and run with every file they make
inside a scratch folder. ``close()`` stops the daemon and anything it still runs, and
checks that nothing is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from . import _harness as h

PEERS_DIR = h.BENCH_DIR / ".peers"
SUPERVISOR_VENV = PEERS_DIR / "supervisor"
PM2_PREFIX = PEERS_DIR / "pm2"
PM2_MODULE = PM2_PREFIX / "node_modules" / "pm2"
DRIVER = h.BENCH_DIR / "_pm2_driver.js"
ORIGINAL_PACKAGE = "@sandbox-agent/cli-linux-x64"
ORIGINAL_PREFIX = PEERS_DIR / "original"
ORIGINAL_MODULE = ORIGINAL_PREFIX / "node_modules" / "@sandbox-agent" / "cli-linux-x64"
ORIGINAL_BIN = ORIGINAL_MODULE / "bin" / "sandbox-agent"
#: The version the differential tests pin (one pin for both).
REFERENCE_PACKAGE_JSON = h.BENCH_DIR.parent / "tests" / "reference" / "package.json"


class PeerUnavailable(Exception):
    """A peer cannot be installed or run here; the message says why."""


@dataclass
class Availability:
    supervisord: str | None = None  # None: usable; otherwise why not
    pm2: str | None = None
    original: str | None = None
    supervisord_version: str = ""
    pm2_version: str = ""
    original_version: str = ""


def _run(args: list[str], timeout: float) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"{shlex.join(args[:3])}: {exc}") from exc
    if done.returncode != 0:
        raise PeerUnavailable(f"{shlex.join(args[:3])} failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return done.stdout


def install_supervisor(allow: bool) -> str:
    """The installed supervisor version; installs it into its own venv if ``allow``."""
    binary = SUPERVISOR_VENV / "bin" / "supervisord"
    if not binary.exists():
        if not allow:
            raise PeerUnavailable("not installed in bench/.peers (run without --no-install)")
        _run([h.PYTHON, "-m", "venv", "--clear", str(SUPERVISOR_VENV)], 120)
        _run([str(SUPERVISOR_VENV / "bin" / "pip"), "install", "-q", "supervisor"], 300)
    return _run([str(binary), "--version"], 30).strip()


def install_pm2(allow: bool) -> str:
    if shutil.which("node") is None:
        raise PeerUnavailable("node is not installed")
    package = PM2_MODULE / "package.json"
    if not package.exists():
        if not allow:
            raise PeerUnavailable("not installed in bench/.peers (run without --no-install)")
        if shutil.which("npm") is None:
            raise PeerUnavailable("npm is not installed")
        _run(["npm", "install", "--prefix", str(PM2_PREFIX), "--no-audit", "--no-fund", "pm2"], 300)
    version: str = json.loads(package.read_text())["version"]
    return version


def original_pin() -> str:
    """The version of the original server that tests/reference/package.json pins."""
    try:
        version: str = json.loads(REFERENCE_PACKAGE_JSON.read_text())["dependencies"][ORIGINAL_PACKAGE]
    except (OSError, ValueError, KeyError):
        return "0.4.2"
    return version


def install_original(allow: bool) -> str:
    """The original server's binary from npm (the pinned version), into bench/.peers/original."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise PeerUnavailable(f"{ORIGINAL_PACKAGE} is built for Linux x86-64 only")
    pin = original_pin()
    package = ORIGINAL_MODULE / "package.json"
    installed = json.loads(package.read_text()).get("version") if package.exists() else None
    if installed != pin:
        if not allow:
            raise PeerUnavailable(f"{ORIGINAL_PACKAGE}@{pin} not installed in bench/.peers (run without --no-install)")
        if shutil.which("npm") is None:
            raise PeerUnavailable("npm is not installed")
        spec = f"{ORIGINAL_PACKAGE}@{pin}"
        _run(["npm", "install", "--prefix", str(ORIGINAL_PREFIX), "--no-audit", "--no-fund", spec], 300)
    ORIGINAL_BIN.chmod(0o755)  # npm may skip the package's own chmod (install scripts)
    version: str = json.loads(package.read_text())["version"]
    return version


def check(names: list[str], allow_install: bool) -> Availability:
    found = Availability()
    if "supervisord" in names:
        try:
            found.supervisord_version = install_supervisor(allow_install)
        except PeerUnavailable as exc:
            found.supervisord = str(exc)
    else:
        found.supervisord = "not selected (--peers)"
    if "pm2" in names:
        try:
            found.pm2_version = install_pm2(allow_install)
        except PeerUnavailable as exc:
            found.pm2 = str(exc)
    else:
        found.pm2 = "not selected (--peers)"
    if "original" in names:
        try:
            found.original_version = install_original(allow_install)
        except PeerUnavailable as exc:
            found.original = str(exc)
    else:
        found.original = "not selected (--peers)"
    return found


@dataclass
class Program:
    command: list[str]
    numprocs: int = 1


class Supervisord:
    """A supervisord with ``programs`` configured (not started), driven over XML-RPC."""

    def __init__(self, scratch: Path, programs: dict[str, Program]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="supervisord-", dir=scratch))
        self.port = h.free_port()
        self.programs = programs
        self.proc: subprocess.Popen[bytes] | None = None
        self.rpc: Any = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.port}/RPC2")

    def log_path(self, process: str) -> str:
        return str(self.dir / f"{process}.out")

    def _config(self) -> str:
        lines = [
            "[supervisord]",
            f"logfile={self.dir / 'supervisord.log'}",
            f"pidfile={self.dir / 'supervisord.pid'}",
            f"childlogdir={self.dir}",
            "nodaemon=true",
            "loglevel=warn",
            "minfds=1024",
            "[inet_http_server]",
            f"port=127.0.0.1:{self.port}",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        ]
        for name, program in self.programs.items():
            process_name = "%(program_name)s_%(process_num)03d" if program.numprocs > 1 else "%(program_name)s"
            lines += [
                f"[program:{name}]",
                f"command={shlex.join(program.command)}",
                f"process_name={process_name}",
                f"numprocs={program.numprocs}",
                "autostart=false",
                "autorestart=false",
                "startsecs=0",
                "startretries=0",
                "stopsignal=TERM",
                "stopwaitsecs=10",
                "stopasgroup=true",
                "killasgroup=true",
                f"stdout_logfile={self.dir}/{process_name}.out",
                "stdout_logfile_maxbytes=0",
                "stdout_logfile_backups=0",
                f"stderr_logfile={self.dir}/{process_name}.err",
                "stderr_logfile_maxbytes=0",
                "stderr_logfile_backups=0",
            ]
        return "\n".join(lines) + "\n"

    def __enter__(self) -> Supervisord:
        conf = self.dir / "supervisord.conf"
        conf.write_text(self._config())
        binary = str(SUPERVISOR_VENV / "bin" / "supervisord")
        with open(self.dir / "stdout.txt", "ab") as out:
            self.proc = subprocess.Popen([binary, "-c", str(conf)], env=h.marked_env(), stdout=out, stderr=out)
        h.wait_until(self._ready, 30, 0.02, "supervisord's XML-RPC server")
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise PeerUnavailable(f"supervisord exited: {(self.dir / 'stdout.txt').read_text()[-500:]}")
        try:
            return bool(self.rpc.supervisor.getState()["statename"] == "RUNNING")
        except (OSError, xmlrpc.client.Error):
            return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def states(self) -> dict[str, str]:
        """``group:name`` -> state name of every process."""
        return {f"{p['group']}:{p['name']}": p["statename"] for p in self.rpc.supervisor.getAllProcessInfo()}

    def process_names(self, program: str) -> list[str]:
        return sorted(name for name in self.states() if name.startswith(f"{program}:"))

    def managed_pids(self) -> set[int]:
        return {p["pid"] for p in self.rpc.supervisor.getAllProcessInfo() if p["pid"]}

    def proxies(self, count: int) -> list[Any]:
        """Clients for concurrent calls (one ServerProxy must not be shared between threads)."""
        return [xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.port}/RPC2") for _ in range(count)]

    def each(self, method: str, names: list[str], proxies: list[Any], pool: ThreadPoolExecutor) -> None:
        """``method(name, wait=True)`` for every name at once: returns when all have completed."""

        def call(pair: tuple[str, Any]) -> None:
            getattr(pair[1].supervisor, method)(pair[0], True)

        list(pool.map(call, zip(names, proxies, strict=True)))

    def close(self) -> None:
        if self.proc is None:
            return
        children = set(h.descendants(self.proc.pid))
        with contextlib.suppress(OSError, xmlrpc.client.Error):
            self.rpc.supervisor.stopAllProcesses(True)
        with contextlib.suppress(OSError, xmlrpc.client.Error):
            self.rpc.supervisor.shutdown()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        h.kill_all(p for p in children if h.alive(p))
        shutil.rmtree(self.dir, ignore_errors=True)


class Pm2:
    """A pm2 daemon with its PM2_HOME in scratch, driven by ``_pm2_driver.js``."""

    def __init__(self, scratch: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pm2-", dir=scratch))
        self.home = self.dir / "home"
        self.driver: subprocess.Popen[str] | None = None
        self._stderr: IO[bytes] | None = None

    def log_path(self, name: str) -> str:
        return str(self.dir / f"{name}.out")

    def __enter__(self) -> Pm2:
        env = h.marked_env({"PM2_HOME": str(self.home), "PM2_MODULE": str(PM2_MODULE)})
        self._stderr = open(self.dir / "driver.err", "ab")
        self.driver = subprocess.Popen(
            ["node", str(DRIVER)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=self.dir,
        )
        ready = self._reply(60)
        if not ready.get("ok"):
            raise PeerUnavailable(f"pm2 did not start: {ready.get('error')}")
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _reply(self, timeout: float) -> dict[str, Any]:
        assert self.driver is not None
        assert self.driver.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.driver.stdout.readline()
            if not line:
                raise PeerUnavailable(f"the pm2 driver exited: {(self.dir / 'driver.err').read_text()[-500:]}")
            if line.startswith("@@pm2 "):
                reply: dict[str, Any] = json.loads(line[6:])
                return reply
        raise PeerUnavailable("the pm2 driver did not answer")

    def call(self, op: str, timeout: float = 120, **fields: Any) -> dict[str, Any]:
        assert self.driver is not None
        assert self.driver.stdin is not None
        self.driver.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.driver.stdin.flush()
        reply = self._reply(timeout)
        if not reply.get("ok"):
            raise RuntimeError(f"pm2 {op}: {reply.get('error')}")
        return reply

    def app(self, name: str, command: list[str]) -> dict[str, Any]:
        return {"name": name, "script": command[0], "args": command[1:], "out": self.log_path(name)}

    def start(self, apps: list[dict[str, Any]]) -> None:
        self.call("start", apps=apps)

    def list(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.call("list")["list"]
        return found

    def daemon_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.home / "pm2.pid").read_text().strip())
        return None

    def overhead_pids(self) -> set[int]:
        """The daemon and whatever it runs that is not a managed app."""
        daemon = self.daemon_pid()
        if daemon is None:
            return set()
        managed = {p["pid"] for p in self.list() if p["pid"]}
        return {daemon} | {p for p in h.descendants(daemon) if p not in managed}

    def close(self) -> None:
        if self.driver is None:
            return
        daemon = self.daemon_pid()
        leftovers = set(h.descendants(daemon)) if daemon else set()
        try:
            self.call("kill", timeout=30)
            self.driver.wait(15)
        except (PeerUnavailable, RuntimeError, OSError, subprocess.TimeoutExpired):
            self.driver.kill()
            self.driver.wait()
        self.driver = None
        if self._stderr is not None:
            self._stderr.close()
        if daemon is not None:
            with contextlib.suppress(h.Timeout):
                h.wait_until(lambda: not h.alive(daemon), 10, 0.02, "the pm2 daemon to exit")
            h.kill_all([daemon] if h.alive(daemon) else [])
        h.kill_all(p for p in leftovers if h.alive(p))
        shutil.rmtree(self.dir, ignore_errors=True)


class Original:
    """The original sandbox-agent server on a free port, with a throwaway HOME, driven over
    its own ``/v1/processes`` (the timed requests go through ``_rawhttp``)."""

    def __init__(self, scratch: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="original-", dir=scratch))
        self.home = self.dir / "home"
        self.port = h.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=60, limits=httpx.Limits(max_keepalive_connections=0))

    def __enter__(self) -> Original:
        self.home.mkdir()
        extra = {"HOME": str(self.home)}
        for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
            extra[name] = str(self.home / name.lower())
        args = [str(ORIGINAL_BIN), "server", "--no-token", "--no-telemetry", "--host", "127.0.0.1"]
        with open(self.dir / "server.log", "ab") as log:
            # A session of its own: what it starts shares its group, and close() ends the group.
            self.proc = subprocess.Popen(
                [*args, "--port", str(self.port)],
                env=h.marked_env(extra),
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        h.wait_until(self._healthy, 30, 0.02, f"the original server on port {self.port}")
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.dir / "server.log").read_text(errors="replace")[-500:]
            raise PeerUnavailable(f"the original server exited with {self.proc.returncode}: {log}")
        try:
            return self.http.get("/v1/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, command: str, args: list[str] | None = None) -> dict[str, Any]:
        response = self.http.post("/v1/processes", json={"command": command, "args": args or []})
        if response.status_code != 200:
            raise RuntimeError(f"original: start {command}: {response.status_code} {response.text}")
        data: dict[str, Any] = response.json()
        return data

    def processes(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.http.get("/v1/processes").json()["processes"]
        return data

    def managed_pids(self) -> set[int]:
        return {p["pid"] for p in self.processes() if p["status"] == "running" and isinstance(p.get("pid"), int)}

    def overhead_pids(self) -> set[int]:
        """The server and whatever it runs that is not a managed process."""
        managed = self.managed_pids()
        return {self.pid} | {p for p in h.descendants(self.pid) if p not in managed}

    def close(self) -> None:
        if self.proc is not None:
            leftovers = set(h.descendants(self.proc.pid))
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                for process in self.processes():
                    if process["status"] == "running":
                        self.http.post(f"/v1/processes/{process['id']}/kill", params={"waitMs": "1000"})
            leftovers |= set(h.descendants(self.proc.pid))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(15)
            self.proc = None
            h.kill_all(p for p in leftovers if h.alive(p))
        self.http.close()
        shutil.rmtree(self.dir, ignore_errors=True)
