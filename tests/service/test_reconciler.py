"""Reconciliation through the real services and the paper broker, on SQLite and
PostgreSQL: an order whose placement timed out (UNKNOWN) is adopted when the broker has
it; when the broker has no trace of it past its timeout, an opening order is failed and
reported (never resubmitted) and a close is re-sent once under a new client order id; a
crash that left an order SUBMITTED is resolved by the next process; positions SignalDesk
did not open are reported once and never touched."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import col, func, select

from core.app import Engine
from core.db.models import FillRow, OrderRow, PaperOrderRow
from core.domain import OrderRequest, OrderState, Side, Signal, SignalStatus
from core.errors import BrokerAmbiguousError
from core.services import Proposal, reconciler
from core.services.reconciler import IN_FLIGHT_GRACE_SECONDS
from core.services.trading import CloseAmount
from tests.conftest import Clock
from tests.support.duties import BTC, Engines, outbox


@pytest.fixture
async def engines(make_settings: Callable[..., Any], clock: Clock) -> AsyncIterator[Engines]:
    factory = Engines(make_settings, clock)
    yield factory
    await factory.close_all()


async def approve_with_timeout(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, *, reached_broker: bool
) -> Signal:
    """Approve a 0.01 BTC buy whose placement times out, after (or before) the broker
    got it; the signal ends UNKNOWN. The broker is healthy again afterwards."""
    place = engine.broker.place_order

    async def timeout(request: OrderRequest) -> Any:
        if reached_broker:
            await place(request)
        raise BrokerAmbiguousError("timed out waiting for the exchange")

    monkeypatch.setattr(engine.broker, "place_order", timeout)
    signal = await engine.signals.propose(Proposal("test", BTC, Side.BUY, Decimal("0.01")))
    decision = await engine.signals.approve(signal.id, "owner:1")
    monkeypatch.undo()
    assert decision.signal.status is SignalStatus.UNKNOWN
    return decision.signal


async def order_of(engine: Engine, signal_id: int) -> OrderRow:
    async with engine.db.session() as session:
        query = select(OrderRow).where(col(OrderRow.signal_id) == signal_id)
        return (await session.exec(query)).one()


async def paper_orders(engine: Engine, client_order_id: str) -> int:
    async with engine.db.session() as session:
        query = select(func.count()).where(col(PaperOrderRow.client_order_id) == client_order_id)
        return (await session.exec(query)).one()


async def test_an_unknown_order_the_broker_has_is_adopted(
    engines: Engines, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await engines.start(database_url)
    signal = await approve_with_timeout(engine, monkeypatch, reached_broker=True)
    order = await order_of(engine, signal.id)

    summary = await engine.reconciler.run()

    assert summary.adopted == [order.client_order_id] and not summary.resubmitted
    assert (await engine.signals.get(signal.id)).status is SignalStatus.FILLED
    order = await order_of(engine, signal.id)
    assert (order.state, order.filled_quantity, order.resubmitted) == (
        "FILLED",
        Decimal("0.01"),
        False,
    )
    assert await paper_orders(engine, order.client_order_id) == 1
    async with engine.db.session() as session:
        assert len((await session.exec(select(FillRow))).all()) == 1
    rows = await outbox(engine)
    assert rows[-2].text.startswith(f"Reconciled order {order.client_order_id} (BTC/USDT): found")
    assert (rows[-1].kind, rows[-1].signal_id) == ("signal_update", signal.id)
    assert (await engine.reconciler.run()).adopted == []  # settled: nothing left to do


async def test_an_opening_order_the_broker_never_got_is_failed_and_reported_not_resubmitted(
    engines: Engines, database_url: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await engines.start(database_url)
    signal = await approve_with_timeout(engine, monkeypatch, reached_broker=False)
    cid = (await order_of(engine, signal.id)).client_order_id

    assert (await engine.reconciler.run()).failed == []  # within the broker's timeout
    clock.advance(IN_FLIGHT_GRACE_SECONDS + 1)
    summary = await engine.reconciler.run()

    assert summary.failed == [cid] and summary.resubmitted == []
    assert (await engine.signals.get(signal.id)).status is SignalStatus.FAILED
    order = await order_of(engine, signal.id)
    assert (order.state, order.resubmitted) == ("FAILED", False)
    assert await paper_orders(engine, cid) == 0  # nothing was sent again
    assert await engine.trading.positions() == []
    [alert] = [
        row.text for row in await outbox(engine) if row.priority == 0 and "re-approve" in row.text
    ]
    assert f"order {cid} was not found at the broker; re-approve if you still want it" in alert
    assert (await engine.reconciler.run()).failed == []  # settled


async def close_with_timeout(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> OrderRow:
    """Open 0.01 BTC, then close it with a placement that times out before reaching the
    broker; returns the close's order row (UNKNOWN)."""
    signal = await engine.signals.propose(Proposal("test", BTC, Side.BUY, Decimal("0.01")))
    assert (await engine.signals.approve(signal.id, "owner:1")).signal.status is (
        SignalStatus.FILLED
    )

    async def timeout(*args: Any, **kwargs: Any) -> Any:
        raise BrokerAmbiguousError("timed out waiting for the exchange")

    monkeypatch.setattr(engine.broker, "close_position", timeout)
    report = await engine.trading.close(BTC, CloseAmount(), "owner:1")
    monkeypatch.undo()
    [result] = report.closes
    assert "outcome unknown" in result.error
    async with engine.db.session() as session:
        query = select(OrderRow).where(col(OrderRow.purpose) == "close")
        return (await session.exec(query)).one()


