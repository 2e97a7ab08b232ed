"""The paper broker on the real BTC/USDT hourly candles, against values computed by hand.

Candles used (from core/marketdata/data/btc_usdt_1h.csv.gz, index: open time, O/H/L/C):

    0  2025-08-20T11:00Z  O 113792.19  H 113859.26  L 113060.08  C 113666.68
    1  2025-08-20T12:00Z  O 113666.69  H 113944.00  L 113512.88  C 113659.01
    2  2025-08-20T13:00Z  O 113659.01  H 113659.01  L 112600.00  C 112693.15
    3  2025-08-20T14:00Z  O 112693.14  H 113854.34  L 112380.00  C 113465.84
    4  2025-08-20T15:00Z  O 113465.84  H 114326.35  L 113229.43  C 113353.94
    10 2025-08-20T21:00Z  O 114370.00  H 114476.13  L 114000.00  C 114356.24
    11 2025-08-20T22:00Z  O 114356.24  H 114615.38  L 114206.89  C 114595.19
    candles 1..30: the lowest low is 112201.00 (candle 30)
    2145 2025-11-17T20:00Z O 91678.93  H 92234.53  L 91292.00  C 91920.59
    2146 2025-11-17T21:00Z O 91914.01  H 92253.72  L 91500.00  C 91959.71  (opens 6.58 lower)
    2337 2025-11-25T20:00Z O 86882.84  H 87463.00  L 86706.28  C 87382.70
    2338 2025-11-25T21:00Z O 87387.48  H 87449.73  L 86985.02  C 87032.37  (opens 4.78 higher)

Default costs: spread 2 bps, slippage 1 bps, fee 10 bps, so a market order pays
(2 / 2 + 1) / 10000 = 0.0002 of the close, rounded to the 0.01 tick against the taker:

    buy  at candle 0: 113666.68 x 1.0002 = 113689.413336 -> up   113689.42
    sell at candle 0: 113666.68 x 0.9998 = 113643.946664 -> down 113643.94
    buy  at candle 2: 112693.15 x 1.0002 = 112715.688630 -> up   112715.69
    sell at candle 2: 112693.15 x 0.9998 = 112670.611370 -> down 112670.61
    sell at candle 11: 114595.19 x 0.9998 = 114572.270962 -> down 114572.27

A triggered STOP / TAKE_PROFIT pays the same costs from its trigger (or the gap open).

and the fee is notional x 10 / 10000 = notional x 0.001, rounded half-up to 1e-8.
The account starts with 10000 USDT at leverage 1 and a maximum order quantity of 1 BTC.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func
from sqlalchemy.orm import Session
from sqlmodel import select

from core.brokers.paper import PaperBroker
from core.config import DEFAULT_FEED_CSV
from core.db.engine import Database, upgrade_schema
from core.db.models import PaperAccountRow, PaperOrderRow, PaperPositionRow
from core.domain import ExitStyle, OrderReport, OrderRequest, OrderState, OrderType, Side
from core.errors import (
    InsufficientMarginError,
    InvalidQuantityError,
    OrderNotFoundError,
    OrderRejectedError,
    UnknownSymbolError,
)
from core.marketdata.replay import ReplayFeed, ReplayMarketData, load_candles

SYMBOL = "BTC/USDT"
CANDLES = load_candles(DEFAULT_FEED_CSV)
D = Decimal


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated with ``upgrade_schema``; each test works on a copy."""
    path = tmp_path_factory.mktemp("paper") / "template.db"
    asyncio.run(upgrade_schema(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture
async def db(migrated_template: Path, tmp_path: Path, sqlite_url: str) -> AsyncIterator[Database]:
    shutil.copyfile(migrated_template, tmp_path / "signaldesk.db")
    database = Database(sqlite_url)
    yield database
    await database.close()


@pytest.fixture
def feed(clock: Any) -> ReplayFeed:
    """The real candles, manual steps only, starting on candle 0."""
    return ReplayFeed(SYMBOL, CANDLES, speed=0, clock=clock)


@pytest.fixture
def make_broker(db: Database, feed: ReplayFeed, clock: Any) -> Any:
    def make(**kwargs: Any) -> PaperBroker:
        return PaperBroker(db, feed, clock=clock, **kwargs)

    return make


@pytest.fixture
def broker(make_broker: Any) -> PaperBroker:
    return make_broker()


def market(cid: str, side: Side, quantity: str, symbol: str = SYMBOL) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=symbol, side=side, quantity=D(quantity))


def limit(cid: str, side: Side, quantity: str, price: str) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        symbol=SYMBOL,
        side=side,
        quantity=D(quantity),
        order_type=OrderType.LIMIT,
        limit_price=D(price),
    )


def trigger(cid: str, kind: OrderType, side: Side, quantity: str, level: str) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        symbol=SYMBOL,
        side=side,
        quantity=D(quantity),
        order_type=kind,
        trigger_price=D(level),
        reduce_only=True,
    )


def stop(cid: str, side: Side, quantity: str, level: str) -> OrderRequest:
    return trigger(cid, OrderType.STOP, side, quantity, level)


def take_profit(cid: str, side: Side, quantity: str, level: str) -> OrderRequest:
    return trigger(cid, OrderType.TAKE_PROFIT, side, quantity, level)


async def _count(db: Database, model: Any) -> int:
    async with db.session() as session:
        return (await session.exec(select(func.count()).select_from(model))).one()


# --- prices and fees -------------------------------------------------------------------------


async def test_quote_is_the_close_plus_minus_half_the_spread_rounded_outwards(
    broker: PaperBroker,
) -> None:
    quote = await broker.quote(SYMBOL)

    # half spread = 113666.68 x 1 / 10000 = 11.366668
    # bid = 113655.313332 -> down 113655.31; ask = 113678.046668 -> up 113678.05
    assert (quote.bid, quote.ask, quote.last) == (D("113655.31"), D("113678.05"), D("113666.68"))


