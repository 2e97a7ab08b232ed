"""Cards that follow the account and the trading state, in every owner's chat, end to end:
real aiogram over real HTTP against the sandbox. The replay's first close is 113,666.68
USDT; the paper account starts with 10,000 USDT; the limits are the defaults (1 BTC,
10,000 USDT per order)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from structlog.testing import capture_logs

from bot.callbacks import CardAction, ConfirmAction
from bot.sandbox import SandboxServer
from bot.sandbox.models import SentMessage
from core.domain import Side, SignalStatus
from core.notify import NoticeKind, Notification
from tests.e2e.conftest import StartDesk
from tests.e2e.support import GROUP, OWNER, STRANGER, TOKEN, Desk
from tests.service.test_proposal_checks import withdraw_everything

OWNER_B = 1002
OWNER_C = 1003  # blocked the bot: every send to the chat answers 403
PAUSED = "⏸ Paused (news) — approvals off until /resume"


def button_texts(message: SentMessage) -> list[list[str]]:
    return [[text for text, _ in row] for row in message.buttons]


def current(desk: Desk, message: SentMessage) -> SentMessage:
    return desk.sandbox.message(message.chat_id, message.message_id)


async def test_a_card_posted_after_the_account_changed_is_blocked_without_buttons(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()
    # Telegram answers 500 to every send: a message ahead of the card is retried, and the
    # card waits behind it in the outbox
    desk.sandbox.fail_next("sendMessage", 500, "Internal Server Error", times=10_000)
    await desk.engine.notifier.notify(Notification(NoticeKind.TEXT, "ahead of the card"))
    await desk.sandbox.wait_for(
        lambda _: desk.app.deliverer.in_flight is not None, description="a send in flight"
    )
    signal = await desk.propose()  # passes the checks: 10,000 USDT free
    await withdraw_everything(desk.engine)  # the account changes before the card is posted

    desk.sandbox.clear_failures()
    card = await desk.card(signal.id)

    assert "⛔ Blocked: no free margin (0.00)" in card.plain_text
    assert card.buttons == []
    assert (await desk.engine.signals.get(signal.id)).status is SignalStatus.BLOCKED


async def test_pause_takes_approvals_off_the_cards_and_resume_brings_them_back_rechecked(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()
    small = await desk.propose(stop_loss=None, take_profit=None)
    big = await desk.propose(quantity=Decimal("0.08"), stop_loss=None, take_profit=None)
    small_card, big_card = await desk.card(small.id), await desk.card(big.id)

    reply = await desk.say("/pause news")

    assert reply.plain_text.startswith("⏸ Paused: news")
    for card in (small_card, big_card):
        await desk.edited(card, PAUSED)
        assert button_texts(current(desk, card)) == [["❌ Reject"]]
    # while paused the limit falls under the big one (as after a restart with a lower
    # MAX_ORDER_QUANTITY): the resume re-checks it
    gate = desk.engine.trading.gate
    gate.limits = replace(gate.limits, max_quantity=Decimal("0.05"))

    reply = await desk.say("/resume")

    assert reply.plain_text.startswith("▶️ Resumed")
    await desk.edited(big_card, "⛔ Blocked: quantity 0.08 over the limit 0.05")
    assert current(desk, big_card).buttons == []
    await desk.sandbox.wait_for(
        lambda _: PAUSED not in current(desk, small_card).plain_text,
        description="the small card back to normal",
    )
    assert button_texts(current(desk, small_card))[0] == ["✅ Approve", "❌ Reject"]
    answer = await desk.approve(current(desk, small_card))
    assert answer.text == "Approved: order sent"
    await desk.edited(small_card, "✅ Filled 0.01 BTC")


async def test_cards_reach_every_owner_and_one_owners_decision_edits_every_copy(
    start_desk: StartDesk,
) -> None:
    sandbox = SandboxServer(TOKEN, web_user_id=OWNER)
    sandbox.add_user(OWNER, "Ada", "ada")
    sandbox.add_user(OWNER_B, "Bea", "bea")
    sandbox.add_user(OWNER_C, "Cy", "cy")
    sandbox.add_user(STRANGER, "Mallory", "mallory")
    sandbox.add_group(GROUP, "Trading desk", [OWNER, OWNER_B, STRANGER])
    sandbox.set_blocked(OWNER_C)
    await sandbox.start()
    # the group is the main chat; owner Ada's and Bea's private chats get a copy each,
    # Cy's refuses: a chat that refuses holds back no other
    desk = await start_desk(
        sandbox=sandbox, group=True, telegram_owner_ids=[OWNER, OWNER_B, OWNER_C, OWNER]
    )
    # the group refuses the first copy for a while: the private chats get theirs first, and
    # the row's retry posts only the group's
    sandbox.fail_next("sendMessage", 403, "Forbidden: bot was kicked from the group chat")
    with capture_logs() as logs:
        signal = await desk.propose()
        copies = [
            await sandbox.wait_for_message(chat, contains=f"signal #{signal.id}", timeout=10)
            for chat in (GROUP, OWNER, OWNER_B)
        ]
        await desk.drained()

    refusals = [e for e in logs if e["event"] == "outbox.card_chat_refuses"]
    assert [e["chat"] for e in refusals] == [OWNER_C]  # logged once, tried twice
    assert [e["chat"] for e in logs if e["event"] == "outbox.chat_refuses"] == [GROUP]
    for chat in (GROUP, OWNER, OWNER_B):
        posted = [m for m in sandbox.messages(chat) if f"signal #{signal.id}" in m.plain_text]
        assert len(posted) == 1, chat
    assert not [m for m in sandbox.messages(OWNER_C) if "signal #" in m.plain_text]

    refused = await desk.answer(desk.tap(copies[0], CardAction.APPROVE, user=STRANGER))
    assert refused.text == "Not allowed"
    assert (await desk.engine.signals.get(signal.id)).status is SignalStatus.PROPOSED

    answer = await desk.approve(copies[2], user=OWNER_B)

    assert answer.text == "Approved: order sent"
    for copy in copies:
        text = await desk.edited(copy, "✅ Filled 0.01 BTC")
        assert current(desk, copy).buttons == [], text
    assert await desk.orders_for(signal.id) == 1


async def test_after_closeall_a_pending_card_shows_what_it_does_to_the_flat_account(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()
    held = await desk.propose(stop_loss=None, take_profit=None)
    await desk.answer(desk.tap(await desk.card(held.id), CardAction.APPROVE))
    sell = await desk.propose(side=Side.SELL, stop_loss=None, take_profit=None)
    card = await desk.card(sell.id)
    assert "Reduces long 0.01 BTC → flat" in card.plain_text

    prompt = await desk.say("/closeall")
    await desk.answer(desk.confirm(prompt, ConfirmAction.CLOSE_ALL))

    await desk.edited(card, "Opens short 0.01 BTC")
    assert button_texts(current(desk, card))[0] == ["✅ Approve", "❌ Reject"]
