"""The engine on IBKR (the fake TWS of tests/support/ib_fake.py): a signal with a stop loss
and a take profit gets its exits as STP / MIT orders in one OCA group at IB, the stop
closes the trade and IB cancels the take profit; a connection lost while ``placeOrder`` is
in flight leaves the signal UNKNOWN, and the next process reconciles it by ``orderRef``
into one order, never two. SQLite and PostgreSQL.

AAPL starts at 229.90 / 230.10: a market buy of 10 fills at 230.10, commission 1 USD.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from bot.delivery import Cards
from core.app import Engine, build_engine
from core.config import MarketClosedPolicy
from core.domain import ExitReason, ExitStyle, Side, Signal, SignalStatus, TradeStatus
from core.errors import BrokerTemporaryError, TransitionConflictError
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


# --- a closed market ----------------------------------------------------------------------

#: AAPL's regular hours on Monday 5 January 2026: 09:30-16:00 New York (14:30-21:00 UTC);
#: the clock starts at 12:00 UTC, two and a half hours before the open.
HOURS = "20260105:0930-20260105:1600;20260106:0930-20260106:1600"
OPEN = datetime(2026, 1, 5, 14, 31, tzinfo=UTC)


async def _closed_engine(
    settings: Any, gateway: ib_fake.FakeGateway, clock: Clock, policy: MarketClosedPolicy
) -> Engine:
    gateway.clock = clock
    gateway.set_hours("AAPL", HOURS)
    broker = gateway.broker(closed_policy=policy)
    return await build_engine(settings, broker=broker, clock=clock)


async def _pending_past_the_close(engine: Engine, clock: Clock) -> Signal:
    """A buy of 1 AAPL proposed five minutes before Monday's close; the clock then moves ten
    minutes on, so its card is still pending after the close."""
    clock.now = datetime(2026, 1, 5, 20, 55, tzinfo=UTC)
    signal = await engine.signals.propose(Proposal("ib", "AAPL", Side.BUY, D(1)))
    clock.advance(10 * 60)
    return signal


async def test_on_a_closed_market_the_block_policy_posts_the_card_blocked_and_sends_nothing(
    database_url: str, make_settings: Any, clock: Clock, gateway: ib_fake.FakeGateway
) -> None:
    settings = make_settings(database_url=database_url, max_order_quantity=D(100))
    engine = await _closed_engine(settings, gateway, clock, MarketClosedPolicy.BLOCK)
    try:
        signal = await engine.signals.propose(Proposal("ib", "AAPL", Side.BUY, D(5)))
        card = await Cards(engine, charts=False).render(signal)

        assert signal.status is SignalStatus.BLOCKED
        assert signal.status_reason == "market closed, opens in 2 h"
        assert card.markup is None
        assert card.text.splitlines()[-1] == "<b>⛔ Blocked: market closed, opens in 2 h</b>"
        with pytest.raises(TransitionConflictError):
            await engine.signals.approve(signal.id, "owner:1")
        assert gateway.placed == 0
        [event] = await engine.signals.history(signal_id=signal.id)
        assert (event.to_status, event.reason) == ("BLOCKED", "market closed, opens in 2 h")
    finally:
        await engine.close()


async def test_a_card_still_pending_after_the_close_says_approval_is_refused_and_blocks_it(
    database_url: str, make_settings: Any, clock: Clock, gateway: ib_fake.FakeGateway
) -> None:
    settings = make_settings(
        database_url=database_url, display_timezone="Europe/Berlin", max_order_quantity=D(100)
    )
    engine = await _closed_engine(settings, gateway, clock, MarketClosedPolicy.BLOCK)
    try:
        signal = await _pending_past_the_close(engine, clock)
        card = await Cards(engine, charts=False).render(signal)
        decision = await engine.signals.approve(signal.id, "owner:1")
        after = await Cards(engine, charts=False).render(decision.signal)

        assert signal.status is SignalStatus.PROPOSED
        assert card.text.splitlines()[-1] == (
            "🌙 Market closed, opens in 17 h (Tue 15:30 CET): approval is refused until the open"
        )
        # refused by the gate, as a proposal made after the close is: BLOCKED, not FAILED,
        # and no order exists, here or at IB
        assert decision.signal.status is SignalStatus.BLOCKED
        assert decision.signal.status_reason == "market closed, opens in 17 h"
        assert decision.report is None
        assert await engine.signals.order_for(signal.id) is None
        assert gateway.placed == 0
        assert after.markup is None
        assert after.text.splitlines()[-1] == "<b>⛔ Blocked: market closed, opens in 17 h</b>"
        latest, *_ = await engine.signals.history(signal_id=signal.id)  # newest first
        assert (latest.to_status, latest.reason) == ("BLOCKED", "market closed, opens in 17 h")
    finally:
        await engine.close()


async def test_market_hours_unreadable_at_approval_leave_the_refusal_to_the_venue(
    database_url: str, make_settings: Any, clock: Clock, gateway: ib_fake.FakeGateway
) -> None:
    settings = make_settings(database_url=database_url, max_order_quantity=D(100))
    engine = await _closed_engine(settings, gateway, clock, MarketClosedPolicy.BLOCK)
    try:
        signal = await _pending_past_the_close(engine, clock)
        broker: Any = engine.broker

        async def unreadable(symbol: str) -> Any:
            raise BrokerTemporaryError("IB 1100: connectivity between IB and TWS lost")

        broker.market_hours = unreadable
        decision = await engine.signals.approve(signal.id, "owner:1")

        # the gate skipped its closed-market rule; the adapter's own check still refused
        # the order before anything reached IB
        assert decision.signal.status is SignalStatus.FAILED
        assert decision.signal.status_reason == "AAPL: market closed, opens in 17 h"
        assert gateway.placed == 0
    finally:
        await engine.close()


async def test_on_a_closed_market_the_day_order_policy_rests_until_the_open_and_fills_once(
    database_url: str, make_settings: Any, clock: Clock, gateway: ib_fake.FakeGateway
) -> None:
    settings = make_settings(
        database_url=database_url, max_order_quantity=D(100), market_closed_policy="day_order"
    )
    engine = await _closed_engine(settings, gateway, clock, MarketClosedPolicy.DAY_ORDER)
    try:
        signal = await engine.signals.propose(Proposal("ib", "AAPL", Side.BUY, D(5)))
        card = await Cards(engine, charts=False).render(signal)
        assert signal.status is SignalStatus.PROPOSED and card.markup is not None
        assert card.text.splitlines()[-1] == (
            "🌙 Market closed, opens in 2 h (Mon 14:30 UTC): "
            "approved, it rests as a DAY order until the open"
        )

        decision = await engine.signals.approve(signal.id, "owner:1")
        assert decision.signal.status is SignalStatus.SUBMITTED, decision.signal.status_reason
        [record] = gateway.records
        assert (record.order.tif, record.status) == ("DAY", "PreSubmitted")  # held by IB

        clock.now = OPEN
        gateway.open_market("AAPL")
        await engine.reconciler.run()

        assert (await engine.signals.get(signal.id)).status is SignalStatus.FILLED
        [position] = await engine.trading.positions()
        assert position.quantity == D(5) and gateway.placed == 1
    finally:
        await engine.close()


async def test_a_card_priced_on_delayed_data_says_so_and_an_open_market_adds_nothing(
    database_url: str, make_settings: Any, clock: Clock, gateway: ib_fake.FakeGateway
) -> None:
    gateway.instrument("AAPL").subscribed = False
    settings = make_settings(
        database_url=database_url, ibkr_delayed_data=True, max_order_quantity=D(100)
    )
    engine = await _closed_engine(settings, gateway, clock, MarketClosedPolicy.BLOCK)
    clock.now = OPEN
    try:
        signal = await engine.signals.propose(Proposal("ib", "AAPL", Side.BUY, D(5)))
        text = (await Cards(engine, charts=False).render(signal)).text

        assert "⏱ Priced on delayed data (15-20 min)" in text.splitlines()
        assert "🌙" not in text
    finally:
        await engine.close()
