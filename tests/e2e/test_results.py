"""``/pnl``, ``/daily``, ``/performance``, ``/trades`` and ``/signal ID`` end to end (real
aiogram over real HTTP against the sandbox), checked against two paper trades on the replay
whose PnL is computed by hand, and an equity history written as the drawdown guard writes
it. ``/chart`` on demand, with its errors.

The paper broker fills a market order at the candle's close moved 2 bps against the order
(rounded to the 0.01 tick against it too) and charges 10 bps of the fill's notional.
Replay closes: candle 0 113,666.68, candle 2 112,693.15 (its low 112,600 crosses a stop at
113,000), candle 6 114,197.53.

Trade 1 (source ``e2e``): BUY 0.01 at candle 0, stop loss 113,000.
    entry 113,666.68 x 1.0002 = 113,689.413336 -> 113,689.42; fee 1.1368942
    stop filled at 113,000 x 0.9998 = 112,977.40; fee 1.129774
    realized 0.01 x (112,977.40 - 113,689.42) = -7.1202; fees 2.2666682
    net -9.3868682; risk 0.01 x (113,689.42 - 113,000) = 6.8942; R -1.3616
Trade 2 (source ``chat``, ``/buy BTC/USDT 0.01``): BUY 0.01 at candle 2, no stop.
    entry 112,693.15 x 1.0002 = 112,715.68863 -> 112,715.69; fee 1.1271569
    closed at candle 6: 114,197.53 x 0.9998 = 114,174.690494 -> 114,174.69; fee 1.1417469
    realized 0.01 x (114,174.69 - 112,715.69) = 14.59; fees 2.2689038; net 12.3210962
Together: realized 7.4698, fees 4.535572, net 2.934228; won 1 of 2 (50 %); profit factor
12.3210962 / 9.3868682 = 1.3126; best +12.32, worst -9.39; average R -1.36 (trade 1 only).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlmodel import col, select

from core.db.models import EquitySnapshotRow
from core.domain import SignalStatus
from core.services.trading import CloseAmount
from tests.e2e.conftest import StartDesk
from tests.e2e.support import Desk

#: Equity over the three days before today (as the guard records it): 10,000 -> 10,500
#: -> 9,450 is a fall of 1,050 from the 10,500 peak: 10.00 % max drawdown.
HISTORY = (Decimal(10000), Decimal(10500), Decimal(9450))


async def two_trades(desk: Desk) -> tuple[int, int]:
    engine = desk.engine
    first = await desk.propose(stop_loss=Decimal(113000), take_profit=None)
    assert (await engine.signals.approve(first.id, "owner:1")).signal.status is (
        SignalStatus.FILLED
    )
    for _ in range(2):
        engine.feed.step()
        await engine.exits.check()
    assert len(await engine.trades.closed_since()) == 1
    await desk.drained()
    proposed = await desk.say("/buy BTC/USDT 0.01")
    [second] = [s for s in await engine.signals.pending() if s.source == "chat"]
    assert f"#{second.id}" in proposed.plain_text
    assert (await engine.signals.approve(second.id, "owner:1")).signal.status is (
        SignalStatus.FILLED
    )
    for _ in range(4):
        engine.feed.step()
    await engine.trading.close("BTC/USDT", CloseAmount.parse(""), "owner:1")
    assert len(await engine.trades.closed_since()) == 2
    await desk.drained()  # the exit messages first, so the next message is the answer
    return first.id, second.id


async def write_history(desk: Desk) -> datetime:
    """Snapshots at noon UTC of the three days before today; returns today's midnight."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    async with desk.engine.db.session() as session:
        for back, equity in zip((3, 2, 1), HISTORY, strict=True):
            session.add(
                EquitySnapshotRow(
                    at=midnight - timedelta(days=back) + timedelta(hours=12),
                    balance=equity,
                    equity=equity,
                    peak_equity=max(HISTORY[: 4 - back]),
                    drawdown_pct=Decimal(0),
                )
            )
    return midnight


async def _latest_equity(desk: Desk) -> Decimal:
    query = select(EquitySnapshotRow.equity).order_by(col(EquitySnapshotRow.at).desc())
    async with desk.engine.db.session() as session:
        return (await session.exec(query)).first() or Decimal(0)


