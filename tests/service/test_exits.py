"""Protective exits that SignalDesk watches itself (a venue whose exit style is WATCHED,
like a spot exchange), exactly once under racing checks and across a crash; a stop the
venue refuses; and the trailing settings at the service, webhook and CLI boundaries.
SQLite and PostgreSQL.

The venue is the paper broker on the real replay that answers WATCHED to ``exit_style``.
Entry 0.01 BTC at candle 0: 113666.68 x 1.0002 -> 113689.42 (fee 1.1368942). Candle 2
closes at 112693.15, below a stop at 113000 (candle 1 closes 113659.01, above it); a
watched exit sells at market: 112693.15 x 0.9998 = 112670.611370 -> 112670.61, fee
1.1267061; realized 0.01 x (112670.61 - 113689.42) = -10.1881.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import col, func, select

from core.app import Engine, build_engine
from core.brokers.paper import PaperBroker
from core.db.engine import Database
from core.db.models import OrderRow, OutboxRow, PaperOrderRow
from core.domain import (
    ExitReason,
    ExitStyle,
    OrderReport,
    OrderRequest,
    OrderType,
    Side,
    TradeStatus,
)
from core.errors import InvalidInputError, OrderRejectedError
from core.marketdata.replay import ReplayFeed, ReplayMarketData, load_candles
from core.notify import Priority
from core.services import Proposal
from core.webhook import build_webhook_app
from tests.conftest import Clock
from tests.service.test_trades import enter, exit_messages, exit_orders
from tests.support.duties import eventually

BTC = "BTC/USDT"
D = Decimal


class ProcessDied(Exception):
    """Stands for the process dying at that point (nothing after it runs)."""


class WatchedPaper(PaperBroker):
    """The paper broker on its own pool, answering WATCHED as a spot exchange would.

    ``crash``: "before" dies when asked to close (nothing placed), "after" dies once the
    close has executed (placed, never recorded)."""

    crash = ""

    async def exit_style(self, symbol: str) -> ExitStyle:
        self.feed.price(symbol)
        return ExitStyle.WATCHED

    async def close_position(
        self,
        symbol: str,
        client_order_id: str,
        quantity: Decimal | None = None,
        position_ref: str = "",
    ) -> OrderReport | None:
        if self.crash == "before":
            raise ProcessDied
        report = await super().close_position(symbol, client_order_id, quantity, position_ref)
        if self.crash == "after":
            raise ProcessDied
        return report

    async def close(self) -> None:
        await self._db.close()


class RefusingStops(WatchedPaper):
    """Holds orders, but refuses stop orders (as a market without trigger orders does)."""

    async def exit_style(self, symbol: str) -> ExitStyle:
        return ExitStyle.ORDERS

    async def place_order(self, request: OrderRequest) -> OrderReport:
        if request.order_type is OrderType.STOP:
            raise OrderRejectedError("stop orders are not supported on this market")
        return await super().place_order(request)


class FailsOnceDecidingExits(WatchedPaper):
    """Holds orders, but the first question about exits fails unexpectedly."""

    asked = 0

    async def exit_style(self, symbol: str) -> ExitStyle:
        self.asked += 1
        if self.asked == 1:
            raise ProcessDied("the terminal went away")
        return ExitStyle.ORDERS


@pytest.fixture
async def venue(
    database_url: str, make_settings: Callable[..., Any], clock: Clock
) -> AsyncIterator[Callable[..., Any]]:
    """Builds engines on ``database_url`` over a given paper broker class; a second call
    is a restart (a new process on the same database, its replay at candle 0)."""
    engines: list[Engine] = []

    async def start(broker_class: type[WatchedPaper] = WatchedPaper, crash: str = "") -> Engine:
        settings = make_settings(database_url=database_url)
        feed = ReplayFeed(BTC, load_candles(settings.feed_csv), speed=0, clock=clock)
        broker = broker_class(Database(database_url), feed, clock=clock)
        broker.crash = crash
        engine = await build_engine(settings, broker=broker, clock=clock)
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        await engine.close()


def feed_of(engine: Engine) -> ReplayFeed:
    feed = engine.broker.feed  # type: ignore[attr-defined]  # through the quote hook
    assert isinstance(feed, ReplayFeed)
    return feed


async def count(engine: Engine, model: Any, *where: Any) -> int:
    async with engine.db.session() as session:
        return (await session.exec(select(func.count()).select_from(model).where(*where))).one()


async def test_two_racing_checks_close_a_watched_trade_exactly_once(
    venue: Callable[..., Any],
) -> None:
    engine = await venue()
    trade = await enter(engine, Side.BUY, stop_loss="113000", take_profit="115000")
    assert trade.exit_style is ExitStyle.WATCHED
    assert await exit_orders(engine, trade.id) == []  # nothing rests at the venue
    feed_of(engine).step()
    await engine.exits.check()  # candle 1 closes 113659.01: nothing
    feed_of(engine).step()  # candle 2 closes 112693.15 <= 113000

    first, second = await asyncio.gather(engine.exits.check(), engine.exits.check())
    await engine.exits.check()

    assert len(first.triggered) + len(second.triggered) == 1
    closed = await engine.trades.trade(trade.id)
    assert (closed.status, closed.exit_reason, closed.average_exit) == (
        TradeStatus.CLOSED,
        ExitReason.STOP_LOSS,
        D("112670.61"),
    )
    assert closed.realized_pnl == D("-10.1881")
    assert closed.fees == D("2.2636003")  # 1.1368942 + 1.1267061
    [(suffix, kind, state, _)] = await exit_orders(engine, trade.id)
    assert (suffix[0], kind, state) == ("w", "market", "FILLED")
    assert await count(engine, PaperOrderRow) == 2  # the entry and one exit
    assert len(await exit_messages(engine)) == 1
    assert await engine.trading.positions() == []


async def test_a_quote_the_engine_takes_triggers_the_watched_exit(
    venue: Callable[..., Any],
) -> None:
    engine = await venue()
    trade = await enter(engine, Side.BUY, stop_loss="113000")
    feed_of(engine).step(2)

    await engine.broker.quote(BTC)  # e.g. a proposal's reference price

    async def closed() -> bool:
        return (await engine.trades.trade(trade.id)).status is TradeStatus.CLOSED

    await eventually(closed)
    assert len(await exit_messages(engine)) == 1


async def test_the_watcher_follows_the_market_data_where_it_and_the_broker_disagree(
    database_url: str, make_settings: Callable[..., Any], clock: Clock
) -> None:
    """The market data (a replay of its own) and the venue (the paper broker on another
    replay) disagree: the watched stop follows the market data, and the exit executes at
    the venue's price."""
    settings = make_settings(database_url=database_url)
    candles = load_candles(settings.feed_csv)
    at_venue = ReplayFeed(BTC, candles, speed=0, clock=clock)
    in_market = ReplayFeed(BTC, candles, speed=0, clock=clock)
    broker = WatchedPaper(Database(database_url), at_venue, clock=clock)
    engine = await build_engine(
        settings, broker=broker, market=ReplayMarketData([in_market]), clock=clock
    )
    try:
        trade = await enter(engine, Side.BUY, stop_loss="113000")
        at_venue.step(2)  # the venue trades through the stop: 112693.15
        in_market.step(1)  # the market data does not: 113659.01

        await engine.broker.quote(BTC)  # a venue quote makes the check read the market data
        assert (await engine.exits.check()).triggered == []
        assert (await engine.trades.trade(trade.id)).status is TradeStatus.OPEN

        in_market.step(1)  # now it does: 112693.15
        await engine.market.quote(BTC)  # e.g. a strategy's quote: checked in the background

        async def closed() -> bool:
            return (await engine.trades.trade(trade.id)).status is TradeStatus.CLOSED

        await eventually(closed)
        done = await engine.trades.trade(trade.id)
        # sold at the venue's price: 112693.15 x 0.9998 -> 112670.61
        assert (done.exit_reason, done.average_exit) == (ExitReason.STOP_LOSS, D("112670.61"))
        assert done.realized_pnl == D("-10.1881")
        assert len(await exit_messages(engine)) == 1
    finally:
        await engine.close()


