"""The desk in the chat, over real getUpdates against the sandbox: /orders and its Cancel
buttons, /close with a percent or a quantity, the Close buttons under /positions, /pause
cancelling resting entries, and bad input that changes nothing."""

from __future__ import annotations

from decimal import Decimal

from sqlmodel import col, func, select

from bot.callbacks import ConfirmAction, OrderCallback, PositionCallback
from bot.sandbox import SentMessage
from core.db.models import OrderRow, PaperOrderRow
from core.domain import OrderType
from tests.e2e.conftest import StartDesk
from tests.e2e.support import OWNER, Desk

#: Below the first candle (113,666.68); candle 3's low (112,380.00) reaches it.
LIMIT = Decimal(112500)


def button_data(message: SentMessage, label: str) -> str:
    """The callback data of the button labelled ``label`` under ``message``."""
    for row in message.buttons:
        for text, data in row:
            if text == label and data:
                return data
    raise AssertionError(f"no {label!r} button in {message.buttons}")


async def _approve(desk: Desk, **overrides: object) -> int:
    signal = await desk.propose(**overrides)
    await desk.approve(await desk.card(signal.id))
    return signal.id


async def _resting_limit(desk: Desk) -> int:
    return await _approve(
        desk, order_type=OrderType.LIMIT, limit_price=LIMIT, stop_loss=None, take_profit=None
    )


async def _paper_states(desk: Desk) -> list[str]:
    await desk.engine.broker.positions()  # the paper ledger matches resting orders on a read
    async with desk.engine.db.session() as session:
        query = select(PaperOrderRow.state).order_by(col(PaperOrderRow.id))
        return list((await session.exec(query)).all())


async def _order_rows(desk: Desk) -> int:
    async with desk.engine.db.session() as session:
        return (await session.exec(select(func.count()).select_from(OrderRow))).one()


