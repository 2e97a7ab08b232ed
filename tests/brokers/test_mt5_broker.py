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
from core.domain import ExitStyle, OrderRequest, OrderState, OrderType, Side
from core.errors import (
    BrokerAmbiguousError,
    BrokerError,
    BrokerPermanentError,
    BrokerTemporaryError,
    BrokerUnavailableError,
    InsufficientMarginError,
    InvalidQuantityError,
    OrderNotFoundError,
    OrderRejectedError,
    UnknownSymbolError,
)
from tests.brokers.exits import exit_request
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


async def test_an_entry_never_carries_sl_or_tp(mt5: FakeTerminal, mt5_broker: Mt5Broker) -> None:
    await mt5_broker.place_order(
        order("sd-1", "EURUSD", Side.BUY, "10000", stop_loss=D("1.07"), take_profit=D("1.1"))
    )

    assert "sl" not in mt5.requests[0] and "tp" not in mt5.requests[0]
    assert [(p.sl, p.tp) for p in mt5.positions.values()] == [(0.0, 0.0)]


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


async def test_hedging_positions_are_one_per_ticket_in_base_units(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "20000"))
    await mt5_broker.place_order(order("sd-2", "EURUSD", Side.SELL, "5000"))
    await mt5_broker.place_order(order("sd-3", "XAUUSD", Side.SELL, "2"))
    by_hand = mt5.open_position("US500", buy=True, volume=1.0)  # magic 0

    positions = {p.position_ref: p for p in await mt5_broker.positions()}

    assert set(positions) == {"sd-1", "sd-2", "sd-3", f"ticket:{by_hand}"}
    long, short = positions["sd-1"], positions["sd-2"]
    assert (long.symbol, long.quantity, long.side) == ("EURUSD", D(20000), Side.BUY)
    assert long.average_entry == D("1.0851") and long.mark_price == D("1.085")
    assert short.quantity == D(-5000) and short.mark_price == D("1.0851")  # a short: the ask
    assert long.opened_by_signaldesk and short.opened_by_signaldesk
    assert positions["sd-3"].quantity == D(-2)
    assert positions["sd-3"].mark_price == D("2400.3")
    hand = positions[f"ticket:{by_hand}"]
    assert hand.quantity == D(1) and not hand.opened_by_signaldesk


async def test_netting_positions_are_one_per_symbol() -> None:
    async with mt5_fake.running(hedging=False) as fake:
        broker = fake.broker()
        await broker.place_order(order("sd-1", "EURUSD", Side.BUY, "20000"))
        await broker.place_order(order("sd-2", "EURUSD", Side.SELL, "5000"))

        (position,) = await broker.positions()

        assert (position.symbol, position.quantity, position.position_ref) == (
            "EURUSD",
            D(15000),
            "",
        )
        assert position.opened_by_signaldesk


async def test_a_hand_opened_ticket_beside_ours_is_neither_closed_nor_makes_ours_foreign(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "20000"))
    await mt5_broker.place_order(order("sd-2", "EURUSD", Side.BUY, "10000"))
    by_hand = mt5.open_position("EURUSD", buy=True, volume=0.05)
    ours = {t for t, p in mt5.positions.items() if p.magic == mt5_broker.magic}

    owners = {p.position_ref: p.opened_by_signaldesk for p in await mt5_broker.positions()}
    report = await mt5_broker.close_position("EURUSD", "sd-c1")

    assert owners == {"sd-1": True, "sd-2": True, f"ticket:{by_hand}": False}
    assert report is not None and report.state is OrderState.FILLED
    assert report.side is Side.SELL and report.filled_quantity == D(30000)
    closes = mt5.requests[-2:]
    assert {r["position"] for r in closes} == ours
    assert all(r["comment"] == "sd-c1" and r["type"] == mt5_fake.ORDER_TYPE_SELL for r in closes)
    assert list(mt5.positions) == [by_hand]
    found = await mt5_broker.get_order("sd-c1", "EURUSD")
    assert found is not None and found.filled_quantity == D(30000)
    assert await mt5_broker.close_position("EURUSD", "sd-c2") is None  # nothing of ours
    assert list(mt5.positions) == [by_hand]


