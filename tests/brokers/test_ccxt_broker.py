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
    spot_average_entry,
    translate_error,
)
from core.config import Settings
from core.domain import ExitStyle, OrderRequest, OrderState, OrderType, Side
from core.errors import (
    BrokerAmbiguousError,
    BrokerError,
    BrokerPermanentError,
    BrokerTemporaryError,
    BrokerUnavailableError,
    ConfigError,
    InsufficientMarginError,
    InvalidQuantityError,
    OrderNotFoundError,
    OrderRejectedError,
    UnknownSymbolError,
)
from tests.brokers.exits import exit_request
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
    assert btc.mark_price == D(61000) and btc.opened_by_signaldesk
    assert btc.average_entry == D("60000.01")  # from the account's own trades
    assert btc.unrealized_pnl == (D(61000) - D("60000.01")) * D("0.00999") > 0
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


async def test_an_entry_never_carries_stop_loss_or_take_profit_params(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    report = await ccxt_broker.place_order(
        buy("sd-1", "0.01", stop_loss=D(55000), take_profit=D(65000))
    )

    assert report.state is OrderState.FILLED and report.reason == ""
    (sent,) = posted(binance)
    assert sent["type"] == "MARKET" and "stopPrice" not in sent
    assert not any("stop" in key.lower() or "profit" in key.lower() for key in sent)


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
    )

    broker = CcxtBroker.from_settings(settings)
    try:
        assert broker.name == "ccxt:binance"
        assert broker.account_currency == "BTC"
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


_BODY_2010_DUPLICATE = 'binance {"code":-2010,"msg":"Duplicate order sent."}'
_BODY_4116 = 'binance {"code":-4116,"msg":"ClientOrderId is duplicated."}'
_BODY_OKX_51016 = 'okx {"code":"1","data":[{"sCode":"51016","sMsg":"Duplicated clOrdId"}]}'


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
        (ccxt.InvalidOrder(_BODY_2010_DUPLICATE), True, BrokerAmbiguousError),
        (ccxt.ExchangeError(_BODY_4116), True, BrokerAmbiguousError),
        (ccxt.InvalidOrder(_BODY_OKX_51016), True, BrokerAmbiguousError),
        (ccxt.ExchangeError(_BODY_4116), False, BrokerPermanentError),
        (
            ccxt.InvalidOrder('binance {"code":-2010,"msg":"Order would trigger immediately."}'),
            True,
            OrderRejectedError,
        ),
        (
            ccxt.InvalidOrder('binance {"code":-1013,"msg":"price 12141.5 rejected"}'),
            True,
            OrderRejectedError,
        ),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_ccxt_exceptions_translate_by_the_table(
    exc: BaseException, placing: bool, expected: type[BrokerError]
) -> None:
    error = translate_error(exc, broker="ccxt:test", action="do it", placing=placing)

    assert type(error) is expected
    assert str(error).startswith("ccxt:test")


def test_spot_average_entry_is_the_average_cost_of_the_coins_held() -> None:
    trades = [
        {"side": "buy", "amount": 1, "price": 100, "fee": {"cost": 0.001, "currency": "BTC"}},
        {"side": "buy", "amount": 1, "price": 200, "fee": {"cost": 0.2, "currency": "USDT"}},
        {"side": "sell", "amount": 0.5, "price": 300},
    ]
    held = D("1.499")

    entry = spot_average_entry(trades, "BTC", held, D("0.00001"))

    bought = D("0.999") * 100 + 200  # the BTC fee leaves 0.999 at 100
    assert entry == bought / D("1.999")  # a sale takes coins out at the average


def test_spot_average_entry_is_unknown_where_the_trades_do_not_explain_the_balance() -> None:
    buys = [{"side": "buy", "amount": 1, "price": 100}]

    assert spot_average_entry(buys, "BTC", D(1), D("0.001")) == D(100)
    assert spot_average_entry(buys, "BTC", D(2), D("0.001")) is None  # deposited coins
    oversold = [*buys, {"side": "sell", "amount": 2, "price": 100}]
    assert spot_average_entry(oversold, "BTC", D(1), D("0.001")) is None  # older trades missing


