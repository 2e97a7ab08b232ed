"""Mt5Broker against the fake MetaTrader5 module (tests/support/mt5_fake.py)."""

from __future__ import annotations

import asyncio
import sys
import threading
from decimal import Decimal
from typing import Any

import pytest

from core.brokers.base import Broker
from core.brokers.mt5_broker import UNAVAILABLE_MESSAGE, Mt5Broker
from core.config import Settings
from core.domain import OrderRequest, OrderState, OrderType, Side
from core.errors import (
    BrokerAmbiguousError,
    BrokerError,
    BrokerPermanentError,
    BrokerTemporaryError,
    BrokerUnavailableError,
    InsufficientMarginError,
    InvalidQuantityError,
    OrderRejectedError,
    QuantityLimitError,
    UnknownSymbolError,
)
from tests.support import mt5_fake
from tests.support.mt5_fake import FakeTerminal

D = Decimal


def order(client_order_id: str, symbol: str, side: Side, quantity: str, **kw: Any) -> OrderRequest:
    return OrderRequest(client_order_id, symbol, side, D(quantity), **kw)


def sends(fake: FakeTerminal) -> int:
    return sum(1 for name, _ in fake.calls if name == "order_send")


# --- happy path ---------------------------------------------------------------------------


async def test_broker_satisfies_the_port(mt5_broker: Mt5Broker) -> None:
    assert isinstance(mt5_broker, Broker)
    assert mt5_broker.name == "mt5"


async def test_market_buy_is_a_deal_with_our_magic_comment_and_the_deal_commission(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    report = await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "12345"))

    assert report.state is OrderState.FILLED
    assert report.quantity == report.filled_quantity == D(12000)  # 0.12 lots, step 0.01
    assert report.average_price == D("1.0851")  # the ask
    assert (report.fee, report.fee_currency) == (D("0.42"), "USD")  # 3.5 USD/lot
    (fill,) = report.fills
    assert fill.broker_fill_id and fill.side is Side.BUY
    (sent,) = mt5.requests
    assert sent["action"] == mt5_fake.TRADE_ACTION_DEAL
    assert sent["type"] == mt5_fake.ORDER_TYPE_BUY
    assert sent["volume"] == 0.12 and sent["price"] == 1.0851
    assert (sent["magic"], sent["comment"], sent["deviation"]) == (20251121, "sd-1", 20)
    assert sent["type_filling"] == mt5_fake.ORDER_FILLING_FOK


@pytest.mark.parametrize(
    ("symbol", "quantity", "filling"),
    [
        ("EURUSD", "1000", mt5_fake.ORDER_FILLING_FOK),  # FOK and IOC allowed
        ("XAUUSD", "1", mt5_fake.ORDER_FILLING_IOC),  # IOC only
        ("US500", "1", mt5_fake.ORDER_FILLING_RETURN),  # neither flag
    ],
)
async def test_type_filling_follows_the_symbols_filling_mode_flags(
    mt5: FakeTerminal, mt5_broker: Mt5Broker, symbol: str, quantity: str, filling: int
) -> None:
    report = await mt5_broker.place_order(order("sd-1", symbol, Side.BUY, quantity))

    assert report.state is OrderState.FILLED
    assert mt5.requests[-1]["type_filling"] == filling


