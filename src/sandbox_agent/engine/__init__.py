"""The process engine: registry, spawn, signals, adoption at start-up, log reads, follows.

No HTTP in here: the server (``sandbox_agent.server``) and embedding applications call
``ProcessManager`` directly. Where things happen:

    manager     ProcessManager: spawn, stop, kill, delete, wait, runs, config
    watching    its watch over supervisors: adoption at start-up, exits, orphans, retention
    reading     its log reads: lines, entries, follows, a terminal's output
    services    its names, labels, readiness (waitFor), list filters; service.json
    events      lifecycle events (created, ready, exited, deleted) with a bounded history
    usage       the once-a-second sample of running processes: ports, CPU, memory
    proctree    /proc reads: process trees, CPU and memory, listening TCP ports
    state       the manager attributes its two mixins may use, declared once
    records     Record: one process's directory and state record, as typed properties
    launcher    the server's client of the supervisor launcher (spawn requests)
    validate    start-request checks (command, cwd, env) before anything is created
    config      the limits of the /v1/processes dialect, kept in <data dir>/config.json
    run         one-shot runs: output capped per stream, the group killed on timeout
    ids         process ids
    system      what the server asks of the OS (subreaper, fd limit, children)
    terminal    input, eof and resize through a supervisor's control FIFO; pty followers
    logs/       reading logs: store (tails, ranges, stripping), feed (follows), watch,
                entries (combined.log as numbered entries, for /v1/processes),
                pty (a tty's raw output as entries by sequence)
"""

from __future__ import annotations

from .manager import DataDirInUse, ProcessManager, SpawnRequest
from .records import Record

__all__ = ["DataDirInUse", "ProcessManager", "Record", "SpawnRequest"]
