"""Checks on a start request, before anything is created.

Each failure is a BadRequest whose detail says what was wrong and what to do, so that a
caller never has to guess from a process that died at once.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from .._exceptions import BadRequest
from ..supervisor.ondisk import DEFAULT_TERMINAL_SIZE, MIN_LOG_BYTES

#: Never handed to the processes we start: a child should not hold the key to the API.
PRIVATE_ENV = ("SANDBOX_AGENT_TOKEN",)


def _check_text(value: str, what: str) -> None:
    """A lone surrogate (JSON ``"\\ud800"``) is no text a program can be given."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(
            f"{what} holds an unpaired UTF-16 surrogate (such as \\ud800), which is not text; "
            "send valid Unicode, or the bytes' UTF-8 encoding"
        ) from None


def check_max_log_bytes(value: int) -> int:
    """A log cap: 0 (no cap) or at least ``MIN_LOG_BYTES``."""
    if value != 0 and not MIN_LOG_BYTES <= value < 2**63:
        raise BadRequest(
            f"maxLogBytes {value} is not a cap a log can keep: give 0 for no cap, or at least {MIN_LOG_BYTES} "
            f"bytes ({MIN_LOG_BYTES // 1024} KiB: each of the two files kept holds half, more than the longest line)"
        )
    return value


def resolve_cwd(cwd: str | None) -> str:
    if cwd is None:
        return os.getcwd()
    _check_text(cwd, "cwd")
    if not cwd or "\0" in cwd:
        raise BadRequest("cwd must be a non-empty path without NUL characters; omit it to use the server's directory")
    path = os.path.abspath(cwd)
    st = _stat(path, f"cwd {cwd!r}", "does not exist; create it first or pass an existing directory")
    if not stat.S_ISDIR(st.st_mode):
        raise BadRequest(f"cwd {cwd!r} is not a directory; pass the directory to run in")
    return path


def server_env() -> dict[str, str]:
    """The environment processes start from: this process's own, less ``PRIVATE_ENV``."""
    return {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}


def build_env(overlay: dict[str, str] | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``overlay`` (checked) over ``base``, or over ``server_env()`` as it is now.

    A server reads its environment once (``ProcessManager.base_env``): decoding
    ``os.environ`` anew was a twentieth of a one-shot run's CPU in the server.
    """
    env = server_env() if base is None else dict(base)
    for name, value in (overlay or {}).items():
        _check_text(name, "an env name")
        _check_text(value, f"the env value of {name!r}")
        if not name:
            raise BadRequest("env has an empty variable name; every name must be non-empty")
        if "=" in name or "\0" in name:
            raise BadRequest(f"env name {name!r} contains '=' or a NUL character, which a variable name cannot hold")
        if "\0" in value:
            raise BadRequest(f"env value of {name!r} contains a NUL character, which the environment cannot carry")
        env[name] = value
    return env


def resolve_command(command: str, cwd: str, env: dict[str, str]) -> str:
    """The absolute path that will be executed for ``command``."""
    _check_text(command, "command")
    if not command or not command.strip():
        raise BadRequest("command is empty; give a program name such as 'python3' or a path")
    if "\0" in command:
        raise BadRequest("command contains a NUL character")
    if "/" in command:
        path = os.path.join(cwd, command)
        _check_executable(path, command)
        return os.path.normpath(path)
    search = env.get("PATH", os.defpath)
    for entry in search.split(os.pathsep):
        candidate = f"{entry}/{command}" if entry.startswith("/") else os.path.join(cwd, entry or ".", command)
        if _is_executable_file(candidate):
            return os.path.normpath(candidate)
    raise BadRequest(
        f"command {command!r} was not found in PATH ({search}); check the spelling, install it, or give its full path"
    )


def _is_executable_file(path: str) -> bool:
    # access first: most entries of a long PATH miss, and a missed access costs no
    # exception (a missed stat's was half the search: 25 against 13 us over 11 entries).
    if not os.access(path, os.X_OK):
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode)


def _stat(path: str, what: str, missing: str) -> os.stat_result:
    """``os.stat`` whose failures are BadRequests naming ``what``."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise BadRequest(f"{what} {missing}") from None
    except OSError as exc:
        raise BadRequest(f"{what} cannot be used: {exc.strerror}") from exc


def _check_executable(path: str, command: str) -> None:
    st = _stat(path, f"command {command!r}", f"does not exist (looked for {path})")
    if stat.S_ISDIR(st.st_mode):
        raise BadRequest(f"command {command!r} is a directory, not a program")
    if not os.access(path, os.X_OK):
        raise BadRequest(
            f"command {command!r} is not executable; run chmod +x on it or start it through its interpreter"
        )


def check_args(args: list[str]) -> None:
    for arg in args:
        _check_text(arg, "an argument")
        if "\0" in arg:
            raise BadRequest("an argument contains a NUL character, which a command line cannot carry")


def check_terminal_size(size: tuple[int, int] | None) -> list[int]:
    """``[cols, rows]`` of a new or resized terminal (the default size when None)."""
    if size is None:
        return list(DEFAULT_TERMINAL_SIZE)
    cols, rows = size
    for name, value in (("cols", cols), ("rows", rows)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise BadRequest(f"terminal {name} must be a whole number from 0 to 65535; got {value!r}")
    return [cols, rows]
