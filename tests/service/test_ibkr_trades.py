"""The engine on IBKR (the fake TWS of tests/support/ib_fake.py): a signal with a stop loss
and a take profit gets its exits as STP / MIT orders in one OCA group at IB, the stop
closes the trade and IB cancels the take profit; a connection lost while ``placeOrder`` is
in flight leaves the signal UNKNOWN, and the next process reconciles it by ``orderRef``
into one order, never two. SQLite and PostgreSQL.

AAPL starts at 229.90 / 230.10: a market buy of 10 fills at 230.10, commission 1 USD.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from core.app import Engine, build_engine
from core.domain import ExitReason, ExitStyle, Side, SignalStatus, TradeStatus
from core.services import Proposal
from tests.conftest import Clock
from tests.service.test_trades import exit_orders
from tests.support import ib_fake

D = Decimal


@pytest.fixture
async def gateway() -> AsyncIterator[ib_fake.FakeGateway]:
    async with ib_fake.running() as fake:
        yield fake


async def _engine(settings: Any, gateway: ib_fake.FakeGateway, clock: Clock) -> Engine:
    return await build_engine(settings, broker=gateway.broker(), clock=clock)


async def test_exits_live_at_ib_in_one_oca_group_and_the_stop_closes_the_trade(
    database_url: str, make_settings: Any, clock: Clock, gateway: ib_fake.FakeGateway
) -> None:
    settings = make_settings(database_url=database_url, max_order_quantity=D(100))
    engine = await _engine(settings, gateway, clock)
    try:
        signal = await engine.signals.propose(
            Proposal("ib", "AAPL", Side.BUY, D(10), stop_loss=D(220), take_profit=D(250))
        )
        decision = await engine.signals.approve(signal.id, "owner:1")
        assert decision.signal.status is SignalStatus.FILLED, decision.signal.status_reason
        await engine.exits.check()
        trade = await engine.trades.for_signal(signal.id)
        assert trade is not None and trade.exit_style is ExitStyle.ORDERS
        assert await exit_orders(engine, trade.id) == [
            ("sl1", "stop", "OPEN", D(220)),
            ("tp1", "take_profit", "OPEN", D(250)),
        ]
        held = [r for r in gateway.records if r.order.orderType in ("STP", "MIT")]
        assert [(r.order.orderType, r.order.totalQuantity, r.order.action) for r in held] == [
            ("STP", 10.0, "SELL"),
            ("MIT", 10.0, "SELL"),
        ]
        assert len({r.order.ocaGroup for r in held}) == 1 and held[0].order.ocaType == 1

        gateway.set_price("AAPL", bid="219.00", ask="219.20")  # IB fills the stop
        await engine.exits.check()

        closed = await engine.trades.trade(trade.id)
        assert closed.status is TradeStatus.CLOSED and closed.exit_reason is ExitReason.STOP_LOSS
        assert [r.status for r in held] == ["Filled", "Cancelled"]  # OCA at the venue
        assert await engine.trading.positions() == []
    finally:
        await engine.close()


async def test_a_connection_lost_during_place_order_is_reconciled_by_order_ref_into_one_order(
    database_url: str, make_settings: Any, clock: Clock, gateway: ib_fake.FakeGateway
) -> None:
    settings = make_settings(database_url=database_url, max_order_quantity=D(100))
    engine = await _engine(settings, gateway, clock)
    try:
        signal = await engine.signals.propose(Proposal("ib", "AAPL", Side.BUY, D(5)))
        gateway.drop_on_next_order()
        decision = await engine.signals.approve(signal.id, "owner:1")
        assert decision.signal.status is SignalStatus.UNKNOWN
    finally:
        await engine.close()

    restarted = await _engine(settings, gateway, clock)  # the next process, a new session
    try:
        clock.advance(31)  # past the reconciler's in-flight grace
        summary = await restarted.reconciler.run()
        assert len(summary.adopted) == 1
        assert (await restarted.signals.get(signal.id)).status is SignalStatus.FILLED
        assert (await restarted.reconciler.run()).adopted == []
        [position] = await restarted.trading.positions()
        assert position.quantity == D(5)
        assert gateway.placed == 1  # one order at IB, never two
    finally:
        await restarted.close()
