"""The figures of /pnl and /trades, from trades whose PnL is computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bot.render import pnl_text, trades_text
from core.domain import ExitReason, Side, Trade, TradeStatus
from core.services.reports import PnlReport
from core.services.trades import trade_stats

D = Decimal
OPENED = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def closed(trade_id: int, realized: str, fees: str, risk: str | None, hours: int = 2) -> Trade:
    return Trade(
        id=trade_id,
        signal_id=trade_id,
        symbol="BTC/USDT",
        side=Side.BUY,
        status=TradeStatus.CLOSED,
        quantity=D("0.01"),
        quantity_open=D(0),
        average_entry=D(100000),
        average_exit=D(100000) + D(realized) * 100,
        opened_at=OPENED,
        closed_at=OPENED + timedelta(hours=hours),
        realized_pnl=D(realized),
        fees=D(fees),
        initial_risk=None if risk is None else D(risk),
        exit_reason=ExitReason.TAKE_PROFIT if D(realized) > 0 else ExitReason.STOP_LOSS,
    )


# net 98 (R 1.96), net -42 (R -0.84), net 9 (no stop: no R)
TRADES = [closed(1, "100", "2", "50"), closed(2, "-40", "2", "50"), closed(3, "10", "1", None)]


def test_stats_of_three_trades_computed_by_hand() -> None:
    stats = trade_stats(TRADES)

    assert (stats.trades, stats.wins) == (3, 2)
    assert (stats.realized_pnl, stats.fees, stats.net_pnl) == (D(70), D(5), D(65))
    assert stats.win_rate == D(2) / 3
    assert stats.profit_factor == D(107) / 42  # (98 + 9) / 42
    assert (stats.best, stats.worst) == (D(98), D(-42))
    assert stats.average_r == D("0.56")  # (1.96 - 0.84) / 2


def test_no_trades_have_no_rates() -> None:
    stats = trade_stats([])
    assert (stats.trades, stats.win_rate, stats.profit_factor, stats.best) == (0, None, None, None)
    text = pnl_text(PnlReport("day", stats, D(0), "USDT", None, ()))
    assert "No closed trades in this period." in text
    assert text.endswith("Max drawdown: no equity history yet")


def test_pnl_text_shows_the_figures() -> None:
    text = pnl_text(PnlReport("week", trade_stats(TRADES), D("-3.5"), "USDT", D("12.5"), ()))

    assert text.splitlines() == [
        "<b>PnL · week</b>",
        "Realized: +65.00 USDT after 5.00 USDT fees (+70.00 before)",
        "Trades: 3 · won 2 (66.67%) · profit factor 2.55",
        "Best: +98.00 · worst: -42.00 · average +0.56R",
        "Unrealized (open positions): -3.50 USDT",
        "Max drawdown: 12.50%",
    ]


def test_the_journal_lists_entry_exit_pnl_r_duration_and_reason() -> None:
    text = trades_text(list(reversed(TRADES)))

    assert text.splitlines()[1:] == [
        "#3 BTC/USDT long 0.01 @ 100,000.00 → 101,000.00 · +9.00 · n/a · 2h 0m · take profit",
        "#2 BTC/USDT long 0.01 @ 100,000.00 → 96,000.00 · -42.00 · -0.84R · 2h 0m · stop loss",
        "#1 BTC/USDT long 0.01 @ 100,000.00 → 110,000.00 · +98.00 · +1.96R · 2h 0m · take profit",
    ]
