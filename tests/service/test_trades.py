"""The trade record and protective exits on the paper broker over the real replay, on
SQLite and PostgreSQL, against figures computed by hand.

The replay is stepped by hand (FEED_SPEED=0); after each step the exit check runs, as the
``exits`` job would. Candles (core/marketdata/data/btc_usdt_1h.csv.gz, O/H/L/C):

    0  2025-08-20T11:00Z  O 113792.19  H 113859.26  L 113060.08  C 113666.68
    1  2025-08-20T12:00Z  O 113666.69  H 113944.00  L 113512.88  C 113659.01
    2  2025-08-20T13:00Z  O 113659.01  H 113659.01  L 112600.00  C 112693.15
    3  2025-08-20T14:00Z  O 112693.14  H 113854.34  L 112380.00  C 113465.84
    4  2025-08-20T15:00Z  O 113465.84  H 114326.35  L 113229.43  C 113353.94
    5  2025-08-20T16:00Z  O 113353.94  H 114309.16  L 113278.49  C 113839.99
    6  2025-08-20T17:00Z  O 113839.99  H 114444.00  L 113781.16  C 114197.53
    7  2025-08-20T18:00Z  O 114197.54  H 114269.63  L 113264.01  C 113490.01
    2145 2025-11-17T20:00Z O 91678.93  H 92234.53  L 91292.00  C 91920.59
    2146 2025-11-17T21:00Z O 91914.01  H 92253.72  L 91500.00  C 91959.71 (opens 6.58 lower)

Paper costs: a market order and a triggered exit pay (2 / 2 + 1) / 10000 = 0.0002 of their
price (the close; the trigger, or the gap open), rounded to the cent against the trader;
the fee is 0.1 % of the notional. Every trade here is 0.01 BTC.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlmodel import col, select

from bot.render import trade_exit_text
from core.app import Engine
from core.db.models import AuditEventRow, OrderRow, OutboxRow
from core.domain import ExitReason, ExitStyle, OrderState, Side, SignalStatus, Trade, TradeStatus
from core.notify import NoticeKind, TradeExit
from core.services import Proposal
from core.services.trading import CloseAmount

BTC = "BTC/USDT"
D = Decimal


async def enter(engine: Engine, side: Side, **levels: Any) -> Trade:
    """Propose and approve 0.01 BTC with ``levels`` (stop_loss, take_profit, trail_pct,
    breakeven_at_r as strings); the trade it opened."""
    values = {name: D(value) for name, value in levels.items()}
    signal = await engine.signals.propose(Proposal("test", BTC, side, D("0.01"), **values))
    decision = await engine.signals.approve(signal.id, "owner:1")
    assert decision.signal.status is SignalStatus.FILLED, decision.signal.status_reason
    await engine.exits.check()  # what the job (or the approval's quote) does at once
    trade = await engine.trades.for_signal(signal.id)
    assert trade is not None
    return trade


async def step(engine: Engine, candles: int = 1) -> None:
    """Replay ``candles`` candles, checking the exits after each."""
    for _ in range(candles):
        engine.feed.step()
        await engine.exits.check()


async def exit_orders(engine: Engine, trade_id: int) -> list[tuple[str, str, str, Decimal | None]]:
    """(client order id suffix, order type, state, trigger) of the trade's exit orders."""
    async with engine.db.session() as session:
        query = select(OrderRow).where(
            col(OrderRow.trade_id) == trade_id, col(OrderRow.purpose) != "open"
        )
        rows = (await session.exec(query.order_by(col(OrderRow.id)))).all()
    return [
        (r.client_order_id.rsplit("-", 1)[1], r.order_type, r.state, r.trigger_price) for r in rows
    ]


async def exit_messages(engine: Engine) -> list[TradeExit]:
    async with engine.db.session() as session:
        query = select(OutboxRow).where(col(OutboxRow.kind) == NoticeKind.TRADE_EXIT.value)
        rows = (await session.exec(query.order_by(col(OutboxRow.id)))).all()
    return [TradeExit.from_payload(row.payload) for row in rows]