async def test_close_position_by_ref_closes_exactly_that_ticket(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "20000"))
    await mt5_broker.place_order(order("sd-2", "EURUSD", Side.BUY, "10000"))
    by_hand = mt5.open_position("EURUSD", buy=True, volume=0.05)

    second = await mt5_broker.close_position("EURUSD", "sd-c1", position_ref="sd-2")
    named = await mt5_broker.close_position("EURUSD", "sd-c2", position_ref=f"ticket:{by_hand}")

    assert second is not None and second.filled_quantity == D(10000)
    assert named is not None and named.filled_quantity == D(5000)
    assert [p.position_ref for p in await mt5_broker.positions()] == ["sd-1"]
    assert await mt5_broker.close_position("EURUSD", "sd-c3", position_ref="sd-2") is None


async def test_partial_close_rounds_to_the_volume_step_and_caps_at_the_ticket(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))

    part = await mt5_broker.close_position("EURUSD", "sd-c1", D(4321), "sd-1")
    with pytest.raises(InvalidQuantityError, match=r"minimum volume of 0\.01 lots"):
        await mt5_broker.close_position("EURUSD", "sd-c2", D(500), "sd-1")
    rest = await mt5_broker.close_position("EURUSD", "sd-c3", D(1_000_000), "sd-1")

    assert part is not None and part.filled_quantity == D(4000)  # 0.04 lots
    assert mt5.requests[1]["volume"] == 0.04
    assert rest is not None and rest.filled_quantity == D(6000)
    assert mt5.positions == {}


async def test_partial_close_without_a_ref_takes_our_oldest_tickets_first(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "20000"))
    await mt5_broker.place_order(order("sd-2", "EURUSD", Side.BUY, "10000"))

    report = await mt5_broker.close_position("EURUSD", "sd-c1", D(25000))

    assert report is not None and report.filled_quantity == D(25000)
    assert [r["volume"] for r in mt5.requests[-2:]] == [0.2, 0.05]
    assert {p.position_ref: p.quantity for p in await mt5_broker.positions()} == {"sd-2": D(5000)}


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


# --- attached protective exits ------------------------------------------------------------


def exit_order(
    client_order_id: str,
    trigger: str,
    *,
    kind: OrderType = OrderType.STOP,
    side: Side = Side.SELL,
    quantity: str = "10000",
    symbol: str = "EURUSD",
) -> OrderRequest:
    return exit_request(client_order_id, symbol, quantity, trigger, kind=kind, side=side)


def sltp_requests(fake: FakeTerminal) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r["action"] == mt5_fake.TRADE_ACTION_SLTP]


async def test_exit_style_is_attached(mt5_broker: Mt5Broker) -> None:
    assert await mt5_broker.exit_style("EURUSD") is ExitStyle.ATTACHED
    with pytest.raises(UnknownSymbolError):
        await mt5_broker.exit_style("GBPJPY")