async def test_limit_order_is_a_pending_order_found_open_by_its_id(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    request = order(
        "sd-1", "EURUSD", Side.BUY, "10000", order_type=OrderType.LIMIT, limit_price=D("1.0801234")
    )

    report = await mt5_broker.place_order(request)

    assert report.state is OrderState.OPEN and report.order_type is OrderType.LIMIT
    assert mt5.requests[0]["action"] == mt5_fake.TRADE_ACTION_PENDING
    assert mt5.requests[0]["type"] == mt5_fake.ORDER_TYPE_BUY_LIMIT
    assert mt5.requests[0]["price"] == 1.08012  # five digits
    found = await mt5_broker.get_order("sd-1", "EURUSD")
    assert found is not None and found.state is OrderState.OPEN
    assert found.limit_price == D("1.08012") and found.quantity == D(10000)


async def test_stop_loss_and_take_profit_go_in_the_request(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(
        order("sd-1", "EURUSD", Side.BUY, "10000", stop_loss=D("1.07"), take_profit=D("1.1"))
    )

    assert (mt5.requests[0]["sl"], mt5.requests[0]["tp"]) == (1.07, 1.1)


async def test_quote_selects_a_hidden_symbol_and_uses_the_mid_without_a_last_price(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    assert not mt5.symbols["XAUUSD"].visible

    quote = await mt5_broker.quote("XAUUSD")

    assert (quote.bid, quote.ask, quote.last) == (D("2400.0"), D("2400.3"), D("2400.15"))
    assert mt5.symbols["XAUUSD"].visible


async def test_account_reads_account_info(mt5: FakeTerminal, mt5_broker: Mt5Broker) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "100000"))
    mt5.set_tick("EURUSD", bid="1.08600", ask="1.08610")

    account = await mt5_broker.account()

    assert account.currency == "USD"
    assert account.balance == D("9996.5")  # 3.5 commission
    assert account.equity == D("9996.5") + D(90)  # (1.086 - 1.0851) x 100 000
    assert account.margin == D("1085.1")  # 100 000 x 1.0851 / 100


async def test_positions_net_each_symbols_tickets_in_base_units(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "20000"))
    await mt5_broker.place_order(order("sd-2", "EURUSD", Side.SELL, "5000"))
    await mt5_broker.place_order(order("sd-3", "XAUUSD", Side.SELL, "2"))
    mt5.open_position("US500", buy=True, volume=1.0)  # by hand: magic 0

    positions = {p.symbol: p for p in await mt5_broker.positions()}

    eur = positions["EURUSD"]
    assert eur.quantity == D(15000) and eur.side is Side.BUY
    assert eur.average_entry == D("1.0851") and eur.mark_price == D("1.085")
    assert eur.opened_by_signaldesk
    assert positions["XAUUSD"].quantity == D(-2)
    assert positions["XAUUSD"].mark_price == D("2400.3")  # a short is marked at the ask
    assert positions["US500"].quantity == D(1)
    assert not positions["US500"].opened_by_signaldesk


async def test_close_position_sends_an_opposite_deal_per_ticket(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "20000"))
    await mt5_broker.place_order(order("sd-2", "EURUSD", Side.BUY, "10000"))
    by_hand = mt5.open_position("EURUSD", buy=True, volume=0.05)
    tickets = {p.ticket for p in mt5.positions.values()}

    report = await mt5_broker.close_position("EURUSD", "sd-c1")

    assert report is not None and report.state is OrderState.FILLED
    assert report.side is Side.SELL and report.filled_quantity == D(35000)
    assert len(report.fills) == 3
    closes = mt5.requests[-3:]
    assert {r["position"] for r in closes} == tickets and by_hand in tickets
    assert all(r["comment"] == "sd-c1" and r["type"] == mt5_fake.ORDER_TYPE_SELL for r in closes)
    assert await mt5_broker.positions() == []
    found = await mt5_broker.get_order("sd-c1", "EURUSD")
    assert found is not None and found.filled_quantity == D(35000)


async def test_close_all_over_several_symbols(mt5: FakeTerminal, mt5_broker: Mt5Broker) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))
    await mt5_broker.place_order(order("sd-2", "XAUUSD", Side.SELL, "3"))
    await mt5_broker.place_order(order("sd-3", "US500", Side.BUY, "2"))

    for n, position in enumerate(await mt5_broker.positions()):
        report = await mt5_broker.close_position(position.symbol, f"sd-c{n}")
        assert report is not None and report.filled_quantity == abs(position.quantity)
        assert report.side is position.side.opposite

    assert await mt5_broker.positions() == []
    assert mt5.positions == {}


