"""The results as a Markdown table, with the n/a reasons as numbered footnotes."""

from __future__ import annotations

from typing import Any

from ._harness import Row, Value

HEADER = ["scenario", "metric", "ours", "floor", "supervisord", "pm2", "original"]
HEADER += ["ours/floor", "ours/sd", "ours/pm2", "ours/orig", "goal", "met?"]


def number(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


class _Footnotes:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def cell(self, value: Value) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            if value.startswith("n/a: "):
                reason = value[5:]
                if reason not in self.reasons:
                    self.reasons.append(reason)
                return f"n/a[{self.reasons.index(reason) + 1}]"
            return value
        return number(value)


def _ratio(row: Row, other: Value) -> str:
    ratio = row.ratio(other)
    return "" if ratio is None else f"{ratio:.2f}x"


def render(rows: list[Row], notes: list[str], machine: dict[str, Any], *, quick: bool, total: float) -> str:
    notes_ = _Footnotes()
    table = [HEADER]
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "**NO**")
        table.append(
            [
                row.scenario,
                row.metric,
                notes_.cell(row.ours),
                notes_.cell(row.floor),
                notes_.cell(row.supervisord),
                notes_.cell(row.pm2),
                notes_.cell(row.original),
                _ratio(row, row.floor),
                _ratio(row, row.supervisord),
                _ratio(row, row.pm2),
                _ratio(row, row.original),
                row.goal,
                met,
            ]
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |" for line in table]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    out = [
        f"sandbox-agent {machine['sandbox_agent']} ({machine['commit']}) on {machine['cpus']} x {machine['cpu']}, "
        f"{machine['memory_gb']} GB, Linux {machine['kernel']}, Python {machine['python']}, node {machine['node']}; "
        f"supervisor {machine['supervisor']}, pm2 {machine['pm2']}, "
        f"original sandbox-agent {machine.get('original')}"
        + ("; QUICK sizes (smoke run)" if quick else "")
        + f"; suite took {total:.0f} s",
        "",
        *lines,
        "",
        "Ratios are ours / theirs (for MB/s and starts/s higher is better; otherwise lower is better).",
    ]
    out += [f"[{i}] {reason}" for i, reason in enumerate(notes_.reasons, 1)]
    out += ["", *(f"- {note}" for note in notes)]
    return "\n".join(out)
