"""One contract, four brokers: the same service-level scenarios (approve -> execute ->
positions -> close all) against the paper broker, ccxt on a local Binance fake (ccxt's
real HTTP, signing and parsing), MT5 on the fake MetaTrader5 module and IBKR on the fake
TWS of tests/support/ib_fake.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from core.app import Engine, build_engine
from core.domain import ExitStyle, OrderRequest, OrderState, OrderType, Side, SignalStatus
from core.errors import OrderNotFoundError, TransitionConflictError
from core.services import Proposal
from tests.support import binance_fake, ib_fake, mt5_fake


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
