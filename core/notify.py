"""The Notifier port: how services tell the owner things, and its outbox implementation.

Services describe *what* happened (:class:`Notification`); the Telegram face decides how it
looks. :class:`OutboxNotifier` writes each notification to the ``outbox`` table first, so a
message is never lost when Telegram is unreachable or the process that produced it (the
CLI, the webhook) is not the one that delivers it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlmodel.ext.asyncio.session import AsyncSession

from core.db.engine import Database
from core.db.models import OutboxRow
from core.db.types import canonical
from core.domain import ExitReason, Side

__all__ = [
    "NoticeKind",
    "Notification",
    "Notifier",
    "OutboxNotifier",
    "Priority",
    "TradeExit",
    "enqueue",
]


class NoticeKind(enum.StrEnum):
    """``signal_card`` posts a new card; ``signal_update`` edits it to the signal's current
    state; ``text`` is a plain message (alerts, fills, reports, heartbeats);
    ``trade_exit`` reports a trade closed or partly closed (its figures are a
    :class:`TradeExit` in the notification's ``payload``)."""

    SIGNAL_CARD = "signal_card"
    SIGNAL_UPDATE = "signal_update"
    TEXT = "text"
    TRADE_EXIT = "trade_exit"


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
    #: typed figures of the kinds that carry them, as JSON (``TradeExit.to_payload``)
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TradeExit:
    """One exit of a trade: ``closed_quantity`` base units left it at ``exit_price``
    (quote) because of ``reason``. ``closed`` is True when nothing is left open.

    The trade's totals so far: ``average_entry`` and ``average_exit`` (quote), the
    ``realized_pnl`` of everything closed so far before fees, every entry and exit
    ``fees`` (both quote currency, ``currency``), ``r_multiple`` = (realized - fees) /
    initial risk (None without an initial stop). ``side`` is the entry side (BUY: a
    long); ``quantity`` the trade's whole size, ``quantity_open`` what remains (base
    units). ``exit_style`` says where the exit lived. Times are UTC.
    """

    trade_id: int
    symbol: str
    side: Side
    quantity: Decimal
    quantity_open: Decimal
    closed_quantity: Decimal
    exit_price: Decimal
    average_entry: Decimal
    average_exit: Decimal
    realized_pnl: Decimal
    fees: Decimal
    r_multiple: Decimal | None
    reason: ExitReason
    opened_at: datetime
    at: datetime
    currency: str = ""
    exit_style: str = ""

    @property
    def closed(self) -> bool:
        """True when this exit closed the trade."""
        return self.quantity_open == 0

    @property
    def net_pnl(self) -> Decimal:
        """Realized PnL after fees, quote currency."""
        return self.realized_pnl - self.fees

    def to_payload(self) -> dict[str, Any]:
        """JSON-safe form (Decimals and datetimes as strings) for the outbox row."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, Decimal):
                value = format(canonical(value), "f")
            out[name] = value
        return out

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> TradeExit:
        """The inverse of :meth:`to_payload`. Raises KeyError/ValueError when malformed."""
        r = payload["r_multiple"]
        return cls(
            trade_id=int(payload["trade_id"]),
            symbol=payload["symbol"],
            side=Side(payload["side"]),
            quantity=Decimal(payload["quantity"]),
            quantity_open=Decimal(payload["quantity_open"]),
            closed_quantity=Decimal(payload["closed_quantity"]),
            exit_price=Decimal(payload["exit_price"]),
            average_entry=Decimal(payload["average_entry"]),
            average_exit=Decimal(payload["average_exit"]),
            realized_pnl=Decimal(payload["realized_pnl"]),
            fees=Decimal(payload["fees"]),
            r_multiple=None if r is None else Decimal(r),
            reason=ExitReason(payload["reason"]),
            opened_at=datetime.fromisoformat(payload["opened_at"]),
            at=datetime.fromisoformat(payload["at"]),
            currency=payload.get("currency", ""),
            exit_style=payload.get("exit_style", ""),
        )

    def notification(self) -> Notification:
        """The ``trade_exit`` notification carrying these figures."""
        return Notification(NoticeKind.TRADE_EXIT, payload=self.to_payload())


def enqueue(session: AsyncSession, notification: Notification) -> None:
    """Add ``notification``'s outbox row to the caller's transaction, so that it commits
    (exactly once) together with the change it reports; a deliverer finds it by polling."""
    session.add(_outbox_row(notification))


def _outbox_row(notification: Notification) -> OutboxRow:
    return OutboxRow(
        kind=notification.kind.value,
        priority=int(notification.priority),
        signal_id=notification.signal_id,
        text=notification.text,
        silent=notification.silent,
        payload=notification.payload,
    )


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
            enqueue(session, notification)
        if self.on_enqueue is not None:
            self.on_enqueue()