async def test_close_on_a_netting_account() -> None:
    async with mt5_fake.running(hedging=False) as fake:
        broker = fake.broker()
        await broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))
        await broker.place_order(order("sd-2", "EURUSD", Side.BUY, "20000"))
        assert len(fake.positions) == 1

        report = await broker.close_position("EURUSD", "sd-c1")

        assert report is not None and report.filled_quantity == D(30000)
        assert fake.positions == {}


async def test_close_when_flat_returns_none(mt5: FakeTerminal, mt5_broker: Mt5Broker) -> None:
    assert await mt5_broker.close_position("EURUSD", "sd-c1") is None
    assert sends(mt5) == 0


# --- exactly once -------------------------------------------------------------------------


async def test_placing_an_id_the_terminal_holds_returns_it_without_a_second_deal(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    first = await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))

    again = await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))

    assert again.state is OrderState.FILLED and again.broker_order_id == first.broker_order_id
    assert [f.broker_fill_id for f in again.fills] == [f.broker_fill_id for f in first.fills]
    assert sends(mt5) == 1


async def test_lost_answer_after_the_deal_is_ambiguous_then_adopted(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    mt5.lose_next(execute=True)

    with pytest.raises(BrokerAmbiguousError, match="IPC timeout"):
        await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))

    found = await mt5_broker.get_order("sd-1", "EURUSD")
    assert found is not None and found.state is OrderState.FILLED
    assert found.filled_quantity == D(10000) and found.fee == D("0.35")
    again = await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))
    assert again.broker_order_id == found.broker_order_id
    assert sends(mt5) == 1


async def test_lost_answer_without_a_deal_reconciles_to_none(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    mt5.lose_next(execute=False)

    with pytest.raises(BrokerAmbiguousError):
        await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))

    assert await mt5_broker.get_order("sd-1", "EURUSD") is None
    resubmitted = await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))
    assert resubmitted.state is OrderState.FILLED
    assert len(mt5.positions) == 1


async def test_timeout_retcode_hiding_a_done_deal_is_adopted(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    mt5.reject_next(mt5_fake.TRADE_RETCODE_TIMEOUT, execute=True)

    with pytest.raises(BrokerAmbiguousError, match="TRADE_RETCODE_TIMEOUT"):
        await mt5_broker.place_order(order("sd-1", "XAUUSD", Side.BUY, "1"))

    found = await mt5_broker.get_order("sd-1", "XAUUSD")
    assert found is not None and found.state is OrderState.FILLED


async def test_history_look_up_finds_deals_stamped_by_a_server_clock_ahead_of_utc() -> None:
    async with mt5_fake.running(server_offset_hours=3) as fake:
        broker = fake.broker()
        fake.lose_next(execute=True)
        with pytest.raises(BrokerAmbiguousError):
            await broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))

        found = await broker.get_order("sd-1", "EURUSD")

        assert found is not None and found.state is OrderState.FILLED


