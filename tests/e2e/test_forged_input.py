"""Forged callback data and oversize chat arguments, through the real bot: each gets a plain
answer ("no signal with id ...", the usage line), never "Something went wrong", and nothing
is written."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count

import pytest
from sqlmodel import func, select

from bot.sandbox.models import CallbackQueryRecord
from core.db.models import AuditEventRow, OrderRow, SignalRow
from tests.e2e.conftest import StartDesk
from tests.e2e.support import OWNER, Desk

_forged = count(1)


def forge(desk: Desk, chat_id: int, message_id: int, data: str) -> str:
    """The owner's client sends ``data`` as if a button of the message carried it (a
    modified client can send anything); returns the callback query id."""
    state = desk.sandbox.state
    callback_id = f"forged{next(_forged)}"
    state.callbacks[callback_id] = CallbackQueryRecord(
        id=callback_id,
        chat_id=chat_id,
        message_id=message_id,
        user_id=OWNER,
        data=data,
        pressed_at=datetime.now(UTC),
    )
    message = desk.sandbox.message(chat_id, message_id)
    state.queue_update(
        "callback_query",
        {
            "id": callback_id,
            "from": state.users[OWNER].to_api(),
            "message": state.message_to_api(message),
            "chat_instance": state.chat_chat_instance(chat_id),
            "data": data,
        },
    )
    return callback_id


async def _rows(desk: Desk) -> list[int]:
    async with desk.engine.db.session() as session:
        return [
            (await session.exec(select(func.count()).select_from(model))).one()
            for model in (SignalRow, OrderRow, AuditEventRow)
        ]


FORGED = [
    ("sig:a:" + "9" * 20 + ":0:", "no signal with id 99999999999999999999"),
    ("sig:r:" + "9" * 20 + ":0:", "no signal with id 99999999999999999999"),
    ("sig:a:9223372036854775808:0:", "no signal with id 9223372036854775808"),
    ("sig:a:0:0:", "no signal with id 0"),
    ("sig:r:-7:0:", "no signal with id -7"),
    ("sig:a:424242:0:", "no signal with id 424242"),
    ("sig:h:424242:0:", "no signal with id 424242"),
    ("sig:x:1:0:", "This button is no longer active"),
    ("sig:a:1e309:0:", "This button is no longer active"),
    ("sig:a:1", "This button is no longer active"),  # a card from before card versions
]


@pytest.mark.parametrize(("data", "toast"), FORGED, ids=[f[0][:12] for f in FORGED])
async def test_forged_callback_data_is_answered_not_found_and_changes_nothing(
    start_desk: StartDesk, data: str, toast: str
) -> None:
    desk = await start_desk()
    signal = await desk.propose()
    card = await desk.card(signal.id)
    before = await _rows(desk)

    answer = await desk.answer(forge(desk, card.chat_id, card.message_id, data))

    assert answer.text == toast
    assert await _rows(desk) == before
    assert (await desk.engine.signals.get(signal.id)).status == "PROPOSED"
    assert "Something went wrong" not in " ".join(
        m.plain_text for m in desk.sandbox.messages(desk.chat_id)
    )


async def test_an_oversize_history_count_gets_the_usage_line(start_desk: StartDesk) -> None:
    desk = await start_desk()

    reply = await desk.say("/history " + "9" * 5000)

    assert reply.plain_text.startswith("Usage: /history")
