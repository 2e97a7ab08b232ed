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

Default costs: spread 2 bps, slippage 1 bps, fee 10 bps, so a market order pays
(2 / 2 + 1) / 10000 = 0.0002 of the close, rounded to the 0.01 tick against the taker:

    buy  at candle 0: 113666.68 x 1.0002 = 113689.413336 -> up   113689.42
    sell at candle 0: 113666.68 x 0.9998 = 113643.946664 -> down 113643.94
    buy  at candle 2: 112693.15 x 1.0002 = 112715.688630 -> up   112715.69
    sell at candle 2: 112693.15 x 0.9998 = 112670.611370 -> down 112670.61
    sell at candle 11: 114595.19 x 0.9998 = 114572.270962 -> down 114572.27

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
from sqlalchemy import func
from sqlmodel import select

from core.brokers.paper import PaperBroker
from core.config import DEFAULT_FEED_CSV
from core.db.engine import Database, upgrade_schema
from core.db.models import PaperOrderRow, PaperPositionRow
from core.domain import OrderRequest, OrderState, OrderType, Side
from core.errors import (
    InsufficientMarginError,
    InvalidQuantityError,
    OrderRejectedError,
    QuantityLimitError,
    UnknownSymbolError,
)
from core.marketdata.replay import ReplayFeed, load_candles

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


async def test_close_position_may_exceed_the_max_order_quantity(
    make_broker: Any, db: Database
) -> None:
    broker = make_broker(starting_balance=D(300000))
    await broker.place_order(market("a", Side.BUY, "0.6"))
    await broker.place_order(market("b", Side.BUY, "0.6"))
    with pytest.raises(QuantityLimitError):
        await broker.place_order(market("too-big", Side.SELL, "1.2"))

    report = await broker.close_position(SYMBOL, "close-1")

    assert report is not None
    assert (report.state, report.quantity) == (OrderState.FILLED, D("1.2"))
    assert await broker.positions() == []
    assert await _count(db, PaperOrderRow) == 3


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
            market("x", Side.BUY, "1.5"),
            QuantityLimitError,
            "quantity 1.5 exceeds the limit 1",
            id="over-max-quantity",
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


async def test_quantity_at_the_limit_passes_and_just_over_it_fails(make_broker: Any) -> None:
    broker = make_broker(max_order_quantity=D("0.05"))

    with pytest.raises(QuantityLimitError):
        await broker.place_order(market("over", Side.BUY, "0.05000001"))
    report = await broker.place_order(market("at", Side.BUY, "0.05"))

    assert report.state is OrderState.FILLED


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