async def test_exit_lifecycle_sl_and_tp_live_on_the_ticket_the_stop_fills_once(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))
    (ticket,) = mt5.positions

    sl = await mt5_broker.place_order(exit_order("sd-1-sl1", "1.0800004"))
    tp = await mt5_broker.place_order(exit_order("sd-1-tp1", "1.09", kind=OrderType.TAKE_PROFIT))
    trailed = await mt5_broker.place_order(exit_order("sd-1-sl2", "1.082"))

    assert (sl.state, sl.order_type, sl.trigger_price) == (
        OrderState.OPEN,
        OrderType.STOP,
        D("1.08"),  # five digits
    )
    assert (tp.state, tp.order_type, tp.trigger_price) == (
        OrderState.OPEN,
        OrderType.TAKE_PROFIT,
        D("1.09"),
    )
    assert sl.side is Side.SELL and sl.quantity == D(10000)
    assert trailed.trigger_price == D("1.082")
    requests = sltp_requests(mt5)
    assert [(r["position"], r["sl"], r["tp"]) for r in requests] == [
        (ticket, 1.08, 0.0),
        (ticket, 1.08, 1.09),  # the take profit keeps the stop
        (ticket, 1.082, 1.09),  # the trail moves the stop, keeps the take profit
    ]
    assert (mt5.positions[ticket].sl, mt5.positions[ticket].tp) == (1.082, 1.09)
    found = await mt5_broker.get_order("sd-1-sl2", "EURUSD")
    assert found is not None and found.state is OrderState.OPEN
    assert found.trigger_price == D("1.082")

    mt5.set_tick("EURUSD", bid="1.07900", ask="1.07910")  # gapped through the stop
    mt5.set_tick("EURUSD", bid="1.07800", ask="1.07810")

    stop = await mt5_broker.get_order("sd-1-sl2", "EURUSD")
    assert stop is not None and stop.state is OrderState.FILLED
    (fill,) = stop.fills  # exactly once
    assert (fill.price, fill.quantity, fill.side, fill.fee) == (
        D("1.079"),
        D(10000),
        Side.SELL,
        D("0.35"),
    )
    assert fill.client_order_id == "sd-1-sl2" and stop.average_price == D("1.079")
    assert mt5.positions == {} and len(mt5.deals) == 2
    take = await mt5_broker.cancel_order("sd-1-tp1", "EURUSD")
    assert take.state is OrderState.CANCELLED and take.fills == ()
    assert len(sltp_requests(mt5)) == 3  # nothing left to change


async def test_a_take_profit_reached_exactly_fills_at_its_level(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(order("sd-1", "XAUUSD", Side.SELL, "2"))  # a short
    await mt5_broker.place_order(exit_order("sd-1-sl1", "2450", side=Side.BUY, symbol="XAUUSD"))
    await mt5_broker.place_order(
        exit_order("sd-1-tp1", "2350", kind=OrderType.TAKE_PROFIT, side=Side.BUY, symbol="XAUUSD")
    )

    mt5.set_tick("XAUUSD", bid="2349.70", ask="2350.00")

    take = await mt5_broker.get_order("sd-1-tp1", "XAUUSD")
    stop = await mt5_broker.get_order("sd-1-sl1", "XAUUSD")
    assert take is not None and take.state is OrderState.FILLED
    assert take.side is Side.BUY and take.average_price == D(2350)
    assert take.filled_quantity == D(2)
    assert stop is not None and stop.state is OrderState.CANCELLED


async def test_cancelling_an_exit_clears_only_its_level(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))
    await mt5_broker.place_order(exit_order("sd-1-sl1", "1.08"))
    await mt5_broker.place_order(exit_order("sd-1-tp1", "1.09", kind=OrderType.TAKE_PROFIT))
    (ticket,) = mt5.positions

    report = await mt5_broker.cancel_order("sd-1-sl1", "EURUSD")
    mt5.set_tick("EURUSD", bid="1.07000", ask="1.07010")  # through the old stop

    assert report.state is OrderState.CANCELLED and report.trigger_price is None
    assert (mt5.positions[ticket].sl, mt5.positions[ticket].tp) == (0.0, 1.09)
    again = await mt5_broker.get_order("sd-1-sl1", "EURUSD")
    assert again is not None and again.state is OrderState.CANCELLED
    take = await mt5_broker.get_order("sd-1-tp1", "EURUSD")
    assert take is not None and take.state is OrderState.OPEN