async def test_orders_cancel_button_cancels_the_resting_limit_which_never_fills(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()
    signal_id = await _resting_limit(desk)

    listed = await desk.say("/orders")
    [[(label, data)]] = listed.buttons
    assert data is not None
    cid = OrderCallback.unpack(data).cid
    press = desk.sandbox.press_button(listed.chat_id, listed.message_id, data, 1001)
    answer = await desk.answer(press)
    result = await desk.sandbox.wait_for_message(
        listed.chat_id, contains="cancelled", after_message_id=listed.message_id
    )
    desk.engine.feed.step(5)  # past candle 3, whose low reaches the limit

    assert listed.plain_text.startswith("Resting orders (1)")
    assert f"BTC/USDT buy 0.01 limit @ 112,500.00 · entry of signal #{signal_id} · {cid}" in (
        listed.plain_text
    )
    assert label == "🚫 Cancel BTC/USDT limit"
    assert answer.text == "Cancelled"
    assert result.plain_text == (
        f"🚫 BTC/USDT entry order of signal #{signal_id} {cid} cancelled (by @ada)"
    )
    assert await desk.edited(listed, "No resting orders.") == "No resting orders."
    assert await _paper_states(desk) == ["CANCELLED"]
    assert await desk.engine.trading.positions() == []
    assert (await desk.say("/orders")).plain_text == "No resting orders."


async def test_pause_cancels_the_resting_entry_and_says_so(start_desk: StartDesk) -> None:
    desk = await start_desk()
    signal_id = await _resting_limit(desk)

    paused = await desk.say("/pause lunch")

    assert paused.plain_text.startswith("⏸ Paused: lunch (by @ada).")
    assert f"🚫 BTC/USDT entry order of signal #{signal_id} " in paused.plain_text
    assert paused.plain_text.endswith("Stop loss and take profit orders stay.")
    assert await _paper_states(desk) == ["CANCELLED"]


async def test_close_half_then_the_rest_from_the_positions_buttons(start_desk: StartDesk) -> None:
    desk = await start_desk()
    await _approve(desk, quantity=Decimal("0.02"))

    prompt = await desk.say("/close btcusdt 50%")
    assert prompt.plain_text.startswith("Close 50% of this position at market?")
    assert "BTC/USDT long 0.02 (uPnL -0.45): close 0.01 of it" in prompt.plain_text
    assert [text for text, _ in prompt.buttons[0]] == ["✅ Close 50% of BTC/USDT", "✖️ Cancel"]
    assert (await desk.answer(desk.confirm(prompt, ConfirmAction.CLOSE))).text == "Closing…"
    text = (await desk.sandbox.wait_for_message(OWNER, contains="Close results")).plain_text
    # the trade's net so far: -0.4548 - 2.2737884 (entry fee) - 1.1364394 = -3.8650278
    assert (
        "✅ BTC/USDT: sold 0.01 @ 113,643.94 (fee 1.14 USDT) · net PnL so far -3.87 after fees"
        in text
    )
    assert "the rest stays open" in text
    [position] = await desk.engine.trading.positions()
    assert position.quantity == Decimal("0.01")

    await desk.drained()  # the trade's exit message first, so the reply is the next one
    listed = await desk.say("/positions")
    assert listed.plain_text.startswith(
        "Open positions (1)\nBTC/USDT long 0.01 · entry 113,689.42 · mark 113,666.68 · "
        "uPnL -0.23\n  stop loss 112,000.00 · take profit 116,000.00 · at paper"
    )
    assert [text for text, _ in listed.buttons[0]] == ["Close 25%", "Close 50%", "Close 100%"]
    whole = button_data(listed, "Close 100%")
    assert PositionCallback.unpack(whole).percent == 100
    desk.sandbox.press_button(listed.chat_id, listed.message_id, whole, 1001)
    ask = await desk.sandbox.wait_for_message(
        listed.chat_id, contains="at market?", after_message_id=listed.message_id
    )
    assert ask.plain_text.startswith("Close this position at market?")
    await desk.answer(desk.confirm(ask, ConfirmAction.CLOSE))
    await desk.sandbox.wait_for_message(
        OWNER, contains="Close results", after_message_id=ask.message_id
    )
    assert await desk.engine.trading.positions() == []


BAD_CLOSES = [
    ("/close BTC/USDT 0", "⚠️ the amount must be above zero, got 0"),
    ("/close BTC/USDT 250%", "⚠️ at most 100% of a position can be closed, got 250%"),
    ("/close BTC/USDT 0.5", "⚠️ BTC/USDT: cannot close 0.5, the position holds 0.01"),
    (
        "/close BTC/USDT lots",
        "⚠️ 'lots' is not an amount: give a percent (50%) or a quantity (0.01)",
    ),
    ("/close NOPE", "No open position in NOPE."),
]


async def test_bad_close_input_is_named_and_changes_nothing(start_desk: StartDesk) -> None:
    desk = await start_desk()
    await _approve(desk)
    rows = await _order_rows(desk)

    replies = [(command, (await desk.say(command)).plain_text) for command, _ in BAD_CLOSES]

    assert replies == BAD_CLOSES
    assert await _order_rows(desk) == rows
    [position] = await desk.engine.trading.positions()
    assert position.quantity == Decimal("0.01")


async def test_closeall_with_only_a_resting_entry_cancels_it(start_desk: StartDesk) -> None:
    desk = await start_desk()
    signal_id = await _resting_limit(desk)

    prompt = await desk.say("/closeall")
    asked = prompt.plain_text
    await desk.answer(desk.confirm(prompt, ConfirmAction.CLOSE_ALL))
    text = (await desk.sandbox.wait_for_message(OWNER, contains="Close results")).plain_text
    desk.engine.feed.step(5)

    assert asked.startswith(
        "Cancel the resting entry orders? No position SignalDesk opened is open.\n"
        "First 1 resting entry order is cancelled:\n"
        f"BTC/USDT buy 0.01 limit @ 112,500.00 · entry of signal #{signal_id}"
    )
    assert f"🚫 BTC/USDT entry order of signal #{signal_id} " in text
    assert await _paper_states(desk) == ["CANCELLED"]
    assert await desk.engine.trading.positions() == []