async def test_results_match_two_trades_computed_by_hand(start_desk: StartDesk) -> None:
    desk = await start_desk()
    first, second = await two_trades(desk)
    midnight = await write_history(desk)

    pnl = await desk.say("/pnl all")

    assert pnl.photo is not None  # the equity curve, with the figures as its caption
    assert len(desk.sandbox.state.files[pnl.photo]) < 100_000
    assert pnl.plain_text.splitlines() == [
        "PnL · all",
        "Realized: +2.93 USDT after 4.54 USDT fees (+7.47 before)",
        "Trades: 2 · won 1 (50.00%) · profit factor 1.31",
        "Best: +12.32 · worst: -9.39 · average -1.36R",
        "Unrealized (open positions): +0.00 USDT",
        # the history's fall; today's snapshots (the guard's, near 10,000) are higher
        "Max drawdown: 10.00%",
    ]

    daily = (await desk.say("/daily 4")).plain_text.splitlines()
    today = await _latest_equity(desk)
    day = [(midnight - timedelta(days=back)).strftime("%m-%d") for back in range(4)]
    assert daily[0] == "Daily · last 4 days (UTC USDT)"
    assert [line.split() for line in daily[1:]] == [
        ["Date", "Trades", "Net", "PnL", "Fees", "Equity"],
        [day[0], "2", "+2.93", "4.54", f"{today:,.2f}"],
        [day[1], "0", "+0.00", "0.00", "9,450.00"],
        [day[2], "0", "+0.00", "0.00", "10,500.00"],
        [day[3], "0", "+0.00", "0.00", "10,000.00"],
    ]

    performance = (await desk.say("/performance")).plain_text.splitlines()
    assert [line.split() for line in performance] == [
        ["Performance", "USDT"],
        ["Symbol", "Trades", "Win", "Net", "PnL", "Avg", "R"],
        ["BTC/USDT", "2", "50%", "+2.93", "-1.36R"],
        ["Source", "Trades", "Win", "Net", "PnL", "Avg", "R"],
        ["chat", "1", "100%", "+12.32", "n/a"],  # best first
        ["e2e", "1", "0%", "-9.39", "-1.36R"],
    ]

    journal = (await desk.say("/trades 5")).plain_text.splitlines()
    assert journal[1].startswith("#2 BTC/USDT long 0.01 @ 112,715.69 → 114,174.69 · +12.32 · n/a")
    assert journal[1].endswith("manual close")
    assert journal[2].startswith("#1 BTC/USDT long 0.01 @ 113,689.42 → 112,977.40 · -9.39 · -1.36R")
    assert journal[2].endswith("stop loss")

    lineage = (await desk.say(f"/signal {second}")).plain_text.splitlines()
    assert lineage[0] == f"Signal #{second} · BUY 0.01 BTC/USDT · filled"
    assert lineage[1].startswith("Source: chat · reference 112,693.15")
    assert lineage[-1].startswith("Trade: #2 BTC/USDT long 0.01 @ 112,715.69 → 114,174.69 · +12.32")
    assert (
        (await desk.say(f"/signal {first}"))
        .plain_text.splitlines()[-1]
        .startswith("Trade: #1 BTC/USDT long 0.01 @ 113,689.42 → 112,977.40 · -9.39 · -1.36R")
    )


async def test_pnl_without_equity_history_is_text_and_bad_arguments_name_themselves(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()
    runs = desk.app.metrics.registry.get_sample_value
    await desk.sandbox.wait_for(  # the guard's first check (at start) has written its snapshot
        lambda _: (runs("signaldesk_duty_runs_total", {"job": "drawdown"}) or 0) >= 1,
        description="the drawdown duty's first run",
    )
    async with desk.engine.db.session() as session:  # as before the guard's first check
        for row in (await session.exec(select(EquitySnapshotRow))).all():
            await session.delete(row)

    pnl = await desk.say("/pnl day")

    assert pnl.photo is None
    assert pnl.plain_text.splitlines()[-1] == "Max drawdown: no equity history yet"
    assert (await desk.say("/daily 0")).plain_text == (
        "⚠️ N must be a whole number of days from 1 to 90, got 0"
    )
    assert "got 91" in (await desk.say("/daily 91")).plain_text
    assert (await desk.say("/performance")).plain_text == "No closed trades yet."
    help_text = (await desk.say("/help")).plain_text
    for usage in ("/daily [N], N 1 to 90", "/performance", "/chart SYMBOL [TIMEFRAME]"):
        assert usage in help_text


async def test_chart_on_demand_and_its_errors(start_desk: StartDesk) -> None:
    desk = await start_desk()

    chart = await desk.say("/chart btc/usdt")

    assert chart.photo is not None and chart.plain_text == "BTC/USDT · 1h"
    assert 0 < len(desk.sandbox.state.files[chart.photo]) < 100_000
    assert (await desk.say("/chart BTC/USDT 1h")).photo is not None
    replay_has = (await desk.say("/chart BTC/USDT 4h")).plain_text  # a timeframe, not here
    assert replay_has == "⚠️ the replay has 1h candles, not 4h"
    bad_timeframe = (await desk.say("/chart BTC/USDT 7x")).plain_text
    assert re.match(r"⚠️ unknown timeframe '7x'; use one of 1m, ", bad_timeframe)
    bad_symbol = (await desk.say("/chart NOPE/USDT")).plain_text
    assert bad_symbol.startswith("⚠️ unknown symbol NOPE/USDT")


async def test_the_daily_summary_reaches_the_chat_once(start_desk: StartDesk) -> None:
    desk = await start_desk(daily_summary_at="21:00")
    await two_trades(desk)
    day = datetime.now(UTC).date().isoformat()

    assert await desk.engine.reports.send_daily_summary() is True
    summary = await desk.sandbox.wait_for_message(desk.chat_id, contains="Daily summary")

    assert summary.plain_text.splitlines()[:3] == [
        f"🗓 Daily summary · {day} (UTC)",
        "Closed 2 · won 1 · net +2.93 USDT after 4.54 USDT fees",  # as in the module docstring
        "Equity: 10,002.93 USDT",  # 10,000 + 2.93: nothing open
    ]
    assert await desk.engine.reports.send_daily_summary() is False  # the same day: once
    await desk.drained()
    assert [m.plain_text for m in desk.sandbox.messages(desk.chat_id)].count(
        summary.plain_text
    ) == 1
