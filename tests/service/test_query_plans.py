"""Every query on a hot or periodic path is served by an index, on SQLite and PostgreSQL.

Each path runs for real on a small desk (an approval, the outbox poll, the drawdown check,
the expiry sweep, the reconciler's pass, the exit check, ``/history``, a signal's lineage,
the paper broker's account and open orders, a retention pass, the daily summary); every
statement it sends is captured and EXPLAINed on the same database. A full scan of a table
that grows with history (signals, orders, fills, audit events, outbox, trades, paper
orders, ...) fails the test. A scan in the order of the result that a LIMIT stops is
allowed (``/history``'s newest events).
PostgreSQL plans with ``enable_seqscan = off``, so an index that can serve the query is
always chosen whatever the statistics say.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.delivery import OutboxDeliverer
from core.app import Engine
from core.db.models import EquitySnapshotRow, OutboxRow
from core.domain import Side
from core.services import Proposal
from tests.support.duties import BTC

#: Tables whose rows accumulate with every signal, order, fill or message.
GROWING = frozenset(
    {
        "signals",
        "signal_cards",
        "orders",
        "fills",
        "audit_events",
        "trades",
        "equity_snapshots",
        "outbox",
        "paper_orders",
    }
)


async def _approve(engine: Engine, deliverer: OutboxDeliverer) -> None:
    proposed = await engine.signals.propose(Proposal("test", BTC, Side.BUY, Decimal("0.01")))
    await engine.signals.approve(proposed.id, "owner:1")


async def _retention(engine: Engine, _deliverer: OutboxDeliverer) -> None:
    """A retention pass with work to do: a delivered message and an hour of snapshots, both
    past their days."""
    old = engine.clock() - timedelta(days=60)
    async with engine.db.session() as session:
        session.add(OutboxRow(kind="text", created_at=old, delivered_at=old))
        for minute in range(10):
            at = old + timedelta(minutes=minute)
            equity = Decimal(10000 + minute % 3)
            session.add(
                EquitySnapshotRow(
                    at=at,
                    balance=equity,
                    equity=equity,
                    peak_equity=equity,
                    drawdown_pct=Decimal(0),
                )
            )
    counts = await engine.retention.run()
    assert (counts.outbox, counts.hours) == (1, 1)


PATHS: dict[str, Callable[[Engine, OutboxDeliverer], Awaitable[Any]]] = {
    "approval": _approve,
    "outbox poll": lambda e, d: d._next_row(),
    "drawdown check": lambda e, d: e.risk.check(),
    "expiry sweep": lambda e, d: e.signals.expire_due(),
    "reconciler pass": lambda e, d: e.reconciler.run(),
    "exit check": lambda e, d: e.exits.check(),
    "/history": lambda e, d: e.signals.history(limit=20),
    "signal lineage": lambda e, d: e.signals.history(signal_id=1),
    "paper account()": lambda e, d: e.broker.account(),
    "paper open orders": lambda e, d: e.broker.open_orders(),
    "retention pass": _retention,
    "daily summary": lambda e, d: e.reports.send_daily_summary(),
}

_SQLITE_STEP = re.compile(r"^(SCAN|SEARCH) (\w+)(?: AS \w+)?(.*)$")


def _limited(statement: str) -> bool:
    return bool(re.search(r"\bLIMIT\b", statement, re.IGNORECASE))


def _sqlite_scans(plan: list[Any], statement: str) -> set[str]:
    """Growing tables the SQLite plan scans whole (``SCAN t``, with or without an index);
    an ordered scan that a LIMIT stops (no temp B-tree sorting) is allowed."""
    details = [str(row[-1]) for row in plan]
    ordered = not any("TEMP B-TREE" in d for d in details)
    scans = set()
    for detail in details:
        step = _SQLITE_STEP.match(detail)
        whole = step and step.group(1) == "SCAN" and step.group(2) in GROWING
        if step and whole and not (_limited(statement) and ordered):
            scans.add(step.group(2))
    return scans


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _postgres_scans(plan: list[Any], statement: str) -> set[str]:
    """Growing tables the PostgreSQL plan reads whole: a sequential scan, or an index scan
    without an index condition (allowed when a LIMIT stops it)."""
    root = plan[0]["Plan"]
    scans = set()
    for node in _nodes(root):
        table = node.get("Relation Name")
        if table not in GROWING:
            continue
        kind = node["Node Type"]
        unbounded = "Index" in kind and "Index Cond" not in node and not _limited(statement)
        if kind == "Seq Scan" or unbounded:
            scans.add(table)
    return scans


async def _explain(engine: Engine, statement: str, parameters: Any) -> set[str]:
    async with engine.db.engine.connect() as conn:
        if engine.db.dialect == "postgresql":
            await conn.exec_driver_sql("SET enable_seqscan = off")
            result = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
            plan = result.scalar_one()
            return _postgres_scans(json.loads(plan) if isinstance(plan, str) else plan, statement)
        result = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        return _sqlite_scans(list(result.all()), statement)


async def test_every_hot_query_is_served_by_an_index(engine: Engine) -> None:
    deliverer = OutboxDeliverer(cast(Any, None), engine, cast(Any, None), 1)
    await _approve(engine, deliverer)  # a filled order, a trade, an audit trail, a card
    await engine.signals.propose(Proposal("test", BTC, Side.SELL, Decimal("0.01")))
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            captured.append((statement, parameters))

    sync_engine = engine.db.engine.sync_engine
    found: dict[str, set[str]] = {}
    for path, run in PATHS.items():
        captured.clear()
        event.listen(sync_engine, "before_cursor_execute", capture)
        try:
            await run(engine, deliverer)
        finally:
            event.remove(sync_engine, "before_cursor_execute", capture)
        assert captured, f"{path} sent no query"
        found[path] = set()
        for statement, parameters in list(captured):
            found[path] |= await _explain(engine, statement, parameters)

    assert found == {path: set[str]() for path in PATHS}


@pytest.mark.parametrize(
    ("detail", "statement", "scans"),
    [
        ("SCAN fills", "SELECT DISTINCT fills.symbol FROM fills", {"fills"}),
        ("SEARCH orders USING INDEX ix_orders_state (state=?)", "SELECT 1", set()),
        ("SCAN audit_events", "SELECT * FROM audit_events ORDER BY id DESC LIMIT 20", set()),
        ("SCAN operator_state", "SELECT * FROM operator_state", set()),
    ],
)
def test_a_sqlite_plan_is_read_as_a_scan_only_when_it_reads_a_growing_table_whole(
    detail: str, statement: str, scans: set[str]
) -> None:
    assert _sqlite_scans([(2, 0, 0, detail)], statement) == scans


def test_a_postgres_plan_is_read_as_a_scan_when_a_growing_table_is_read_whole() -> None:
    seq = [{"Plan": {"Node Type": "Seq Scan", "Relation Name": "paper_orders"}}]
    cond = [
        {
            "Plan": {
                "Node Type": "Index Scan",
                "Relation Name": "orders",
                "Index Cond": "(state = 'OPEN')",
            }
        }
    ]
    assert _postgres_scans(seq, "SELECT 1") == {"paper_orders"}
    assert _postgres_scans(cond, "SELECT 1") == set()


#: Paths whose statements filter a growing table by a state that history makes rare.
RARE_STATES = ("reconciler pass", "exit check", "paper account()", "paper open orders")
#: Filled orders of the seeded history, each in the paper ledger and in ``orders``.
HISTORY = 20_000


async def _seed_filled_history(engine: Engine) -> None:
    """``HISTORY`` filled orders in ``orders`` and ``paper_orders``, then analyzed: the
    statistics autovacuum leaves on a desk that has traded for a while (every order FILLED,
    none resting)."""
    filled = (
        "SELECT 'past-' || n, 'BTC/USDT', 'BUY', 0.001, 'market', 'FILLED', {extra} "
        "FROM generate_series(1, {history}) AS n"
    )
    columns = "client_order_id, symbol, side, quantity, order_type, state"
    async with engine.db.engine.begin() as conn:
        await conn.exec_driver_sql(
            f"INSERT INTO paper_orders ({columns}, placed_candle_at, fee, created_at) "
            + filled.format(extra="now(), 0, now()", history=HISTORY)
        )
        await conn.exec_driver_sql(
            f"INSERT INTO orders ({columns}, purpose, broker_order_id, filled_quantity, fee, "
            "fee_currency, error, resubmitted, created_at, updated_at) "
            + filled.format(
                extra="'entry', 'b-' || n, 0.001, 0, 'USDT', '', false, now(), now()",
                history=HISTORY,
            )
        )
        await conn.exec_driver_sql("ANALYZE paper_orders")
        await conn.exec_driver_sql("ANALYZE orders")


async def _generic_plan_scans(conn: AsyncConnection, statement: str) -> set[str]:
    """The growing tables ``statement``'s generic plan reads whole: prepared on ``conn``
    (whose ``plan_cache_mode`` forces generic plans) and EXPLAINed with NULL for every
    parameter (a generic plan does not depend on the values)."""
    await conn.exec_driver_sql(f"PREPARE checked AS {statement}")
    params = len(set(re.findall(r"\$\d+", statement)))
    values = f"({', '.join(['NULL'] * params)})" if params else ""
    result = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) EXECUTE checked{values}")
    plan = result.scalar_one()
    await conn.exec_driver_sql("DEALLOCATE checked")
    return _postgres_scans(json.loads(plan) if isinstance(plan, str) else plan, statement)


async def test_a_rare_state_keeps_its_index_in_the_plan_postgresql_makes_once(
    engine: Engine,
) -> None:
    """PostgreSQL plans a prepared statement once for all values after five executions (a
    generic plan). Against a history of FILLED orders such a plan expects a bound state to
    match most rows, and reads the whole table: an EXISTS for a resting paper order, or the
    reconciler's unresolved orders by the primary key. Each statement of these paths is
    prepared and its generic plan read, with the real costs (no ``enable_seqscan = off``)."""
    if engine.db.dialect != "postgresql":
        pytest.skip("generic plans of prepared statements are PostgreSQL's")
    deliverer = OutboxDeliverer(cast(Any, None), engine, cast(Any, None), 1)
    await _seed_filled_history(engine)
    captured: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append(statement)

    sync_engine = engine.db.engine.sync_engine
    found: dict[str, set[str]] = {}
    for path in RARE_STATES:
        captured.clear()
        event.listen(sync_engine, "before_cursor_execute", capture)
        try:
            await PATHS[path](engine, deliverer)
        finally:
            event.remove(sync_engine, "before_cursor_execute", capture)
        assert captured, f"{path} sent no query"
        found[path] = set()
        async with engine.db.engine.connect() as conn:
            await conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            try:
                for statement in captured:
                    found[path] |= await _generic_plan_scans(conn, statement)
            finally:
                await conn.exec_driver_sql("RESET plan_cache_mode")

    assert found == {path: set[str]() for path in RARE_STATES}
