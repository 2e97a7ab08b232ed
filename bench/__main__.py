"""``python -m bench`` (``make bench``): SignalDesk's speed against floors measured in the same
run, on SQLite and, where a server answers, PostgreSQL. Prints one table and exits 0; a
goal missed is marked MISSED beside its row.

Rows (goals from the speed issue):

- tap -> card edited, p50 and p99, against a bare aiogram bot (:mod:`bench.floor`) answering
  the same callback on the same kind of sandbox, tapped in turn with SignalDesk's cards:
  ratio <= 2x at p50 and p99;
- one ``approve()``'s SQL statements, transactions and aiosqlite thread hops
  (:func:`bench.scenarios.approval_cost`), the paper venue's share apart;
- approvals per second at concurrency 1, 4 and 16, the engine alone
  (``SignalService.approve`` -> fill), against write transactions per second:
  >= 100/s on SQLite, >= 200/s on PostgreSQL;
- ``close_all`` of 50 positions with 50 ms injected per broker call: <= 0.5 s;
- ``signaldesk status`` and ``--help`` wall time against ``python -c pass``: <= 0.5 s, and
  the heavy modules ``status`` imported (none);
- ``python -m bot`` start-up to its first ``getUpdates`` and idle RSS against the floor
  bot's: <= 1.2x and <= floor + 40 MB;
- each hot read at 0, 10k and 100k past signals against a ``SELECT 1`` session;
- a burst of cards to a group chat at the production pace (0 x 429). Telegram allows 20
  messages a minute in a group with a burst of 20; the default burst is 40 cards, more
  than the burst plus what refills while they go out at 1 a second, so a deliverer that
  ignores the group limit draws 429s, and at the group's pace it drains in about a
  minute (100 cards would take 5). Also an alert queued behind a 100-card burst to a
  private chat (< 2 s, 0 x 429).

``--only`` runs some sections (taps, cost, throughput, closeall, cli, startup, queries,
burst); ``--help`` lists the sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import traceback
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.scenarios import percentile
from core.logging import configure_logging

SECTIONS = ("taps", "cost", "throughput", "closeall", "cli", "startup", "queries", "burst")
#: approvals per second each database should reach (the speed issue's goals)
APPROVAL_GOALS = {"SQLite": 100.0, "PostgreSQL": 200.0}


class Table:
    """The printed table: figure, SignalDesk's value, the floor's, the ratio, the goal;
    ``broken`` counts the scenarios that raised (each is a row, the rest still run)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []
        self.broken = 0

    async def guard(self, name: str, work: Awaitable[None]) -> None:
        """Run one scenario; an exception becomes a BROKE row instead of ending the run."""
        try:
            await work
        except Exception as exc:  # the table still prints
            self.broken += 1
            traceback.print_exc()
            self.add(f"{name}: broke", type(exc).__name__, goal=str(exc).splitlines()[0][:40])

    def add(
        self,
        figure: str,
        value: str,
        floor: str = "",
        ratio: float | None = None,
        goal: str = "",
        ok: bool | None = None,
    ) -> None:
        """One row; ``ok`` None for a row without a goal."""
        verdict = "" if ok is None else ("ok" if ok else "MISSED")
        shown = "" if ratio is None else f"{ratio:.2f}x"
        self.rows.append((figure, value, floor, shown, goal, verdict))
        print(self.format(self.rows[-1]), file=sys.stderr, flush=True)

    @staticmethod
    def format(row: tuple[str, ...]) -> str:
        """One row in fixed columns."""
        figure, value, floor, ratio, goal, verdict = row
        return f"{figure:<52} {value:>18} {floor:>18} {ratio:>8}  {goal:<18} {verdict}"

    def print(self) -> None:
        """The whole table on stdout."""
        print(self.format(("figure", "SignalDesk", "floor", "ratio", "goal", "")))
        for row in self.rows:
            print(self.format(row))


def _ms(value: float) -> str:
    return f"{value:.1f} ms"


