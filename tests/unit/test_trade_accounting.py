"""Trade accounting and the trailing rule as pure functions, against figures computed by
hand (quote currency USDT, base BTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bot.render import exit_place, exits_line, trade_exit_text
from core.domain import ExitReason, ExitStyle, Side, Trade, TradeStatus
from core.notify import TradeExit
from core.services.exits import trail_stop
from core.services.trades import (
    Allocation,
    Ledger,
    add_entry,
    add_exit,
    allocate_fifo,
    fee_in_quote,
    initial_risk,
    split_fee,
)

D = Decimal


def test_average_entry_over_two_fills_is_weighted_by_quantity() -> None:
    ledger = add_entry(Ledger(Side.BUY), D("0.01"), D("100000"), D("1"))
    ledger = add_entry(ledger, D("0.03"), D("104000"), D("3.12"))

    # (0.01 x 100000 + 0.03 x 104000) / 0.04 = (1000 + 3120) / 0.04 = 103000
    assert (ledger.quantity, ledger.quantity_open, ledger.average_entry) == (
        D("0.04"),
        D("0.04"),
        D("103000"),
    )
    assert ledger.fees == D("4.12")


def test_a_fee_taken_in_the_coin_bought_is_not_held_so_selling_what_is_held_closes() -> None:
    # spot: 0.01 BTC bought at 60000.01 paying 0.00001 BTC (0.6000001 USDT at the fill)
    ledger = add_entry(
        Ledger(Side.BUY), D("0.01"), D("60000.01"), D("0.6000001"), fee_in_base=D("0.00001")
    )
    assert (ledger.quantity, ledger.quantity_open) == (D("0.01"), D("0.00999"))

    closed = add_exit(ledger, D("0.00999"), D("58899.99"), D("0.5884109"))

    assert closed.quantity_open == 0
    assert closed.realized_pnl == D("0.00999") * (D("58899.99") - D("60000.01"))
    assert closed.fees == D("1.188411")
    with pytest.raises(ValueError, match="base fee"):
        add_entry(Ledger(Side.BUY), D("0.01"), D(1), D(0), fee_in_base=D("0.01"))


def test_a_non_terminating_average_is_rounded_to_the_quantum() -> None:
    ledger = add_entry(Ledger(Side.BUY), D("1"), D("1"), D(0))
    ledger = add_entry(ledger, D("2"), D("2"), D(0))

    assert ledger.average_entry == D("1.666666666667")  # 5 / 3, half-even at 1e-12


def test_partial_closes_realize_pnl_on_the_closed_part_and_average_the_exits() -> None:
    ledger = add_entry(Ledger(Side.BUY), D("0.03"), D("100000"), D("3"))

    ledger = add_exit(ledger, D("0.01"), D("101000"), D("1.01"))
    # 0.01 x (101000 - 100000) = 10
    assert (ledger.quantity_open, ledger.realized_pnl, ledger.average_exit) == (
        D("0.02"),
        D("10"),
        D("101000"),
    )

    ledger = add_exit(ledger, D("0.02"), D("98500"), D("1.97"))
    # 10 + 0.02 x (98500 - 100000) = 10 - 30 = -20
    # average exit (0.01 x 101000 + 0.02 x 98500) / 0.03 = (1010 + 1970) / 0.03 = 99333.33..
    assert ledger.quantity_open == 0
    assert ledger.realized_pnl == D("-20")
    assert ledger.average_exit == D("99333.333333333333")
    assert ledger.fees == D("5.98")  # 3 + 1.01 + 1.97


def test_a_short_gains_when_it_buys_back_lower() -> None:
    ledger = add_entry(Ledger(Side.SELL), D("0.5"), D("2000"), D(0))

    ledger = add_exit(ledger, D("0.2"), D("1900"), D(0))

    assert ledger.realized_pnl == D("20")  # 0.2 x (1900 - 2000) x -1


def test_closing_more_than_is_open_is_refused() -> None:
    ledger = add_entry(Ledger(Side.BUY), D("0.01"), D("100"), D(0))

    with pytest.raises(ValueError, match=r"cannot close 0\.02"):
        add_exit(ledger, D("0.02"), D("100"), D(0))
    with pytest.raises(ValueError, match="positive"):
        add_entry(ledger, D(0), D("100"), D(0))


def test_r_multiple_is_net_pnl_over_the_initial_risk() -> None:
    risk = initial_risk(D("113689.42"), D("113000"), D("0.01"))
    # |113689.42 - 113000| x 0.01 = 6.8942
    assert risk == D("6.8942")
    trade = Trade(
        id=1,
        signal_id=1,
        symbol="BTC/USDT",
        side=Side.BUY,
        status=TradeStatus.CLOSED,
        quantity=D("0.01"),
        quantity_open=D(0),
        average_entry=D("113689.42"),
        opened_at=datetime(2026, 1, 1, tzinfo=UTC),
        realized_pnl=D("-6.8942"),
        fees=D("1.37884"),
        initial_risk=risk,
    )
    # (-6.8942 - 1.37884) / 6.8942 = -8.27304 / 6.8942 = -1.2 exactly
    assert trade.net_pnl == D("-8.27304")
    assert trade.r_multiple == D("-1.2")
    assert initial_risk(D("100"), None, D("1")) is None


def test_fifo_allocation_reduces_the_oldest_trades_first_and_returns_the_rest() -> None:
    allocations, left = allocate_fifo([(7, D("0.01")), (9, D("0.02"))], D("0.025"))

    assert allocations == [Allocation(7, D("0.01")), Allocation(9, D("0.015"))]
    assert left == 0
    allocations, left = allocate_fifo([(7, D("0.01"))], D("0.04"))
    assert (allocations, left) == ([Allocation(7, D("0.01"))], D("0.03"))


def test_a_reversal_reduces_the_open_trade_and_opens_the_rest_with_a_pro_rata_fee() -> None:
    long = add_entry(Ledger(Side.BUY), D("0.01"), D("100000"), D("1"))
    # a sell of 0.03 at 99000 with a fee of 2.97: 0.01 closes the long, 0.02 opens a short
    allocations, left = allocate_fifo([(1, long.quantity_open)], D("0.03"))
    fees = split_fee(D("2.97"), [a.quantity for a in allocations] + [left], D("0.03"))

    assert fees == [D("0.99"), D("1.98")]
    closed = add_exit(long, allocations[0].quantity, D("99000"), fees[0])
    short = add_entry(Ledger(Side.SELL), left, D("99000"), fees[1])
    assert (closed.quantity_open, closed.realized_pnl, closed.fees) == (D(0), D("-10"), D("1.99"))
    assert (short.quantity, short.average_entry, short.fees) == (D("0.02"), D("99000"), D("1.98"))


def test_split_fee_gives_the_rounding_to_the_last_part() -> None:
    assert split_fee(D("1"), [D("1"), D("1"), D("1")], D("3")) == [
        D("0.333333333333"),
        D("0.333333333333"),
        D("0.333333333334"),
    ]
    # an external remainder keeps its share of the fee out of the trades
    assert split_fee(D("3"), [D("1")], D("3")) == [D("1.000000000000")]


def test_a_fee_in_the_base_currency_is_converted_at_the_fill_price() -> None:
    assert fee_in_quote(D("0.00001"), "BTC", "BTC/USDT", D("100000")) == D("1.00000")
    assert fee_in_quote(D("1.5"), "USDT", "BTC/USDT", D("100000")) == D("1.5")
    assert fee_in_quote(D("0.7"), "USD", "EURUSD", D("1.08")) == D("0.7")


# --- trailing and break-even -----------------------------------------------------------------


def _trail(side: Side, stop: str | None, best: str, price: str, **kw: str) -> Decimal | None:
    return trail_stop(
        side,
        None if stop is None else D(stop),
        D(best),
        D(price),
        D(kw.get("entry", "100")),
        trail_pct=D(kw["trail"]) if "trail" in kw else None,
        breakeven_at_r=D(kw["be"]) if "be" in kw else None,
        risk_per_unit=D(kw["risk"]) if "risk" in kw else None,
        tick=D("0.01"),
    )


def test_a_long_trails_below_its_best_price_and_never_loosens() -> None:
    # 113839.99 x (1 - 0.5 / 100) = 113270.790050 -> down to the tick 113270.79
    assert _trail(Side.BUY, "113000", "113839.99", "113839.99", trail="0.5") == D("113270.79")
    # a lower candidate leaves the stop where it is
    assert _trail(Side.BUY, "113300", "113839.99", "113500", trail="0.5") == D("113300")


def test_a_short_trails_above_its_best_price_rounded_up() -> None:
    # 2000.005 x 1.01 = 2020.00505 -> up to 2020.01; the old 2050 is looser
    assert _trail(Side.SELL, "2050", "2000.005", "2001", trail="1") == D("2020.01")
    assert _trail(Side.SELL, "2010", "2000.005", "2001", trail="1") == D("2010")


def test_break_even_moves_the_stop_to_the_entry_once_the_profit_reaches_the_r() -> None:
    # entry 100, risk 2 per unit, break-even at 1.5 R: needs a profit of 3 per unit
    assert _trail(Side.BUY, "98", "102.99", "102.99", be="1.5", risk="2") == D("98")
    assert _trail(Side.BUY, "98", "103", "103", be="1.5", risk="2") == D("100")
    assert _trail(Side.SELL, "102", "97", "97", be="1.5", risk="2") == D("100")
    assert _trail(Side.BUY, None, "150", "150") is None  # no rule, no stop


# --- the exit message ------------------------------------------------------------------------


def test_the_exit_message_shows_the_pnl_in_quote_and_in_r_fees_duration_and_place() -> None:
    opened = datetime(2025, 8, 20, 11, 0, tzinfo=UTC)
    exit_ = TradeExit(
        trade_id=3,
        symbol="BTC/USDT",
        side=Side.BUY,
        quantity=D("0.01"),
        quantity_open=D(0),
        closed_quantity=D("0.01"),
        exit_price=D("112977.4"),
        average_entry=D("113689.42"),
        average_exit=D("112977.4"),
        realized_pnl=D("-7.1202"),
        fees=D("2.2666682"),
        r_multiple=D("-1.361560181"),
        reason=ExitReason.STOP_LOSS,
        opened_at=opened,
        at=opened + timedelta(hours=2, minutes=5),
        currency="USDT",
        exit_style="orders",
    )

    text = trade_exit_text(TradeExit.from_payload(exit_.to_payload()), "paper")

    assert text.splitlines() == [
        "<b>🛑 Stop loss · BTC/USDT long closed</b>",
        "0.01 BTC: entry 113,689.42 → exit 112,977.40",
        "PnL: -9.39 USDT (-1.36 R) · fees 2.27 USDT",  # -7.1202 - 2.2666682 = -9.3868682
        "Held 2h 5m · trade #3 · exit at paper",
    ]


def test_where_an_exit_lives_is_named_by_style_and_venue() -> None:
    assert exit_place(ExitStyle.ORDERS, "ccxt:binance") == "at Binance"
    assert exit_place(ExitStyle.ORDERS, "paper") == "at paper"
    assert exit_place(ExitStyle.ATTACHED, "mt5") == "on the MT5 ticket"
    assert exit_place(ExitStyle.WATCHED, "ccxt:binance") == "watched by SignalDesk"
    trade = Trade(
        id=1,
        signal_id=1,
        symbol="BTC/USDT",
        side=Side.BUY,
        status=TradeStatus.OPEN,
        quantity=D("0.001"),
        quantity_open=D("0.001"),
        average_entry=D("116500"),
        opened_at=datetime(2026, 1, 1, tzinfo=UTC),
        stop_loss=D("116000"),
        take_profit=D("117100"),
        exit_style=ExitStyle.WATCHED,
    )
    assert exits_line(trade, "ccxt:binance") == (
        "Stop 116,000.00 watched by SignalDesk · Take profit 117,100.00 watched by SignalDesk"
    )