@pytest.mark.parametrize("crash", ["before", "after"])
async def test_a_crash_between_the_trigger_and_the_fill_is_reconciled_into_one_exit(
    venue: Callable[..., Any], clock: Clock, crash: str
) -> None:
    engine = await venue(crash=crash)
    trade = await enter(engine, Side.BUY, stop_loss="113000")
    feed_of(engine).step(2)
    with pytest.raises(ProcessDied):
        await engine.exits.check()
    [(_, _, state, _)] = await exit_orders(engine, trade.id)
    assert state == "SUBMITTED"  # committed before the broker was called
    placed = 2 if crash == "after" else 1
    assert await count(engine, PaperOrderRow) == placed

    clock.advance(60)  # the restart comes after the in-flight grace
    restarted = await venue()
    feed_of(restarted).step(2)
    assert (await restarted.exits.check()).triggered == []  # the exit is in flight
    summary = await restarted.reconciler.run()
    await restarted.exits.check()

    [cid] = summary.adopted if crash == "after" else summary.resubmitted
    assert cid.startswith("sd") and "-w" in cid
    closed = await restarted.trades.trade(trade.id)
    assert (closed.status, closed.exit_reason) == (TradeStatus.CLOSED, ExitReason.STOP_LOSS)
    assert closed.average_exit == D("112670.61")
    assert await count(restarted, PaperOrderRow) == 2  # one exit at the venue, not two
    live_exits = col(OrderRow.purpose) == "stop_loss", col(OrderRow.state) != "FAILED"
    assert await count(restarted, OrderRow, *live_exits) == 1
    # "before": the lost exit is re-sent once under a new id; the old row says so
    failed = col(OrderRow.purpose) == "stop_loss", col(OrderRow.state) == "FAILED"
    assert await count(restarted, OrderRow, *failed) == (1 if crash == "before" else 0)
    assert len(await exit_messages(restarted)) == 1
    assert await restarted.trading.positions() == []


