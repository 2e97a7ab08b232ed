"""Edit before approving and trade from the chat, end to end: real aiogram over real HTTP
against the sandbox. Sizes and risks are computed by hand from the replay's first close,
113,666.68 USDT, and the paper equity of 10,000 USDT."""

from __future__ import annotations

from decimal import Decimal
from zoneinfo import ZoneInfo

from bot.callbacks import CardAction
from core.domain import OrderType, SignalStatus
from tests.e2e.conftest import StartDesk
from tests.e2e.support import OWNER, card_button
from tests.e2e.test_forged_input import forge


async def test_double_then_a_stale_approve_is_refused_and_the_new_card_fills(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()
    signal = await desk.propose(stop_loss=None, take_profit=None)
    card = await desk.card(signal.id)
    assert [text for text, _ in card.buttons[1]] == ["½×", "2×", "✏️ Edit"]
    stale_approve = card_button(card, CardAction.APPROVE)

    answer = await desk.answer(desk.tap(card, CardAction.DOUBLE))

    assert answer.text == f"Signal #{signal.id} now: BUY 0.02 BTC/USDT"
    await desk.edited(card, "BUY 0.02 BTC/USDT")
    edited = await desk.engine.signals.get(signal.id)
    assert (edited.quantity, edited.card_version) == (Decimal("0.02"), 1)
    # the old Approve (version 0), as a phone that had not yet shown the edit sends it
    answer = await desk.answer(forge(desk, card.chat_id, card.message_id, stale_approve))
    assert answer.text == "the card changed, look again"
    assert (await desk.engine.signals.get(signal.id)).status is SignalStatus.PROPOSED

    fresh = desk.sandbox.message(card.chat_id, card.message_id)
    answer = await desk.approve(fresh)
    assert answer.text == "Approved: order sent"
    await desk.edited(fresh, "Filled 0.02 BTC @ 113,689.42")


async def test_risk_buttons_size_from_equity_and_the_stop(start_desk: StartDesk) -> None:
    desk = await start_desk()
    # stop 2,000 below the entry: 1% of 10,000 = 100 USDT / 2,000 = 0.05 BTC
    signal = await desk.propose(stop_loss=Decimal("111666.68"), take_profit=None)
    card = await desk.card(signal.id)
    assert [text for text, _ in card.buttons[1]] == ["Risk 0.5%", "Risk 1%", "Risk 2%", "✏️ Edit"]

    data = card_button(card, CardAction.RISK, "1")
    answer = await desk.answer(
        desk.sandbox.press_button(card.chat_id, card.message_id, data, OWNER)
    )

    assert answer.text == f"Signal #{signal.id} now: BUY 0.05 BTC/USDT · sl 111,666.68"
    text = await desk.edited(card, "BUY 0.05 BTC/USDT")
    assert "Risk: 100.00 USDT (1.00% of equity)" in text


async def test_a_reply_edit_changes_the_card_and_a_bad_one_changes_nothing(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()
    signal = await desk.propose(stop_loss=None, take_profit=None)
    card = await desk.card(signal.id)
    await desk.answer(desk.tap(card, CardAction.EDIT))
    prompt = await desk.sandbox.wait_for_message(
        card.chat_id, contains=f"Edit signal #{signal.id} (card v0)", timeout=5
    )

    for bad, error in (
        ("sl abc", "stop loss must be a number, got abc"),
        ("sl 120000", "the stop loss 120000 must be below the entry 113666.68 for a buy"),
        ("qty 0.01 size 2", "'size' is not a term"),
    ):
        reply = await desk.say(bad, chat=card.chat_id, reply_to=prompt.message_id)
        assert error in reply.plain_text, reply.plain_text
    unchanged = await desk.engine.signals.get(signal.id)
    assert (unchanged.quantity, unchanged.stop_loss, unchanged.card_version) == (
        Decimal("0.01"),
        None,
        0,
    )

    reply = await desk.say(
        "sl 110000 tp 116000 qty 0.02 limit 112500", chat=card.chat_id, reply_to=prompt.message_id
    )

    assert f"Signal #{signal.id} now: BUY 0.02 BTC/USDT · limit 112,500.00" in reply.plain_text
    text = await desk.edited(card, "Limit 112,500.00 · notional 2,250.00 USDT")
    assert "SL 110,000.00 (-2.22%) · TP 116,000.00 (+3.11%) · R:R 1.4" in text
    edited = await desk.engine.signals.get(signal.id)
    assert (edited.order_type, edited.quantity, edited.card_version) == (
        OrderType.LIMIT,
        Decimal("0.02"),
        1,
    )
    lineage = await desk.say(f"/signal {signal.id}", chat=card.chat_id)
    assert (
        f"#{signal.id} edit · @ada · qty 0.01 -> 0.02; limit none -> 112500; sl none -> 110000"
        in lineage.plain_text
    )
    # the same prompt again names version 0: refused, nothing changes
    reply = await desk.say("qty 0.03", chat=card.chat_id, reply_to=prompt.message_id)
    assert "the card changed, look again" in reply.plain_text
    assert (await desk.engine.signals.get(signal.id)).quantity == Decimal("0.02")


async def test_buy_from_the_chat_posts_a_card_and_bad_input_gets_clear_errors(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()

    reply = await desk.say("/buy btcusdt 0.01 sl 110000")

    assert reply.plain_text.startswith("Proposed: BUY 0.01 BTC/USDT (#")
    [signal] = await desk.engine.signals.pending()
    assert (signal.source, signal.symbol, signal.quantity, signal.stop_loss) == (
        "chat",
        "BTC/USDT",
        Decimal("0.01"),
        Decimal(110000),
    )
    card = await desk.card(signal.id)
    assert "🟢 BUY 0.01 BTC/USDT" in card.plain_text
    reply = await desk.say("/sell BTC/USDT risk 1% sl 115666.68")
    sized = (await desk.engine.signals.pending())[-1]
    assert (sized.side.value, sized.quantity) == ("sell", Decimal("0.05"))  # 100 / 2,000
    await desk.card(sized.id)  # delivered: the replies below are the next messages

    for bad, error in (
        ("/buy BTC/USDT -1", "quantity must be a positive number, got -1"),
        ("/buy NOPE 1", "unknown symbol NOPE"),
        ("/buy BTC/USDT risk 1%", "risk % needs a stop loss"),
        ("/buy BTC/USDT 0.01 sl 120000", "must be below the entry"),
        # the gate's size rules run at proposal, as at the tap
        ("/buy BTC/USDT 2", "quantity 2 over the limit 1"),
        ("/buy BTC/USDT 0.1", "notional 11366.67 over the limit 10000.00"),
    ):
        reply = await desk.say(bad)
        assert error in reply.plain_text, (bad, reply.plain_text)
    assert len(await desk.engine.signals.pending()) == 2


async def test_pnl_and_trades_after_a_long_stopped_out(start_desk: StartDesk) -> None:
    desk = await start_desk()
    engine = desk.engine
    # entry 113,666.68 x 1.0002 -> 113,689.42, fee 1.1368942; risk |113,689.42 - 113,000| x
    # 0.01 = 6.8942. Candle 2 crosses the stop: exit 113,000 x 0.9998 = 112,977.40, fee
    # 1.129774. Realized 0.01 x (112,977.40 - 113,689.42) = -7.1202; fees 2.2666682; net
    # -9.3868682; R = -9.3868682 / 6.8942 = -1.3616
    signal = await desk.propose(stop_loss=Decimal(113000), take_profit=Decimal(114000))
    assert (await engine.signals.approve(signal.id, "owner:1")).signal.status is (
        SignalStatus.FILLED
    )
    for _ in range(2):
        engine.feed.step()
        await engine.exits.check()
    assert (await engine.trades.closed_since()) != []
    await desk.drained()  # the exit message first, so the next message is the answer

    pnl = await desk.say("/pnl all")

    assert pnl.plain_text.splitlines() == [
        "PnL · all",
        "Realized: -9.39 USDT after 2.27 USDT fees (-7.12 before)",
        "Trades: 1 · won 0 (0.00%) · profit factor 0.00",  # no winner: 0 / 9.39
        "Best: -9.39 · worst: -9.39 · average -1.36R",
        "Unrealized (open positions): +0.00 USDT",
        "Max drawdown: 0.00%",  # one snapshot yet: the guard writes one a minute
    ]
    journal = await desk.say("/trades 5")
    assert journal.plain_text.splitlines()[1].startswith(
        "#1 BTC/USDT long 0.01 @ 113,689.42 → 112,977.40 · -9.39 · -1.36R · "
    )
    assert journal.plain_text.endswith("stop loss")
    assert "Usage: /pnl" in (await desk.say("/pnl year")).plain_text

    lineage = (await desk.say(f"/signal {signal.id}")).plain_text.splitlines()
    assert lineage[0] == f"Signal #{signal.id} · BUY 0.01 BTC/USDT · filled"
    assert lineage[1] == ("Source: e2e · reference 113,666.68 · sl 113,000.00 · tp 114,000.00")
    steps = [line.split(" · ")[0][12:] for line in lineage[2:-1]]
    assert steps == [
        f"#{signal.id} proposed",
        f"#{signal.id} proposed → approved",
        f"#{signal.id} approved → submitted",
        f"#{signal.id} submitted → filled",
    ]
    assert lineage[-1].startswith("Trade: #1 BTC/USDT long 0.01 @ 113,689.42 → 112,977.40")
    assert (await desk.say("/signal 999")).plain_text == "⚠️ no signal with id 999"


async def test_half_the_size_then_the_card_in_the_display_time_zone(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(display_timezone="Asia/Tokyo")
    signal = await desk.propose(quantity=Decimal("0.02"), stop_loss=None, take_profit=None)
    card = await desk.card(signal.id)

    answer = await desk.answer(desk.tap(card, CardAction.HALF))

    assert answer.text == f"Signal #{signal.id} now: BUY 0.01 BTC/USDT"
    text = await desk.edited(card, "BUY 0.01 BTC/USDT")
    lines = text.splitlines()
    local = signal.expires_at.astimezone(ZoneInfo("Asia/Tokyo"))
    assert lines[-1] == f"Expires in 14 min ({local:%H:%M} JST)"  # 15 min TTL, rendered since
    assert "Opens long 0.01 BTC" in lines
    assert len(lines) <= 8
    edited = await desk.engine.signals.get(signal.id)
    assert (edited.quantity, edited.card_version) == (Decimal("0.01"), 1)
