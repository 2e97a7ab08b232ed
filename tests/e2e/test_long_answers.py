"""Long answers are split, not cut, through the real bot and the sandbox: a 300-position
``/positions`` and a close-all report with 250 failures arrive complete in several
messages of at most 4,096 characters, split at line boundaries, every HTML entity whole
(the sandbox parses each message's HTML as Telegram does and refuses a broken one)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from bot import render
from bot.sandbox import SentMessage
from core.domain import Position
from core.notify import NoticeKind, Notification, Priority
from core.services.trading import CloseReport, CloseResult
from tests.e2e.conftest import StartDesk
from tests.e2e.support import OWNER, Desk

#: "&" and "<" make every row carry HTML entities (``&amp;``, ``&lt;``) that a cut could split.
SYMBOLS = [f"R&D{n:03d}/USDT" for n in range(300)]


def _since(desk: Desk, chat_id: int, after: int) -> list[SentMessage]:
    return [m for m in desk.sandbox.messages(chat_id) if m.message_id > after]


def _assert_whole(messages: list[SentMessage]) -> None:
    """Each message fits, and no row was cut across two messages."""
    for message in messages:
        assert len(message.text) <= render.MAX_MESSAGE  # the HTML as sent
        assert not re.search(r"&[a-z]*$", message.text)  # no entity left open at the end


async def test_a_300_position_positions_arrives_complete_in_several_messages(
    start_desk: StartDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = await start_desk()
    held = [
        Position(s, Decimal("0.5"), Decimal(100), Decimal(101), opened_by_signaldesk=False)
        for s in SYMBOLS
    ]

    async def positions() -> list[Position]:
        return held

    monkeypatch.setattr(desk.engine.broker, "positions", positions)
    after = desk.sandbox.messages(OWNER)[-1].message_id

    await desk.say("/positions")
    await desk.sandbox.wait_for_message(OWNER, contains="Total:", after_message_id=after)

    sent = _since(desk, OWNER, after)
    assert len(sent) > 1
    _assert_whole(sent)
    text = "\n".join(m.plain_text for m in sent)
    assert text.startswith("Open positions (300)")
    named = re.findall(r"^(R&D\d{3}/USDT) long 0\.5", text, flags=re.MULTILINE)
    assert named == SYMBOLS  # every symbol once, in order: nothing cut, nothing "and N more"
    assert "more" not in text
    buttons = [row[0][0] for m in sent for row in m.buttons]
    assert buttons == [f"{s} 25%" for s in SYMBOLS]  # each page's buttons under its rows


async def test_a_close_all_report_with_250_failures_arrives_split_not_cut(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()
    failures = tuple(
        CloseResult(s, error="venue said <insufficient & locked>") for s in SYMBOLS[:250]
    )
    report = render.close_results_text(CloseReport(closes=failures), "@ada")
    after = desk.sandbox.messages(desk.chat_id)[-1].message_id

    # what a confirmed /closeall queues (bot/handlers/control.py), delivered by the outbox
    await desk.engine.notifier.notify(
        Notification(NoticeKind.TEXT, report, priority=Priority.ALERT)
    )
    await desk.sandbox.wait_for_message(
        desk.chat_id, contains="R&D249/USDT", after_message_id=after
    )
    await desk.drained()

    sent = _since(desk, desk.chat_id, after)
    assert len(sent) > 1
    _assert_whole(sent)
    assert "\n".join(m.plain_text for m in sent) == report  # every line, in order, once
    assert all(row.last_error == "" for row in await desk.outbox())  # none refused