async def test_a_long_stopped_on_a_candle_low_closes_at_the_stop_and_the_target_never_fills(
    engine: Engine,
) -> None:
    # entry at candle 0: 113666.68 x 1.0002 = 113689.413336 -> 113689.42, fee 1.1368942
    trade = await enter(engine, Side.BUY, stop_loss="113000", take_profit="114000")
    assert (trade.status, trade.exit_style, trade.average_entry) == (
        TradeStatus.OPEN,
        ExitStyle.ORDERS,
        D("113689.42"),
    )
    assert trade.initial_risk == D("6.8942")  # |113689.42 - 113000| x 0.01
    assert await exit_orders(engine, trade.id) == [
        ("sl1", "stop", "OPEN", D("113000")),
        ("tp1", "take_profit", "OPEN", D("114000")),
    ]

    await step(engine)  # candle 1: low 113512.88, still above the stop
    assert (await engine.trades.trade(trade.id)).status is TradeStatus.OPEN
    await step(engine)  # candle 2: opens 113659.01, low 112600.00 crosses 113000

    closed = await engine.trades.trade(trade.id)
    # exit: 113000 x 0.9998 = 112977.40, fee 0.01 x 112977.40 x 0.001 = 1.129774
    assert (closed.status, closed.exit_reason, closed.average_exit) == (
        TradeStatus.CLOSED,
        ExitReason.STOP_LOSS,
        D("112977.4"),
    )
    assert closed.realized_pnl == D("-7.1202")  # 0.01 x (112977.40 - 113689.42)
    assert closed.fees == D("2.2666682")  # 1.1368942 + 1.129774
    assert closed.net_pnl == D("-9.3868682")
    assert closed.r_multiple is not None
    assert round(closed.r_multiple, 4) == D("-1.3616")  # -9.3868682 / 6.8942
    assert await exit_orders(engine, trade.id) == [
        ("sl1", "stop", "FILLED", D("113000")),
        ("tp1", "take_profit", "CANCELLED", D("114000")),  # one cancels the other
    ]

    await step(engine, 2)  # candle 4's high 114326.35 passes the cancelled 114000
    assert await engine.trading.positions() == []
    assert (await exit_orders(engine, trade.id))[1][2] == "CANCELLED"
    [message] = await exit_messages(engine)
    assert (message.reason, message.closed_quantity, message.exit_price) == (
        ExitReason.STOP_LOSS,
        D("0.01"),
        D("112977.4"),
    )
    assert "PnL: -9.39 USDT (-1.36 R) · fees 2.27 USDT" in trade_exit_text(message, "paper")
    assert "exit at paper" in trade_exit_text(message, "paper")


async def test_a_long_stop_gapped_through_fills_at_the_open(engine: Engine) -> None:
    engine.feed.step(2145)  # buy at 91920.59 x 1.0002 = 91938.974118 -> 91938.98
    trade = await enter(engine, Side.BUY, stop_loss="91917")

    await step(engine)  # candle 2146 opens at 91914.01, below the stop

    closed = await engine.trades.trade(trade.id)
    # from the open: 91914.01 x 0.9998 = 91895.627198 -> 91895.62 (the stop would be 91898.61)
    assert (closed.status, closed.average_exit) == (TradeStatus.CLOSED, D("91895.62"))
    assert closed.realized_pnl == D("-0.4336")  # 0.01 x (91895.62 - 91938.98)
    assert closed.fees == D("1.8383460")  # 0.9193898 + 0.9189562


async def test_a_long_take_profit_closes_at_its_level_and_cancels_the_stop(
    engine: Engine,
) -> None:
    trade = await enter(engine, Side.BUY, stop_loss="112000", take_profit="114000")

    await step(engine, 4)  # candle 4: opens 113465.84, high 114326.35 >= 114000

    closed = await engine.trades.trade(trade.id)
    # 114000 x 0.9998 = 113977.20, fee 1.139772; realized 0.01 x (113977.20 - 113689.42)
    assert (closed.exit_reason, closed.average_exit, closed.realized_pnl) == (
        ExitReason.TAKE_PROFIT,
        D("113977.2"),
        D("2.8778"),
    )
    # net 2.8778 - 1.1368942 - 1.139772 = 0.6011338; risk (113689.42 - 112000) x 0.01
    assert closed.net_pnl == D("0.6011338")
    assert closed.initial_risk == D("16.8942")
    assert [state for _, _, state, _ in await exit_orders(engine, trade.id)] == [
        "CANCELLED",
        "FILLED",
    ]
    [message] = await exit_messages(engine)
    assert "(+0.04 R)" in trade_exit_text(message, "paper")  # 0.6011338 / 16.8942 = 0.0356


async def test_a_short_is_stopped_on_a_candle_high(engine: Engine) -> None:
    # entry at candle 0: 113666.68 x 0.9998 = 113643.946664 -> 113643.94, fee 1.1364394
    trade = await enter(engine, Side.SELL, stop_loss="114000", take_profit="112000")

    await step(engine, 3)  # lows 113512.88, 112600.00, 112380.00 stay above 112000
    assert (await engine.trades.trade(trade.id)).status is TradeStatus.OPEN
    await step(engine)  # candle 4: high 114326.35 >= 114000

    closed = await engine.trades.trade(trade.id)
    # buy back at 114000 x 1.0002 = 114022.80, fee 1.140228
    assert (closed.side, closed.exit_reason, closed.average_exit) == (
        Side.SELL,
        ExitReason.STOP_LOSS,
        D("114022.8"),
    )
    assert closed.realized_pnl == D("-3.7886")  # 0.01 x (113643.94 - 114022.80)
    assert closed.net_pnl == D("-6.0652674")  # -3.7886 - 1.1364394 - 1.140228
    assert closed.initial_risk == D("3.5606")  # |113643.94 - 114000| x 0.01
    assert await engine.trading.positions() == []