async def _taps(table: Table, tmp: Path, kind: str, url: str, args: argparse.Namespace) -> None:
    taps = await scenarios.tap_latency(tmp, url, args.taps, args.warmup)
    for pct in (50, 99):
        mine, floor = percentile(taps.signaldesk, pct), percentile(taps.floor, pct)
        table.add(
            f"tap -> card edited p{pct}, {kind} ({len(taps.floor)} taps)",
            _ms(mine),
            _ms(floor),
            mine / floor,
            "<= 2x floor",
            mine <= 2 * floor,
        )


async def _cost(table: Table, tmp: Path, kind: str, url: str, args: argparse.Namespace) -> None:
    cost = await scenarios.approval_cost(url)
    table.add(f"one approve(), {kind}: SQL statements", f"{cost.statements:.1f}")
    table.add(
        f"one approve(), {kind}: transactions",
        f"{cost.transactions:.1f}",
        goal="1 write txn + outcome",
        ok=cost.transactions <= 2,
    )
    if cost.thread_hops:
        table.add(f"one approve(), {kind}: aiosqlite thread hops", f"{cost.thread_hops:.1f}")
    table.add(
        "  paper venue's own share: statements / txns",
        f"{cost.venue_statements:.1f} / {cost.venue_transactions:.1f}",
    )


async def _throughput(
    table: Table, tmp: Path, kind: str, url: str, args: argparse.Namespace
) -> None:
    goal = APPROVAL_GOALS[kind]
    for row in await scenarios.throughput(url, [1, 4, 16], args.approvals):
        filled = "" if row.filled == row.count else f" ({row.filled}/{row.count} filled)"
        table.add(
            f"approvals/s at concurrency {row.concurrency}, {kind}{filled}",
            f"{row.per_second:.1f} /s",
            f"{row.floor_per_second:.1f} txn/s",
            row.floor_per_second / row.per_second,
            f">= {goal:g} /s",
            row.per_second >= goal and row.filled == row.count,
        )


async def _closeall(table: Table, tmp: Path, kind: str, url: str, args: argparse.Namespace) -> None:
    for stops in (False, True):
        done = await scenarios.close_all(url, args.closes, args.latency, stops)
        calls = ", ".join(f"{name} {n}" for name, n in sorted(done.calls.items()))
        closed = "" if done.closed == done.positions else f", {done.closed} closed"
        what = " with stops" if stops else ""
        table.add(
            f"close_all of {done.positions}{what} at {done.latency * 1000:g} ms, {kind}{closed}",
            f"{done.seconds:.3f} s",
            f"{done.floor_seconds:.3f} s",
            done.seconds / done.floor_seconds,
            "<= 0.5 s",
            done.seconds <= 0.5 and done.closed == done.positions,
        )
        table.add(f"  broker calls: {calls}", "")


async def _queries(table: Table, tmp: Path, kind: str, url: str, args: argparse.Namespace) -> None:
    found = await scenarios.hot_queries(url, args.history, args.runs)
    for name, millis in found.millis.items():
        for size, ms, floor in zip(found.sizes, millis, found.floor, strict=True):
            table.add(f"{name} at {size:,} past signals, {kind}", _ms(ms), _ms(floor), ms / floor)


async def _burst(table: Table, tmp: Path, kind: str, url: str, args: argparse.Namespace) -> None:
    group = await scenarios.burst(tmp, url, args.group_burst, scenarios.GROUP)
    table.add(
        f"429s, {group.cards}-card burst to a group ({group.drain_seconds:.0f} s), {kind}",
        str(group.rate_limited),
        goal="0",
        ok=group.rate_limited == 0,
    )
    private = await scenarios.burst(tmp, url, args.burst, None)
    table.add(
        f"alert behind a {private.cards}-card burst, private, {kind}",
        f"{private.alert_seconds:.2f} s",
        goal="< 2 s",
        ok=private.alert_seconds < 2,
    )
    table.add(
        f"  429s while it drained ({private.drain_seconds:.0f} s)",
        str(private.rate_limited),
        goal="0",
        ok=private.rate_limited == 0,
    )


PER_DATABASE = {
    "taps": _taps,
    "cost": _cost,
    "throughput": _throughput,
    "closeall": _closeall,
    "queries": _queries,
    "burst": _burst,
}


