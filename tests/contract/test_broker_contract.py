"""One contract, four brokers: the same service-level scenarios (approve -> execute ->
positions -> close all) against the paper broker, ccxt on a local Binance fake (ccxt's
real HTTP, signing and parsing), MT5 on the fake MetaTrader5 module and IBKR on the fake
TWS of tests/support/ib_fake.py; and a stop on every exit style (paper, ccxt USDⓈ-M and
IBKR: resting trigger orders; ccxt spot: watched by SignalDesk; MT5: sl/tp attached to the
ticket) closing its trade exactly once, with the target cancelled and one exit message
carrying the hand-computed PnL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from core.app import Engine, build_engine
from core.domain import (
    ExitReason,
    ExitStyle,
    OrderRequest,
    OrderState,
    OrderType,
    Side,
    SignalStatus,
    TradeStatus,
)
from core.errors import OrderNotFoundError, TransitionConflictError
from core.services import Proposal
from tests.service.test_trades import exit_messages, exit_orders
from tests.support import binance_fake, ib_fake, mt5_fake
from tests.support.duties import eventually


@dataclass
class Venue:
    """An engine on one broker, and what to trade there."""

    engine: Engine
    symbol: str
    quantity: Decimal
    name: str = ""
    #: a buy limit price far enough below the market to rest
    resting_limit: Decimal = Decimal(50000)


@pytest.fixture(params=["paper", "ccxt", "mt5", "ibkr"])
async def venue(
    request: pytest.FixtureRequest, sqlite_url: str, make_settings: Any, clock: Any
) -> AsyncIterator[Venue]:
    settings = make_settings(database_url=sqlite_url)
    if request.param == "paper":
        engine = await build_engine(settings, clock=clock)
        yield Venue(engine, "BTC/USDT", Decimal("0.01"), "paper")
        await engine.close()
    elif request.param == "ccxt":
        async with binance_fake.running() as fake:
            engine = await build_engine(settings, broker=fake.broker(), clock=clock)
            yield Venue(engine, "BTC/USDT", Decimal("0.01"), "ccxt")
            await engine.close()
    elif request.param == "mt5":
        async with mt5_fake.running() as terminal:
            engine = await build_engine(settings, broker=terminal.broker(), clock=clock)
            yield Venue(engine, "BTCUSD", Decimal("0.01"), "mt5")
            await engine.close()
    else:
        async with ib_fake.running() as gateway:
            engine = await build_engine(settings, broker=gateway.broker(), clock=clock)
            yield Venue(engine, "AAPL", Decimal(1), "ibkr", resting_limit=Decimal(100))
            await engine.close()


async def _approved(venue: Venue) -> int:
    engine = venue.engine
    signal = await engine.signals.propose(
        Proposal("contract", venue.symbol, Side.BUY, venue.quantity, note="contract")
    )
    decision = await engine.signals.approve(signal.id, "owner:1")
    assert decision.signal.status is SignalStatus.FILLED, decision.signal.status_reason
    return signal.id


async def test_an_approved_signal_fills_and_shows_as_a_long_position(venue: Venue) -> None:
    signal_id = await _approved(venue)

    order = await venue.engine.signals.order_for(signal_id)
    assert order is not None and order.state is OrderState.FILLED
    assert order.filled_quantity == venue.quantity
    assert order.average_price is not None and order.average_price > 0
    [position] = await venue.engine.trading.positions()
    assert position.symbol == venue.symbol
    # a spot exchange takes its fee in the coin bought, so the balance may be a little less
    assert venue.quantity * Decimal("0.99") <= position.quantity <= venue.quantity
    looked_up = await venue.engine.broker.get_order(order.client_order_id, venue.symbol)
    assert looked_up is not None and looked_up.state is OrderState.FILLED


async def test_close_all_flattens_the_account_and_records_each_close(venue: Venue) -> None:
    await _approved(venue)

    results = (await venue.engine.trading.close_all("owner:1")).closes

    assert [(r.symbol, r.ok) for r in results] == [(venue.symbol, True)]
    [result] = results
    assert result.report is not None and result.report.state is OrderState.FILLED
    assert await venue.engine.trading.positions() == []


async def test_concurrent_approvals_of_one_signal_send_one_order(venue: Venue) -> None:
    engine = venue.engine
    signal = await engine.signals.propose(
        Proposal("contract", venue.symbol, Side.BUY, venue.quantity)
    )

    outcomes = await asyncio.gather(
        *(engine.signals.approve(signal.id, f"owner:{i}") for i in range(5)),
        return_exceptions=True,
    )

    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(
        isinstance(o, TransitionConflictError) for o in outcomes if isinstance(o, BaseException)
    )
    [position] = await engine.trading.positions()
    assert position.quantity <= venue.quantity


async def test_a_resting_limit_order_is_listed_then_cancelled(venue: Venue) -> None:
    broker = venue.engine.broker
    request = OrderRequest(
        "ct-limit-1",
        venue.symbol,
        Side.BUY,
        venue.quantity,
        order_type=OrderType.LIMIT,
        limit_price=venue.resting_limit,
    )
    placed = await broker.place_order(request)
    assert placed.state is OrderState.OPEN

    listed = await broker.open_orders(venue.symbol)
    cancelled = await broker.cancel_order("ct-limit-1", venue.symbol)

    assert [(r.client_order_id, r.state) for r in listed] == [("ct-limit-1", OrderState.OPEN)]
    assert cancelled.state is OrderState.CANCELLED and cancelled.filled_quantity == 0
    assert await broker.open_orders() == []
    again = await broker.cancel_order("ct-limit-1", venue.symbol)
    assert again.state is OrderState.CANCELLED
    with pytest.raises(OrderNotFoundError):
        await broker.cancel_order("ct-never-sent", venue.symbol)


async def test_a_partial_close_leaves_the_rest_open(venue: Venue) -> None:
    broker = venue.engine.broker
    await broker.place_order(OrderRequest("ct-entry-1", venue.symbol, Side.BUY, venue.quantity * 2))

    report = await broker.close_position(venue.symbol, "ct-close-1", venue.quantity)

    assert report is not None and report.state is OrderState.FILLED
    assert report.side is Side.SELL and report.filled_quantity == venue.quantity
    [position] = await broker.positions()
    assert venue.quantity * Decimal("0.99") <= position.quantity <= venue.quantity


async def test_exit_style_says_where_the_exits_live(venue: Venue) -> None:
    # paper holds stop orders; ccxt here is spot (no trigger orders); MT5 keeps sl/tp on
    # tickets; IBKR holds STP / MIT orders in an OCA group
    expected = {
        "paper": ExitStyle.ORDERS,
        "ccxt": ExitStyle.WATCHED,
        "mt5": ExitStyle.ATTACHED,
        "ibkr": ExitStyle.ORDERS,
    }

    assert await venue.engine.broker.exit_style(venue.symbol) is expected[venue.name]


# --- protective exits on every exit style ------------------------------------------------


@dataclass
class ExitVenue:
    """An engine on one broker with a filled entry's stop and target, how to move the price
    through the stop and then through the (cancelled) target, and the hand-computed
    figures of the stop's exit (quote currency)."""

    engine: Engine
    symbol: str
    quantity: Decimal
    stop: Decimal
    target: Decimal
    style: ExitStyle
    through_stop: Callable[[], Any]
    through_target: Callable[[], Any]
    realized: Decimal
    fees: Decimal


