"""IbkrBroker against the fake TWS of tests/support/ib_fake.py: symbols, orders by
orderRef, fills and fees, exits in an OCA group, error codes, a lost connection."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import ib_async
import pytest

from core.brokers import ibkr_broker
from core.brokers.ibkr_broker import IbkrBroker, parse_symbol, translate_error
from core.brokers.ibkr_hours import MarketHours
from core.config import MarketClosedPolicy
from core.domain import ExitStyle, OrderRequest, OrderState, OrderType, Side
from core.errors import (
    BrokerAmbiguousError,
    BrokerPermanentError,
    BrokerTemporaryError,
    InsufficientMarginError,
    InvalidQuantityError,
    OrderNotFoundError,
    OrderRejectedError,
    QuantityLimitError,
    UnknownSymbolError,
)
from tests.conftest import Clock
from tests.support import ib_fake

D = Decimal


@pytest.fixture
async def gateway() -> AsyncIterator[ib_fake.FakeGateway]:
    async with ib_fake.running() as fake:
        yield fake


@pytest.fixture
def broker(gateway: ib_fake.FakeGateway) -> IbkrBroker:
    return gateway.broker()


def test_symbols_map_to_stock_future_and_forex_contracts() -> None:
    stock = parse_symbol(ib_async, "AAPL")
    listed = parse_symbol(ib_async, "AAPL.NASDAQ")
    future = parse_symbol(ib_async, "ES.2026-12")
    on_cme = parse_symbol(ib_async, "ES.2026-12.CME")
    pair = parse_symbol(ib_async, "EUR.USD")

    assert (stock.secType, stock.symbol, stock.exchange, stock.currency) == (
        "STK",
        "AAPL",
        "SMART",
        "USD",
    )
    assert (listed.secType, listed.primaryExchange) == ("STK", "NASDAQ")
    assert (future.secType, future.lastTradeDateOrContractMonth, future.exchange) == (
        "FUT",
        "202612",
        "",
    )
    assert on_cme.exchange == "CME"
    assert (pair.secType, pair.symbol, pair.currency, pair.exchange) == (
        "CASH",
        "EUR",
        "USD",
        "IDEALPRO",
    )
    with pytest.raises(UnknownSymbolError):
        parse_symbol(ib_async, "BTC/USDT")


def test_the_error_table_in_the_docstring_matches_translate_error_line_for_line() -> None:
    doc = ibkr_broker.__doc__ or ""
    rows = re.findall(r"^(\d+)\s+(temporary|permanent|ambiguous|info)\s+(\w+)", doc, re.M)
    assert len(rows) == len(ibkr_broker._CODES) >= 15
    for code, kind, name in rows:
        error = translate_error(int(code), "message", placing=True)
        if kind == "info":
            assert error is None and name == "None"
        else:
            assert type(error).__name__ == name, code
        assert ibkr_broker._CODES[int(code)][0] == kind
    # a lost connection is ambiguous only with an order in flight
    assert isinstance(translate_error(1100, "lost", placing=False), BrokerTemporaryError)
    assert isinstance(
        translate_error(201, "Order rejected - reason: insufficient margin"),
        InsufficientMarginError,
    )
    assert isinstance(translate_error(9999, "odd", placing=True), OrderRejectedError)
    assert type(translate_error(9999, "odd")) is BrokerPermanentError


async def test_a_market_order_fills_with_its_commission_and_shows_as_a_position(
    broker: IbkrBroker,
) -> None:
    report = await broker.place_order(OrderRequest("ib-1", "AAPL", Side.BUY, D(10)))

    assert report.state is OrderState.FILLED
    assert (report.filled_quantity, report.average_price) == (D(10), D("230.1"))
    assert report.fee == D(1) and report.fee_currency == "USD"
    [fill] = report.fills
    assert fill.client_order_id == "ib-1" and fill.side is Side.BUY
    [position] = await broker.positions()
    assert (position.symbol, position.quantity, position.average_entry) == (
        "AAPL",
        D(10),
        D("230.1"),
    )
    assert position.opened_by_signaldesk
    account = await broker.account()
    assert account.currency == "USD"
    assert account.balance == D("100000") - D(2301) - D(1)
    assert account.equity == account.balance + D(2300)


async def test_the_order_carries_the_client_order_id_in_order_ref_and_is_found_by_it(
    gateway: ib_fake.FakeGateway, broker: IbkrBroker
) -> None:
    await broker.place_order(OrderRequest("ib-ref-1", "AAPL", Side.BUY, D(1)))

    [record] = gateway.records_with_ref("ib-ref-1")
    again = await broker.place_order(OrderRequest("ib-ref-1", "AAPL", Side.BUY, D(1)))
    restarted = gateway.broker()
    found = await restarted.get_order("ib-ref-1", "AAPL")

    assert record.order.tif == "DAY" and record.order.account == ib_fake.ACCOUNT
    assert again.state is OrderState.FILLED and gateway.placed == 1
    assert found is not None and found.state is OrderState.FILLED
    assert found.fills and found.fills[0].broker_fill_id == record.fills[0].execution.execId
    assert await restarted.get_order("ib-never", "AAPL") is None


async def test_a_lost_connection_during_place_order_reconciles_to_one_order_after_a_restart(
    gateway: ib_fake.FakeGateway, broker: IbkrBroker
) -> None:
    gateway.drop_on_next_order()

    with pytest.raises(BrokerAmbiguousError):
        await broker.place_order(OrderRequest("ib-lost-1", "AAPL", Side.BUY, D(5)))

    restarted = gateway.broker()
    found = await restarted.get_order("ib-lost-1", "AAPL")
    retried = await restarted.place_order(OrderRequest("ib-lost-1", "AAPL", Side.BUY, D(5)))
    assert found is not None and found.state is OrderState.FILLED and found.filled_quantity == 5
    assert retried.state is OrderState.FILLED
    assert len(gateway.records_with_ref("ib-lost-1")) == 1 and gateway.placed == 1
    [position] = await restarted.positions()
    assert position.quantity == 5


async def test_ib_rejections_are_translated_by_code(
    gateway: ib_fake.FakeGateway, broker: IbkrBroker
) -> None:
    gateway.reject_next(201, "Order rejected - reason: Your account has insufficient margin")
    with pytest.raises(InsufficientMarginError, match="201"):
        await broker.place_order(OrderRequest("ib-rej-1", "AAPL", Side.BUY, D(1)))
    gateway.reject_next(203, "The security is not available or allowed for this account")
    with pytest.raises(OrderRejectedError, match="203"):
        await broker.place_order(OrderRequest("ib-rej-2", "AAPL", Side.BUY, D(1)))

    looked_up = await broker.get_order("ib-rej-2", "AAPL")
    assert looked_up is not None and looked_up.state is OrderState.CANCELLED
    assert await broker.positions() == []


async def test_quantities_follow_the_contract_increments_and_caps(
    gateway: ib_fake.FakeGateway,
) -> None:
    broker = gateway.broker(max_order_quantity=D(100), max_order_notional=D(10000))

    with pytest.raises(InvalidQuantityError):
        await broker.place_order(OrderRequest("ib-q-1", "AAPL", Side.BUY, D("0.5")))
    with pytest.raises(QuantityLimitError):
        await broker.place_order(OrderRequest("ib-q-2", "AAPL", Side.BUY, D(101)))
    with pytest.raises(QuantityLimitError, match="notional"):
        await broker.place_order(OrderRequest("ib-q-3", "AAPL", Side.BUY, D(50)))
    report = await broker.place_order(OrderRequest("ib-q-4", "AAPL", Side.BUY, D("2.7")))
    assert report.quantity == D(2) and gateway.placed == 1


async def test_unknown_and_ambiguous_symbols_are_refused(broker: IbkrBroker) -> None:
    with pytest.raises(UnknownSymbolError):
        await broker.quote("MSFT")
    with pytest.raises(UnknownSymbolError):
        await broker.exit_style("AAPL.IBIS")


async def test_futures_and_forex_quote_and_trade_in_contracts_and_units(broker: IbkrBroker) -> None:
    quote = await broker.quote("EUR.USD")
    assert (quote.bid, quote.ask, quote.last) == (D("1.08"), D("1.08005"), D("1.080025"))

    report = await broker.place_order(OrderRequest("ib-es-1", "ES.2026-12", Side.BUY, D(1)))
    [position] = await broker.positions()

    assert report.state is OrderState.FILLED and report.average_price == D("6050.25")
    assert (position.symbol, position.quantity, position.average_entry) == (
        "ES.2026-12",
        D(1),
        D("6050.25"),
    )
    assert position.unrealized_pnl == D("-6.25")  # (6050.125 - 6050.25) x 50


async def test_exits_rest_in_one_oca_group_and_the_stop_cancels_the_take_profit(
    gateway: ib_fake.FakeGateway, broker: IbkrBroker
) -> None:
    await broker.place_order(OrderRequest("ib-e", "AAPL", Side.BUY, D(10)))
    stop = await broker.place_order(
        OrderRequest(
            "ib-e-sl1",
            "AAPL",
            Side.SELL,
            D(10),
            order_type=OrderType.STOP,
            reduce_only=True,
            trigger_price=D("220.004"),
            position_ref="ib-e",
        )
    )
    take = await broker.place_order(
        OrderRequest(
            "ib-e-tp1",
            "AAPL",
            Side.SELL,
            D(10),
            order_type=OrderType.TAKE_PROFIT,
            reduce_only=True,
            trigger_price=D(250),
            position_ref="ib-e",
        )
    )
    assert await broker.exit_style("AAPL") is ExitStyle.ORDERS
    assert (stop.state, stop.trigger_price, take.state) == (
        OrderState.OPEN,
        D("220"),
        OrderState.OPEN,
    )
    [sl] = gateway.records_with_ref("ib-e-sl1")
    assert (sl.order.orderType, sl.order.ocaGroup, sl.order.ocaType, sl.order.tif) == (
        "STP",
        "ib-e-exits",
        1,
        "GTC",
    )
    assert [r.client_order_id for r in await broker.open_orders("AAPL")] == ["ib-e-sl1", "ib-e-tp1"]

    gateway.set_price("AAPL", bid="219.50", ask="219.70")

    stopped = await broker.get_order("ib-e-sl1", "AAPL")
    taken = await broker.get_order("ib-e-tp1", "AAPL")
    assert stopped is not None and stopped.state is OrderState.FILLED
    assert stopped.average_price == D("219.5") and stopped.filled_quantity == 10
    assert taken is not None and taken.state is OrderState.CANCELLED
    assert await broker.positions() == [] and await broker.open_orders() == []


async def test_cancel_answers_the_final_report_and_unknown_ids_are_not_found(
    broker: IbkrBroker,
) -> None:
    await broker.place_order(
        OrderRequest(
            "ib-l-1", "AAPL", Side.BUY, D(1), order_type=OrderType.LIMIT, limit_price=D(200)
        )
    )

    cancelled = await broker.cancel_order("ib-l-1", "AAPL")
    again = await broker.cancel_order("ib-l-1", "AAPL")

    assert cancelled.state is OrderState.CANCELLED and again.state is OrderState.CANCELLED
    assert cancelled.limit_price == D(200)
    with pytest.raises(OrderNotFoundError):
        await broker.cancel_order("ib-l-none", "AAPL")


async def test_no_gateway_is_a_temporary_error_naming_host_and_port(
    gateway: ib_fake.FakeGateway,
) -> None:
    gateway.up = False
    broker = gateway.broker()

    with pytest.raises(BrokerTemporaryError, match="4002"):
        await broker.account()


async def test_a_partial_close_sells_part_and_a_full_close_the_rest(broker: IbkrBroker) -> None:
    await broker.place_order(OrderRequest("ib-p", "AAPL", Side.BUY, D(10)))

    part = await broker.close_position("AAPL", "ib-p-c1", D(4))
    rest = await broker.close_position("AAPL", "ib-p-c2")

    assert part is not None and (part.side, part.filled_quantity) == (Side.SELL, D(4))
    assert rest is not None and rest.filled_quantity == D(6)
    assert await broker.close_position("AAPL", "ib-p-c3") is None
    assert await broker.positions() == []


# --- market hours -------------------------------------------------------------------------

#: AAPL's regular hours on Monday 5 and Tuesday 6 January 2026 (09:30-16:00 New York).
HOURS = "20260105:0930-20260105:1600;20260106:0930-20260106:1600;20260107:CLOSED"
BEFORE_OPEN = datetime(2026, 1, 5, 12, 30, tzinfo=UTC)  # 07:30 in New York


def test_market_hours_say_when_a_closed_market_opens() -> None:
    before = MarketHours.of(HOURS, "US/Eastern", BEFORE_OPEN)
    during = MarketHours.of(HOURS, "US/Eastern", datetime(2026, 1, 5, 15, 0, tzinfo=UTC))
    evening = MarketHours.of(HOURS, "US/Eastern", datetime(2026, 1, 5, 21, 50, tzinfo=UTC))
    after_all = MarketHours.of(HOURS, "US/Eastern", datetime(2026, 1, 8, tzinfo=UTC))
    unknown = MarketHours.of("", "US/Eastern", BEFORE_OPEN)

    assert (before.is_open, before.opens_at) == (False, datetime(2026, 1, 5, 14, 30, tzinfo=UTC))
    assert before.describe() == "market closed, opens in 2 h"
    assert during.is_open and during.describe() == "market open"
    assert evening.describe() == "market closed, opens in 17 h"
    assert after_all.describe() == "market closed"
    assert unknown.is_open and not unknown.known
    assert MarketHours.of(HOURS, "Mars/Olympus", BEFORE_OPEN).is_open  # unknown zone: open


async def test_a_closed_market_blocks_new_risk_but_never_a_close(
    gateway: ib_fake.FakeGateway,
) -> None:
    clock = Clock(datetime(2026, 1, 5, 15, 0, tzinfo=UTC))
    gateway.clock = clock
    broker = gateway.broker(clock=clock)
    gateway.set_hours("AAPL", HOURS)
    await broker.place_order(OrderRequest("ib-h-1", "AAPL", Side.BUY, D(3)))
    clock.now = datetime(2026, 1, 5, 21, 50, tzinfo=UTC)  # after the close

    with pytest.raises(OrderRejectedError, match="AAPL: market closed, opens in 17 h"):
        await broker.place_order(OrderRequest("ib-h-2", "AAPL", Side.BUY, D(1)))
    close = await broker.close_position("AAPL", "ib-h-3")

    assert gateway.records_with_ref("ib-h-2") == []
    assert close is not None and close.state is OrderState.OPEN  # held by IB until the open
    assert (await broker.market_hours("AAPL")).opens_at == datetime(2026, 1, 6, 14, 30, tzinfo=UTC)


async def test_the_day_order_policy_rests_the_order_until_the_open(
    gateway: ib_fake.FakeGateway,
) -> None:
    clock = Clock(BEFORE_OPEN)
    gateway.clock = clock
    broker = gateway.broker(clock=clock, closed_policy=MarketClosedPolicy.DAY_ORDER)
    gateway.set_hours("AAPL", HOURS)

    placed = await broker.place_order(OrderRequest("ib-d-1", "AAPL", Side.BUY, D(2)))
    [record] = gateway.records_with_ref("ib-d-1")
    assert placed.state is OrderState.OPEN and record.status == "PreSubmitted"
    assert record.order.tif == "DAY"

    clock.now = datetime(2026, 1, 5, 14, 31, tzinfo=UTC)
    gateway.open_market("AAPL")

    filled = await broker.get_order("ib-d-1", "AAPL")
    assert filled is not None and filled.state is OrderState.FILLED and filled.filled_quantity == 2