async def test_a_close_failing_after_an_earlier_ticket_closed_is_ambiguous(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))
    await mt5_broker.place_order(order("sd-2", "EURUSD", Side.BUY, "10000"))
    mt5.reject_next(mt5_fake.TRADE_RETCODE_REQUOTE, skip=1)

    with pytest.raises(BrokerAmbiguousError, match="closed 1 of 2"):
        await mt5_broker.close_position("EURUSD", "sd-c1")

    found = await mt5_broker.get_order("sd-c1", "EURUSD")
    assert found is not None and found.filled_quantity == D(10000)
    assert len(mt5.positions) == 1


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retcode", "error"),
    [
        (mt5_fake.TRADE_RETCODE_REQUOTE, BrokerTemporaryError),
        (mt5_fake.TRADE_RETCODE_PRICE_CHANGED, BrokerTemporaryError),
        (mt5_fake.TRADE_RETCODE_PRICE_OFF, BrokerTemporaryError),
        (mt5_fake.TRADE_RETCODE_NO_MONEY, InsufficientMarginError),
        (mt5_fake.TRADE_RETCODE_INVALID_VOLUME, InvalidQuantityError),
        (mt5_fake.TRADE_RETCODE_MARKET_CLOSED, OrderRejectedError),
        (mt5_fake.TRADE_RETCODE_TIMEOUT, BrokerAmbiguousError),
        (mt5_fake.TRADE_RETCODE_CONNECTION, BrokerAmbiguousError),
    ],
)
async def test_return_codes_map_to_error_classes(
    mt5: FakeTerminal,
    mt5_broker: Mt5Broker,
    retcode: int,
    error: type[BrokerError],
) -> None:
    mt5.reject_next(retcode, "server says no")

    with pytest.raises(error) as caught:
        await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))

    assert type(caught.value) is error
    name = next(
        n for n, v in vars(mt5_fake).items() if n.startswith("TRADE_RETCODE_") and v == retcode
    )
    assert name in str(caught.value) and "server says no" in str(caught.value)
    assert mt5.positions == {}


async def test_done_partial_is_a_success_that_says_so(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    mt5.reject_next(mt5_fake.TRADE_RETCODE_DONE_PARTIAL, "partial", execute=True)

    report = await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))

    assert report.state is OrderState.FILLED and report.filled_quantity == D(10000)
    assert "TRADE_RETCODE_DONE_PARTIAL" in report.reason


async def test_temporary_return_codes_say_a_retry_is_safe(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    mt5.reject_next(mt5_fake.TRADE_RETCODE_REQUOTE)

    with pytest.raises(BrokerTemporaryError, match="safe to retry"):
        await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))
    retried = await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))
    assert retried.state is OrderState.FILLED


async def test_the_terminal_refusing_the_request_structure_is_a_rejection(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    mt5.lose_next(execute=False, error=(mt5_fake.RES_E_INVALID_PARAMS, "Invalid params"))

    with pytest.raises(OrderRejectedError, match="Invalid params"):
        await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))


async def test_fake_server_checks_reach_the_adapter(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    with pytest.raises(InsufficientMarginError, match="TRADE_RETCODE_NO_MONEY"):
        await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000000"))  # 100 lots


async def test_quantity_below_the_minimum_volume_is_refused_naming_it(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    with pytest.raises(InvalidQuantityError, match=r"minimum volume of 0\.01 lots \(1000 units"):
        await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "999"))

    assert sends(mt5) == 0


async def test_quantity_above_the_maximum_volume_is_refused(mt5_broker: Mt5Broker) -> None:
    with pytest.raises(InvalidQuantityError, match="maximum volume of 50 lots"):
        await mt5_broker.place_order(order("sd-1", "XAUUSD", Side.BUY, "5100"))


async def test_client_order_id_longer_than_31_characters_is_refused(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    with pytest.raises(OrderRejectedError, match="at most 31"):
        await mt5_broker.place_order(order("x" * 32, "EURUSD", Side.BUY, "10000"))

    assert mt5.calls == []


async def test_signaldesk_caps_apply_to_opening_orders(mt5: FakeTerminal) -> None:
    broker = mt5.broker(max_order_quantity=D(50000), max_order_notional=D(30000))

    with pytest.raises(QuantityLimitError, match="MAX_ORDER_QUANTITY"):
        await broker.place_order(order("sd-1", "EURUSD", Side.BUY, "60000"))
    with pytest.raises(QuantityLimitError, match="MAX_ORDER_NOTIONAL"):
        await broker.place_order(order("sd-2", "EURUSD", Side.BUY, "30000"))
    assert sends(mt5) == 0


async def test_unknown_symbol(mt5_broker: Mt5Broker) -> None:
    with pytest.raises(UnknownSymbolError, match="GBPJPY"):
        await mt5_broker.quote("GBPJPY")


# --- connection and threading -------------------------------------------------------------


async def test_every_terminal_call_runs_on_one_worker_thread(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))
    await asyncio.gather(
        *(mt5_broker.positions() for _ in range(4)),
        *(mt5_broker.account() for _ in range(4)),
        *(mt5_broker.quote(symbol) for symbol in ("EURUSD", "XAUUSD", "US500")),
    )
    await mt5_broker.close_position("EURUSD", "sd-c1")

    threads = {thread for _, thread in mt5.calls}
    assert len(threads) == 1
    assert threading.get_ident() not in threads
    assert [name for name, _ in mt5.calls][:2] == ["initialize", "login"]