async def test_market_buy_fills_at_close_plus_costs_rounded_up_with_fee_on_notional(
    broker: PaperBroker,
) -> None:
    report = await broker.place_order(market("buy-1", Side.BUY, "0.05"))

    assert report.state is OrderState.FILLED
    assert report.filled_quantity == D("0.05")
    assert report.average_price == D("113689.42")
    # fee = 0.05 x 113689.42 x 0.001 = 5684.471 x 0.001 = 5.684471
    assert report.fee == D("5.684471")
    assert report.fee_currency == "USDT"
    assert [(f.side, f.quantity, f.price, f.fee) for f in report.fills] == [
        (Side.BUY, D("0.05"), D("113689.42"), D("5.684471"))
    ]
    account = await broker.account()
    assert account.balance == D("9994.315529")  # 10000 - 5.684471
    [position] = await broker.positions()
    assert (position.quantity, position.average_entry, position.mark_price) == (
        D("0.05"),
        D("113689.42"),
        D("113666.68"),
    )
    # unrealized = (113666.68 - 113689.42) x 0.05 = -22.74 x 0.05 = -1.137
    assert position.unrealized_pnl == D("-1.137")
    assert account.equity == D("9993.178529")  # 9994.315529 - 1.137
    assert account.margin == D("5683.334")  # 0.05 x 113666.68 / leverage 1


async def test_market_sell_opens_a_short_at_close_minus_costs_rounded_down(
    broker: PaperBroker,
) -> None:
    report = await broker.place_order(market("sell-1", Side.SELL, "0.05"))

    assert report.state is OrderState.FILLED
    assert report.average_price == D("113643.94")
    # fee = 0.05 x 113643.94 x 0.001 = 5682.197 x 0.001 = 5.682197
    assert report.fee == D("5.682197")
    [position] = await broker.positions()
    assert (position.quantity, position.average_entry) == (D("-0.05"), D("113643.94"))
    # unrealized = (113666.68 - 113643.94) x -0.05 = 22.74 x -0.05 = -1.137
    assert position.unrealized_pnl == D("-1.137")
    assert (await broker.account()).balance == D("9994.317803")  # 10000 - 5.682197