async def test_an_exit_is_found_from_its_id_after_a_restart(mt5: FakeTerminal) -> None:
    first = mt5.broker()
    await first.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))
    await first.place_order(exit_order("sd-1-sl3", "1.08"))
    await first.close()
    mt5.set_tick("EURUSD", bid="1.08000", ask="1.08010")

    report = await mt5.broker().get_order("sd-1-sl3", "EURUSD")

    assert report is not None and report.state is OrderState.FILLED
    assert report.fills[0].price == D("1.08")


async def test_placing_the_same_level_again_is_a_success(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))
    await mt5_broker.place_order(exit_order("sd-1-sl1", "1.08"))

    again = await mt5_broker.place_order(exit_order("sd-1-sl1", "1.08"))  # NO_CHANGES

    assert again.state is OrderState.OPEN and again.trigger_price == D("1.08")


async def test_a_stop_on_the_wrong_side_of_the_price_is_rejected(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))

    with pytest.raises(OrderRejectedError, match="TRADE_RETCODE_INVALID_STOPS"):
        await mt5_broker.place_order(exit_order("sd-1-sl1", "1.09"))  # above the bid


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (exit_order("sd-1-stop", "1.08"), "<entry id>-sl<n>"),
        (exit_order("sd-1-tp1", "1.08"), "<entry id>-sl<n>"),  # a STOP under a -tp id
        (exit_order("sd-9-sl1", "1.08"), "no EURUSD position opened by sd-9"),
        (exit_order("sd-1-sl1", "0"), "positive trigger price"),
    ],
)
async def test_malformed_or_unmatched_exits_are_rejected(
    mt5: FakeTerminal, mt5_broker: Mt5Broker, request_: OrderRequest, match: str
) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))

    with pytest.raises(OrderRejectedError, match=match):
        await mt5_broker.place_order(request_)

    assert sltp_requests(mt5) == []


async def test_an_exit_of_an_entry_that_opened_nothing_is_not_found(
    mt5_broker: Mt5Broker,
) -> None:
    assert await mt5_broker.get_order("sd-9-sl1", "EURUSD") is None
    with pytest.raises(OrderNotFoundError):
        await mt5_broker.cancel_order("sd-9-sl1", "EURUSD")


async def test_a_lost_sltp_answer_is_settled_by_reading_the_ticket(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))
    mt5.lose_next(execute=True)

    done = await mt5_broker.place_order(exit_order("sd-1-sl1", "1.08"))

    assert done.state is OrderState.OPEN and done.trigger_price == D("1.08")
    mt5.lose_next(execute=False)
    with pytest.raises(BrokerTemporaryError, match="safe to retry"):
        await mt5_broker.place_order(exit_order("sd-1-sl2", "1.081"))
    assert [p.sl for p in mt5.positions.values()] == [1.08]


async def test_exits_on_a_netting_account_live_on_the_symbols_position() -> None:
    async with mt5_fake.running(hedging=False) as fake:
        broker = fake.broker()
        await broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))
        await broker.place_order(order("sd-2", "EURUSD", Side.BUY, "10000"))  # adds to it

        report = await broker.place_order(exit_order("sd-2-sl1", "1.08", quantity="20000"))
        fake.set_tick("EURUSD", bid="1.08000", ask="1.08010")

        assert report.state is OrderState.OPEN and report.quantity == D(20000)
        filled = await broker.get_order("sd-2-sl1", "EURUSD")
        assert filled is not None and filled.state is OrderState.FILLED
        assert filled.filled_quantity == D(20000) and fake.positions == {}


# --- pending orders: cancel and list ------------------------------------------------------


def limit_order(client_order_id: str, price: str = "1.08") -> OrderRequest:
    return order(
        client_order_id,
        "EURUSD",
        Side.BUY,
        "10000",
        order_type=OrderType.LIMIT,
        limit_price=D(price),
    )


