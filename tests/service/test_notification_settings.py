"""The owner's notification levels persist in ``notification_settings`` (SQLite and
PostgreSQL); Off for alerts and cards, or any level for an unconfigurable topic, is refused
and changes nothing; each emitter's outbox row carries its topic."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal

import pytest
from sqlmodel import col, select

from core.app import Engine
from core.db.models import NotificationSettingRow, OutboxRow
from core.domain import Side
from core.errors import InvalidInputError
from core.notify import Loudness, Topic, read_settings, set_level
from core.services import Proposal


async def _levels(engine: Engine) -> dict[Topic, Loudness]:
    return dict((await read_settings(engine.db, None, UTC)).levels)


async def test_levels_persist_and_a_second_choice_replaces_the_first(engine: Engine) -> None:
    assert await _levels(engine) == {}

    await set_level(engine.db, Topic.FILL, Loudness.SILENT)
    await set_level(engine.db, Topic.HEARTBEAT, Loudness.OFF)
    await set_level(engine.db, Topic.FILL, Loudness.OFF)
    await set_level(engine.db, Topic.ALERT, Loudness.SILENT)

    assert await _levels(engine) == {
        Topic.FILL: Loudness.OFF,
        Topic.HEARTBEAT: Loudness.OFF,
        Topic.ALERT: Loudness.SILENT,
    }


@pytest.mark.parametrize(
    ("topic", "level", "error"),
    [
        (Topic.ALERT, Loudness.OFF, "alert notifications can be silenced but not switched off"),
        (Topic.CARD, Loudness.OFF, "card notifications can be silenced but not switched off"),
        (Topic.OTHER, Loudness.SILENT, "notifications of topic other cannot be changed"),
    ],
)
async def test_off_for_alerts_and_cards_is_refused_and_changes_nothing(
    engine: Engine, topic: Topic, level: Loudness, error: str
) -> None:
    with pytest.raises(InvalidInputError, match=error):
        await set_level(engine.db, topic, level)

    assert await _levels(engine) == {}


async def test_a_level_this_version_does_not_know_keeps_the_default(engine: Engine) -> None:
    async with engine.db.session() as session:
        session.add(NotificationSettingRow(topic="fill", level="whisper"))
        session.add(NotificationSettingRow(topic="telepathy", level="off"))

    assert await _levels(engine) == {}


async def test_the_emitters_rows_carry_their_topics(engine: Engine) -> None:
    await engine.heartbeat.beat()
    signal = await engine.signals.propose(Proposal("test", "BTC/USDT", Side.BUY, Decimal("0.01")))

    async with engine.db.session() as session:
        rows = (await session.exec(select(OutboxRow).order_by(col(OutboxRow.id)))).all()
    assert [(row.kind, row.topic, row.signal_id) for row in rows] == [
        ("text", "heartbeat", None),
        ("signal_card", "card", signal.id),
    ]