async def test_login_refused_is_permanent_and_names_the_settings(mt5: FakeTerminal) -> None:
    broker = mt5.broker(password=None)

    with pytest.raises(BrokerPermanentError, match="MT5_PASSWORD") as caught:
        await broker.account()

    assert "Authorization failed" in str(caught.value)
    assert mt5.password not in str(caught.value)


async def test_terminal_not_running_is_temporary(mt5: FakeTerminal, mt5_broker: Mt5Broker) -> None:
    mt5.fail_initialize(mt5_fake.RES_E_INTERNAL_FAIL_INIT, "IPC initialize failed")

    with pytest.raises(BrokerTemporaryError, match="MT5_PATH"):
        await mt5_broker.account()
    assert (await mt5_broker.account()).currency == "USD"


async def test_a_dropped_ipc_link_is_temporary_and_reconnects(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.account()
    mt5.disconnect()

    with pytest.raises(BrokerTemporaryError, match="No IPC connection"):
        await mt5_broker.account()
    assert (await mt5_broker.account()).balance == D(10000)


async def test_close_shuts_the_terminal_connection_down(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.account()

    await mt5_broker.close()
    await mt5_broker.close()

    assert not mt5.initialized
    assert [name for name, _ in mt5.calls].count("shutdown") == 1


# --- construction -------------------------------------------------------------------------


async def test_from_settings_uses_the_mt5_settings(
    mt5: FakeTerminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "MetaTrader5", mt5.module)
    settings = Settings(
        broker="mt5",
        mt5_login=mt5.login_number,
        mt5_password=mt5.password,
        mt5_server=mt5.server,
        mt5_magic=777,
        mt5_deviation=5,
        max_order_quantity=D(100000),  # base units: one EURUSD lot
    )

    broker = Mt5Broker.from_settings(settings)
    try:
        await broker.place_order(order("sd-1", "EURUSD", Side.SELL, "5000"))
    finally:
        await broker.close()

    assert (mt5.requests[0]["magic"], mt5.requests[0]["deviation"]) == (777, 5)


async def test_missing_metatrader5_package_names_windows_and_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "MetaTrader5", None)

    with pytest.raises(BrokerUnavailableError) as caught:
        Mt5Broker.from_settings(Settings(broker="mt5"))

    assert str(caught.value) == UNAVAILABLE_MESSAGE
    assert UNAVAILABLE_MESSAGE == (
        "BROKER=mt5 needs Windows and the mt5 extra: pip install 'signaldesk[mt5]'"
    )


def test_fake_module_mirrors_the_real_packages_surface() -> None:
    module = mt5_fake.FakeTerminal().module

    assert module.TRADE_RETCODE_DONE == 10009 and module.ORDER_FILLING_RETURN == 2
    assert not hasattr(module, "SYMBOL_FILLING_FOK")  # the real package lacks it too
    for name in ("initialize", "login", "order_send", "history_deals_get", "last_error"):
        assert callable(getattr(module, name))


async def test_importing_the_adapters_imports_neither_library() -> None:
    code = (
        "import sys, core.app, core.brokers.ccxt_broker, core.brokers.mt5_broker; "
        "print(sorted(m for m in ('ccxt', 'MetaTrader5') if m in sys.modules))"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()

    assert process.returncode == 0
    assert out.decode().strip() == "[]"
