"""The numbers of one scenario, and the tables they are printed in."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.infra import CpuShares


@dataclass
class Outcome:
    """The numbers of one scenario; times in seconds unless the name says ms.

    `*_done` are seconds after the start (first outbox commit, or the relay's start when
    draining) at which the last event was committed to the outbox, acknowledged by the
    transport, and applied. CPU is a share of one core over the measured window.
    """

    transport: str
    partitions: int
    consumers: int
    load: str
    planned: int = 0
    applied: int = 0
    offered_per_second: float = math.nan
    events_per_second: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    relay_p50_ms: float = math.nan
    relay_p99_ms: float = math.nan
    consume_p50_ms: float = math.nan
    consume_p99_ms: float = math.nan
    producer_done: float = math.nan
    relay_done: float = math.nan
    consumer_done: float = math.nan
    cpu: CpuShares | None = None
    applied_by_member: list[int] = field(default_factory=list)
    note: str = ""


Column = tuple[str, Callable[[Outcome, float], str]]
"""A table column: its header, and its cell from an outcome and the pgbench TPS."""


def _n(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def _pair(first: float, second: float) -> str:
    return f"{_n(first, 1)}/{_n(second, 1)}"


def _members(o: Outcome) -> str:
    return "/".join(str(count) for count in o.applied_by_member) or "-"


def _under_100(o: Outcome) -> str:
    return "-" if math.isnan(o.p99_ms) else ("yes" if o.p99_ms < 100 else "NO")


IDENTITY: list[Column] = [
    ("transport", lambda o, _: o.transport),
    ("parts", lambda o, _: str(o.partitions)),
    ("members", lambda o, _: str(o.consumers)),
    ("events", lambda o, _: f"{o.applied}/{o.planned}"),
]
THROUGHPUT: list[Column] = [
    ("events/s", lambda o, _: _n(o.events_per_second)),
    ("x pgbench", lambda o, tps: _n(o.events_per_second / tps, 2)),
]


def _cpu(o: Outcome) -> str:
    if o.cpu is None:
        return "-"
    shares = [o.cpu.pipeline, o.cpu.postgres, o.cpu.broker, o.cpu.other]
    return "/".join(f"{share:.0f}" for share in shares)


CPU: list[Column] = [("cpu% pipe/pg/broker/other", lambda o, _: _cpu(o))]
TAIL: list[Column] = [
    ("applied by member", lambda o, _: _members(o)),
    ("note", lambda o, _: o.note),
]

COLUMNS: dict[str, list[Column]] = {
    "saturation": [
        *IDENTITY,
        *THROUGHPUT,
        ("p50 ms", lambda o, _: _n(o.p50_ms, 1)),
        ("p99 ms", lambda o, _: _n(o.p99_ms, 1)),
        ("produced", lambda o, _: _n(o.producer_done, 2)),
        ("relayed", lambda o, _: _n(o.relay_done, 2)),
        ("applied", lambda o, _: _n(o.consumer_done, 2)),
        *CPU,
        ("cpu% producer", lambda o, _: "-" if o.cpu is None else f"{o.cpu.producer:.0f}"),
        *TAIL,
    ],
    "steady": [
        *IDENTITY,
        ("offered/s", lambda o, _: _n(o.offered_per_second)),
        ("p50 ms", lambda o, _: _n(o.p50_ms, 1)),
        ("p99 ms", lambda o, _: _n(o.p99_ms, 1)),
        ("max ms", lambda o, _: _n(o.max_ms, 1)),
        ("p99<100ms", lambda o, _: _under_100(o)),
        ("relay p50/p99", lambda o, _: _pair(o.relay_p50_ms, o.relay_p99_ms)),
        ("consume p50/p99", lambda o, _: _pair(o.consume_p50_ms, o.consume_p99_ms)),
        *CPU,
        *TAIL,
    ],
    "drain": [
        *IDENTITY,
        *THROUGHPUT,
        ("relayed", lambda o, _: _n(o.relay_done, 2)),
        ("applied", lambda o, _: _n(o.consumer_done, 2)),
        *CPU,
        *TAIL,
    ],
}


def render_table(columns: Sequence[Column], outcomes: Sequence[Outcome], tps: float) -> str:
    """Right-aligned plain-text columns, readable in a terminal and in a CI log."""
    headers = [header for header, _ in columns]
    rows = [[show(o, tps) for _, show in columns] for o in outcomes]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


NOISY_OTHER_PCT = 25.0
"""Above this much CPU (% of one core) used by other processes, a row is called noisy."""


def render(
    headline: Sequence[str],
    titles: dict[str, str],
    outcomes: Sequence[Outcome],
    pgbench_other: float,
    tps: float,
    rate: int,
) -> str:
    """The whole summary: headline, one table per load (titled), and the issue's goals."""
    out = list(headline)
    for load, title in titles.items():
        mine = [o for o in outcomes if o.load == load]
        if mine:
            out += ["", title, render_table(COLUMNS[load], mine, tps)]
    out.append("")
    throughput = [o for o in outcomes if o.load != "steady" and not math.isnan(o.events_per_second)]
    if throughput:
        best = max(throughput, key=lambda o: o.events_per_second)
        verdict = "met" if best.events_per_second >= 2 * tps else "NOT met"
        out.append(
            f"Goal: events/s >= 2 x pgbench TPS = {2 * tps:,.0f}: {verdict} (best: "
            f"{best.events_per_second:,.0f}/s, {best.transport}, {best.partitions} "
            f"partitions, {best.load})."
        )
    steady = [o for o in outcomes if o.load == "steady"]
    if steady:
        met = [f"{o.transport}/{o.partitions}p: {_under_100(o)}" for o in steady]
        out.append(f"Goal: p99 < 100 ms at a steady {rate:,}/s: {', '.join(met)}.")
    noisy = [
        f"{o.transport}/{o.partitions}p/{o.load}"
        for o in outcomes
        if o.cpu is not None and o.cpu.other > NOISY_OTHER_PCT
    ]
    if pgbench_other > NOISY_OTHER_PCT:
        noisy.insert(0, "pgbench")
    if noisy:
        out.append(
            f"WARNING: other processes used more than {NOISY_OTHER_PCT:.0f}% of a core during "
            f"{', '.join(noisy)}: those numbers are disturbed; run again on a quiet machine."
        )
    return "\n".join(out)