async def test_cancel_a_pending_order_removes_it(mt5: FakeTerminal, mt5_broker: Mt5Broker) -> None:
    placed = await mt5_broker.place_order(limit_order("sd-1"))

    report = await mt5_broker.cancel_order("sd-1", "EURUSD")

    assert report.state is OrderState.CANCELLED and report.client_order_id == "sd-1"
    remove = mt5.requests[-1]
    assert remove["action"] == mt5_fake.TRADE_ACTION_REMOVE
    assert str(remove["order"]) == placed.broker_order_id
    assert mt5.orders == {}
    again = await mt5_broker.cancel_order("sd-1", "EURUSD")  # final: returned as it is
    assert again.state is OrderState.CANCELLED and sends(mt5) == 2


async def test_cancel_a_filled_order_returns_it_and_an_unknown_one_is_not_found(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(order("sd-1", "EURUSD", Side.BUY, "10000"))

    filled = await mt5_broker.cancel_order("sd-1", "EURUSD")
    with pytest.raises(OrderNotFoundError, match="never-sent"):
        await mt5_broker.cancel_order("never-sent", "EURUSD")

    assert filled.state is OrderState.FILLED and sends(mt5) == 1


async def test_a_refused_remove_is_a_rejection(mt5: FakeTerminal, mt5_broker: Mt5Broker) -> None:
    await mt5_broker.place_order(limit_order("sd-1"))
    mt5.reject_next(mt5_fake.TRADE_RETCODE_MARKET_CLOSED)

    with pytest.raises(OrderRejectedError, match="TRADE_RETCODE_MARKET_CLOSED"):
        await mt5_broker.cancel_order("sd-1", "EURUSD")

    assert len(mt5.orders) == 1


async def test_open_orders_lists_pending_orders_with_our_client_ids(
    mt5: FakeTerminal, mt5_broker: Mt5Broker
) -> None:
    await mt5_broker.place_order(limit_order("sd-1"))
    await mt5_broker.place_order(limit_order("sd-2", "1.07"))
    await mt5_broker.place_order(order("sd-3", "EURUSD", Side.BUY, "10000"))  # a deal
    await mt5_broker.cancel_order("sd-2", "EURUSD")
    await mt5_broker.place_order(exit_order("sd-3-sl1", "1.08"))  # attached: not an order
    await mt5_broker.account()
    mt5.module.order_send(  # a pending order placed by hand
        {
            "action": mt5_fake.TRADE_ACTION_PENDING,
            "symbol": "XAUUSD",
            "volume": 0.01,
            "type": mt5_fake.ORDER_TYPE_SELL_LIMIT,
            "price": 2500.0,
            "type_filling": mt5_fake.ORDER_FILLING_IOC,
        }
    )

    every = await mt5_broker.open_orders()
    eur = await mt5_broker.open_orders("EURUSD")

    assert sorted((r.client_order_id, r.symbol) for r in every) == [
        ("", "XAUUSD"),
        ("sd-1", "EURUSD"),
    ]
    assert all(r.state is OrderState.OPEN for r in every)
    assert [(r.client_order_id, r.limit_price, r.quantity) for r in eur] == [
        ("sd-1", D("1.08"), D(10000))
    ]


async def test_close_all_on_a_hedging_account_closes_ours_and_leaves_a_hand_ticket_beside_it(
    mt5: FakeTerminal, sqlite_url: str, make_settings: Any, clock: Any
) -> None:
    from core.app import build_engine
    from core.services import Proposal

    engine = await build_engine(
        make_settings(database_url=sqlite_url), broker=mt5.broker(), clock=clock
    )
    try:
        signal = await engine.signals.propose(Proposal("test", "BTCUSD", Side.BUY, D("0.01")))
        await engine.signals.approve(signal.id, "owner:1")
        by_hand = mt5.open_position("BTCUSD", buy=True, volume=0.02)

        report = await engine.trading.close_all("owner:1")
    finally:
        await engine.close()

    assert report.ok
    assert [(c.ok, c.error) for c in report.closes] == [(True, "")]
    [left] = report.left_open
    assert left.position_ref == f"ticket:{by_hand}"
    assert list(mt5.positions) == [by_hand]
