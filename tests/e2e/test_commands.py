"""Owner commands over real getUpdates: contents, usage lines, confirmations."""

from __future__ import annotations

import asyncio

from bot.callbacks import CardAction, ConfirmAction
from bot.render import COMMANDS
from tests.e2e.conftest import StartDesk
from tests.e2e.support import OWNER, Desk


async def _open_position(desk: Desk) -> None:
    signal = await desk.propose()
    await desk.approve(await desk.card(signal.id))


async def test_commands_are_registered_with_set_my_commands(start_desk: StartDesk) -> None:
    desk = await start_desk()

    names = [name for name, _ in desk.sandbox.commands]

    assert names == [spec.name for spec in COMMANDS]
    assert names == [
        "start", "help", "status", "drawdown", "heartbeat", "positions", "orders", "signals",
        "pause", "resume", "closeall", "close", "balance", "history", "buy", "sell", "pnl",
        "daily", "performance", "trades", "signal", "symbols", "chart", "strategies", "run",
        "notify",
    ]  # fmt: skip


BAD_COMMANDS = [
    ("/history abc", "Usage: /history [N], N 1 to 25 — recent signals and outcomes"),
    ("/history 0", "Usage: /history [N], N 1 to 25 — recent signals and outcomes"),
    ("/close", "Usage: /close SYMBOL [PERCENT|QUANTITY] — close a position or part of it"),
    (
        "/close BTC USDT 5",
        "Usage: /close SYMBOL [PERCENT|QUANTITY] — close a position or part of it",
    ),
    ("/status now", "Usage: /status — mode, equity, drawdown, pause, uptime"),
    ("/closeall BTC/USDT", "Usage: /closeall — close every position (asks to confirm)"),
    ("/notify loud", "Usage: /notify — which messages ring, stay silent or are off"),
    ("/frobnicate", "Unknown command /frobnicate. Send /help for the list."),
    ("hello", "I only understand commands. Send /help for the list."),
]


async def test_bad_arguments_and_unknown_commands_get_one_line_usage(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()

    replies = [(command, (await desk.say(command)).plain_text) for command, _ in BAD_COMMANDS]

    assert replies == BAD_COMMANDS
    assert not (await desk.engine.trading.operator_status()).paused


async def test_status_balance_history_and_signals_show_the_engine(start_desk: StartDesk) -> None:
    desk = await start_desk()
    filled = await desk.propose()
    await desk.approve(await desk.card(filled.id))
    pending = await desk.propose(note="second idea")
    await desk.card(pending.id)

    status = (await desk.say("/status")).plain_text
    balance = (await desk.say("/balance")).plain_text
    history = (await desk.say("/history 3")).plain_text
    card = await desk.say("/signals")

    assert "Mode: paper · broker paper" in status
    assert "Open positions: 1 · pending signals: 1" in status
    assert "Trading: ▶️ active" in status
    assert "Drawdown: " in status and "(warn 5%, max 10%)" in status
    assert "Balance: 9,998.86 USDT" in balance  # 10,000 - fee 1.14
    assert history.startswith("History (last 3, UTC)")
    assert f"#{filled.id} submitted → filled · @ada" in history
    assert f"signal #{pending.id}" in card.plain_text
    assert "Note: second idea" in card.plain_text
    assert [text for text, _ in card.buttons[0]] == ["✅ Approve", "❌ Reject"]
    # the re-posted card is the live one: the engine's update edits it after a tap
    await desk.answer(desk.tap(card, CardAction.REJECT))
    await desk.edited(card, "Rejected by @ada")


async def test_closeall_confirmed_closes_and_reports_each_position(start_desk: StartDesk) -> None:
    desk = await start_desk()
    await _open_position(desk)

    prompt = await desk.say("/closeall")
    assert prompt.plain_text.startswith(
        "Close this position SignalDesk opened at market?\nBTC/USDT long 0.01"
    )
    assert "This button expires in 60 s." in prompt.plain_text
    first = desk.confirm(prompt, ConfirmAction.CLOSE_ALL)
    second = desk.confirm(prompt, ConfirmAction.CLOSE_ALL)  # a double tap runs once

    assert (await desk.answer(first)).text == "Closing…"
    assert (await desk.answer(second)).text == "Already confirmed"
    report = await desk.sandbox.wait_for_message(OWNER, contains="Close results")
    # bought at 113,689.42 (fee 1.1368942), sold at 113,643.94 (fee 1.1364394):
    # (113,643.94 - 113,689.42) x 0.01 - 1.1368942 - 1.1364394 = -2.7281336
    lines = report.plain_text.splitlines()
    assert lines[:2] == [
        "Close results (confirmed by @ada)",
        "✅ BTC/USDT: sold 0.01 @ 113,643.94 (fee 1.14 USDT) · net PnL -2.73 after fees",
    ]
    # the closed trade's protective exits are cancelled after its close
    assert [line.split(" order ")[0] for line in lines[2:]] == [
        "🚫 BTC/USDT stop loss",
        "🚫 BTC/USDT take profit",
    ]
    assert await desk.edited(prompt, "⏳") == (
        "⏳ Closing, confirmed by @ada… The result follows in a message."
    )
    assert desk.sandbox.message(prompt.chat_id, prompt.message_id).buttons == []
    assert (await desk.say("/positions")).plain_text == "No open positions."


async def test_closeall_confirmation_expires(start_desk: StartDesk) -> None:
    desk = await start_desk(confirm_ttl_seconds=1)
    await _open_position(desk)
    prompt = await desk.say("/closeall")

    await asyncio.sleep(2.1)  # issued is whole seconds: 2 s later it is surely past 1 s
    answer = await desk.answer(desk.confirm(prompt, ConfirmAction.CLOSE_ALL))

    assert answer.text == "Expired"
    text = await desk.edited(prompt, "expired")
    assert text == "⌛ This confirmation expired. Send /closeall again."
    assert len(await desk.engine.trading.positions()) == 1


async def test_close_symbol_matches_loosely_and_cancel_changes_nothing(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()
    await _open_position(desk)
    assert (await desk.say("/close ETH/USDT")).plain_text == "No open position in ETH/USDT."

    prompt = await desk.say("/close btcusdt")
    answer = await desk.answer(desk.confirm(prompt, ConfirmAction.CANCEL))

    assert [text for text, _ in prompt.buttons[0]] == ["✅ Close BTC/USDT", "✖️ Cancel"]
    assert answer.text == "Cancelled"
    assert await desk.edited(prompt, "Cancelled") == "✖️ Cancelled. Nothing was changed."
    assert len(await desk.engine.trading.positions()) == 1


async def test_pause_then_resume(start_desk: StartDesk) -> None:
    desk = await start_desk()
    assert (await desk.say("/resume")).plain_text == (
        "Not paused: approved signals already execute."
    )

    paused = await desk.say("/pause")
    resumed = await desk.say("/resume")

    assert paused.plain_text == (
        "⏸ Paused: paused by owner (by @ada). Approvals are blocked until /resume."
    )
    assert resumed.plain_text == "▶️ Resumed. Approved signals execute again."
    assert not (await desk.engine.trading.operator_status()).paused
