"""What recording a market fill sends to the database: the statements of the one
transaction that adopts the broker's report (order, signal, trade, fills, outbox), counted
on the real engine with SQLAlchemy's ``before_cursor_execute`` event. The signal is
settled by one ``UPDATE ... RETURNING`` (never read first) and the trade record is written
with Core statements (no unit-of-work flush)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import col, select

from core.app import Engine
from core.db.models import AuditEventRow, FillRow, OutboxRow
from core.domain import OrderReport, OrderRequest, Side, SignalStatus, TradeStatus
from core.services import Proposal

BTC = "BTC/USDT"


def _what(statement: str) -> str:
    """``SELECT signals``, ``UPDATE orders``, ``INSERT trades``: the verb and first table."""
    words = statement.split()
    verb = words[0].upper()
    if verb == "SELECT":
        table = re.search(r"\bFROM\s+(\w+)", statement, re.IGNORECASE)
        return f"SELECT {table.group(1) if table else '?'}"
    if verb == "INSERT":
        return f"INSERT {words[2]}"
    return f"{verb} {words[1]}"


async def _recorded(engine: Engine, act: Callable[[], Awaitable[Any]]) -> list[str]:
    """Run ``act`` (an approval) and return the statements of its recording transaction:
    those its own task sends from the start of ``record_reports`` to the first commit."""
    trading = engine.trading
    seen: list[str] = []
    task: asyncio.Task[Any] | None = None
    original = trading.record_reports

    async def record_reports(*args: Any, **kwargs: Any) -> Any:
        nonlocal task
        task = asyncio.current_task()
        return await original(*args, **kwargs)

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if task is not None and asyncio.current_task() is task:
            seen.append(_what(statement))

    def on_commit(_conn: Any) -> None:
        nonlocal task
        if task is not None and asyncio.current_task() is task:
            task = None

    sync = engine.db.engine.sync_engine
    trading.record_reports = record_reports  # type: ignore[method-assign]
    event.listen(sync, "before_cursor_execute", on_statement)
    event.listen(sync, "commit", on_commit)
    try:
        await act()
    finally:
        event.remove(sync, "before_cursor_execute", on_statement)
        event.remove(sync, "commit", on_commit)
        del trading.record_reports
    return seen


async def _approve(engine: Engine, side: Side) -> int:
    signal = await engine.signals.propose(Proposal("test", BTC, side, Decimal("0.01")))
    await engine.signals.approve(signal.id, "owner:1")
    return signal.id


@pytest.mark.parametrize("second", [False, True], ids=["opens", "reverses"])
async def test_recording_a_market_fill_is_nine_statements_at_most_and_reads_no_signal(
    engine: Engine, second: bool
) -> None:
    if second:
        await _approve(engine, Side.BUY)
    side = Side.SELL if second else Side.BUY
    ids: list[int] = []

    async def act() -> None:
        ids.append(await _approve(engine, side))

    statements = await _recorded(engine, act)

    common = [
        "UPDATE orders",  # the report, RETURNING the row (the lock: first statement)
        "SELECT fills",  # fills already recorded for the order
        "UPDATE signals",  # SUBMITTED -> FILLED, RETURNING the signal: no SELECT signals
        "INSERT audit_events",
        "SELECT trades",  # the open trades the fill may reduce, locked
    ]
    # closing the BUY's trade: one UPDATE (its exit notification goes into the outbox
    # with the card, one INSERT for both); opening the signal's trade: one INSERT (its id
    # comes back) and the order linked to it
    closes, opens = ["UPDATE trades"], ["INSERT trades", "UPDATE orders"]
    trade = closes if second else opens
    assert statements == [*common, *trade, "INSERT fills", "INSERT outbox"]
    # was 10: the signal read as an ORM object, the trade written by a flush; a close
    # was 9: the exit notification and the card in two INSERTs
    signal = await engine.signals.get(ids[0])
    assert signal.status is SignalStatus.FILLED
    opened = await engine.trading.trades.for_signal(ids[0])
    async with engine.db.session() as session:
        outbox = (await session.exec(select(OutboxRow).order_by(col(OutboxRow.id)))).all()
    written = [(row.kind, row.signal_id) for row in outbox][-2:]
    if second:
        assert opened is None  # all of it went to closing the BUY's trade
        [closed] = await engine.trading.trades.closed_since()
        assert closed.status is TradeStatus.CLOSED
        # both rows of the one INSERT: the trade's exit, then the card
        assert written == [("trade_exit", None), ("signal_update", ids[0])]
    else:
        assert opened is not None and opened.status is TradeStatus.OPEN


async def test_three_racing_recordings_of_one_fill_count_it_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    held: list[OrderReport] = []

    async def send(request: OrderRequest, signal_id: int, actor: str) -> Any:
        report = await engine.trading.broker.place_order(request)
        held.append(report)  # recorded below, three times at once
        return await engine.signals.get(signal_id), report

    monkeypatch.setattr(engine.trading, "send", send)
    signal_id = await _approve(engine, Side.BUY)
    [report] = held
    assert report.fills

    settled = await asyncio.gather(
        *(engine.trading.record_report(report, f"racer:{n}") for n in range(3))
    )

    assert [s.status if s else None for s in settled] == [SignalStatus.FILLED] * 3
    trade = await engine.trading.trades.for_signal(signal_id)
    assert trade is not None and trade.quantity == Decimal("0.01")  # the fill counted once
    async with engine.db.session() as session:
        fills = (await session.exec(select(FillRow).where(col(FillRow.trade_id) == trade.id))).all()
        filled = (
            await session.exec(
                select(AuditEventRow).where(
                    col(AuditEventRow.signal_id) == signal_id,
                    col(AuditEventRow.to_status) == SignalStatus.FILLED.value,
                )
            )
        ).all()
    assert len(fills) == 1 and len(filled) == 1  # one fill row, one settling event
