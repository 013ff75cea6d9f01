"""Server settings: flags win over environment variables, which win over defaults."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..supervisor.ondisk import DEFAULT_MAX_LOG_BYTES, MIN_LOG_BYTES

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2468


class ConfigError(Exception):
    """Settings that cannot be used; the message says what to change."""


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "sandbox-agent"


@dataclass
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    no_token: bool = False
    data_dir: Path = field(default_factory=default_data_dir)
    cors_origins: list[str] = field(default_factory=list)
    stop_timeout: float = 10.0
    retain_exited: int | None = None
    retain_seconds: float | None = None
    max_log_bytes: int = DEFAULT_MAX_LOG_BYTES
    log_level: str = "info"
    access_log: bool = False

    @classmethod
    def resolve(
        cls,
        *,
        host: str | None = None,
        port: int | None = None,
        token: str | None = None,
        token_file: str | None = None,
        no_token: bool = False,
        data_dir: str | None = None,
        cors_origins: list[str] | None = None,
        retain_exited: int | None = None,
        retain_for: str | None = None,
        max_log_bytes: str | None = None,
        log_level: str = "info",
        access_log: bool = False,
    ) -> Settings:
        env = os.environ
        if token_file is not None:
            if token is not None:
                raise ConfigError("--token and --token-file both give a token; pass one of them")
            token = _read_token_file(token_file)
        if token is not None and no_token:
            raise ConfigError("--token and --no-token contradict each other; pass one of them")
        if token is None and not no_token:
            token = env.get("SANDBOX_AGENT_TOKEN") or None
        if token is not None and not token.strip():
            raise ConfigError("the token is empty; pass a non-empty --token or --no-token")
        if port is None:
            raw = env.get("SANDBOX_AGENT_PORT")
            try:
                port = int(raw) if raw else DEFAULT_PORT
            except ValueError:
                raise ConfigError(f"SANDBOX_AGENT_PORT={raw!r} is not a port number") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"port {port} is out of range (0-65535)")
        settings = cls(
            host=host or env.get("SANDBOX_AGENT_HOST") or DEFAULT_HOST,
            port=port,
            token=None if no_token else token,
            no_token=no_token,
            data_dir=Path(data_dir or env.get("SANDBOX_AGENT_DATA_DIR") or default_data_dir()).expanduser(),
            cors_origins=list(cors_origins or []),
            retain_exited=_retain_exited(retain_exited, env.get("SANDBOX_AGENT_RETAIN_EXITED")),
            retain_seconds=_duration(retain_for or env.get("SANDBOX_AGENT_RETAIN_FOR")),
            max_log_bytes=_size(max_log_bytes or env.get("SANDBOX_AGENT_MAX_LOG_BYTES")),
            log_level=log_level,
            access_log=access_log,
        )
        if settings.token is None and "*" in settings.cors_origins:
            raise ConfigError(
                "refusing --cors-allow-origin '*' without a token: any web page the user opens could run "
                "commands here and read the answers. Set a token, or allow only the origins you trust."
            )
        if settings.token is None and not settings.no_token and not is_loopback(settings.host):
            raise ConfigError(
                f"refusing to listen on {settings.host} without a token: anyone who can reach it could run "
                "commands here. Set --token (or SANDBOX_AGENT_TOKEN), or pass --no-token if you mean it."
            )
        return settings


def _retain_exited(flag: int | None, env: str | None) -> int | None:
    if flag is None and env:
        try:
            flag = int(env)
        except ValueError:
            raise ConfigError(f"SANDBOX_AGENT_RETAIN_EXITED={env!r} is not a whole number") from None
    if flag is not None and flag < 0:
        raise ConfigError(f"--retain-exited {flag} is negative; give how many exited processes to keep (0 or more)")
    return flag


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str | None) -> float | None:
    """``90``, ``90s``, ``30m``, ``12h`` or ``7d`` as seconds."""
    if not text:
        return None
    number, unit = (text[:-1], text[-1]) if text[-1] in _UNITS else (text, "s")
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        seconds = -1
    if not seconds > 0:
        raise ConfigError(f"--retain-for {text!r} is not a duration; give one like 90s, 30m, 12h or 7d")
    return seconds


_SIZE_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


def _size(text: str | None) -> int:
    """``0``, ``1048576``, ``512K``, ``64M`` or ``2G`` (binary units; a trailing ``iB``/``B``
    is allowed) as bytes; the default cap when not given."""
    if not text:
        return DEFAULT_MAX_LOG_BYTES
    raw = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = _SIZE_UNITS.get(raw[-1:], 1)
    number = raw[:-1] if raw[-1:] in _SIZE_UNITS else raw
    try:
        value = int(number) * scale
    except ValueError:
        value = -1
    if value != 0 and not MIN_LOG_BYTES <= value < 2**63:
        raise ConfigError(
            f"--max-log-bytes {text!r} is not a log cap; give 0 for no cap, or a size of at least 256K "
            "such as 64M or 1G"
        )
    return value


def _read_token_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read the token file {path}: {reason}") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
