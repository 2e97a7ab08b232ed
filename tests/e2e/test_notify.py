"""``/notify`` and ``QUIET_HOURS`` through the real bot and the sandbox: the owner's levels
and quiet hours decide ``disable_notification`` (the sandbox records it) or drop a topic
switched off; an alert in quiet hours still rings, and alerts and cards cannot be
switched off, also by a forged press."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from bot.callbacks import CardAction, NotifyCallback
from bot.sandbox import SentMessage
from core.domain import OrderRequest
from core.errors import BrokerAmbiguousError
from core.notify import Loudness, NoticeKind, Notification, Topic, read_settings
from tests.e2e.conftest import StartDesk
from tests.e2e.support import OWNER, STRANGER, Desk
from tests.e2e.test_forged_input import forge
from tests.e2e.test_outages import CRASH, WARN


def _button(message: SentMessage, text: str) -> str:
    """The callback data of the button labelled ``text`` (a leading ✓ ignored)."""
    for row in message.buttons:
        for label, data in row:
            if label.removeprefix("✓ ") == text and data is not None:
                return data
    raise AssertionError(f"no button {text!r} in {message.buttons}")


async def _press(desk: Desk, message: SentMessage, text: str, user: int = OWNER) -> str | None:
    """``user`` presses the /notify button ``text``; returns the toast."""
    data = _button(message, text)
    answer = await desk.answer(desk.sandbox.press_button(OWNER, message.message_id, data, user))
    return answer.text


async def _levels(desk: Desk) -> dict[Topic, Loudness]:
    settings = await read_settings(desk.engine.db, None, UTC)
    return dict(settings.levels)


async def test_notify_lists_every_topic_and_offers_no_off_for_cards_and_alerts(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()

    reply = await desk.say("/notify")

    assert reply.plain_text.splitlines()[:8] == [
        "Notifications",
        "🔔 Cards: loud",
        "🔔 Fills: loud",
        "🔔 Exits: loud",
        "🔔 Warnings: loud",
        "🔕 Heartbeats: silent",
        "🔔 Daily summary: loud",
        "🔔 Drawdown alerts: loud",
    ]
    assert "No quiet hours (set QUIET_HOURS" in reply.plain_text
    labels = [[label for label, _ in row] for row in reply.buttons]
    assert labels[0] == ["✓ Cards: loud", "Cards: silent"]
    assert labels[1] == ["✓ Fills: loud", "Fills: silent", "Fills: off"]
    assert labels[4] == ["Heartbeats: loud", "✓ Heartbeats: silent", "Heartbeats: off"]
    assert labels[6] == ["✓ Drawdown alerts: loud", "Drawdown alerts: silent"]


async def test_fills_silent_makes_a_fill_arrive_without_a_sound_and_warnings_still_ring(
    start_desk: StartDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = await start_desk()
    menu = await desk.say("/notify")

    assert await _press(desk, menu, "Fills: silent") == "Fills: silent"

    await desk.edited(menu, "🔕 Fills: silent")
    assert await _levels(desk) == {Topic.FILL: Loudness.SILENT}
    # the order reaches the paper venue but the answer times out: the outcome is unknown
    # (a warning) until the reconciler finds the fill (a fill)
    place = desk.engine.broker.place_order

    async def timeout(request: OrderRequest) -> Any:
        await place(request)
        raise BrokerAmbiguousError("timed out waiting for the exchange")

    monkeypatch.setattr(desk.engine.broker, "place_order", timeout)
    signal = await desk.propose(stop_loss=None, take_profit=None)
    await desk.answer(desk.tap(await desk.card(signal.id), CardAction.APPROVE))
    unknown = await desk.sandbox.wait_for_message(desk.chat_id, contains="outcome unknown")
    monkeypatch.undo()
    await desk.engine.reconciler.run()

    fill = await desk.sandbox.wait_for_message(desk.chat_id, contains="Reconciled order")
    assert "found at the broker" in fill.plain_text
    assert fill.disable_notification  # fills: silent
    assert not unknown.disable_notification  # a warning with alert priority still rings


async def test_heartbeats_off_sends_no_heartbeat_and_loud_brings_them_back_with_a_sound(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()
    menu = await desk.say("/notify")
    await _press(desk, menu, "Heartbeats: off")
    await desk.edited(menu, "🚫 Heartbeats: off")
    after = desk.sandbox.messages(desk.chat_id)[-1].message_id

    await desk.engine.heartbeat.beat()
    await desk.engine.notifier.notify(Notification(NoticeKind.TEXT, "after the beat"))
    await desk.sandbox.wait_for_message(desk.chat_id, contains="after the beat")
    await desk.drained()

    later = desk.sandbox.messages(desk.chat_id)
    assert [m.plain_text for m in later if m.message_id > after] == ["after the beat"]
    beat = [row for row in await desk.outbox() if row.topic == "heartbeat"][-1]
    assert beat.delivered_at is not None and beat.last_error.startswith("off")

    await _press(desk, menu, "Heartbeats: loud")
    await desk.engine.heartbeat.beat()
    loud = await desk.sandbox.wait_for_message(
        desk.chat_id, contains="SignalDesk alive", after_message_id=after
    )
    assert not loud.disable_notification


async def test_alerts_and_cards_cannot_be_switched_off_by_a_forged_press_nor_by_a_stranger(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(group=True)
    menu = await desk.say("/notify", chat=desk.chat_id)

    for topic in (Topic.ALERT, Topic.CARD):
        data = NotifyCallback(topic=topic, level=Loudness.OFF).pack()
        answer = await desk.answer(forge(desk, desk.chat_id, menu.message_id, data))
        assert answer.text == f"⚠️ {topic} notifications can be silenced but not switched off"
        assert answer.show_alert
    data = _button(menu, "Fills: off")
    refused = await desk.answer(
        desk.sandbox.press_button(desk.chat_id, menu.message_id, data, STRANGER)
    )
    assert refused.text == "Not allowed"
    assert await _levels(desk) == {}  # nothing changed
    assert desk.sandbox.message(desk.chat_id, menu.message_id).plain_text == menu.plain_text


async def test_in_quiet_hours_a_card_arrives_silently_and_a_drawdown_alert_still_rings(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(
        **{**CRASH, "drawdown_action": "pause"},
        quiet_hours="23:00-07:00",
        display_timezone="Europe/Berlin",
    )
    deliverer = desk.app.deliverer
    deliverer.clock = lambda: datetime(2026, 1, 15, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    signal = await desk.propose(quantity=Decimal("0.075"), stop_loss=None, take_profit=None)
    quiet_card = await desk.card(signal.id)
    assert quiet_card.disable_notification  # a routine message in the quiet hours
    await desk.answer(desk.tap(quiet_card, CardAction.APPROVE))

    for _ in range(9):  # the crash replay crosses the warn level
        desk.engine.feed.step()
        await desk.engine.risk.check()
    alert = await desk.sandbox.wait_for_message(OWNER, contains=WARN)
    assert not alert.disable_notification

    deliverer.clock = lambda: datetime(2026, 1, 15, 6, 0, tzinfo=UTC)  # 07:00 in Berlin
    signal = await desk.propose(quantity=Decimal("0.01"), stop_loss=None, take_profit=None)
    assert not (await desk.card(signal.id)).disable_notification
    menu = await desk.say("/notify")
    assert "Quiet hours 23:00-07:00 (Europe/Berlin): routine messages are silent" in (
        menu.plain_text
    )
