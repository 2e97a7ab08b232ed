"""The figures of /pnl's drawdown, /daily and /performance, pure, from trades and equity
computed by hand; and their wording."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from bot.render import daily_summary_text, daily_text, performance_text
from core.services.reports import (
    DailyReport,
    DailySummary,
    EquityPoint,
    Performance,
    daily_rows,
    max_drawdown_pct,
    performance_rows,
    period_start,
    thin,
)
from core.services.trades import trade_stats
from tests.unit.test_trade_stats import TRADES

D = Decimal
BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def curve(*equity: int) -> list[EquityPoint]:
    return [EquityPoint(T0 + timedelta(hours=n), D(e)) for n, e in enumerate(equity)]


def test_max_drawdown_is_the_deepest_fall_from_a_running_peak() -> None:
    # 10,000 -> 10,500 -> 9,450 falls 1,050 / 10,500 = 10 %; then 11,000 -> 10,450 only 5 %
    assert max_drawdown_pct(curve(10000, 10500, 9450, 11000, 10450)) == D(10)
    assert max_drawdown_pct(curve(10000, 10100, 10200)) == D(0)
    assert max_drawdown_pct([]) is None


def test_thin_keeps_at_most_the_limit_and_always_the_last_point() -> None:
    points = curve(*range(1000, 2001))  # 1,001 points
    kept = thin(points, 100)
    assert len(kept) <= 100 and kept[0] == points[0] and kept[-1] == points[-1]
    assert thin(points[:5], 100) == tuple(points[:5])


def test_day_periods_start_at_local_midnight() -> None:
    now = datetime(2026, 1, 5, 23, 30, tzinfo=UTC)  # 00:30 on the 6th in Berlin
    assert period_start("day", now, BERLIN) == datetime(2026, 1, 5, 23, 0, tzinfo=UTC)
    assert period_start("week", now, BERLIN) == now - timedelta(days=7)
    assert period_start("all", now, BERLIN) is None


def test_daily_rows_count_trades_on_their_local_close_day_with_the_equity_at_its_end() -> None:
    # TRADES close at 14:00 UTC on the 5th (15:00 in Berlin); move #3 to 23:30 UTC, which is
    # 00:30 on the 6th in Berlin: the 6th has #3 (net 9, fees 1), the 5th #1 and #2
    # (net 98 - 42 = 56, fees 4)
    late = replace(TRADES[2], closed_at=datetime(2026, 1, 5, 23, 30, tzinfo=UTC))
    points = [
        EquityPoint(datetime(2026, 1, 4, 12, tzinfo=UTC), D(10000)),
        EquityPoint(datetime(2026, 1, 5, 22, 59, tzinfo=UTC), D(10056)),  # 23:59 Berlin
        EquityPoint(datetime(2026, 1, 5, 23, 1, tzinfo=UTC), D(10065)),  # 00:01 on the 6th
    ]
    rows = daily_rows([*TRADES[:2], late], points, date(2026, 1, 6), 4, BERLIN)

    assert [(r.day.day, r.trades, r.net_pnl, r.fees, r.equity) for r in rows] == [
        (6, 1, D(9), D(1), D(10065)),
        (5, 2, D(56), D(4), D(10056)),
        (4, 0, D(0), D(0), D(10000)),
        (3, 0, D(0), D(0), None),  # before the first snapshot
    ]
    text = daily_text(DailyReport(tuple(rows), "USDT"), BERLIN)
    assert text.splitlines()[0] == "<b>Daily · last 4 days</b> (Europe/Berlin USDT)"
    assert text.splitlines()[2:] == [
        "01-06      1   +9.00 1.00 10,065.00",
        "01-05      2  +56.00 4.00 10,056.00",
        "01-04      0   +0.00 0.00 10,000.00",
        "01-03      0   +0.00 0.00         -</pre>",
    ]


def test_performance_groups_by_name_best_net_first() -> None:
    named = [("ema", TRADES[0]), ("chat", TRADES[1]), ("chat", TRADES[2])]
    rows = performance_rows(named)
    # ema: net 98, R 1.96; chat: -42 + 9 = -33, one win of two, R -0.84 (only #2 had a stop)
    assert [(r.name, r.trades, r.wins, r.net_pnl, r.average_r) for r in rows] == [
        ("ema", 1, 1, D(98), D("1.96")),
        ("chat", 2, 1, D(-33), D("-0.84")),
    ]
    assert rows[1].win_rate == D("0.5")


def test_daily_summary_round_trips_its_payload_and_is_worded() -> None:
    summary = DailySummary(
        date(2026, 1, 5), "UTC", trade_stats(TRADES), D(10065), D("-3.5"), "USDT"
    )
    assert DailySummary.from_payload(summary.to_payload()) == summary
    assert daily_summary_text(summary).splitlines() == [
        "🗓 <b>Daily summary · 2026-01-05</b> (UTC)",
        "Closed 3 · won 2 · net +65.00 USDT after 5.00 USDT fees",
        "Equity: 10,065.00 USDT",
        "Unrealized (open positions): -3.50 USDT",
    ]
    quiet = replace(summary, stats=trade_stats([]), equity=None, unrealized=None)
    assert daily_summary_text(quiet).splitlines()[1:] == ["No trades closed today."]


def test_performance_text_has_a_table_per_symbol_and_source() -> None:
    rows = performance_rows([("BTC/USDT", t) for t in TRADES])
    text = performance_text(Performance(rows, performance_rows([("ema", TRADES[0])]), "USDT"))
    assert text.splitlines() == [
        "<b>Performance</b> USDT",
        "<pre>Symbol   Trades Win Net PnL  Avg R",
        "BTC/USDT      3 67%  +65.00 +0.56R</pre>",
        "<pre>Source Trades  Win Net PnL  Avg R",
        "ema         1 100%  +98.00 +1.96R</pre>",
    ]
