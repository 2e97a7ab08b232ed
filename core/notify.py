"""The Notifier port: how services tell the owner things, and its outbox implementation.

Services describe *what* happened (:class:`Notification`); the Telegram face decides how it
looks. :class:`OutboxNotifier` writes each notification to the ``outbox`` table first, so a
message is never lost when Telegram is unreachable or the process that produced it (the
CLI, the webhook) is not the one that delivers it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from core.db.engine import Database
from core.db.models import OutboxRow

__all__ = ["NoticeKind", "Notification", "Notifier", "OutboxNotifier", "Priority"]


class NoticeKind(enum.StrEnum):
    """``signal_card`` posts a new card; ``signal_update`` edits it to the signal's current
    state; ``text`` is a plain message (alerts, fills, reports, heartbeats)."""

    SIGNAL_CARD = "signal_card"
    SIGNAL_UPDATE = "signal_update"
    TEXT = "text"


class Priority(enum.IntEnum):
    """Delivery order: alerts go ahead of routine messages (cards, fills, reports), and
    both ahead of notices (the face's housekeeping: who was refused)."""

    ALERT = 0
    ROUTINE = 1
    NOTICE = 2


@dataclass(frozen=True, slots=True)
class Notification:
    """Something the owner should hear about. ``silent`` sends without a sound
    (Bot API ``disable_notification``)."""

    kind: NoticeKind
    text: str = ""
    signal_id: int | None = None
    priority: Priority = Priority.ROUTINE
    silent: bool = False


class Notifier(Protocol):
    """What services call to tell the owner things. Must not block on Telegram."""

    async def notify(self, notification: Notification) -> None:
        """Queue ``notification`` for delivery."""
        ...


class OutboxNotifier:
    """Writes notifications to the outbox table and wakes an in-process deliverer.

    Args:
        db: the database holding the outbox.
        on_enqueue: called after each committed row (e.g. to set an ``asyncio.Event``);
            deliverers in other processes find the rows by polling.
    """

    def __init__(self, db: Database, on_enqueue: Callable[[], None] | None = None) -> None:
        self._db = db
        self.on_enqueue = on_enqueue

    async def notify(self, notification: Notification) -> None:
        """Insert one outbox row (committed before this returns)."""
        async with self._db.session() as session:
            session.add(
                OutboxRow(
                    kind=notification.kind.value,
                    priority=int(notification.priority),
                    signal_id=notification.signal_id,
                    text=notification.text,
                    silent=notification.silent,
                )
            )
        if self.on_enqueue is not None:
            self.on_enqueue()
