"""An MT5 hedging account in the trade record, through the service layer on the stateful
MT5 fake (a hedging USD account by default; BTCUSD: one coin per lot, no commission, bid
59999.50 / ask 60000.50 at the start).

The engine is built before the broker connects, so the trade record must learn that the
account hedges at the first fill (``Mt5Broker.hedging``): every entry is its own ticket
and its own trade, a SELL signal opens a short ticket instead of reducing the longs FIFO,
a stop on one ticket closes only that trade, and close all closes our tickets only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from core.app import Engine, build_engine
from core.domain import ExitReason, ExitStyle, Side, SignalStatus, Trade, TradeStatus
from core.services import Proposal
from tests.service.test_trades import exit_messages
from tests.support import mt5_fake

SYMBOL = "BTCUSD"
D = Decimal


@pytest.fixture
async def hedging(
    sqlite_url: str, make_settings: Any, clock: Any
) -> AsyncIterator[tuple[Engine, mt5_fake.FakeTerminal]]:
    async with mt5_fake.running(hedging=True) as terminal:
        engine = await build_engine(
            make_settings(database_url=sqlite_url), broker=terminal.broker(), clock=clock
        )
        yield engine, terminal
        await engine.close()


async def _enter(engine: Engine, side: Side, quantity: str, stop_loss: str) -> Trade:
    signal = await engine.signals.propose(
        Proposal("hedge", SYMBOL, side, D(quantity), stop_loss=D(stop_loss))
    )
    decision = await engine.signals.approve(signal.id, "owner:1")
    assert decision.signal.status is SignalStatus.FILLED, decision.signal.status_reason
    await engine.exits.check()
    trade = await engine.trades.for_signal(signal.id)
    assert trade is not None
    return trade


async def test_every_entry_is_its_own_ticket_and_trade_and_a_stop_closes_only_its_own(
    hedging: tuple[Engine, mt5_fake.FakeTerminal],
) -> None:
    engine, terminal = hedging
    hand = terminal.open_position(SYMBOL, buy=True, volume=0.05)  # not ours (magic 0)

    first = await _enter(engine, Side.BUY, "0.01", stop_loss="59000")
    second = await _enter(engine, Side.BUY, "0.02", stop_loss="58000")
    short = await _enter(engine, Side.SELL, "0.01", stop_loss="61000")

    assert engine.trades.hedging  # learnt when the broker connected
    trades = {t.id: t for t in await engine.trades.open_trades(SYMBOL)}
    assert set(trades) == {first.id, second.id, short.id}
    # the SELL opened its own trade: the longs were not reduced FIFO
    assert [trades[t.id].quantity_open for t in (first, second, short)] == [
        D("0.01"),
        D("0.02"),
        D("0.01"),
    ]
    assert trades[short.id].side is Side.SELL
    refs = [t.position_ref for t in (first, second, short)]
    assert len(set(refs)) == 3 and all(refs)
    assert all(t.exit_style is ExitStyle.ATTACHED for t in (first, second, short))
    ours = [p for p in terminal.positions.values() if p.magic != 0]
    assert len(ours) == 3 and {p.sl for p in ours} == {59000.0, 58000.0, 61000.0}

    # the bid falls through the first long's stop only (58000 and the short's 61000 hold)
    terminal.set_tick(SYMBOL, bid="58900.00", ask="58901.00")
    await engine.exits.check()

    stopped = await engine.trades.trade(first.id)
    assert (stopped.status, stopped.exit_reason) == (TradeStatus.CLOSED, ExitReason.STOP_LOSS)
    # by hand: entered at the ask 60000.50, out at the bid 58900.00, no commission on BTCUSD
    assert stopped.realized_pnl == (D("58900.00") - D("60000.50")) * D("0.01") == D("-11.005")
    [message] = await exit_messages(engine)
    assert (message.trade_id, message.net_pnl) == (first.id, D("-11.005"))
    for other in (second, short):
        assert (await engine.trades.trade(other.id)).quantity_open == other.quantity_open
    assert hand in terminal.positions

    report = await engine.trading.close_all("owner:1")

    assert report.ok and sorted(r.position_ref for r in report.closes) == sorted(
        [second.position_ref, short.position_ref]
    )
    assert [p.position_ref for p in report.left_open] == [f"ticket:{hand}"]
    assert list(terminal.positions) == [hand]
    assert await engine.trades.open_trades(SYMBOL) == []
    assert len(await exit_messages(engine)) == 3