async def _run(args: argparse.Namespace) -> Table:
    table = Table()
    kinds = ["SQLite"]
    problem = await scenarios.postgres_problem()
    if problem is None:
        kinds.append("PostgreSQL")
    else:
        print(f"PostgreSQL rows skipped: {problem}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="signaldesk-bench-") as name:
        tmp = Path(name)
        if "cli" in args.only:
            await table.guard("cli", _cli(table, tmp, args))
        if "startup" in args.only:
            await table.guard("startup", _startup(table, tmp, args))
        for section, scenario in PER_DATABASE.items():
            if section not in args.only:
                continue
            for kind in kinds:
                print(f"{section} on {kind} ...", file=sys.stderr, flush=True)
                await table.guard(
                    f"{section}, {kind}", _on(kind, tmp, section, scenario, table, args)
                )
    return table


async def _on(
    kind: str, tmp: Path, section: str, scenario: Any, table: Table, args: argparse.Namespace
) -> None:
    async with scenarios.database(kind, tmp, section) as url:
        await scenario(table, tmp, kind, url, args)


async def _cli(table: Table, tmp: Path, args: argparse.Namespace) -> None:
    cli = scenarios.cli_times(tmp, args.runs)
    table.add(
        "signaldesk status",
        f"{cli.status:.3f} s",
        f"{cli.floor:.3f} s",
        cli.status / cli.floor,
        "<= 0.5 s",
        cli.status <= 0.5,
    )
    table.add("signaldesk --help", f"{cli.help:.3f} s", f"{cli.floor:.3f} s", cli.help / cli.floor)
    table.add(
        "  heavy modules status imported",
        ",".join(cli.heavy) or "none",
        goal="none",
        ok=not cli.heavy,
    )


async def _startup(table: Table, tmp: Path, args: argparse.Namespace) -> None:
    up = await scenarios.startup(tmp, args.idle)
    table.add(
        "python -m bot start-up to first getUpdates",
        f"{up.startup:.2f} s",
        f"{up.floor_startup:.2f} s",
        up.startup / up.floor_startup,
        "<= 1.2x floor",
        up.startup <= 1.2 * up.floor_startup,
    )
    over = up.rss_mib - up.floor_rss_mib  # the goal is 40 MB = 38.1 MiB over the floor
    table.add(
        f"python -m bot idle RSS (after {up.idle:g} s), floor {over:+.1f} MiB",
        f"{up.rss_mib:.1f} MiB",
        f"{up.floor_rss_mib:.1f} MiB",
        up.rss_mib / up.floor_rss_mib,
        "<= floor + 40 MB",
        over * 1.048576 <= 40,
    )


def main() -> int:
    """Parse the options, run the scenarios, print the table; 0 unless a scenario broke
    (a goal missed is a MISSED row, not a failure)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="SignalDesk's speed against floors measured in the same run, on SQLite "
        "and, where a server answers, PostgreSQL (goals marked MISSED beside their rows).",
    )
    parser.add_argument("--taps", type=int, default=200, help="taps measured per bot (>= 2)")
    parser.add_argument("--warmup", type=int, default=10, help="taps not counted")
    parser.add_argument("--approvals", type=int, default=200, help="approvals per concurrency")
    parser.add_argument("--closes", type=int, default=50, help="positions close_all closes")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per broker call")
    parser.add_argument(
        "--history",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[0, 10_000, 100_000],
        help="past signals the hot reads are timed at, comma-separated",
    )
    parser.add_argument("--runs", type=int, default=5, help="repetitions of each timed call")
    parser.add_argument("--group-burst", type=int, default=40, help="cards burst to a group")
    parser.add_argument("--burst", type=int, default=100, help="cards queued before the alert")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before the RSS")
    parser.add_argument(
        "--only",
        type=lambda text: text.split(","),
        default=list(SECTIONS),
        help=f"sections to run, comma-separated: {','.join(SECTIONS)}",
    )
    args = parser.parse_args()
    args.taps = max(args.taps, 2)
    configure_logging("WARNING")
    table = asyncio.run(_run(args))
    print(
        f"SignalDesk bench: sandbox on loopback, paper broker, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    table.print()
    return 1 if table.broken else 0


if __name__ == "__main__":
    sys.exit(main())
