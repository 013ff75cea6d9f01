"""The ``sandbox-agent`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .._version import __version__
from . import _process

SERVER_EXAMPLES = """\
examples:
  sandbox-agent server                          # 127.0.0.1:2468, data in ~/.local/share/sandbox-agent
  sandbox-agent server --port 8080 --data-dir /tmp/sa
  sandbox-agent server --host 0.0.0.0 --token "$(openssl rand -hex 16)"
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandbox-agent",
        description="Run and drive the sandbox-agent process manager.",
    )
    parser.add_argument("--version", action="version", version=f"sandbox-agent {__version__}")
    # Options of the client commands; dests apart from the server's own --token.
    parser.add_argument(
        "--url",
        dest="client_url",
        metavar="URL",
        help="server to talk to (env SANDBOX_AGENT_URL; default http://127.0.0.1:2468)",
    )
    parser.add_argument(
        "--token", dest="client_token", metavar="TOKEN", help="bearer token for that server (env SANDBOX_AGENT_TOKEN)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    server = commands.add_parser(
        "server",
        help="run the HTTP server",
        description="Serve the process API (/v1), its OpenAPI document and the inspector (/ui/).",
        epilog=SERVER_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    server.add_argument("--host", help="address to listen on (env SANDBOX_AGENT_HOST; default 127.0.0.1)")
    server.add_argument("--port", type=int, help="port to listen on (env SANDBOX_AGENT_PORT; default 2468)")
    auth = server.add_mutually_exclusive_group()
    auth.add_argument(
        "--token",
        help="require 'Authorization: Bearer TOKEN' (env SANDBOX_AGENT_TOKEN); other users' `ps` shows "
        "a command-line token, so prefer --token-file or the env var",
    )
    auth.add_argument("--token-file", metavar="PATH", help="read the token from PATH (its first line)")
    auth.add_argument(
        "--no-token", action="store_true", help="allow a non-loopback address without a token (anyone can run commands)"
    )
    server.add_argument("--data-dir", help="where state and logs live (env SANDBOX_AGENT_DATA_DIR)")
    server.add_argument(
        "--cors-allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let browser pages from ORIGIN call the API (repeatable; '*' for any)",
    )
    server.add_argument(
        "--retain-exited",
        type=int,
        metavar="N",
        help="keep only the newest N exited processes, forgetting older ones and their logs "
        "(env SANDBOX_AGENT_RETAIN_EXITED; default: keep all until deleted)",
    )
    server.add_argument(
        "--retain-for",
        metavar="DURATION",
        help="forget exited processes, and their logs, this long after they exited: 90s, 30m, 12h, 7d "
        "(env SANDBOX_AGENT_RETAIN_FOR; default: keep them)",
    )
    server.add_argument(
        "--max-log-bytes",
        metavar="SIZE",
        help="cap each log of a process on disk at SIZE (64M, 1G; at least 256K), keeping the newest; "
        "0 for no cap (env SANDBOX_AGENT_MAX_LOG_BYTES; default 64M)",
    )
    server.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    server.add_argument("--access-log", action="store_true", help="log every request")
    _process.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Not kept in a local: the server runs inside this call, and the parser of every
    # command (about half a megabyte) would stay alive for as long as it does.
    args = build_parser().parse_args(argv)
    if args.command == "server":
        return _server(args)
    if args.command == "process":
        return _process.main(args)
    build_parser().print_help()
    return 2


def _server(args: argparse.Namespace) -> int:
    # Uvicorn imports watchfiles at import time for --reload, which this server never
    # uses; in this process only, keep it out (it falls back to its own stat reloader).
    sys.modules.setdefault("watchfiles", None)  # type: ignore[arg-type]
    try:
        from ..server import ConfigError, Settings, serve
    except ImportError as exc:
        print(
            f"sandbox-agent: the server needs the [server] extra ({exc.name} is missing); "
            "install it with: pip install 'sandbox-agent-py[server]'",
            file=sys.stderr,
        )
        return 2

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    try:
        settings = Settings.resolve(
            host=args.host,
            port=args.port,
            # `sandbox-agent --token T server` means what it says, too.
            token=args.token if args.token is not None else args.client_token,
            token_file=args.token_file,
            no_token=args.no_token,
            data_dir=args.data_dir,
            cors_origins=args.cors_allow_origin,
            retain_exited=args.retain_exited,
            retain_for=args.retain_for,
            max_log_bytes=args.max_log_bytes,
            log_level=args.log_level,
            access_log=args.access_log,
        )
    except ConfigError as exc:
        print(f"sandbox-agent: {exc}", file=sys.stderr)
        return 2
    # Before anything is forked: the launcher, the supervisors and every managed process
    # would inherit it, and a process could read it from /proc/<its parent>/environ.
    os.environ.pop("SANDBOX_AGENT_TOKEN", None)
    return serve(settings)