@pytest.fixture(params=["paper", "ccxt-spot", "ccxt-swap", "mt5", "ibkr"])
async def exit_venue(
    request: pytest.FixtureRequest, sqlite_url: str, make_settings: Any, clock: Any
) -> AsyncIterator[ExitVenue]:
    settings = make_settings(database_url=sqlite_url)
    q = Decimal("0.01")
    if request.param == "paper":
        # the replay: entry at candle 0 113666.68 x 1.0002 -> 113689.42, fee 1.1368942;
        # candle 2's low crosses 113000: the stop fills at 113000 x 0.9998 = 112977.40,
        # fee 0.01 x 112977.40 x 0.001 = 1.129774; candle 4's high passes 114000
        engine = await build_engine(settings, clock=clock)
        yield ExitVenue(
            engine,
            "BTC/USDT",
            q,
            Decimal(113000),
            Decimal(114000),
            ExitStyle.ORDERS,
            lambda: engine.feed.step(2),
            lambda: engine.feed.step(2),
            q * (Decimal("112977.40") - Decimal("113689.42")),
            Decimal("1.1368942") + Decimal("1.129774"),
        )
        await engine.close()
    elif request.param.startswith("ccxt"):
        async with binance_fake.running() as fake:
            swap = request.param == "ccxt-swap"
            broker = fake.broker(market_type="swap" if swap else "spot")
            engine = await build_engine(settings, broker=broker, clock=clock)
            entry, exit_ = Decimal("60000.01"), Decimal(58900)  # the ask; the last price
            if swap:
                # USDⓈ-M: 0.05 % in USDT; the algo stop fills at the new last price
                rate = Decimal("0.0005")
                realized, exited = q * (exit_ - entry), q
            else:
                # spot: 0.1 % of the coin bought (0.00001 BTC, worth 0.6000001 USDT at the
                # fill), so 0.00999 BTC is held; the watched exit sells it at the bid
                # 58899.99, paying 0.1 % of the USDT received
                rate, exit_, exited = Decimal("0.001"), Decimal("58899.99"), Decimal("0.00999")
                realized = exited * (exit_ - entry)
            yield ExitVenue(
                engine,
                "BTC/USDT:USDT" if swap else "BTC/USDT",
                q,
                Decimal(59000),
                Decimal(61000),
                ExitStyle.ORDERS if swap else ExitStyle.WATCHED,
                # time passes as the price moves: past the market data's quote cache
                lambda: (fake.set_price("BTC/USDT", 58900), clock.advance(60)),
                lambda: (fake.set_price("BTC/USDT", 61500), clock.advance(60)),
                realized,
                # each fee as the exchange prints it, to 8 decimals
                sum(
                    (
                        f.quantize(Decimal("1e-8"))
                        for f in (q * entry * rate, exited * exit_ * rate)
                    ),
                    Decimal(0),
                ),
            )
            await engine.close()
    elif request.param == "ibkr":
        async with ib_fake.running() as gateway:
            engine = await build_engine(settings, broker=gateway.broker(), clock=clock)
            # a market buy of 1 AAPL fills at the ask 230.10; IB holds the stop (STP) and
            # the target (MIT) in one OCA group, fills the stop at the bid 219.00 and cancels
            # the target; commission 1 USD an order (the minimum)
            yield ExitVenue(
                engine,
                "AAPL",
                Decimal(1),
                Decimal(220),
                Decimal(250),
                ExitStyle.ORDERS,
                lambda: gateway.set_price("AAPL", bid="219.00", ask="219.20"),
                lambda: gateway.set_price("AAPL", bid="251.00", ask="251.20"),
                Decimal("219.00") - Decimal("230.10"),
                Decimal(2),
            )
            await engine.close()
    else:
        async with mt5_fake.running() as terminal:
            engine = await build_engine(settings, broker=terminal.broker(), clock=clock)
            # entry at the ask 60000.50; the server closes the ticket at the bid 58900
            # (the price gapped through 59000); no commission on BTCUSD
            yield ExitVenue(
                engine,
                "BTCUSD",
                q,
                Decimal(59000),
                Decimal(61000),
                ExitStyle.ATTACHED,
                lambda: terminal.set_tick("BTCUSD", bid="58900.00", ask="58901.00"),
                lambda: terminal.set_tick("BTCUSD", bid="61500.00", ask="61501.00"),
                q * (Decimal("58900.00") - Decimal("60000.50")),
                Decimal(0),
            )
            await engine.close()


