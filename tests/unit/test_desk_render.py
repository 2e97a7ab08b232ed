"""The desk's words: where exits live, the positions list and its Close buttons, the
orders list, close amounts, and long lists counted rather than cut silently."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bot import render
from bot.callbacks import OrderCallback, PositionCallback
from core.domain import (
    ExitReason,
    ExitStyle,
    OrderReport,
    OrderState,
    OrderType,
    Position,
    Side,
    Signal,
    SignalStatus,
)
from core.errors import InvalidInputError
from core.marketdata.base import Instrument
from core.notify import TradeExit
from core.services.trading import CloseAmount, PositionView, RestingOrder


@pytest.mark.parametrize(
    ("style", "broker", "words"),
    [
        (ExitStyle.ORDERS, "paper", "at paper"),
        (ExitStyle.ORDERS, "ccxt:binance", "at Binance"),
        (ExitStyle.ATTACHED, "mt5", "on the MT5 ticket"),
        (ExitStyle.WATCHED, "ccxt:kraken", "watched by SignalDesk"),
    ],
)
def test_exit_place_names_where_the_exits_live(style: ExitStyle, broker: str, words: str) -> None:
    assert render.exit_place(style, broker) == words


def _view(symbol: str = "BTC/USDT", external: bool = False, ref: str = "") -> PositionView:
    position = Position(
        symbol, Decimal("0.02"), Decimal(1), Decimal(101000), opened_by_signaldesk=not external,
        position_ref=ref,
    )  # fmt: skip
    return PositionView(
        position,
        entry=Decimal(100000),
        unrealized_pnl=Decimal(20),
        external=external,
        stop_loss=None if external else Decimal(98000),
        take_profit=None if external else Decimal(104000),
        exit_style=None if external else ExitStyle.ATTACHED,
    )


def test_positions_show_our_entry_levels_and_where_they_live_and_mark_external() -> None:
    [page] = render.positions_pages([_view(ref="sd1-s4"), _view("EURUSD", external=True)], "mt5")
    text = page.text

    assert text.splitlines() == [
        "<b>Open positions (2)</b>",
        "<b>BTC/USDT</b> [sd1-s4] long 0.02 · entry 100,000.00 · mark 101,000.00 · uPnL +20.00",
        "  stop loss 98,000.00 · take profit 104,000.00 · on the MT5 ticket",
        "<b>EURUSD</b> long 0.02 · entry 100,000.00 · mark 101,000.00 · uPnL +20.00",
        "  external: not opened by SignalDesk; close all leaves it alone",
        "Total: uPnL +40.00 · notional 4,040.00",
    ]


def test_each_position_gets_close_buttons_carrying_its_ticket() -> None:
    [page] = render.positions_pages([_view(ref="sd1-s4"), _view("EURUSD")], "mt5")
    keyboard = page.markup

    assert keyboard is not None
    [first, second] = keyboard.inline_keyboard
    assert [b.text for b in first] == ["BTC/USDT 25%", "BTC/USDT 50%", "BTC/USDT 100%"]
    data = first[1].callback_data
    assert data is not None
    assert PositionCallback.unpack(data) == PositionCallback(
        symbol="BTC/USDT", ref="sd1-s4", percent=50
    )
    assert second[0].text == "EURUSD 25%"


def test_300_positions_are_all_shown_over_several_messages_each_with_its_buttons() -> None:
    views = [_view(f"SYM{n:03d}/USDT") for n in range(300)]

    pages = render.positions_pages(views, "paper")

    assert len(pages) > 1
    assert all(len(p.text) <= render.MAX_MESSAGE for p in pages)
    named = [line for p in pages for line in p.text.splitlines() if line.startswith("<b>SYM")]
    assert [line[3:9] for line in named] == [f"SYM{n:03d}" for n in range(300)]
    assert pages[0].text.startswith("<b>Open positions (300)</b>")
    assert pages[-1].text.endswith("Total: uPnL +6,000.00 · notional 606,000.00")
    for page in pages:  # each page's buttons close exactly the positions it names
        assert page.markup is not None
        on_page = [line[3:14] for line in page.text.splitlines() if line.startswith("<b>SYM")]
        assert [row[0].text.removesuffix(" 25%") for row in page.markup.inline_keyboard] == on_page
    assert "more" not in "".join(p.text for p in pages)


def test_split_message_cuts_at_lines_and_never_inside_an_entity_or_tag() -> None:
    lines = [f"row {n} &amp; <b>bold</b> {'x' * 50}" for n in range(200)]
    text = "\n".join(lines)

    chunks = render.split_message(text)

    assert len(chunks) > 1 and all(len(c) <= render.MAX_MESSAGE for c in chunks)
    assert "\n".join(chunks) == text  # split at line boundaries, nothing lost
    long_line = ("a &amp; " * 1000).strip()
    parts = render.split_message(long_line, limit=100)
    assert "".join(parts) == long_line and all(len(p) <= 100 for p in parts)
    assert all(p.count("&") == p.count("&amp;") for p in parts)  # no entity cut in two
    tagged = ("<b>x</b> " * 500).strip()
    assert all(p.count("<") == 2 * p.count("<b>") for p in render.split_message(tagged, 50))
    assert render.split_message("short") == ["short"]


def test_orders_list_says_what_each_order_is_and_only_ours_get_cancel() -> None:
    def report(cid: str, kind: OrderType, level: str) -> OrderReport:
        trigger = Decimal(level) if kind.is_trigger else None
        limit = None if kind.is_trigger else Decimal(level)
        return OrderReport(
            cid, "BTC/USDT", Side.SELL if kind.is_trigger else Side.BUY, Decimal("0.01"),
            OrderState.OPEN, order_type=kind, limit_price=limit, trigger_price=trigger,
        )  # fmt: skip

    orders = [
        RestingOrder(report("sd1-s3", OrderType.LIMIT, "99000"), "open", signal_id=3),
        RestingOrder(report("sd1-s1-sl1", OrderType.STOP, "98000"), "stop_loss", trade_id=1),
        RestingOrder(report("", OrderType.LIMIT, "90000")),
    ]

    [page] = render.orders_pages(orders)
    text, keyboard = page.text, page.markup

    assert text.splitlines()[1:] == [
        "<b>BTC/USDT</b> buy 0.01 limit @ 99,000.00 · entry of signal #3 · <code>sd1-s3</code>",
        "<b>BTC/USDT</b> sell 0.01 stop @ 98,000.00 · stop loss of trade #1 · "
        "<code>sd1-s1-sl1</code>",
        "<b>BTC/USDT</b> buy 0.01 limit @ 90,000.00 · not placed by SignalDesk · <code></code>",
    ]
    assert keyboard is not None
    cids = [
        OrderCallback.unpack(row[0].callback_data or "").cid for row in keyboard.inline_keyboard
    ]
    assert cids == ["sd1-s3", "sd1-s1-sl1"]


@pytest.mark.parametrize(
    ("text", "percent", "quantity"),
    [("", None, None), ("100%", None, None), ("50%", 50, None), ("0.01", None, "0.01")],
)
def test_close_amounts_parse(text: str, percent: int | None, quantity: str | None) -> None:
    amount = CloseAmount.parse(text)

    assert amount.percent == (None if percent is None else Decimal(percent))
    assert amount.quantity == (None if quantity is None else Decimal(quantity))
    assert CloseAmount.parse(amount.text()) == amount


@pytest.mark.parametrize("text", ["0", "0%", "-5", "250%", "NaN", "1e9%", "half", "%"])
def test_bad_close_amounts_are_refused(text: str) -> None:
    with pytest.raises(InvalidInputError):
        CloseAmount.parse(text)


def test_close_all_with_only_external_positions_says_nothing_is_closed() -> None:
    text = render.only_external([_view("EURUSD", external=True)])

    assert text == (
        "Nothing to close: SignalDesk opened none of these.\n"
        "EURUSD long 0.02 (uPnL +0.00): external, left untouched\n"
        "Close one by hand with its buttons under /positions."
    )


# --- prices with the instrument's precision ------------------------------------------------

ETH_BTC = Instrument("ETH/BTC", "ETH", "BTC", "spot", Decimal("0.00001"), Decimal("0.0001"))
BTC_USDT = Instrument("BTC/USDT", "BTC", "USDT", "spot", Decimal("0.01"), Decimal("0.00001"))


def _signal(symbol: str, reference: str, stop: str, take: str, limit: str) -> Signal:
    at = datetime(2026, 1, 1, 12, tzinfo=UTC)
    return Signal(
        7, "test", symbol, Side.BUY, Decimal("0.5"), OrderType.LIMIT, Decimal(reference),
        at, at + timedelta(hours=1), status=SignalStatus.FILLED, limit_price=Decimal(limit),
        stop_loss=Decimal(stop), take_profit=Decimal(take),
    )  # fmt: skip


def _context(instrument: Instrument) -> render.CardContext:
    return render.CardContext(now=datetime(2026, 1, 1, tzinfo=UTC), instrument=instrument)


def test_a_card_prints_prices_with_the_instruments_tick_decimals() -> None:
    signal = _signal("ETH/BTC", "0.0512", "0.0498", "0.054", "0.05")
    fill = OrderReport(
        "sd1-s7", "ETH/BTC", Side.BUY, Decimal("0.5"), OrderState.FILLED,
        filled_quantity=Decimal("0.5"), average_price=Decimal("0.05"),
        fee=Decimal("0.000025"), fee_currency="BTC",
    )  # fmt: skip

    lines = render.card(signal, fill, None, context=_context(ETH_BTC)).text.splitlines()

    assert lines[1].startswith("Limit 0.05000 · notional")
    assert lines[2] == "SL 0.04980 (-0.40%) · TP 0.05400 (+8.00%) · R:R 20.0"
    assert "<b>✅ Filled 0.5 ETH @ 0.05000 (fee 0.000025 BTC)</b>" in lines
    # without the instrument the decimals are guessed from the value
    guessed = render.card(signal, fill, None).text.splitlines()
    assert guessed[2] == "SL 0.0498 (-0.40%) · TP 0.054 (+8.00%) · R:R 20.0"


def test_a_btc_usdt_card_still_prints_two_decimals() -> None:
    signal = _signal("BTC/USDT", "113666.685", "113000", "115000.5", "113600")

    lines = render.card(signal, None, None, context=_context(BTC_USDT)).text.splitlines()

    assert lines[1] == "Limit 113,600.00 · notional 56,800.00 USDT"
    assert lines[2] == "SL 113,000.00 (-0.53%) · TP 115,000.50 (+1.23%) · R:R 2.3"


def _exit(symbol: str, entry: str, exit_: str) -> TradeExit:
    opened = datetime(2026, 1, 1, 12, tzinfo=UTC)
    return TradeExit(
        trade_id=4, symbol=symbol, side=Side.BUY, quantity=Decimal("0.5"),
        quantity_open=Decimal(0), closed_quantity=Decimal("0.5"),
        exit_price=Decimal(exit_), average_entry=Decimal(entry), average_exit=Decimal(exit_),
        realized_pnl=Decimal("-0.0005"), fees=Decimal("0.00005"), r_multiple=None,
        reason=ExitReason.STOP_LOSS, opened_at=opened, at=opened + timedelta(hours=1),
        currency=symbol.partition("/")[2], exit_style="watched",
    )  # fmt: skip


def test_an_exit_message_prints_prices_with_the_instruments_tick_decimals() -> None:
    five = render.trade_exit_text(_exit("ETH/BTC", "0.05", "0.049"), "paper", ETH_BTC)
    two = render.trade_exit_text(_exit("BTC/USDT", "113689.42", "112670.6"), "paper", BTC_USDT)

    assert "0.5 ETH: entry 0.05000 → exit 0.04900" in five.splitlines()
    assert "0.5 BTC: entry 113,689.42 → exit 112,670.60" in two.splitlines()


def test_positions_and_orders_print_prices_with_the_instruments_tick_decimals() -> None:
    view = PositionView(
        Position("ETH/BTC", Decimal("0.5"), Decimal("0.05"), Decimal("0.0512")),
        entry=Decimal("0.05"), unrealized_pnl=Decimal("0.0006"), external=False,
        stop_loss=Decimal("0.049"),
        take_profit=None, exit_style=ExitStyle.WATCHED,
    )  # fmt: skip
    stop = OrderReport(
        "sd1-s7-sl1", "ETH/BTC", Side.SELL, Decimal("0.5"), OrderState.OPEN,
        order_type=OrderType.STOP, trigger_price=Decimal("0.049"),
    )  # fmt: skip
    known = {"ETH/BTC": ETH_BTC}

    [positions] = [page.text for page in render.positions_pages([view], "paper", known)]
    [orders] = [
        page.text
        for page in render.orders_pages([RestingOrder(stop, "stop_loss", trade_id=1)], known)
    ]

    assert "entry 0.05000 · mark 0.05120" in positions
    assert "stop loss 0.04900" in positions
    assert "stop @ 0.04900" in orders