async def test_spot_coins_without_trades_behind_them_are_entered_at_the_mark(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    await ccxt_broker.place_order(buy("sd-1", "0.01"))
    binance.free["BTC"] += D(1)  # a deposit: no trade explains it
    binance.set_price("BTC/USDT", "61000")

    (position,) = await ccxt_broker.positions()

    assert position.average_entry == position.mark_price == D(61000)
    assert position.unrealized_pnl == 0


# --- cancel and open orders ---------------------------------------------------------------


def deleted(fake: BinanceFake, path: str = "/api/v3/order") -> list[dict[str, str]]:
    return [p for m, pth, p in fake.requests if (m, pth) == ("DELETE", path)]


def limit(
    client_order_id: str, quantity: str, price: str, symbol: str = "BTC/USDT"
) -> OrderRequest:
    return buy(client_order_id, quantity, symbol, order_type=OrderType.LIMIT, limit_price=D(price))


async def test_cancel_a_resting_limit_order_by_client_id_releases_its_funds(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    await ccxt_broker.place_order(limit("sd-1", "0.01", "50000"))
    assert binance.locked["USDT"] == D(500)

    report = await ccxt_broker.cancel_order("sd-1", "BTC/USDT")

    assert report.state is OrderState.CANCELLED and report.client_order_id == "sd-1"
    assert report.filled_quantity == 0 and report.limit_price == D(50000)
    assert deleted(binance)[0]["origClientOrderId"] == "sd-1"
    assert binance.locked["USDT"] == 0 and binance.free["USDT"] == D(10000)
    again = await ccxt_broker.cancel_order("sd-1", "BTC/USDT")  # final: returned as it is
    assert again.state is OrderState.CANCELLED and len(deleted(binance)) == 1


async def test_cancel_a_filled_order_returns_it_filled_without_sending_a_cancel(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    placed = await ccxt_broker.place_order(buy("sd-1", "0.01"))

    report = await ccxt_broker.cancel_order("sd-1", "BTC/USDT")

    assert report.state is OrderState.FILLED and report.fills == placed.fills
    assert deleted(binance) == []


async def test_cancel_an_unknown_order_is_order_not_found(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    with pytest.raises(OrderNotFoundError, match="never-sent"):
        await ccxt_broker.cancel_order("never-sent", "BTC/USDT")

    assert deleted(binance) == []


async def test_cancel_refused_by_the_exchange_is_permanent(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    await ccxt_broker.place_order(limit("sd-1", "0.01", "50000"))
    binance.fail_next("DELETE", "/api/v3/order", 400, -1100, "Illegal characters found.")

    with pytest.raises(BrokerPermanentError, match="Illegal characters") as caught:
        await ccxt_broker.cancel_order("sd-1", "BTC/USDT")

    assert type(caught.value) is BrokerPermanentError


async def test_open_orders_lists_resting_orders_with_their_client_ids(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    await ccxt_broker.place_order(limit("sd-1", "0.01", "50000"))
    await ccxt_broker.place_order(limit("sd-2", "0.1", "2500", "ETH/USDT"))
    await ccxt_broker.place_order(buy("sd-3", "0.01"))  # filled: not resting
    await ccxt_broker.place_order(limit("sd-4", "0.01", "49000"))
    await ccxt_broker.cancel_order("sd-4", "BTC/USDT")

    every = await ccxt_broker.open_orders()
    eth = await ccxt_broker.open_orders("ETH/USDT")

    assert sorted(r.client_order_id for r in every) == ["sd-1", "sd-2"]
    assert all(r.state is OrderState.OPEN and r.order_type is OrderType.LIMIT for r in every)
    assert [(r.client_order_id, r.symbol, r.limit_price) for r in eth] == [
        ("sd-2", "ETH/USDT", D(2500))
    ]


# --- partial closes -----------------------------------------------------------------------


async def test_spot_partial_close_sells_part_rounded_to_the_step_and_capped_at_the_balance(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    await ccxt_broker.place_order(buy("sd-1", "0.01"))  # 0.00999 held after the fee

    part = await ccxt_broker.close_position("BTC/USDT", "sd-c1", D("0.0041234"))
    rest = await ccxt_broker.close_position("BTC/USDT", "sd-c2", D(1))

    assert part is not None and part.side is Side.SELL and part.quantity == D("0.00412")
    assert rest is not None and rest.quantity == D("0.00587")  # capped at what is held
    assert binance.free["BTC"] == 0 and await ccxt_broker.positions() == []


async def test_partial_close_of_a_non_positive_quantity_is_refused(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    await ccxt_broker.place_order(buy("sd-1", "0.01"))

    with pytest.raises(InvalidQuantityError, match="positive"):
        await ccxt_broker.close_position("BTC/USDT", "sd-c1", D(0))


# --- protective exits ---------------------------------------------------------------------


async def test_exit_style_is_orders_on_usdm_swaps_and_watched_on_spot(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    swap = binance.broker(market_type="swap")

    assert await ccxt_broker.exit_style("BTC/USDT") is ExitStyle.WATCHED
    assert await swap.exit_style(PERP) is ExitStyle.ORDERS
    with pytest.raises(UnknownSymbolError):
        await ccxt_broker.exit_style("DOGE/USDT")


async def test_a_trigger_order_on_spot_is_refused_before_sending(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    await ccxt_broker.place_order(buy("sd-1", "0.01"))

    with pytest.raises(OrderRejectedError, match="watched by SignalDesk"):
        await ccxt_broker.place_order(stop("sd-1-sl1", "0.00999", "55000", "BTC/USDT"))

    assert len(posted(binance)) == 1


def stop(
    client_order_id: str,
    quantity: str,
    trigger: str,
    symbol: str = PERP,
    kind: OrderType = OrderType.STOP,
    side: Side = Side.SELL,
) -> OrderRequest:
    return exit_request(client_order_id, symbol, quantity, trigger, kind=kind, side=side)


def algo_posts(fake: BinanceFake) -> list[dict[str, str]]:
    return [p for m, path, p in fake.requests if (m, path) == ("POST", "/fapi/v1/algoOrder")]


async def test_exit_lifecycle_on_a_perpetual_stop_fills_once_and_the_take_profit_is_cancelled(
    binance: BinanceFake,
) -> None:
    broker = binance.broker(market_type="swap")
    await broker.place_order(buy("sd-1", "0.01", PERP))

    sl = await broker.place_order(stop("sd-1-sl1", "0.01", "55000.04"))
    tp = await broker.place_order(stop("sd-1-tp1", "0.01", "65000", kind=OrderType.TAKE_PROFIT))

    assert (sl.state, sl.order_type, sl.trigger_price) == (
        OrderState.OPEN,
        OrderType.STOP,
        D("55000"),  # rounded to the 0.10 tick
    )
    assert (tp.state, tp.order_type, tp.trigger_price) == (
        OrderState.OPEN,
        OrderType.TAKE_PROFIT,
        D(65000),
    )
    sent_sl, sent_tp = algo_posts(binance)
    assert (sent_sl["type"], sent_sl["triggerPrice"], sent_sl["reduceOnly"]) == (
        "STOP_MARKET",
        "55000",
        "true",
    )
    assert sent_sl["clientAlgoId"] == "sd-1-sl1" and sent_sl["algoType"] == "CONDITIONAL"
    assert sent_tp["type"] == "TAKE_PROFIT_MARKET"
    resting = {r.client_order_id: r for r in await broker.open_orders(PERP)}
    assert set(resting) == {"sd-1-sl1", "sd-1-tp1"}
    assert resting["sd-1-sl1"].trigger_price == D(55000)

    binance.set_price("BTC/USDT", "54000")  # gapped through the stop
    binance.set_price("BTC/USDT", "53000")

    filled = await broker.get_order("sd-1-sl1", PERP)
    assert filled is not None and filled.state is OrderState.FILLED
    assert filled.order_type is OrderType.STOP and filled.trigger_price == D(55000)
    (fill,) = filled.fills  # exactly once
    assert (fill.quantity, fill.price, fill.side) == (D("0.01"), D(54000), Side.SELL)
    assert fill.fee == D("0.27") and fill.client_order_id == "sd-1-sl1"
    assert await broker.positions() == []
    assert [r.client_order_id for r in await broker.open_orders()] == ["sd-1-tp1"]

    cancelled = await broker.cancel_order("sd-1-tp1", PERP)
    binance.set_price("BTC/USDT", "66000")

    assert cancelled.state is OrderState.CANCELLED and cancelled.filled_quantity == 0
    deletes = deleted(binance, "/fapi/v1/algoOrder")
    assert [d["clientAlgoId"] for d in deletes] == ["sd-1-tp1"]
    assert await broker.open_orders(PERP) == []
    assert await broker.positions() == []
    assert len([o for o in binance.futures.orders.values() if o.executed]) == 2  # entry, stop


async def test_a_stop_reached_exactly_fills_at_its_trigger(binance: BinanceFake) -> None:
    broker = binance.broker(market_type="swap")
    await broker.place_order(OrderRequest("sd-1", PERP, Side.SELL, D("0.01")))  # a short
    await broker.place_order(stop("sd-1-sl1", "0.01", "61000", side=Side.BUY))

    binance.set_price("BTC/USDT", "61000")

    report = await broker.get_order("sd-1-sl1", PERP)
    assert report is not None and report.state is OrderState.FILLED
    assert report.side is Side.BUY and report.average_price == D(61000)
    assert await broker.positions() == []


async def test_a_trigger_that_fires_while_it_is_being_cancelled_reports_filled(
    binance: BinanceFake,
) -> None:
    broker = binance.broker(market_type="swap")
    await broker.place_order(buy("sd-1", "0.01", PERP))
    await broker.place_order(stop("sd-1-tp1", "0.01", "65000", kind=OrderType.TAKE_PROFIT))
    binance.before_next(
        "DELETE", "/fapi/v1/algoOrder", lambda: binance.set_price("BTC/USDT", "65000")
    )

    report = await broker.cancel_order("sd-1-tp1", PERP)

    assert report.state is OrderState.FILLED and report.filled_quantity == D("0.01")
    assert report.fills[0].price == D(65000)
    assert await broker.positions() == []


async def test_placing_a_trigger_id_the_exchange_holds_returns_it(binance: BinanceFake) -> None:
    broker = binance.broker(market_type="swap")
    await broker.place_order(buy("sd-1", "0.01", PERP))
    first = await broker.place_order(stop("sd-1-sl1", "0.01", "55000"))

    again = await broker.place_order(stop("sd-1-sl1", "0.01", "55000"))

    assert again.broker_order_id == first.broker_order_id and again.state is OrderState.OPEN
    assert len(algo_posts(binance)) == 1


async def test_a_trigger_without_a_positive_trigger_price_is_refused(
    binance: BinanceFake,
) -> None:
    broker = binance.broker(market_type="swap")

    with pytest.raises(OrderRejectedError, match="positive trigger price"):
        await broker.place_order(stop("sd-1-sl1", "0.01", "0"))

    assert algo_posts(binance) == []


async def test_a_stop_that_would_trigger_at_once_is_rejected(binance: BinanceFake) -> None:
    broker = binance.broker(market_type="swap")
    await broker.place_order(buy("sd-1", "0.01", PERP))

    with pytest.raises(OrderRejectedError, match="immediately trigger"):
        await broker.place_order(stop("sd-1-sl1", "0.01", "61000"))  # a sell stop above


async def test_a_triggered_stop_with_no_position_left_reports_cancelled(
    binance: BinanceFake,
) -> None:
    broker = binance.broker(market_type="swap")
    await broker.place_order(buy("sd-1", "0.01", PERP))
    await broker.place_order(stop("sd-1-sl1", "0.01", "55000"))
    await broker.close_position(PERP, "sd-c1")

    binance.set_price("BTC/USDT", "54000")

    report = await broker.get_order("sd-1-sl1", PERP)
    assert report is not None and report.state is OrderState.CANCELLED
    assert report.fills == () and await broker.positions() == []


async def test_perpetual_partial_close_is_reduce_only_and_capped(binance: BinanceFake) -> None:
    broker = binance.broker(market_type="swap")
    await broker.place_order(buy("sd-1", "0.01", PERP))

    part = await broker.close_position(PERP, "sd-c1", D("0.0045"))
    rest = await broker.close_position(PERP, "sd-c2", D(1))

    assert part is not None and part.quantity == D("0.004")  # the 0.001 step
    assert rest is not None and rest.quantity == D("0.006")
    sent = [p for m, path, p in binance.requests if (m, path) == ("POST", "/fapi/v1/order")]
    assert [s["reduceOnly"] for s in sent[1:]] == ["true", "true"]
    assert await broker.positions() == []


# --- a duplicate client order id is ambiguous ---------------------------------------------


async def test_spot_duplicate_order_sent_is_ambiguous(
    binance: BinanceFake, ccxt_broker: CcxtBroker
) -> None:
    await ccxt_broker.place_order(limit("sd-1", "0.01", "50000"))
    binance.fail_next("GET", "/api/v3/order", *binance_fake.ORDER_DOES_NOT_EXIST)  # a stale read

    with pytest.raises(BrokerAmbiguousError, match="Duplicate order sent"):
        await ccxt_broker.place_order(limit("sd-1", "0.01", "50000"))

    assert len(binance.orders) == 1
    found = await ccxt_broker.get_order("sd-1", "BTC/USDT")
    assert found is not None and found.state is OrderState.OPEN


async def test_usdm_client_order_id_is_duplicated_is_ambiguous(binance: BinanceFake) -> None:
    broker = binance.broker(market_type="swap")
    await broker.place_order(buy("sd-1", "0.01", PERP))
    await broker.place_order(stop("sd-1-sl1", "0.01", "55000"))
    binance.fail_next("GET", "/fapi/v1/algoOrder", *binance_fake.ORDER_DOES_NOT_EXIST)

    with pytest.raises(BrokerAmbiguousError, match="-4116"):
        await broker.place_order(stop("sd-1-sl1", "0.01", "55000"))

    assert len(binance.futures.algo_orders) == 1