async def test_a_stop_closes_the_trade_once_cancels_the_target_and_posts_one_exit(
    exit_venue: ExitVenue,
) -> None:
    v, engine = exit_venue, exit_venue.engine
    signal = await engine.signals.propose(
        Proposal("contract", v.symbol, Side.BUY, v.quantity, stop_loss=v.stop, take_profit=v.target)
    )
    assert (await engine.signals.approve(signal.id, "owner:1")).signal.status is (
        SignalStatus.FILLED
    )
    await engine.exits.check()
    trade = await engine.trades.for_signal(signal.id)
    assert trade is not None and trade.exit_style is v.style
    exits = await exit_orders(engine, trade.id)
    if v.style is ExitStyle.WATCHED:
        assert exits == []  # nothing rests at the venue: SignalDesk watches the levels
        assert await engine.broker.open_orders(v.symbol) == []
    else:
        assert [(suffix, state, level) for suffix, _, state, level in exits] == [
            ("sl1", "OPEN", v.stop),
            ("tp1", "OPEN", v.target),
        ]
    if v.style is ExitStyle.ORDERS:  # resting trigger orders at the venue
        resting = await engine.broker.open_orders(v.symbol)
        assert sorted((r.order_type, r.trigger_price) for r in resting) == [
            (OrderType.STOP, v.stop),
            (OrderType.TAKE_PROFIT, v.target),
        ]
    if v.style is ExitStyle.ATTACHED:  # sl/tp on the ticket
        [position] = await engine.broker.positions()
        assert position.position_ref == trade.position_ref

    v.through_stop()
    await engine.exits.check()  # its quote also starts a background check: they race

    async def is_closed() -> bool:
        await engine.exits.check()  # as the exits job does; a cached quote ages out
        return (await engine.trades.trade(trade.id)).status is TradeStatus.CLOSED

    await eventually(is_closed)
    await engine.exits.check()  # a further look changes nothing
    closed = await engine.trades.trade(trade.id)
    assert (closed.status, closed.exit_reason) == (TradeStatus.CLOSED, ExitReason.STOP_LOSS)
    assert closed.realized_pnl == v.realized
    assert closed.fees == v.fees
    [message] = await exit_messages(engine)
    assert (message.trade_id, message.reason, message.closed) == (
        trade.id,
        ExitReason.STOP_LOSS,
        True,
    )
    assert message.net_pnl == v.realized - v.fees
    if v.style is not ExitStyle.WATCHED:
        states = {suffix: state for suffix, _, state, _ in await exit_orders(engine, trade.id)}
        assert (states["sl1"], states["tp1"]) == ("FILLED", "CANCELLED")
    assert await engine.broker.open_orders(v.symbol) == []

    v.through_target()  # the cancelled target never fills
    await engine.exits.check()

    assert len(await exit_messages(engine)) == 1
    assert (await engine.trades.trade(trade.id)).realized_pnl == v.realized
    assert await engine.broker.open_orders(v.symbol) == []
    assert await engine.trading.positions() == []
