"""CcxtBroker against the fake Binance spot API: ccxt's real signing, parsing and error
mapping run over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import sys
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from core.brokers.base import Broker
from core.brokers.ccxt_broker import (
    UNAVAILABLE_MESSAGE,
    CcxtBroker,
    order_report,
    translate_error,
)
from core.config import Settings
from core.domain import OrderRequest, OrderState, OrderType, Side
from core.errors import (
    BrokerAmbiguousError,
    BrokerError,
    BrokerPermanentError,
    BrokerTemporaryError,
    BrokerUnavailableError,
    ConfigError,
    InsufficientMarginError,
    InvalidQuantityError,
    OrderRejectedError,
    QuantityLimitError,
    UnknownSymbolError,
)
from tests.support import binance_fake
from tests.support.binance_fake import BinanceFake

ccxt = pytest.importorskip("ccxt", reason="the ccxt extra is not installed")

D = Decimal


def buy(client_order_id: str, quantity: str, symbol: str = "BTC/USDT", **kw: Any) -> OrderRequest:
    return OrderRequest(client_order_id, symbol, Side.BUY, D(quantity), **kw)


def posted(fake: BinanceFake) -> list[dict[str, str]]:
    return [p for m, path, p in fake.requests if (m, path) == ("POST", "/api/v3/order")]


# --- happy path ---------------------------------------------------------------------------


async def test_broker_satisfies_the_port(ccxt_broker: CcxtBroker) -> None:
    assert isinstance(ccxt_broker, Broker)
    assert ccxt_broker.name == "ccxt:binance"


async def test_market_buy_fills_with_binance_fills_and_commission(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    report = await ccxt_broker.place_order(buy("sd-1", "0.01"))

    assert report.state is OrderState.FILLED
    assert report.client_order_id == "sd-1"
    assert report.quantity == report.filled_quantity == D("0.01")
    assert report.average_price == D("60000.01")  # the ask
    assert report.fee == D("0.00001") and report.fee_currency == "BTC"
    (fill,) = report.fills
    assert (fill.quantity, fill.price, fill.side) == (D("0.01"), D("60000.01"), Side.BUY)
    assert fill.broker_fill_id and fill.at.tzinfo is not None
    (sent,) = posted(binance)
    assert sent["newClientOrderId"] == "sd-1"
    assert sent["type"] == "MARKET" and "quoteOrderQty" not in sent
    assert binance.free["BTC"] == D("0.00999")


async def test_quantity_is_rounded_down_to_the_lot_step_before_sending(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    report = await ccxt_broker.place_order(buy("sd-1", "0.0123456"))

    assert posted(binance)[0]["quantity"] == "0.01234"
    assert report.quantity == D("0.01234")


async def test_limit_order_rests_open_at_a_price_rounded_to_the_tick(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    request = buy("sd-1", "0.01", order_type=OrderType.LIMIT, limit_price=D("50000.004"))

    report = await ccxt_broker.place_order(request)

    assert posted(binance)[0]["price"] == "50000"
    assert report.state is OrderState.OPEN
    assert report.limit_price == D("50000") and report.filled_quantity == 0
    found = await ccxt_broker.get_order("sd-1", "BTC/USDT")
    assert found is not None and found.state is OrderState.OPEN
    assert binance.locked["USDT"] == D(500)


async def test_quote_reads_the_24hr_ticker(ccxt_broker: CcxtBroker) -> None:
    quote = await ccxt_broker.quote("ETH/USDT")

    assert (quote.bid, quote.ask, quote.last) == (D("2999.99"), D("3000.01"), D(3000))
    assert quote.at.tzinfo is not None


async def test_spot_positions_are_balances_marked_at_the_ticker(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    await ccxt_broker.place_order(buy("sd-1", "0.01"))
    await ccxt_broker.place_order(buy("sd-2", "0.5", "ETH/USDT"))
    binance.free["XRP"] = D(100)  # no XRP/USDT market: not a position, not in equity
    binance.locked["XRP"] = D(0)
    binance.set_price("BTC/USDT", "61000")

    positions = {p.symbol: p for p in await ccxt_broker.positions()}

    assert set(positions) == {"BTC/USDT", "ETH/USDT"}
    btc = positions["BTC/USDT"]
    assert btc.quantity == D("0.00999")  # after the commission taken in BTC
    assert btc.mark_price == btc.average_entry == D(61000)
    assert btc.unrealized_pnl == 0 and btc.opened_by_signaldesk
    assert positions["ETH/USDT"].quantity == D("0.4995")


async def test_spot_account_equity_adds_holdings_at_the_last_price(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    await ccxt_broker.place_order(buy("sd-1", "0.01"))
    binance.set_price("BTC/USDT", "70000")

    account = await ccxt_broker.account()

    cash = D(10000) - D("0.01") * D("60000.01")
    assert account.currency == "USDT"
    assert account.balance == cash
    assert account.equity == cash + D("0.00999") * D(70000)
    assert account.margin == 0


async def test_dust_below_the_market_minimums_is_not_a_position(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    binance.free["BTC"] = D("0.00000766")

    assert await ccxt_broker.positions() == []
    assert await ccxt_broker.close_position("BTC/USDT", "sd-c1") is None
    assert (await ccxt_broker.account()).equity > D(10000)


async def test_close_position_sells_the_free_balance_under_the_given_id(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    await ccxt_broker.place_order(buy("sd-1", "0.01"))

    report = await ccxt_broker.close_position("BTC/USDT", "sd-c1")

    assert report is not None and report.state is OrderState.FILLED
    assert report.side is Side.SELL and report.quantity == D("0.00999")
    assert report.average_price == D("59999.99")  # the bid
    assert report.fee_currency == "USDT"
    assert posted(binance)[-1]["newClientOrderId"] == "sd-c1"
    assert await ccxt_broker.positions() == []


async def test_close_all_over_several_symbols_leaves_no_position(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    await ccxt_broker.place_order(buy("sd-1", "0.01"))
    await ccxt_broker.place_order(buy("sd-2", "0.5", "ETH/USDT"))

    for n, position in enumerate(await ccxt_broker.positions()):
        report = await ccxt_broker.close_position(position.symbol, f"sd-c{n}")
        assert report is not None and report.state is OrderState.FILLED

    assert await ccxt_broker.positions() == []
    closes = [binance.order_by_client_id(f"sd-c{n}") for n in range(2)]
    assert {o.spec.symbol for o in closes if o is not None} == {"BTCUSDT", "ETHUSDT"}


async def test_close_position_when_flat_returns_none(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    assert await ccxt_broker.close_position("ETH/USDT", "sd-c1") is None
    assert posted(binance) == []


# --- exactly once -------------------------------------------------------------------------


async def test_placing_an_id_the_exchange_holds_returns_it_without_a_second_order(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    first = await ccxt_broker.place_order(buy("sd-1", "0.01"))

    again = await ccxt_broker.place_order(buy("sd-1", "0.01"))

    assert again.broker_order_id == first.broker_order_id
    assert again.state is OrderState.FILLED and again.fills == first.fills
    assert len(posted(binance)) == 1
    assert binance.free["BTC"] == D("0.00999")


async def test_get_order_by_client_id_reads_the_order_and_its_trades(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    placed = await ccxt_broker.place_order(buy("sd-1", "0.01"))

    found = await ccxt_broker.get_order("sd-1", "BTC/USDT")

    assert found is not None
    assert (found.state, found.filled_quantity) == (OrderState.FILLED, D("0.01"))
    assert found.average_price == D("60000.01") and found.fee == D("0.00001")
    assert [f.broker_fill_id for f in found.fills] == [f.broker_fill_id for f in placed.fills]
    lookups = [p for m, path, p in binance.requests if (m, path) == ("GET", "/api/v3/order")]
    assert lookups[-1]["origClientOrderId"] == "sd-1"


async def test_get_order_for_an_unknown_id_returns_none(ccxt_broker: CcxtBroker) -> None:
    assert await ccxt_broker.get_order("never-sent", "BTC/USDT") is None


async def test_timeout_after_the_order_was_made_is_ambiguous_then_adopted(
    binance: BinanceFake,
) -> None:
    broker = binance.broker(timeout_ms=300)
    binance.stall_next("POST", "/api/v3/order", 2.0, process=True)

    with pytest.raises(BrokerAmbiguousError, match="reconcile"):
        await broker.place_order(buy("sd-1", "0.01"))

    found = await broker.get_order("sd-1", "BTC/USDT")
    assert found is not None and found.state is OrderState.FILLED
    assert found.filled_quantity == D("0.01") and len(found.fills) == 1
    again = await broker.place_order(buy("sd-1", "0.01"))  # the reconciler's resubmission
    assert again.broker_order_id == found.broker_order_id
    assert len(posted(binance)) == 1


async def test_timeout_before_the_order_reached_the_exchange_reconciles_to_none(
    binance: BinanceFake,
) -> None:
    broker = binance.broker(timeout_ms=300)
    binance.stall_next("POST", "/api/v3/order", 2.0, process=False)

    with pytest.raises(BrokerAmbiguousError):
        await broker.place_order(buy("sd-1", "0.01"))

    assert await broker.get_order("sd-1", "BTC/USDT") is None
    resubmitted = await broker.place_order(buy("sd-1", "0.01"))
    assert resubmitted.state is OrderState.FILLED
    assert len(posted(binance)) == 2


async def test_server_error_is_ambiguous_when_placing_and_temporary_when_reading(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    binance.fail_next("POST", "/api/v3/order", *binance_fake.INTERNAL_ERROR)
    with pytest.raises(BrokerAmbiguousError):
        await ccxt_broker.place_order(buy("sd-1", "0.01"))

    binance.fail_next("GET", "/api/v3/account", *binance_fake.INTERNAL_ERROR)
    with pytest.raises(BrokerTemporaryError) as caught:
        await ccxt_broker.account()
    assert not isinstance(caught.value, BrokerAmbiguousError)


async def test_unreadable_fills_do_not_fail_the_look_up(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    await ccxt_broker.place_order(buy("sd-1", "0.01"))
    binance.fail_next("GET", "/api/v3/myTrades", *binance_fake.INTERNAL_ERROR)

    found = await ccxt_broker.get_order("sd-1", "BTC/USDT")

    assert found is not None and found.state is OrderState.FILLED
    assert found.filled_quantity == D("0.01") and found.average_price == D("60000.01")
    assert found.fills == () and "fills not read" in found.reason


# --- USDⓈ-M perpetuals (CCXT_MARKET_TYPE=swap) ----------------------------------------------

PERP = "BTC/USDT:USDT"


async def test_perpetual_position_and_account_from_the_futures_api(binance: BinanceFake) -> None:
    broker = binance.broker(market_type="swap")
    report = await broker.place_order(buy("sd-1", "0.01", PERP))
    binance.set_price("BTC/USDT", "61000")

    (position,) = await broker.positions()
    account = await broker.account()

    assert report.state is OrderState.FILLED and report.fee_currency == "USDT"
    assert (position.symbol, position.quantity) == (PERP, D("0.01"))
    assert position.average_entry == D("60000.01") and position.mark_price == D(61000)
    assert position.unrealized_pnl == D("9.9999")
    assert account.equity == binance.futures.wallet + D("9.9999")
    assert account.balance == binance.futures.wallet
    assert account.margin == D("30.5")  # 0.01 x 61 000 / 20


async def test_perpetual_close_is_reduce_only_and_exempt_from_the_minimum_value(
    binance: BinanceFake,
) -> None:
    broker = binance.broker(market_type="swap")
    await broker.place_order(buy("sd-1", "0.002", PERP))  # 120 USDT, minimum 100
    binance.set_price("BTC/USDT", "40000")  # now worth 80 USDT

    report = await broker.close_position(PERP, "sd-c1")

    assert report is not None and report.state is OrderState.FILLED
    assert report.side is Side.SELL and report.quantity == D("0.002")
    sent = [p for m, path, p in binance.requests if (m, path) == ("POST", "/fapi/v1/order")]
    assert sent[-1]["reduceOnly"] == "true" and sent[-1]["newClientOrderId"] == "sd-c1"
    assert await broker.positions() == []


async def test_perpetual_short_is_closed_by_a_buy(binance: BinanceFake) -> None:
    broker = binance.broker(market_type="swap")
    await broker.place_order(OrderRequest("sd-1", "ETH/USDT:USDT", Side.SELL, D("0.5")))
    assert [p.quantity for p in await broker.positions()] == [D("-0.5")]

    report = await broker.close_position("ETH/USDT:USDT", "sd-c1")

    assert report is not None and report.side is Side.BUY
    assert binance.futures.positions["ETHUSDT"][0] == 0


async def test_perpetual_opening_order_below_the_minimum_value_is_refused(
    binance: BinanceFake,
) -> None:
    broker = binance.broker(market_type="swap")

    with pytest.raises(OrderRejectedError, match="minimum order value of 100 USDT"):
        await broker.place_order(buy("sd-1", "0.001", PERP))  # 60 USDT


# --- refusals before sending --------------------------------------------------------------


async def test_order_below_min_notional_is_refused_before_sending_naming_the_minimum(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    with pytest.raises(OrderRejectedError, match=r"minimum order value of 5 USDT"):
        await ccxt_broker.place_order(buy("sd-1", "0.00005"))  # 3 USDT

    assert posted(binance) == []


async def test_quantity_that_rounds_to_zero_is_refused_naming_the_step(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    with pytest.raises(InvalidQuantityError, match=r"step of 0\.00001 BTC"):
        await ccxt_broker.place_order(buy("sd-1", "0.000004"))

    assert posted(binance) == []


async def test_quantity_above_the_lot_maximum_is_refused(ccxt_broker: CcxtBroker) -> None:
    with pytest.raises(InvalidQuantityError, match="maximum order size of 9000"):
        await ccxt_broker.place_order(buy("sd-1", "9001"))


async def test_non_positive_quantity_is_refused(ccxt_broker: CcxtBroker) -> None:
    with pytest.raises(InvalidQuantityError, match="positive"):
        await ccxt_broker.place_order(buy("sd-1", "0"))


async def test_signaldesk_caps_apply_to_opening_orders_only(binance: BinanceFake) -> None:
    broker = binance.broker(max_order_quantity=D("0.02"), max_order_notional=D(1000))

    with pytest.raises(QuantityLimitError, match="MAX_ORDER_QUANTITY"):
        await broker.place_order(buy("sd-1", "0.03"))
    with pytest.raises(QuantityLimitError, match="MAX_ORDER_NOTIONAL"):
        await broker.place_order(buy("sd-2", "0.02"))  # 1200 USDT
    binance.free["BTC"] = D("0.03")
    closed = await broker.close_position("BTC/USDT", "sd-c1")
    assert closed is not None and closed.quantity == D("0.03")


async def test_stop_loss_that_binance_spot_cannot_attach_is_reported(
    ccxt_broker: CcxtBroker,
) -> None:
    report = await ccxt_broker.place_order(buy("sd-1", "0.01", stop_loss=D(55000)))

    assert report.state is OrderState.FILLED
    assert "stop loss / take profit not placed" in report.reason


# --- errors from the exchange -------------------------------------------------------------


async def test_binance_notional_filter_failure_is_an_order_rejection(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    binance.fail_next("POST", "/api/v3/order", *binance_fake.MIN_NOTIONAL_FAILURE)

    with pytest.raises(OrderRejectedError, match="Filter failure: NOTIONAL"):
        await ccxt_broker.place_order(buy("sd-1", "0.01"))


async def test_insufficient_balance_is_insufficient_margin(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    with pytest.raises(InsufficientMarginError, match="insufficient balance"):
        await ccxt_broker.place_order(buy("sd-1", "1"))  # 60 000 USDT, holds 10 000

    assert binance.orders == {}


async def test_invalid_api_key_is_permanent_and_names_the_settings(
    binance: BinanceFake,
) -> None:
    broker = binance.broker(api_key="not-the-key")

    with pytest.raises(BrokerPermanentError, match="CCXT_API_KEY") as caught:
        await broker.account()

    assert "-2015" in str(caught.value)
    assert not isinstance(caught.value, OrderRejectedError)


async def test_rate_limit_is_temporary(binance: BinanceFake, ccxt_broker: CcxtBroker) -> None:
    binance.fail_next("GET", "/api/v3/account", *binance_fake.RATE_LIMITED)

    with pytest.raises(BrokerTemporaryError, match="safe to retry"):
        await ccxt_broker.account()


async def test_read_timeout_is_temporary(binance: BinanceFake) -> None:
    broker = binance.broker(timeout_ms=300)
    await broker.quote("BTC/USDT")
    binance.stall_next("GET", "/api/v3/ticker/24hr", 2.0, process=False)

    with pytest.raises(BrokerTemporaryError) as caught:
        await broker.quote("BTC/USDT")

    assert "RequestTimeout" in str(caught.value)


async def test_refused_connection_is_temporary(binance: BinanceFake) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/api/v3"
    broker = binance.broker(api_urls={**binance.api_urls, "private": dead})

    with pytest.raises(BrokerTemporaryError, match="nothing was done"):
        await broker.place_order(buy("sd-1", "0.01"))

    assert posted(binance) == []


async def test_unknown_symbol(binance: BinanceFake, ccxt_broker: CcxtBroker) -> None:
    with pytest.raises(UnknownSymbolError):
        await ccxt_broker.quote("DOGE/USDT")
    with pytest.raises(UnknownSymbolError):
        await ccxt_broker.place_order(buy("sd-1", "10", "DOGE/USDT"))


async def test_api_key_refused_after_working_is_a_temporary_ban(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    # Binance answers -2015 for temporary bans too; ccxt reads it so once a key has worked
    await ccxt_broker.account()
    binance.fail_next("GET", "/api/v3/account", *binance_fake.BAD_API_KEY)

    with pytest.raises(BrokerTemporaryError, match="DDoSProtection"):
        await ccxt_broker.account()


async def test_secrets_never_reach_errors_or_logs(
    binance: BinanceFake, capsys: pytest.CaptureFixture[str]
) -> None:
    good = binance.broker()
    await good.place_order(buy("sd-1", "0.01"))
    with pytest.raises(BrokerPermanentError) as caught:
        await binance.broker(api_key="not-the-key").account()

    output = capsys.readouterr()
    for secret in (binance_fake.SECRET, binance_fake.API_KEY, "not-the-key"):
        assert secret not in str(caught.value)
        assert secret not in output.out + output.err


# --- construction -------------------------------------------------------------------------


async def test_markets_load_once_under_concurrent_first_calls(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    await asyncio.gather(*(ccxt_broker.quote("BTC/USDT") for _ in range(5)))

    loads = [path for _, path, _ in binance.requests if path == "/api/v3/exchangeInfo"]
    assert len(loads) == 1


async def test_from_settings_builds_a_testnet_client_with_the_keys() -> None:
    settings = Settings(
        broker="ccxt",
        ccxt_api_key="k-123",
        ccxt_secret="s-456",
        ccxt_account_currency="BTC",
        max_order_quantity=D(2),
    )

    broker = CcxtBroker.from_settings(settings)
    try:
        assert broker.name == "ccxt:binance"
        assert broker.account_currency == "BTC"
        assert broker.max_order_quantity == D(2)
        assert broker.exchange.apiKey == "k-123" and broker.exchange.secret == "s-456"
        assert "testnet" in broker.exchange.urls["api"]["private"]
        assert broker.exchange.enableRateLimit is True
    finally:
        await broker.close()


async def test_unknown_exchange_id_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not an exchange ccxt knows"):
        CcxtBroker("not-an-exchange")


async def test_exchange_without_a_testnet_in_sandbox_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="CCXT_SANDBOX=false"):
        CcxtBroker("kraken", sandbox=True)


async def test_missing_ccxt_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ccxt", None)
    monkeypatch.setitem(sys.modules, "ccxt.async_support", None)

    with pytest.raises(BrokerUnavailableError) as caught:
        CcxtBroker.from_settings(Settings(broker="ccxt"))

    assert str(caught.value) == UNAVAILABLE_MESSAGE
    assert UNAVAILABLE_MESSAGE == "BROKER=ccxt needs the ccxt extra: pip install 'signaldesk[ccxt]'"


# --- the pure mapping ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("open", OrderState.OPEN),
        ("closed", OrderState.FILLED),
        ("canceled", OrderState.CANCELLED),
        ("expired", OrderState.CANCELLED),
        ("rejected", OrderState.FAILED),
        (None, OrderState.SUBMITTED),
    ],
)
def test_ccxt_statuses_map_to_order_states(status: str | None, state: OrderState) -> None:
    order = {"symbol": "BTC/USDT", "side": "sell", "status": status, "amount": 0.5, "id": 7}

    report = order_report(order, [], client_order_id="sd-1")

    assert report.state is state and report.quantity == D("0.5")
    assert report.broker_order_id == "7"


def test_contract_amounts_become_base_units() -> None:
    order = {
        "symbol": "BTC/USDT:USDT",
        "side": "buy",
        "status": "closed",
        "amount": 3,
        "filled": 3,
        "cost": 300,
        "type": "market",
    }
    trade = {"amount": 3, "price": 100000, "fee": {"cost": 0.1, "currency": "USDT"}, "id": "t1"}

    report = order_report(order, [trade], client_order_id="sd-1", contract_size=D("0.001"))

    assert report.quantity == report.filled_quantity == D("0.003")
    assert report.fills[0].quantity == D("0.003") and report.fills[0].price == D(100000)
    assert report.average_price == D(100000)  # cost 300 / 0.003 base units
    assert (report.fee, report.fee_currency) == (D("0.1"), "USDT")


def _caused(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


# what aiohttp raises when the connection is refused (built bare: its constructor wants
# aiohttp's internal connection key)
_REFUSED = aiohttp.ClientConnectorError.__new__(aiohttp.ClientConnectorError)


@pytest.mark.parametrize(
    ("exc", "placing", "expected"),
    [
        (ccxt.BadSymbol("x"), False, UnknownSymbolError),
        (ccxt.InsufficientFunds("x"), True, InsufficientMarginError),
        (ccxt.AuthenticationError("x"), False, BrokerPermanentError),
        (ccxt.PermissionDenied("x"), True, BrokerPermanentError),
        (ccxt.InvalidOrder("x"), True, OrderRejectedError),
        (ccxt.BadRequest("x"), True, OrderRejectedError),
        (ccxt.BadRequest("x"), False, BrokerPermanentError),
        (ccxt.RateLimitExceeded("x"), True, BrokerTemporaryError),
        (ccxt.DDoSProtection("x"), True, BrokerTemporaryError),
        (ccxt.OnMaintenance("x"), True, BrokerTemporaryError),
        (ccxt.InvalidNonce("x"), True, BrokerTemporaryError),
        (_caused(ccxt.ExchangeNotAvailable("x"), _REFUSED), True, BrokerTemporaryError),
        (_caused(ccxt.ExchangeNotAvailable("x"), socket.gaierror()), True, BrokerTemporaryError),
        (ccxt.RequestTimeout("x"), True, BrokerAmbiguousError),
        (ccxt.RequestTimeout("x"), False, BrokerTemporaryError),
        (ccxt.ExchangeNotAvailable("x"), True, BrokerAmbiguousError),
        (ccxt.NetworkError("x"), True, BrokerAmbiguousError),
        (ccxt.BadResponse("x"), True, BrokerAmbiguousError),
        (
            _caused(ccxt.ExchangeError("x"), aiohttp.ClientPayloadError()),
            True,
            BrokerAmbiguousError,
        ),
        (ccxt.ExchangeError("x"), True, OrderRejectedError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_ccxt_exceptions_translate_by_the_table(
    exc: BaseException, placing: bool, expected: type[BrokerError]
) -> None:
    error = translate_error(exc, broker="ccxt:test", action="do it", placing=placing)

    assert type(error) is expected
    assert str(error).startswith("ccxt:test")
