"""The signal lifecycle through the real services, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import col, delete, func, select

from core.app import Engine, build_engine
from core.db.models import (
    AuditEventRow,
    FillRow,
    OperatorStateRow,
    OrderRow,
    OutboxRow,
    PaperOrderRow,
)
from core.domain import OrderState, OrderType, Side, Signal, SignalStatus
from core.errors import (
    CardChangedError,
    InvalidInputError,
    NotFoundError,
    TransitionConflictError,
    UnknownSymbolError,
)
from core.services import Proposal
from core.services.signals import Decision, SignalEdit

BTC = "BTC/USDT"


def buy(quantity: str = "0.01", **kwargs: object) -> Proposal:
    return Proposal("test", BTC, Side.BUY, Decimal(quantity), **kwargs)  # type: ignore[arg-type]


async def count(engine: Engine, model: type, *where: object) -> int:
    async with engine.db.session() as session:
        query = select(func.count()).select_from(model)
        for condition in where:
            query = query.where(condition)  # type: ignore[arg-type]
        return (await session.exec(query)).one()


async def test_propose_stores_the_signal_with_the_replay_price_and_queues_its_card(
    engine: Engine,
) -> None:
    signal = await engine.signals.propose(buy(note="breakout"))

    assert signal.status is SignalStatus.PROPOSED
    assert signal.reference_price == Decimal("113666.68")  # close of the first real candle
    assert (signal.expires_at - signal.created_at).total_seconds() == 900
    assert await count(engine, OutboxRow, col(OutboxRow.kind) == "signal_card") == 1
    assert (await engine.signals.get(signal.id)).note == "breakout"


async def test_approve_fills_at_the_replay_price_and_records_order_fill_and_audit(
    engine: Engine,
) -> None:
    signal = await engine.signals.propose(buy())

    decision = await engine.signals.approve(signal.id, "owner:1")

    assert decision.signal.status is SignalStatus.FILLED
    assert decision.signal.decided_by == "owner:1"
    assert decision.report is not None
    # 113666.68 x (1 + (2/2 + 1) bps) = 113689.413... -> rounded up to the tick
    assert decision.report.average_price == Decimal("113689.42")
    assert decision.report.fee == Decimal("1.1368942")
    positions = await engine.trading.positions()
    assert [(p.symbol, p.quantity) for p in positions] == [(BTC, Decimal("0.01"))]
    order = await engine.signals.order_for(signal.id)
    assert order is not None and order.state is OrderState.FILLED
    assert order.client_order_id.endswith(f"-s{signal.id}")
    assert await count(engine, FillRow) == 1
    lineage = [(e.from_status, e.to_status) for e in await engine.signals.history(10, signal.id)]
    assert lineage == [
        ("SUBMITTED", "FILLED"),
        ("APPROVED", "SUBMITTED"),
        ("PROPOSED", "APPROVED"),
        ("", "PROPOSED"),
    ]


async def test_reject_is_final_and_a_later_approve_is_told_the_state(engine: Engine) -> None:
    signal = await engine.signals.propose(buy())

    rejected = await engine.signals.reject(signal.id, "owner:1", "not now")

    assert rejected.status is SignalStatus.REJECTED
    with pytest.raises(TransitionConflictError) as conflict:
        await engine.signals.approve(signal.id, "owner:1")
    assert conflict.value.current == SignalStatus.REJECTED
    assert await count(engine, OrderRow) == 0


async def test_cancel_moves_a_proposal_to_cancelled(engine: Engine) -> None:
    signal = await engine.signals.propose(buy())
    assert (await engine.signals.cancel(signal.id, "owner:1", "changed mind")).status is (
        SignalStatus.CANCELLED
    )


async def test_approving_after_the_ttl_expires_the_signal_and_sends_nothing(
    engine: Engine, clock: object
) -> None:
    signal = await engine.signals.propose(buy())
    clock.advance(901)  # type: ignore[attr-defined]

    decision = await engine.signals.approve(signal.id, "owner:1")

    assert decision.signal.status is SignalStatus.EXPIRED
    assert await count(engine, OrderRow) == 0


async def test_expire_due_expires_only_proposals_past_their_ttl(
    engine: Engine, clock: object
) -> None:
    old = await engine.signals.propose(buy())
    clock.advance(600)  # type: ignore[attr-defined]
    fresh = await engine.signals.propose(buy())
    clock.advance(301)  # type: ignore[attr-defined]

    expired = await engine.signals.expire_due()

    assert [s.id for s in expired] == [old.id]
    assert (await engine.signals.get(fresh.id)).status is SignalStatus.PROPOSED


async def test_approve_while_paused_blocks_with_the_reason(engine: Engine) -> None:
    signal = await engine.signals.propose(buy())
    await engine.trading.pause("vacation", "owner:1")

    decision = await engine.signals.approve(signal.id, "owner:1")

    assert decision.signal.status is SignalStatus.BLOCKED
    assert decision.signal.status_reason == "paused (vacation)"
    assert await count(engine, PaperOrderRow) == 0


async def test_approve_blocks_when_the_price_drifted_past_the_limit(engine: Engine) -> None:
    signal = await engine.signals.propose(buy())
    engine.feed.step(29)  # close 113666.68 -> 112379.58 (2025-08-21T16:00Z): -1.13 %

    decision = await engine.signals.approve(signal.id, "owner:1")

    assert decision.signal.status is SignalStatus.BLOCKED
    assert decision.signal.status_reason == "price moved 1.1% (limit 1.0%)"


async def test_approve_blocks_a_quantity_over_the_limit(engine: Engine) -> None:
    signal = await engine.signals.propose(buy("0.05"))
    # the limit falls after the proposal passed it (a restart with a lower limit)
    gate = engine.trading.gate
    gate.limits = replace(gate.limits, max_quantity=Decimal("0.01"))

    decision = await engine.signals.approve(signal.id, "owner:1")

    assert decision.signal.status is SignalStatus.BLOCKED
    assert decision.signal.status_reason == "quantity 0.05 over the limit 0.01"


async def test_a_broker_refusal_fails_the_signal(
    database_url: str, make_settings: object, clock: object
) -> None:
    settings = make_settings(  # type: ignore[operator]
        database_url=database_url, paper_starting_balance=Decimal(100)
    )
    engine = await build_engine(settings, clock=clock)  # type: ignore[arg-type]
    try:
        signal = await engine.signals.propose(buy())
        decision = await engine.signals.approve(signal.id, "owner:1")
        assert decision.signal.status is SignalStatus.FAILED
        assert "free margin is 100.00 USDT" in decision.signal.status_reason
        order = await engine.signals.order_for(signal.id)
        assert order is not None and order.state is OrderState.FAILED
    finally:
        await engine.close()


@pytest.mark.parametrize(
    ("proposal", "message"),
    [
        (buy("0"), "quantity must be positive"),
        (buy("-1"), "quantity must be positive"),
        (buy(order_type=OrderType.LIMIT), "a limit order needs a limit price"),
        (buy(stop_loss=Decimal(120000)), "stop loss 120000 must be below the entry"),
        (buy(take_profit=Decimal(100000)), "take profit 100000 must be above the entry"),
    ],
)
async def test_invalid_proposals_are_refused_and_write_nothing(
    engine: Engine, proposal: Proposal, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        await engine.signals.propose(proposal)
    assert await count(engine, AuditEventRow) == 0


async def test_unknown_symbol_and_unknown_signal_are_typed_errors(engine: Engine) -> None:
    with pytest.raises(UnknownSymbolError):
        await engine.signals.propose(Proposal("test", "DOGE/USDT", Side.BUY, Decimal(1)))
    with pytest.raises(NotFoundError):
        await engine.signals.approve(999, "owner:1")


async def test_twenty_concurrent_approvals_place_exactly_one_order(engine: Engine) -> None:
    signal = await engine.signals.propose(buy())

    results = await asyncio.gather(
        *(engine.signals.approve(signal.id, f"owner:{i}") for i in range(20)),
        return_exceptions=True,
    )

    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, TransitionConflictError) for r in losers), losers
    assert await count(engine, OrderRow) == 1
    assert await count(engine, PaperOrderRow) == 1
    assert (await engine.signals.get(signal.id)).status is SignalStatus.FILLED


async def test_a_new_engine_on_the_same_database_sees_signals_positions_and_audit(
    database_url: str, make_settings: object, clock: object
) -> None:
    settings = make_settings(database_url=database_url)  # type: ignore[operator]
    first = await build_engine(settings, clock=clock)  # type: ignore[arg-type]
    filled = await first.signals.propose(buy())
    await first.signals.approve(filled.id, "owner:1")
    pending = await first.signals.propose(buy("0.02"))
    await first.close()

    second = await build_engine(settings, clock=clock)  # type: ignore[arg-type]
    try:
        assert [(s.id, s.status) for s in await second.signals.recent()] == [
            (pending.id, SignalStatus.PROPOSED),
            (filled.id, SignalStatus.FILLED),
        ]
        positions = await second.trading.positions()
        assert [(p.symbol, p.quantity) for p in positions] == [(BTC, Decimal("0.01"))]
        assert len(await second.signals.history(50)) == 5
    finally:
        await second.close()


async def test_close_all_flattens_and_books_the_round_trip(engine: Engine) -> None:
    signal = await engine.signals.propose(buy())
    await engine.signals.approve(signal.id, "owner:1")

    results = (await engine.trading.close_all("owner:1")).closes

    assert [(r.symbol, r.ok) for r in results] == [(BTC, True)]
    assert await engine.trading.positions() == []
    account = await engine.trading.account()
    # bought at 113689.42, sold at 113643.94 (same candle): -0.4548 PnL, fees 2.2733336
    assert account.balance == Decimal(10000) - Decimal("0.4548") - Decimal("2.2733336")
    assert account.equity == account.balance


async def statements_until_decided(
    engine: Engine, signal: Signal, **options: Any
) -> tuple[list[str], Decision]:
    """Approve ``signal`` at its card version; the first words of each statement the
    approving task runs until ``on_decided`` (not the gate's quote and account tasks)."""
    statements: list[str] = []
    approving: asyncio.Task[Decision] | None = None
    sync_engine = engine.db.engine.sync_engine

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if asyncio.current_task() is approving:
            statements.append(" ".join(statement.split()[:3]))

    async def decided(_: object) -> None:
        event.remove(sync_engine, "before_cursor_execute", seen)

    event.listen(sync_engine, "before_cursor_execute", seen)
    approving = asyncio.ensure_future(
        engine.signals.approve(signal.id, "owner:1", signal.card_version, decided, **options)
    )
    return statements, await approving


async def test_an_approval_reads_once_and_writes_four_statements_before_the_broker(
    engine: Engine,
) -> None:
    await engine.signals.approve((await engine.signals.propose(buy())).id, "owner:1")  # warm
    signal = await engine.signals.propose(buy())

    statements, _ = await statements_until_decided(engine, signal)

    # the signal with the trading state in one read; then the compare-and-set (the first
    # write), the state locked after it, both audit events in one INSERT, the order row
    assert statements == [
        "SELECT signals.id, signals.source,",
        "UPDATE signals SET",
        "SELECT operator_state.trading_state, operator_state.pause_reason,",
        "INSERT INTO audit_events",
        "INSERT INTO orders",
    ]


async def test_a_pause_between_the_checks_and_the_approving_write_blocks_with_both_events(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    signal = await engine.signals.propose(buy())
    gate = engine.trading.gate
    checks = gate.check_entry

    async def check_then_pause(*args: Any, **kwargs: Any) -> str | None:
        passed = await checks(*args, **kwargs)  # read ACTIVE: the order would go
        await gate.pause("news", "owner:2")
        return passed

    monkeypatch.setattr(gate, "check_entry", check_then_pause)

    decision = await engine.signals.approve(signal.id, "owner:1")

    assert decision.signal.status is SignalStatus.BLOCKED
    assert decision.signal.status_reason == "paused (news)"
    stored = await engine.signals.get(signal.id)
    assert (stored.status, stored.status_reason) == (SignalStatus.BLOCKED, "paused (news)")
    assert stored.decided_by == "owner:1"
    assert await count(engine, OrderRow) == 0
    events = [
        (e.actor, e.action, e.from_status, e.to_status, e.reason)
        for e in await engine.signals.history(10, signal.id)
    ]
    assert events[:2] == [
        ("system", "blocked", "APPROVED", "BLOCKED", "paused (news)"),
        ("owner:1", "approved", "PROPOSED", "APPROVED", ""),
    ]


async def test_an_approval_records_the_same_audit_events_as_two_transitions(
    engine: Engine,
) -> None:
    signal = await engine.signals.propose(buy())

    await engine.signals.approve(signal.id, "owner:1")

    order = await engine.signals.order_for(signal.id)
    assert order is not None
    events = [
        (e.actor, e.action, e.from_status, e.to_status, e.reason)
        for e in await engine.signals.history(10, signal.id)
    ]
    assert events[1:3] == [
        ("owner:1", "submitted", "APPROVED", "SUBMITTED", f"order {order.client_order_id}"),
        ("owner:1", "approved", "PROPOSED", "APPROVED", ""),
    ]


async def test_an_approval_of_the_signal_its_card_showed_reads_nothing_first(
    engine: Engine,
) -> None:
    await engine.signals.approve((await engine.signals.propose(buy())).id, "owner:1")  # warm
    signal = await engine.signals.propose(buy())

    statements, decision = await statements_until_decided(engine, signal, shown=signal)

    assert statements == [
        "UPDATE signals SET",
        "SELECT operator_state.trading_state, operator_state.pause_reason,",
        "INSERT INTO audit_events",
        "INSERT INTO orders",
    ]
    assert decision.signal.status is SignalStatus.FILLED


async def test_an_approval_after_the_operator_state_row_went_missing_creates_it_active(
    engine: Engine,
) -> None:
    await engine.signals.approve((await engine.signals.propose(buy())).id, "owner:1")
    await engine.risk.idle()  # the client-order-id tag is read once, and is kept
    async with engine.db.session() as session:
        await session.exec(delete(OperatorStateRow))  # type: ignore[call-overload]
    signal = await engine.signals.propose(buy())

    decision = await engine.signals.approve(signal.id, "owner:1", signal.card_version, shown=signal)

    # the approving transaction found no state to lock, created it (ACTIVE) and locked it
    assert decision.signal.status is SignalStatus.FILLED
    async with engine.db.reading() as session:
        rows = (await session.exec(select(OperatorStateRow))).all()
    assert [(row.id, row.trading_state) for row in rows] == [(1, "ACTIVE")]


async def test_a_card_shown_before_an_edit_or_a_decision_approves_nothing(
    engine: Engine,
) -> None:
    edited = await engine.signals.propose(buy())
    await engine.signals.edit(edited.id, edited.card_version, SignalEdit(scale=Decimal(2)), "o")
    rejected = await engine.signals.propose(buy())
    await engine.signals.reject(rejected.id, "owner:2")

    with pytest.raises(CardChangedError):  # the card showed 0.01; the signal is 0.02 now
        await engine.signals.approve(edited.id, "owner:1", edited.card_version, shown=edited)
    with pytest.raises(TransitionConflictError) as conflict:
        await engine.signals.approve(rejected.id, "owner:1", rejected.card_version, shown=rejected)

    assert conflict.value.current is SignalStatus.REJECTED
    assert await count(engine, OrderRow) == 0
    assert (await engine.signals.get(edited.id)).status is SignalStatus.PROPOSED
