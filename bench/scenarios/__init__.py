"""The scenarios of issues 3 and 11, by name, in the order the suite runs them.

Each is ``run(ctx) -> Outcome``: it starts what it measures (a fresh server of ours, a
fresh peer daemon), measures, stops it all, and returns its table rows.
"""

from __future__ import annotations

from collections.abc import Callable

from .._harness import Outcome
from ._context import Context
from .fleet import run_memory, run_stop
from .follow import run_fanout, run_latency
from .hotpath import run_exit_visible, run_follow_delay, run_run_echo
from .hotscale import run_big_writer, run_follow_many, run_memory_pythons
from .ingest import run_bulk, run_lines
from .records import run_churn, run_list
from .spawn import run_spawn

Scenario = Callable[[Context], Outcome]

SCENARIOS: dict[str, Scenario] = {
    "spawn": run_spawn,
    "ingest-bulk": run_bulk,
    "ingest-lines": run_lines,
    "follow-latency": run_latency,
    "fan-out": run_fanout,
    "memory": run_memory,
    "list": run_list,
    "stop": run_stop,
    "churn": run_churn,
    "exit-visible": run_exit_visible,
    "run-echo": run_run_echo,
    "follow-delay": run_follow_delay,
    "follow-many": run_follow_many,
    "big-writer": run_big_writer,
    "memory-pythons": run_memory_pythons,
}
#: Names that select other scenarios: fidelity is checked in every ingest run.
ALIASES = {
    "fidelity": ["ingest-bulk", "ingest-lines"],
    # What a coding agent waits for, beside the original server (issue 11).
    "hot-path": ["exit-visible", "run-echo", "follow-delay", "follow-many", "big-writer", "memory", "memory-pythons"],
}

__all__ = ["ALIASES", "SCENARIOS", "Context", "Scenario"]