async def test_fee_rounds_half_up_at_the_eighth_decimal(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    feed.step(2)  # candle 2, buy fill 112715.69

    report = await broker.place_order(market("tiny", Side.BUY, "0.0005"))

    assert report.average_price == D("112715.69")
    # 0.0005 x 112715.69 = 56.357845; x 0.001 = 0.056357845 -> half-up -> 0.05635785
    # (half-even would give 0.05635784)
    assert report.fee == D("0.05635785")
    assert (await broker.account()).balance == D("9999.94364215")  # 10000 - 0.05635785


async def test_configured_costs_change_the_fill_price_and_fee(make_broker: Any) -> None:
    broker = make_broker(spread_bps=D(10), slippage_bps=D(5), fee_bps=D("7.5"))

    report = await broker.place_order(market("buy-1", Side.BUY, "0.05"))

    # cost = (10 / 2 + 5) / 10000 = 0.001; 113666.68 x 1.001 = 113780.34668 -> up 113780.35
    assert report.average_price == D("113780.35")
    # 0.05 x 113780.35 = 5689.0175; x 7.5 / 10000 = 4.266763125 -> half-up -> 4.26676313
    assert report.fee == D("4.26676313")


async def test_zero_costs_fill_at_the_close_without_fee(make_broker: Any) -> None:
    broker = make_broker(spread_bps=D(0), slippage_bps=D(0), fee_bps=D(0))

    report = await broker.place_order(market("sell-1", Side.SELL, "0.05"))

    assert (report.average_price, report.fee) == (D("113666.68"), D(0))
    assert (await broker.account()).balance == D(10000)


# --- PnL ------------------------------------------------------------------------------------


async def test_round_trip_realizes_pnl_and_moves_the_balance_by_pnl_and_fees(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    feed.step(2)  # candle 2
    buy = await broker.place_order(market("open", Side.BUY, "0.05"))
    feed.step(9)  # candle 11
    sell = await broker.place_order(market("close", Side.SELL, "0.05"))

    assert buy.average_price == D("112715.69")
    assert buy.fee == D("5.6357845")  # 0.05 x 112715.69 = 5635.7845; x 0.001
    assert sell.average_price == D("114572.27")
    assert sell.fee == D("5.7286135")  # 0.05 x 114572.27 = 5728.6135; x 0.001
    assert await broker.positions() == []
    async with broker._db.session() as session:
        row = await session.get(PaperPositionRow, SYMBOL)
        assert row is not None
        # realized = 0.05 x (114572.27 - 112715.69) = 0.05 x 1856.58 = 92.829
        assert (row.quantity, row.realized_pnl) == (D(0), D("92.829"))
    account = await broker.account()
    # 10000 - 5.6357845 + 92.829 - 5.7286135 = 10081.464602
    assert account.balance == D("10081.464602")
    assert account.equity == D("10081.464602")  # flat: no unrealized PnL
    assert account.margin == D(0)


async def test_adding_to_a_long_averages_the_entry(broker: PaperBroker, feed: ReplayFeed) -> None:
    await broker.place_order(market("first", Side.BUY, "0.02"))  # at 113689.42
    feed.step(2)
    second = await broker.place_order(market("second", Side.BUY, "0.03"))  # at 112715.69

    assert second.average_price == D("112715.69")
    [position] = await broker.positions()
    # (0.02 x 113689.42 + 0.03 x 112715.69) / 0.05 = (2273.7884 + 3381.4707) / 0.05
    #   = 5655.2591 / 0.05 = 113105.182
    assert position.quantity == D("0.05")
    assert position.average_entry == D("113105.182")
    assert position.realized_pnl == D(0)
    # mark 112693.15: (112693.15 - 113105.182) x 0.05 = -412.032 x 0.05 = -20.6016
    assert position.unrealized_pnl == D("-20.6016")
    # fees 2.2737884 + 3.3814707 = 5.6552591
    assert (await broker.account()).balance == D("9994.3447409")


async def test_partial_close_realizes_pnl_on_the_closed_part_only(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.05"))  # at 113689.42, fee 5.684471
    feed.step(11)
    sell = await broker.place_order(market("part", Side.SELL, "0.02"))

    assert sell.average_price == D("114572.27")
    assert sell.fee == D("2.2914454")  # 0.02 x 114572.27 = 2291.4454; x 0.001
    [position] = await broker.positions()
    assert position.quantity == D("0.03")
    assert position.average_entry == D("113689.42")  # a reduction keeps the entry
    # realized = 0.02 x (114572.27 - 113689.42) = 0.02 x 882.85 = 17.657
    assert position.realized_pnl == D("17.657")
    # unrealized at 114595.19: (114595.19 - 113689.42) x 0.03 = 905.77 x 0.03 = 27.1731
    assert position.unrealized_pnl == D("27.1731")
    account = await broker.account()
    # 10000 - 5.684471 + 17.657 - 2.2914454 = 10009.6810836
    assert account.balance == D("10009.6810836")
    assert account.equity == D("10036.8541836")  # 10009.6810836 + 27.1731


async def test_selling_more_than_the_long_flips_to_a_short_at_the_fill_price(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    await broker.place_order(market("long", Side.BUY, "0.02"))  # at 113689.42, fee 2.2737884
    feed.step(2)
    flip = await broker.place_order(market("flip", Side.SELL, "0.05"))

    assert flip.average_price == D("112670.61")
    assert flip.fee == D("5.6335305")  # 0.05 x 112670.61 = 5633.5305; x 0.001
    [position] = await broker.positions()
    assert position.quantity == D("-0.03")
    assert position.average_entry == D("112670.61")
    # realized on the 0.02 closed: 0.02 x (112670.61 - 113689.42) = 0.02 x -1018.81 = -20.3762
    assert position.realized_pnl == D("-20.3762")
    # unrealized at 112693.15: (112693.15 - 112670.61) x -0.03 = 22.54 x -0.03 = -0.6762
    assert position.unrealized_pnl == D("-0.6762")
    # 10000 - 2.2737884 - 20.3762 - 5.6335305 = 9971.7164811
    assert (await broker.account()).balance == D("9971.7164811")


async def test_unrealized_pnl_follows_the_replay_after_steps(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.05"))  # at 113689.42

    feed.step(10)  # candle 10, close 114356.24

    [position] = await broker.positions()
    assert position.mark_price == D("114356.24")
    # (114356.24 - 113689.42) x 0.05 = 666.82 x 0.05 = 33.341
    assert position.unrealized_pnl == D("33.341")
    account = await broker.account()
    assert account.balance == D("9994.315529")  # unrealized PnL does not move the balance
    assert account.equity == D("10027.656529")  # 9994.315529 + 33.341
    assert account.margin == D("5717.812")  # 0.05 x 114356.24
    assert account.free_margin == D("4309.844529")  # 10027.656529 - 5717.812


async def test_unrealized_pnl_of_a_short_after_steps(broker: PaperBroker, feed: ReplayFeed) -> None:
    await broker.place_order(market("open", Side.SELL, "0.05"))  # at 113643.94

    feed.step(10)

    [position] = await broker.positions()
    # (114356.24 - 113643.94) x -0.05 = 712.30 x -0.05 = -35.615
    assert position.unrealized_pnl == D("-35.615")


# --- limit orders ---------------------------------------------------------------------------


async def test_resting_limit_buy_fills_at_its_limit_on_the_candle_whose_low_reaches_it(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    # Market buy would be 113689.42 > 113000: the order rests.
    placed = await broker.place_order(limit("lim", Side.BUY, "0.05", "113000"))
    assert placed.state is OrderState.OPEN
    assert placed.filled_quantity == D(0)
    assert placed.fills == ()

    feed.step()  # candle 1: low 113512.88 > 113000
    still = await broker.get_order("lim", SYMBOL)
    assert still is not None and still.state is OrderState.OPEN
    assert await broker.positions() == []

    feed.step()  # candle 2: open 113659.01 > 113000, low 112600.00 <= 113000
    filled = await broker.get_order("lim", SYMBOL)

    assert filled is not None
    assert filled.state is OrderState.FILLED
    assert filled.average_price == D("113000")
    assert filled.fee == D("5.65")  # 0.05 x 113000 = 5650; x 0.001
    [position] = await broker.positions()
    assert (position.quantity, position.average_entry) == (D("0.05"), D("113000"))
    assert (await broker.account()).balance == D("9994.35")  # 10000 - 5.65


async def test_resting_limit_buy_fills_at_the_open_when_the_candle_opens_below_it(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    feed.step(2)  # candle 2: close 112693.15, market buy 112715.69 > 112700: rests
    placed = await broker.place_order(limit("lim", Side.BUY, "0.05", "112700"))
    assert placed.state is OrderState.OPEN

    feed.step()  # candle 3 opens at 112693.14, below the limit
    filled = await broker.get_order("lim", SYMBOL)

    assert filled is not None
    assert filled.state is OrderState.FILLED
    assert filled.average_price == D("112693.14")  # min(112700, open 112693.14)
    assert filled.fee == D("5.634657")  # 0.05 x 112693.14 = 5634.657; x 0.001


async def test_resting_limit_buy_below_every_low_stays_open_and_moves_nothing(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    await broker.place_order(limit("lim", Side.BUY, "0.05", "110000"))

    feed.step(30)  # lowest low of candles 1..30 is 112201.00

    report = await broker.get_order("lim", SYMBOL)
    assert report is not None
    assert report.state is OrderState.OPEN
    assert (report.filled_quantity, report.average_price, report.fee) == (D(0), None, D(0))
    assert await broker.positions() == []
    assert (await broker.account()).balance == D(10000)


async def test_resting_limit_sell_fills_at_its_limit_when_a_high_reaches_it(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    # Market sell would be 113643.94 < 114000: the order rests.
    placed = await broker.place_order(limit("lim", Side.SELL, "0.05", "114000"))
    assert placed.state is OrderState.OPEN

    feed.step(3)  # highs of candles 1..3: 113944.00, 113659.01, 113854.34 (all < 114000)
    assert (await broker.get_order("lim", SYMBOL)).state is OrderState.OPEN  # type: ignore[union-attr]

    feed.step()  # candle 4: open 113465.84 < 114000, high 114326.35 >= 114000
    filled = await broker.get_order("lim", SYMBOL)

    assert filled is not None
    assert (filled.state, filled.average_price, filled.fee) == (
        OrderState.FILLED,
        D("114000"),
        D("5.7"),  # 0.05 x 114000 = 5700; x 0.001
    )
    [position] = await broker.positions()
    assert (position.quantity, position.average_entry) == (D("-0.05"), D("114000"))
    # mark 113353.94: (113353.94 - 114000) x -0.05 = -646.06 x -0.05 = 32.303
    assert position.unrealized_pnl == D("32.303")


async def test_marketable_limit_buy_fills_at_once_at_the_market_price_not_the_limit(
    broker: PaperBroker,
) -> None:
    report = await broker.place_order(limit("lim", Side.BUY, "0.05", "113700"))

    assert report.state is OrderState.FILLED
    assert report.average_price == D("113689.42")  # market buy 113689.42 <= limit 113700
    assert report.fee == D("5.684471")


async def test_marketable_limit_sell_fills_at_once_at_the_market_price_not_the_limit(
    broker: PaperBroker,
) -> None:
    report = await broker.place_order(limit("lim", Side.SELL, "0.05", "113600"))

    assert report.state is OrderState.FILLED
    assert report.average_price == D("113643.94")  # market sell 113643.94 >= limit 113600


async def test_limit_order_without_a_price_is_rejected_and_writes_nothing(
    broker: PaperBroker, db: Database
) -> None:
    request = OrderRequest(
        client_order_id="lim",
        symbol=SYMBOL,
        side=Side.BUY,
        quantity=D("0.05"),
        order_type=OrderType.LIMIT,
    )

    with pytest.raises(OrderRejectedError, match="positive limit price"):
        await broker.place_order(request)

    assert await _count(db, PaperOrderRow) == 0


# --- idempotency and closing ----------------------------------------------------------------


async def test_place_order_twice_with_the_same_client_id_makes_one_order(
    broker: PaperBroker, feed: ReplayFeed, db: Database
) -> None:
    first = await broker.place_order(market("dup", Side.BUY, "0.05"))
    feed.step(11)  # the price moved; the replayed request must not fill again
    second = await broker.place_order(market("dup", Side.BUY, "0.05"))

    assert second == first
    assert second.average_price == D("113689.42")
    assert await _count(db, PaperOrderRow) == 1
    [position] = await broker.positions()
    assert position.quantity == D("0.05")
    assert (await broker.account()).balance == D("9994.315529")  # one fee only


def _statements_of(db: Database) -> tuple[list[str], Any]:
    """The SQL ``db`` sends from now on (first words of each), and the listener's key."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(" ".join(statement.split()[:3]))

    listen = (db.engine.sync_engine, "before_cursor_execute", record)
    event.listen(*listen)
    return sent, listen


async def test_the_account_with_nothing_resting_is_one_read_and_builds_no_session(
    broker: PaperBroker, db: Database
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.05"))
    sent, listen = _statements_of(db)
    sessions: list[object] = []
    began = (Session, "after_begin", lambda session, *_: sessions.append(session))
    event.listen(*began)
    try:
        account = await broker.account()
    finally:
        event.remove(*listen)
        event.remove(*began)

    assert [s.split()[0] for s in sent] == ["SELECT"]  # the balance and positions together
    assert sessions == []  # twice per approval: a session for one read cost twice the read
    assert account.balance < D(10000)  # the fill's notional and fee are in it


async def test_a_market_order_that_fills_sends_four_statements_and_reads_nothing_known(
    broker: PaperBroker, db: Database
) -> None:
    await broker.account()  # the account row exists (its first transaction read the ledger)
    sent, listen = _statements_of(db)

    await broker.place_order(market("open", Side.BUY, "0.05"))  # a new position
    opened = list(sent)
    sent.clear()
    await broker.place_order(market("more", Side.BUY, "0.01"))  # a held position
    added = list(sent)
    sent.clear()
    await broker.place_order(market("more", Side.BUY, "0.01"))  # replayed: one more read
    replayed = list(sent)
    event.remove(*listen)

    # the lock (returning seq, the balance and whether the client id is known), then one
    # write per table; the positions this broker's last transaction left are current
    # (nothing else bumped seq since), so they are not read again for the margin check
    assert opened == [
        "UPDATE paper_account SET",
        "INSERT INTO paper_orders",
        "INSERT INTO paper_positions",
        "UPDATE paper_account SET",
    ]
    assert added == [*opened[:2], "UPDATE paper_positions SET", "UPDATE paper_account SET"]
    assert replayed == [
        "UPDATE paper_account SET",
        "SELECT paper_orders.id, paper_orders.client_order_id,",
    ]
    [position] = await broker.positions()
    assert position.quantity == D("0.06")


async def test_positions_are_read_again_once_another_broker_wrote_the_ledger(
    broker: PaperBroker, make_broker: Any, db: Database
) -> None:
    other = make_broker()  # another process on the same database
    await broker.place_order(market("open", Side.BUY, "0.05"))
    await other.place_order(market("other", Side.SELL, "0.02"))
    sent, listen = _statements_of(db)

    await broker.place_order(market("more", Side.BUY, "0.01"))

    event.remove(*listen)
    assert "SELECT paper_positions.symbol, paper_positions.quantity," in sent
    for seen_by in (broker, other):
        [position] = await seen_by.positions()
        assert position.quantity == D("0.04")


async def test_close_position_sells_the_whole_long_at_market(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.05"))  # at 113689.42, fee 5.684471
    feed.step(11)

    report = await broker.close_position(SYMBOL, "close-1")

    assert report is not None
    assert (report.side, report.quantity, report.state) == (
        Side.SELL,
        D("0.05"),
        OrderState.FILLED,
    )
    assert report.average_price == D("114572.27")
    assert report.fee == D("5.7286135")
    assert await broker.positions() == []
    # realized 0.05 x (114572.27 - 113689.42) = 44.1425
    # balance 10000 - 5.684471 + 44.1425 - 5.7286135 = 10032.7294155
    assert (await broker.account()).balance == D("10032.7294155")


async def test_close_position_buys_back_a_short(broker: PaperBroker) -> None:
    await broker.place_order(market("open", Side.SELL, "0.05"))

    report = await broker.close_position(SYMBOL, "close-1")

    assert report is not None
    assert (report.side, report.quantity, report.average_price) == (
        Side.BUY,
        D("0.05"),
        D("113689.42"),
    )
    assert await broker.positions() == []
    # realized (113689.42 - 113643.94) x -0.05 = 45.48 x -0.05 = -2.274
    # balance 10000 - 5.682197 - 2.274 - 5.684471 = 9986.359332
    assert (await broker.account()).balance == D("9986.359332")


async def test_close_position_closes_a_position_a_resting_limit_opened_since(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    await broker.place_order(limit("lim", Side.BUY, "0.05", "113000"))
    feed.step(2)  # candle 2's low 112600.00 reaches 113000: the limit buy is filled there

    # no positions()/account()/get_order() call has matched the limit yet
    report = await broker.close_position(SYMBOL, "close-1")

    assert report is not None
    assert (report.side, report.quantity, report.average_price) == (
        Side.SELL,
        D("0.05"),
        D("112670.61"),
    )
    assert await broker.positions() == []
    # realized 0.05 x (112670.61 - 113000) = 0.05 x -329.39 = -16.4695
    # balance 10000 - 5.65 - 16.4695 - 5.6335305 = 9972.2469695
    assert (await broker.account()).balance == D("9972.2469695")


async def test_close_position_when_flat_returns_none_and_places_nothing(
    broker: PaperBroker, db: Database
) -> None:
    assert await broker.close_position(SYMBOL, "close-1") is None
    assert await _count(db, PaperOrderRow) == 0


# --- concurrent closes ----------------------------------------------------------------------


async def _seq(db: Database) -> int:
    """How many ledger transactions have committed (each bumps ``paper_account.seq``)."""
    async with db.session() as session:
        account = await session.get(PaperAccountRow, 1)
        assert account is not None
        return account.seq


async def test_concurrent_closes_share_one_ledger_transaction_in_call_order(
    broker: PaperBroker, make_broker: Any, db: Database
) -> None:
    # opened by another broker on the database, so this one reads the positions
    await make_broker().place_order(market("open", Side.BUY, "0.05"))  # at 113689.42
    before = await _seq(db)
    statements: list[str] = []
    listen = (db.engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    event.listen(*listen)

    reports = await asyncio.gather(
        broker.close_position(SYMBOL, "close-1", D("0.02")),
        broker.close_position(SYMBOL, "close-2", D("0.02")),
        broker.close_position(SYMBOL, "close-3", D("0.02")),  # capped: 0.01 is left for it
        broker.close_position(SYMBOL, "close-1", D("0.02")),  # the same id: that order
    )

    event.remove(*listen)
    assert await _seq(db) == before + 1
    # the positions are read once for the batch (a close has no margin to check), the
    # orders once (the resting ones to match and the ones asked for, together)
    assert sum(1 for s in statements if "FROM paper_positions" in s) == 1
    assert sum(1 for s in statements if s.startswith("SELECT") and "FROM paper_orders" in s) == 1
    assert [(r.client_order_id, r.filled_quantity) for r in reports if r is not None] == [
        ("close-1", D("0.02")),
        ("close-2", D("0.02")),
        ("close-3", D("0.01")),
        ("close-1", D("0.02")),
    ]
    assert len({r.broker_order_id for r in reports if r is not None}) == 3
    assert await _count(db, PaperOrderRow) == 4
    assert await broker.positions() == []
    # sold 0.05 at 113643.94: realized 0.05 x -45.48 = -2.274; fees 2.2728788 x 2 + 1.1364394
    # balance 10000 - 5.684471 - 2.274 - 5.682197 = 9986.359332 (as one close of 0.05)
    assert (await broker.account()).balance == D("9986.359332")


async def test_concurrent_cancels_and_closes_share_one_transaction_an_unknown_id_fails_alone(
    broker: PaperBroker, db: Database
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.05"))
    await broker.place_order(limit("lim-1", Side.BUY, "0.01", "100000"))
    await broker.place_order(limit("lim-2", Side.BUY, "0.01", "100000"))
    before = await _seq(db)

    first, unknown, close, second = await asyncio.gather(
        broker.cancel_order("lim-1", SYMBOL),
        broker.cancel_order("nope", SYMBOL),
        broker.close_position(SYMBOL, "close-1"),
        broker.cancel_order("lim-2", SYMBOL),
        return_exceptions=True,
    )

    assert await _seq(db) == before + 1
    assert isinstance(unknown, OrderNotFoundError)
    assert isinstance(first, OrderReport) and isinstance(second, OrderReport)
    assert (first.state, second.state) == (OrderState.CANCELLED, OrderState.CANCELLED)
    assert isinstance(close, OrderReport) and close.filled_quantity == D("0.05")
    assert await broker.open_orders() == [] and await broker.positions() == []


async def test_a_batch_of_cancels_reads_the_orders_once_and_no_position(
    broker: PaperBroker, make_broker: Any, db: Database
) -> None:
    await broker.account()  # its account is ready
    placing = make_broker()  # another process placed them: this broker knows no position
    for request in (
        market("open", Side.BUY, "0.05"),
        limit("lim-1", Side.BUY, "0.01", "100000"),
        limit("lim-2", Side.BUY, "0.01", "100000"),
    ):
        await placing.place_order(request)
    sent, listen = _statements_of(db)

    first, second = await asyncio.gather(
        broker.cancel_order("lim-1", SYMBOL), broker.cancel_order("lim-2", SYMBOL)
    )

    event.remove(*listen)
    assert (first.state, second.state) == (OrderState.CANCELLED, OrderState.CANCELLED)
    assert sent == [
        "UPDATE paper_account SET",
        "SELECT paper_orders.id, paper_orders.client_order_id,",
        "UPDATE paper_orders SET",
    ]
    assert await broker.open_orders() == []


class FeedLost(Exception):
    """The price feed failed in the middle of a ledger transaction."""


class TickFails:
    """The replay of BTC/USDT and ETH/USDT, except that once ``failing`` is set ETH/USDT's
    price tick cannot be read (the paper broker reads it while it fills)."""

    def __init__(self, clock: Any) -> None:
        self.replay = ReplayMarketData(
            [ReplayFeed(SYMBOL, CANDLES, clock=clock), ReplayFeed("ETH/USDT", CANDLES, clock=clock)]
        )
        self.failing = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.replay, name)

    def tick(self, symbol: str) -> Decimal:
        if self.failing and symbol == "ETH/USDT":
            raise FeedLost("the feed is gone")
        return self.replay.tick(symbol)


async def test_a_close_failing_in_a_shared_transaction_fails_alone_and_the_others_fill(
    db: Database, clock: Any
) -> None:
    feed = TickFails(clock)
    broker = PaperBroker(db, feed, clock=clock)
    await broker.place_order(market("open-btc", Side.BUY, "0.02"))
    await broker.place_order(market("open-eth", Side.BUY, "0.02", "ETH/USDT"))
    feed.failing = True

    btc, eth, btc_again = await asyncio.gather(
        broker.close_position(SYMBOL, "close-btc", D("0.01")),
        broker.close_position("ETH/USDT", "close-eth"),
        broker.close_position(SYMBOL, "close-btc-2"),
        return_exceptions=True,
    )

    assert isinstance(eth, FeedLost)
    assert isinstance(btc, OrderReport) and isinstance(btc_again, OrderReport)
    assert (btc.state, btc.filled_quantity) == (OrderState.FILLED, D("0.01"))
    assert (btc_again.state, btc_again.filled_quantity) == (OrderState.FILLED, D("0.01"))
    assert [(p.symbol, p.quantity) for p in await broker.positions()] == [("ETH/USDT", D("0.02"))]
    async with db.session() as session:
        ids = (await session.exec(select(PaperOrderRow.client_order_id))).all()
    assert sorted(ids) == ["close-btc", "close-btc-2", "open-btc", "open-eth"]


async def test_a_close_cancelled_while_it_waits_for_the_ledger_is_never_executed(
    broker: PaperBroker, db: Database
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.05"))
    async with broker._lock:  # the ledger is busy with another transaction
        kept = asyncio.create_task(broker.close_position(SYMBOL, "close-kept", D("0.01")))
        dropped = asyncio.create_task(broker.close_position(SYMBOL, "close-dropped", D("0.01")))
        await asyncio.sleep(0)  # both calls run up to their wait for the ledger
        assert len(broker._queue) == 2
        dropped.cancel()

    report = await kept
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert report is not None and report.filled_quantity == D("0.01")
    [position] = await broker.positions()
    assert position.quantity == D("0.04")
    assert await _count(db, PaperOrderRow) == 2


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        pytest.param(
            market("x", Side.BUY, "0.01", symbol="ETH/USDT"),
            UnknownSymbolError,
            "unknown symbol ETH/USDT",
            id="unknown-symbol",
        ),
        pytest.param(
            market("x", Side.BUY, "0"),
            InvalidQuantityError,
            "quantity must be positive, got 0",
            id="zero-quantity",
        ),
        pytest.param(
            market("x", Side.SELL, "-0.01"),
            InvalidQuantityError,
            "quantity must be positive, got -0.01",
            id="negative-quantity",
        ),
        pytest.param(
            # needed = 0.09 x 113689.42 + fee 10.2320478 = 10232.0478 + 10.2320478
            #        = 10242.2798478 > free margin 10000
            market("x", Side.BUY, "0.09"),
            InsufficientMarginError,
            "order needs 10242.28 USDT of margin, free margin is 10000.00 USDT",
            id="insufficient-margin",
        ),
        pytest.param(
            # a resting limit reserves margin at its limit: 0.1 x 100000 + 10 = 10010 > 10000
            limit("x", Side.BUY, "0.1", "100000"),
            InsufficientMarginError,
            "order needs 10010.00 USDT of margin",
            id="insufficient-margin-resting-limit",
        ),
    ],
)
async def test_invalid_order_raises_its_typed_error_and_writes_nothing(
    broker: PaperBroker, db: Database, request_: OrderRequest, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        await broker.place_order(request_)

    assert await _count(db, PaperOrderRow) == 0
    assert await _count(db, PaperPositionRow) == 0
    account = await broker.account()
    assert (account.balance, account.equity, account.margin) == (D(10000), D(10000), D(0))


async def test_margin_just_enough_fills(broker: PaperBroker) -> None:
    # needed = 0.087 x 113689.42 + fee = 9890.97954 + 9.89097954 = 9900.87051954 <= 10000
    report = await broker.place_order(market("big", Side.BUY, "0.087"))

    assert report.state is OrderState.FILLED


async def test_leverage_divides_the_margin_needed(make_broker: Any) -> None:
    broker = make_broker(leverage=D(2))

    # needed = 0.09 x 113689.42 / 2 + fee = 5116.0239 + 10.2320478 = 5126.2559478 <= 10000
    await broker.place_order(market("big", Side.BUY, "0.09"))

    account = await broker.account()
    assert account.margin == D("5115.0006")  # 0.09 x 113666.68 / 2 = 10230.0012 / 2


async def test_reducing_order_needs_no_free_margin(broker: PaperBroker) -> None:
    # free margin afterwards is about 100 USDT; selling 0.08 would need about 9100 if checked
    await broker.place_order(market("open", Side.BUY, "0.087"))

    report = await broker.place_order(market("reduce", Side.SELL, "0.08"))

    assert report.state is OrderState.FILLED


async def test_unknown_client_order_id_returns_none(broker: PaperBroker) -> None:
    assert await broker.get_order("nope", SYMBOL) is None


async def test_two_brokers_placing_the_same_client_id_at_once_make_one_order(
    broker: PaperBroker, sqlite_url: str, clock: Any, db: Database
) -> None:
    other_db = Database(sqlite_url)
    try:
        other = PaperBroker(
            other_db, ReplayFeed(SYMBOL, CANDLES, speed=0, clock=clock), clock=clock
        )
        # Both open the ledger first, so the file is in WAL mode before the race (see the
        # report: on a file still in rollback-journal mode this race can stall for 30 s).
        await broker.account()
        await other.account()
        reports = await asyncio.gather(
            broker.place_order(market("dup", Side.BUY, "0.05")),
            other.place_order(market("dup", Side.BUY, "0.05")),
        )
    finally:
        await other_db.close()

    assert reports[0] == reports[1]
    assert await _count(db, PaperOrderRow) == 1
    assert (await broker.account()).balance == D("9994.315529")  # one fee of 5.684471


# --- persistence ----------------------------------------------------------------------------


async def test_a_second_broker_on_the_same_database_sees_the_same_ledger(
    broker: PaperBroker, sqlite_url: str, clock: Any
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.05"))  # at 113689.42
    # free margin 9993.178529 - 5683.334 = 4309.844529; this needs 0.03 x 110000 + 3.3
    await broker.place_order(limit("rest", Side.BUY, "0.03", "110000"))

    other_db = Database(sqlite_url)
    try:
        other = PaperBroker(
            other_db,
            ReplayFeed(SYMBOL, CANDLES, speed=0, clock=clock),
            starting_balance=D(50000),  # ignored: the account already exists
            clock=clock,
        )
        account = await other.account()
        positions = await other.positions()
        opened = await other.get_order("open", SYMBOL)
        resting = await other.get_order("rest", SYMBOL)
    finally:
        await other_db.close()

    assert account.balance == D("9994.315529")
    assert account.equity == D("9993.178529")
    assert [(p.symbol, p.quantity, p.average_entry) for p in positions] == [
        (SYMBOL, D("0.05"), D("113689.42"))
    ]
    assert opened is not None
    assert (opened.state, opened.average_price, opened.fee) == (
        OrderState.FILLED,
        D("113689.42"),
        D("5.684471"),
    )
    assert resting is not None
    assert (resting.state, resting.limit_price) == (OrderState.OPEN, D("110000"))


# --- stop and take-profit orders ------------------------------------------------------------


async def _state(broker: PaperBroker, cid: str) -> OrderState:
    report = await broker.get_order(cid, SYMBOL)
    assert report is not None
    return report.state


async def test_long_stop_fills_at_the_stop_on_the_candle_whose_low_crosses_it(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.01"))  # 113689.42, fee 1.1368942
    placed = await broker.place_order(stop("open-sl1", Side.SELL, "0.01", "113000"))
    assert placed.state is OrderState.OPEN and placed.trigger_price == D("113000")

    feed.step()  # candle 1: low 113512.88 > 113000
    assert await _state(broker, "open-sl1") is OrderState.OPEN
    feed.step()  # candle 2: opens 113659.01 above the stop, low 112600.00 crosses it

    report = await broker.get_order("open-sl1", SYMBOL)

    assert report is not None and report.state is OrderState.FILLED
    # 113000 x 0.9998 = 112977.4 -> 112977.40; fee 0.01 x 112977.40 x 0.001 = 1.129774
    assert (report.filled_quantity, report.average_price, report.fee) == (
        D("0.01"),
        D("112977.40"),
        D("1.129774"),
    )
    assert await broker.positions() == []
    # realized 0.01 x (112977.40 - 113689.42) = -7.1202
    # balance 10000 - 1.1368942 - 7.1202 - 1.129774 = 9990.6131318
    assert (await broker.account()).balance == D("9990.6131318")


async def test_long_stop_fills_at_the_open_of_a_candle_that_gaps_below_it(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    feed.step(2145)  # close 91920.59: buy 91920.59 x 1.0002 = 91938.974118 -> 91938.98
    await broker.place_order(market("open", Side.BUY, "0.01"))
    await broker.place_order(stop("open-sl1", Side.SELL, "0.01", "91917"))

    feed.step()  # candle 2146 opens at 91914.01, already below the stop

    report = await broker.get_order("open-sl1", SYMBOL)
    assert report is not None and report.state is OrderState.FILLED
    # from the open: 91914.01 x 0.9998 = 91895.627198 -> down 91895.62 (not 91898.61)
    assert (report.average_price, report.fee) == (D("91895.62"), D("0.9189562"))
    # realized 0.01 x (91895.62 - 91938.98) = -0.4336
    # balance 10000 - 0.9193898 - 0.4336 - 0.9189562 = 9997.728054
    assert (await broker.account()).balance == D("9997.728054")


async def test_long_take_profit_fills_at_its_level_when_a_high_reaches_it(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.01"))  # 113689.42, fee 1.1368942
    await broker.place_order(take_profit("open-tp1", Side.SELL, "0.01", "114000"))

    feed.step(3)  # highs 113944.00, 113659.01, 113854.34: below 114000
    assert await _state(broker, "open-tp1") is OrderState.OPEN
    feed.step()  # candle 4: opens 113465.84, high 114326.35 >= 114000

    report = await broker.get_order("open-tp1", SYMBOL)
    assert report is not None and report.state is OrderState.FILLED
    # 114000 x 0.9998 = 113977.2 -> 113977.20; fee 1.139772
    assert (report.average_price, report.fee) == (D("113977.20"), D("1.139772"))
    # realized 0.01 x (113977.20 - 113689.42) = 2.8778
    # balance 10000 - 1.1368942 + 2.8778 - 1.139772 = 10000.6011338
    assert (await broker.account()).balance == D("10000.6011338")


async def test_short_stop_buys_back_on_the_high_and_its_take_profit_on_the_low(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    await broker.place_order(market("short-a", Side.SELL, "0.01"))  # 113643.94
    await broker.place_order(market("short-b", Side.SELL, "0.01"))  # 113643.94
    await broker.place_order(take_profit("short-a-tp1", Side.BUY, "0.01", "113000"))
    await broker.place_order(stop("short-b-sl1", Side.BUY, "0.01", "114000"))

    feed.step(2)  # candle 2: opens 113659.01, low 112600.00 <= 113000: the take profit
    tp = await broker.get_order("short-a-tp1", SYMBOL)
    assert tp is not None and tp.state is OrderState.FILLED
    # 113000 x 1.0002 = 113022.6 -> 113022.60
    assert tp.average_price == D("113022.60")
    assert await _state(broker, "short-b-sl1") is OrderState.OPEN  # highs < 114000

    feed.step(2)  # candle 4: opens 113465.84, high 114326.35 >= 114000: the stop
    sl = await broker.get_order("short-b-sl1", SYMBOL)
    assert sl is not None and sl.state is OrderState.FILLED
    # 114000 x 1.0002 = 114022.8 -> 114022.80; fee 1.140228
    assert (sl.average_price, sl.fee) == (D("114022.80"), D("1.140228"))
    assert await broker.positions() == []
    # realized 0.01 x (113643.94 - 113022.60) + 0.01 x (113643.94 - 114022.80)
    #        = 6.2134 - 3.7886 = 2.4248
    # fees 2 x 1.1364394 + 1.130226 + 1.140228 = 4.5433328
    assert (await broker.account()).balance == D("9997.8814672")  # 10000 + 2.4248 - 4.5433328


async def test_short_stop_fills_at_the_open_of_a_candle_that_gaps_above_it(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    feed.step(2337)  # close 87382.70: sell 87382.70 x 0.9998 = 87365.2234 -> 87365.22
    await broker.place_order(market("short", Side.SELL, "0.01"))
    await broker.place_order(stop("short-sl1", Side.BUY, "0.01", "87385"))

    feed.step()  # candle 2338 opens at 87387.48, above the stop

    report = await broker.get_order("short-sl1", SYMBOL)
    assert report is not None and report.state is OrderState.FILLED
    # 87387.48 x 1.0002 = 87404.957496 -> up 87404.96
    assert report.average_price == D("87404.96")


async def test_a_candle_touching_both_the_stop_and_the_take_profit_fills_the_stop(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    feed.step(3)  # close 113465.84: buy 113465.84 x 1.0002 = 113488.533168 -> 113488.54
    await broker.place_order(market("open", Side.BUY, "0.01"))
    # the take profit is placed first: the order of placement does not decide
    await broker.place_order(take_profit("open-tp1", Side.SELL, "0.01", "114200"))
    await broker.place_order(stop("open-sl1", Side.SELL, "0.01", "113300"))

    feed.step()  # candle 4: high 114326.35 >= 114200 and low 113229.43 <= 113300

    sl = await broker.get_order("open-sl1", SYMBOL)
    tp = await broker.get_order("open-tp1", SYMBOL)
    assert sl is not None and sl.state is OrderState.FILLED
    assert sl.average_price == D("113277.34")  # 113300 x 0.9998 = 113277.34
    assert tp is not None and tp.state is OrderState.CANCELLED  # nothing left to reduce
    assert tp.fills == ()
    # realized 0.01 x (113277.34 - 113488.54) = -2.112
    # balance 10000 - 1.1348854 - 2.112 - 1.1327734 = 9995.6203412
    assert (await broker.account()).balance == D("9995.6203412")


async def test_a_stop_and_target_resolve_in_time_order_across_orders(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.01"))  # candle 0
    # placed first, but its level trades later: candle 4's high 114326.35 >= 114200
    await broker.place_order(take_profit("open-tp1", Side.SELL, "0.01", "114200"))
    # candle 3's low 112380.00 <= 112500 (candles 1 and 2 stay above)
    await broker.place_order(stop("open-sl1", Side.SELL, "0.01", "112500"))
    feed.step(4)  # nothing read the ledger on candles 1..3: both resolve on this read

    sl = await broker.get_order("open-sl1", SYMBOL)

    assert sl is not None and sl.state is OrderState.FILLED
    assert sl.average_price == D("112477.50")  # 112500 x 0.9998 = 112477.5
    assert await _state(broker, "open-tp1") is OrderState.CANCELLED
    assert await broker.open_orders() == []


async def test_a_trigger_fills_at_most_what_is_held_and_never_flips(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.01"))
    await broker.place_order(stop("open-sl1", Side.SELL, "0.03", "113000"))
    feed.step(2)

    report = await broker.get_order("open-sl1", SYMBOL)

    assert report is not None and report.state is OrderState.FILLED
    assert (report.quantity, report.filled_quantity) == (D("0.03"), D("0.01"))
    assert [f.quantity for f in report.fills] == [D("0.01")]
    assert report.fee == D("1.129774")  # on 0.01 at 112977.40
    assert await broker.positions() == []


async def test_a_trigger_with_nothing_held_against_it_is_cancelled(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.01"))
    await broker.place_order(stop("wrong-way", Side.BUY, "0.01", "113900"))  # would add
    feed.step()  # candle 1: high 113944.00

    assert await _state(broker, "wrong-way") is OrderState.CANCELLED
    [position] = await broker.positions()
    assert position.quantity == D("0.01")


async def test_a_trigger_the_close_already_passed_executes_at_once_at_market(
    broker: PaperBroker,
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.01"))

    report = await broker.place_order(stop("open-sl1", Side.SELL, "0.01", "113700"))

    assert report.state is OrderState.FILLED
    assert report.average_price == D("113643.94")  # the market sell at candle 0
    assert await broker.positions() == []


async def test_a_trigger_order_needs_a_trigger_price(broker: PaperBroker, db: Database) -> None:
    request = OrderRequest(
        client_order_id="sl",
        symbol=SYMBOL,
        side=Side.SELL,
        quantity=D("0.01"),
        order_type=OrderType.STOP,
    )

    with pytest.raises(OrderRejectedError, match="stop order needs a positive trigger price"):
        await broker.place_order(request)
    assert await _count(db, PaperOrderRow) == 0


async def test_cancel_order_cancels_a_resting_stop_which_then_never_fills(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.01"))
    await broker.place_order(stop("open-sl1", Side.SELL, "0.01", "113000"))

    cancelled = await broker.cancel_order("open-sl1", SYMBOL)
    feed.step(2)  # candle 2 crosses 113000

    assert cancelled.state is OrderState.CANCELLED
    assert await _state(broker, "open-sl1") is OrderState.CANCELLED
    assert await broker.open_orders() == []
    [position] = await broker.positions()
    assert position.quantity == D("0.01")


async def test_cancel_after_the_trigger_traded_reports_the_fill(
    broker: PaperBroker, feed: ReplayFeed
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.01"))
    await broker.place_order(stop("open-sl1", Side.SELL, "0.01", "113000"))
    feed.step(2)

    report = await broker.cancel_order("open-sl1", SYMBOL)

    assert report.state is OrderState.FILLED and report.average_price == D("112977.40")
    assert await broker.cancel_order("open-sl1", SYMBOL) == report  # final: unchanged


async def test_cancel_of_an_unknown_order_raises_order_not_found(broker: PaperBroker) -> None:
    with pytest.raises(OrderNotFoundError):
        await broker.cancel_order("nope", SYMBOL)


async def test_open_orders_lists_resting_orders_of_one_symbol_oldest_first(
    broker: PaperBroker,
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.01"))
    await broker.place_order(take_profit("open-tp1", Side.SELL, "0.01", "115000"))
    await broker.place_order(stop("open-sl1", Side.SELL, "0.01", "110000"))
    await broker.place_order(limit("lim", Side.BUY, "0.01", "100000"))

    orders = await broker.open_orders(SYMBOL)

    assert [(o.client_order_id, o.order_type, o.trigger_price) for o in orders] == [
        ("open-tp1", OrderType.TAKE_PROFIT, D("115000")),
        ("open-sl1", OrderType.STOP, D("110000")),
        ("lim", OrderType.LIMIT, None),
    ]
    assert await broker.open_orders("ETH/USDT") == []


async def test_close_position_with_a_quantity_closes_part_and_is_capped_at_what_is_held(
    broker: PaperBroker,
) -> None:
    await broker.place_order(market("open", Side.BUY, "0.03"))

    part = await broker.close_position(SYMBOL, "close-1", D("0.01"))
    rest = await broker.close_position(SYMBOL, "close-2", D("5"))
    again = await broker.close_position(SYMBOL, "close-1", D("0.01"))

    assert part is not None and (part.side, part.filled_quantity) == (Side.SELL, D("0.01"))
    assert rest is not None and rest.filled_quantity == D("0.02")
    assert again == part  # idempotent on the client order id, even when flat
    assert await broker.positions() == []


async def test_paper_holds_exits_as_orders(broker: PaperBroker) -> None:
    assert await broker.exit_style(SYMBOL) is ExitStyle.ORDERS
    with pytest.raises(UnknownSymbolError):
        await broker.exit_style("ETH/USDT")