async def test_a_candle_touching_both_levels_fills_the_stop(engine: Engine) -> None:
    engine.feed.step(3)  # buy at 113465.84 x 1.0002 = 113488.533168 -> 113488.54
    trade = await enter(engine, Side.BUY, stop_loss="113300", take_profit="114200")

    await step(engine)  # candle 4: low 113229.43 <= 113300 and high 114326.35 >= 114200

    closed = await engine.trades.trade(trade.id)
    assert (closed.exit_reason, closed.average_exit) == (ExitReason.STOP_LOSS, D("113277.34"))
    assert closed.realized_pnl == D("-2.1120")  # 0.01 x (113277.34 - 113488.54)
    assert len(await exit_messages(engine)) == 1


async def test_a_trailing_stop_moves_twice_then_closes_the_trade(engine: Engine) -> None:
    engine.feed.step(4)  # buy at 113353.94 x 1.0002 = 113376.610788 -> 113376.62
    trade = await enter(engine, Side.BUY, stop_loss="113000", trail_pct="0.5")
    # the trail from the entry, 113376.62 x 0.995 = 112809.74, is looser than 113000
    assert (trade.stop_loss, trade.trail_pct) == (D("113000"), D("0.5"))

    await step(engine)  # candle 5 closes 113839.99: 113839.99 x 0.995 = 113270.79005
    assert (await engine.trades.trade(trade.id)).stop_loss == D("113270.79")
    await step(engine)  # candle 6 closes 114197.53: 114197.53 x 0.995 = 113626.54235
    assert (await engine.trades.trade(trade.id)).stop_loss == D("113626.54")
    await step(engine)  # candle 7: low 113264.01 crosses 113626.54

    closed = await engine.trades.trade(trade.id)
    # 113626.54 x 0.9998 = 113603.814692 -> 113603.81
    assert (closed.status, closed.exit_reason, closed.average_exit) == (
        TradeStatus.CLOSED,
        ExitReason.TRAILING_STOP,
        D("113603.81"),
    )
    assert closed.realized_pnl == D("2.2719")  # 0.01 x (113603.81 - 113376.62)
    assert closed.fees == D("2.2698043")  # 1.1337662 + 1.1360381
    assert await exit_orders(engine, trade.id) == [
        ("sl1", "stop", "CANCELLED", D("113000")),
        ("sl2", "stop", "CANCELLED", D("113270.79")),
        ("sl3", "stop", "FILLED", D("113626.54")),
    ]
    async with engine.db.session() as session:
        moves = (
            await session.exec(
                select(AuditEventRow.reason).where(col(AuditEventRow.action) == "stop_moved")
            )
        ).all()
    assert len(moves) == 2
    [message] = await exit_messages(engine)
    assert message.reason is ExitReason.TRAILING_STOP


async def test_a_partial_close_shrinks_the_trade_and_its_exits(engine: Engine) -> None:
    trade = await enter(engine, Side.BUY, stop_loss="113000", take_profit="114000")
    async with engine.db.session() as session:
        session.add(
            OrderRow(
                client_order_id="manual-half",
                purpose="close",
                symbol=BTC,
                side="sell",
                quantity=D("0.004"),
                order_type="market",
                reduce_only=True,
                state=OrderState.SUBMITTED.value,
            )
        )
    report = await engine.broker.close_position(BTC, "manual-half", D("0.004"))
    assert report is not None
    await engine.trading.record_report(report, "owner:1")

    partly = await engine.trades.trade(trade.id)
    # sold at 113643.94: realized 0.004 x (113643.94 - 113689.42) = -0.18192
    assert (partly.status, partly.quantity_open, partly.realized_pnl) == (
        TradeStatus.OPEN,
        D("0.006"),
        D("-0.18192"),
    )
    assert await exit_orders(engine, trade.id) == [
        ("sl1", "stop", "CANCELLED", D("113000")),
        ("tp1", "take_profit", "CANCELLED", D("114000")),
        ("sl2", "stop", "OPEN", D("113000")),
        ("tp2", "take_profit", "OPEN", D("114000")),
    ]
    [message] = await exit_messages(engine)
    assert (message.reason, message.closed, message.quantity_open) == (
        ExitReason.MANUAL_CLOSE,
        False,
        D("0.006"),
    )


async def test_the_source_record_sums_its_closed_trades_exactly(engine: Engine) -> None:
    stopped = await enter(engine, Side.BUY, stop_loss="113000", take_profit="114000")
    await step(engine, 2)  # stopped at candle 2: net -9.3868682, risk 6.8942 (test above)
    assert (await engine.trades.trade(stopped.id)).status is TradeStatus.CLOSED
    held = await enter(engine, Side.BUY)  # no stop: no R multiple
    await step(engine)
    await engine.trading.close(BTC, CloseAmount(), "owner:1")
    unstopped = await engine.trades.trade(held.id)
    assert unstopped.status is TradeStatus.CLOSED and unstopped.initial_risk is None

    record = await engine.trades.source_record("test")

    assert (record.approved, record.closed) == (2, 2)
    assert record.net_pnl == D("-9.3868682") + unstopped.net_pnl  # exact, not a float sum
    assert record.wins == (1 if unstopped.net_pnl > 0 else 0)
    assert record.average_r == D("-9.3868682") / D("6.8942")  # the stopped trade's alone
    assert (await engine.trades.source_record("nobody")).closed == 0