async def test_a_refused_stop_alerts_and_the_trade_is_watched_instead(
    venue: Callable[..., Any],
) -> None:
    engine = await venue(RefusingStops)

    trade = await enter(engine, Side.BUY, stop_loss="113000", take_profit="115000")

    assert trade.exit_style is ExitStyle.WATCHED
    assert await exit_orders(engine, trade.id) == [("sl1", "stop", "FAILED", D("113000"))]
    async with engine.db.session() as session:
        alerts = (
            await session.exec(
                select(OutboxRow.text).where(col(OutboxRow.priority) == Priority.ALERT)
            )
        ).all()
    assert any("could not be placed" in text and "watches" in text for text in alerts)

    feed_of(engine).step(2)
    await engine.exits.check()
    closed = await engine.trades.trade(trade.id)
    assert (closed.status, closed.average_exit) == (TradeStatus.CLOSED, D("112670.61"))


async def test_trailing_settings_are_validated_and_copied_to_the_trade(engine: Engine) -> None:
    for value in ("0", "150", "100"):
        with pytest.raises(InvalidInputError, match="trail_pct"):
            await engine.signals.propose(
                Proposal("t", BTC, Side.BUY, D("0.01"), stop_loss=D(113000), trail_pct=D(value))
            )
    with pytest.raises(InvalidInputError, match="breakeven_at_r"):
        await engine.signals.propose(
            Proposal("t", BTC, Side.BUY, D("0.01"), stop_loss=D(113000), breakeven_at_r=D(0))
        )
    with pytest.raises(InvalidInputError, match="breakeven_at_r needs a stop loss"):
        await engine.signals.propose(Proposal("t", BTC, Side.BUY, D("0.01"), breakeven_at_r=D(1)))

    trade = await enter(engine, Side.BUY, stop_loss="113000", trail_pct="1.5", breakeven_at_r="0.5")

    assert (trade.trail_pct, trade.breakeven_at_r) == (D("1.5"), D("0.5"))


async def test_the_webhook_takes_trailing_settings_and_refuses_bad_ones(
    make_settings: Callable[..., Any], sqlite_url: str, clock: Clock
) -> None:
    engine = await build_engine(
        make_settings(database_url=sqlite_url, webhook_secret="s3"), clock=clock
    )
    alert = {"secret": "s3", "symbol": BTC, "side": "buy", "quantity": "0.01"}
    try:
        async with TestClient(TestServer(build_webhook_app(engine))) as client:
            bad = await client.post("/webhook", data=json.dumps(alert | {"trail_pct": 150}))
            assert bad.status == 422
            assert "trail_pct" in (await bad.json())["error"]
            good = await client.post(
                "/webhook",
                data=json.dumps(
                    alert | {"stop_loss": 113000, "trail_pct": "0.8", "breakeven_at_r": 1}
                ),
            )
            assert good.status == 201
            signal = await engine.signals.get((await good.json())["signal_id"])
            assert (signal.trail_pct, signal.breakeven_at_r) == (D("0.8"), D(1))
    finally:
        await engine.close()


async def test_exits_not_placed_at_the_fill_are_alerted_and_placed_by_the_next_check(
    venue: Callable[..., Any],
) -> None:
    engine = await venue(FailsOnceDecidingExits)
    signal = await engine.signals.propose(
        Proposal("t", BTC, Side.BUY, D("0.01"), stop_loss=D(113000), take_profit=D(114000))
    )

    decision = await engine.signals.approve(signal.id, "owner:1")  # the fill is kept

    assert decision.signal.status.value == "FILLED"
    trade = await engine.trades.for_signal(signal.id)
    assert trade is not None and await exit_orders(engine, trade.id) == []
    async with engine.db.session() as session:
        alerts = (
            await session.exec(
                select(OutboxRow.text).where(col(OutboxRow.priority) == Priority.ALERT)
            )
        ).all()
    assert any("could not be placed" in text for text in alerts)

    summary = await engine.exits.check()

    assert summary.decided == [trade.id]
    assert [(s, state) for s, _, state, _ in await exit_orders(engine, trade.id)] == [
        ("sl1", "OPEN"),
        ("tp1", "OPEN"),
    ]
