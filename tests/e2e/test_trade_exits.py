"""A stop loss end to end: approve in the chat, the replay crosses the stop, the paper
venue fills it, and the chat gets one exit message with the PnL (real aiogram over real
HTTP against the sandbox)."""

from __future__ import annotations

from decimal import Decimal

from core.domain import TradeStatus
from tests.e2e.conftest import StartDesk


async def test_a_stop_loss_exit_posts_one_message_with_its_pnl(start_desk: StartDesk) -> None:
    desk = await start_desk()
    signal = await desk.propose(stop_loss=Decimal(113000), take_profit=Decimal(114000))
    card = await desk.card(signal.id)
    await desk.approve(card)  # filled at 113,689.42
    engine = desk.engine

    engine.feed.step(2)  # candle 2's low 112,600.00 crosses the stop
    await engine.exits.check()

    trade = await engine.trades.for_signal(signal.id)
    assert trade is not None and trade.status is TradeStatus.CLOSED
    message = await desk.sandbox.wait_for_message(desk.chat_id, contains="Stop loss · BTC")
    # exit 113000 x 0.9998 = 112,977.40; net -7.1202 - 1.1368942 - 1.129774 = -9.3868682
    assert message.plain_text.splitlines() == [
        "🛑 Stop loss · BTC/USDT long closed",
        "0.01 BTC: entry 113,689.42 → exit 112,977.40",
        "PnL: -9.39 USDT (-1.36 R) · fees 2.27 USDT",
        f"Held 0m · trade #{trade.id} · exit at paper",
    ]
    await desk.drained()
    exits = [m for m in desk.sandbox.messages(desk.chat_id) if "Stop loss ·" in m.plain_text]
    assert len(exits) == 1