async def test_a_close_the_broker_never_got_is_re_sent_once_under_a_new_client_order_id(
    engines: Engines, database_url: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await engines.start(database_url)
    lost = await close_with_timeout(engine, monkeypatch)
    assert lost.state == "UNKNOWN"
    clock.advance(IN_FLIGHT_GRACE_SECONDS + 1)

    summary = await engine.reconciler.run()

    assert summary.resubmitted == [lost.client_order_id]
    assert await engine.trading.positions() == []
    async with engine.db.session() as session:
        query = select(OrderRow).where(col(OrderRow.purpose) == "close").order_by(col(OrderRow.id))
        old, new = (await session.exec(query)).all()
    assert new.client_order_id != old.client_order_id
    assert (old.state, old.error) == (
        "FAILED",
        f"not found at the broker; re-sent as {new.client_order_id}",
    )
    assert (new.state, new.resubmitted, new.filled_quantity) == ("FILLED", True, Decimal("0.01"))
    assert await paper_orders(engine, old.client_order_id) == 0
    assert await paper_orders(engine, new.client_order_id) == 1
    assert f"re-sent as {new.client_order_id}, filled 0.01 at" in (await outbox(engine))[-1].text
    assert (await engine.reconciler.run()).resubmitted == []  # exactly once


async def test_a_re_sent_close_still_missing_is_marked_failed_not_sent_a_third_time(
    engines: Engines, database_url: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await engines.start(database_url)
    lost = await close_with_timeout(engine, monkeypatch)

    async def still_timing_out(*args: Any, **kwargs: Any) -> Any:
        raise BrokerAmbiguousError("timed out again")

    monkeypatch.setattr(engine.broker, "close_position", still_timing_out)
    clock.advance(IN_FLIGHT_GRACE_SECONDS + 1)
    first = await engine.reconciler.run()
    clock.advance(IN_FLIGHT_GRACE_SECONDS + 1)
    second = await engine.reconciler.run()
    third = await engine.reconciler.run()

    assert first.resubmitted == [lost.client_order_id] and not first.failed
    [resent] = second.failed
    assert resent != lost.client_order_id and not second.resubmitted
    assert not third.resubmitted and not third.failed
    async with engine.db.session() as session:
        rows = (await session.exec(select(OrderRow).where(col(OrderRow.purpose) == "close"))).all()
    assert {(r.client_order_id, r.state, r.error) for r in rows} == {
        (lost.client_order_id, "FAILED", f"not found at the broker; re-sent as {resent}"),
        (resent, "FAILED", "not found at the broker after one re-send"),
    }
    assert [p.quantity for p in await engine.trading.positions()] == [Decimal("0.01")]


async def test_an_order_left_submitted_by_a_crash_is_resolved_by_the_next_process(
    engines: Engines, database_url: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await engines.start(database_url)
    hung = await approve_with_timeout(engine, monkeypatch, reached_broker=True)
    async with engine.db.session() as session:  # as if the process died mid-call
        row = (await session.exec(select(OrderRow))).one()
        row.state = OrderState.SUBMITTED.value
    await engines.stop(engine)
    restarted = await engines.start(database_url)

    assert (await restarted.reconciler.run()).adopted == []  # may still be in flight
    clock.advance(timedelta(seconds=31).total_seconds())
    assert len((await restarted.reconciler.run()).adopted) == 1

    assert (await restarted.signals.get(hung.id)).status is SignalStatus.FILLED


async def test_a_position_signaldesk_did_not_open_is_reported_once_and_left_alone(
    engines: Engines, database_url: str
) -> None:
    engine = await engines.start(database_url)
    manual = OrderRequest("manual-1", BTC, Side.BUY, Decimal("0.02"))
    await engine.broker.place_order(manual)  # placed outside SignalDesk

    first = await engine.reconciler.run()
    second = await engine.reconciler.run()

    assert first.foreign == [BTC] and second.foreign == []
    reports = [r.text for r in await outbox(engine) if "not opened by SignalDesk" in r.text]
    assert reports == [
        "Position not opened by SignalDesk: BTC/USDT 0.02 (entry 113689.42). SignalDesk "
        "leaves it alone (only /closeall or a drawdown flatten closes it); its profit and "
        "loss count in the equity the drawdown guard watches."
    ]
    assert [p.quantity for p in await engine.trading.positions()] == [Decimal("0.02")]


async def test_the_symbols_ever_traded_are_probed_in_chunks(
    engines: Engines, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await engines.start(database_url)
    signal = await engine.signals.propose(Proposal("test", BTC, Side.BUY, Decimal("0.01")))
    await engine.signals.approve(signal.id, "owner:1")  # a fill in BTC/USDT
    monkeypatch.setattr(reconciler, "_EXISTS_PER_STATEMENT", 2)
    asked = ["AAPL", "BTC/USDT", "ETH/USDT", "EUR/USD", "XAU/USD"]  # three statements

    async with engine.db.session() as session:
        assert await reconciler._traded(session, asked) == {BTC}
        assert await reconciler._traded(session, []) == set()
