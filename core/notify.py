"""The Notifier port: how services tell the owner things, and its outbox implementation.

Services describe *what* happened (:class:`Notification`); the Telegram face decides how it
looks. :class:`OutboxNotifier` writes each notification to the ``outbox`` table first, so a
message is never lost when Telegram is unreachable or the process that produced it (the
CLI, the webhook) is not the one that delivers it.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, tzinfo
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.db.engine import Database
from core.db.models import NotificationSettingRow, OutboxRow
from core.db.types import canonical
from core.domain import ExitReason, Side, utcnow
from core.errors import InvalidInputError

__all__ = [
    "DEFAULT_LEVELS",
    "NEVER_OFF",
    "SETTABLE",
    "Loudness",
    "NoticeKind",
    "NoticeSettings",
    "Notification",
    "Notifier",
    "OutboxNotifier",
    "Priority",
    "QuietHours",
    "Topic",
    "TradeExit",
    "enqueue",
    "from_json",
    "loudness",
    "read_settings",
    "set_level",
    "to_json",
]


class NoticeKind(enum.StrEnum):
    """``signal_card`` posts a new card; ``signal_update`` edits it to the signal's current
    state; ``text`` is a plain message (alerts, fills, reports, heartbeats);
    ``trade_exit`` reports a trade closed or partly closed (its figures are a
    :class:`TradeExit` in the notification's ``payload``); ``flatten_report`` reports
    what the drawdown flatten did (a :class:`core.services.risk.FlattenReport`);
    ``daily_summary`` is the day's results at ``DAILY_SUMMARY_AT`` (a
    :class:`core.services.reports.DailySummary`), a kind of its own so the owner can set
    its loudness apart from other messages."""

    SIGNAL_CARD = "signal_card"
    SIGNAL_UPDATE = "signal_update"
    TEXT = "text"
    TRADE_EXIT = "trade_exit"
    FLATTEN_REPORT = "flatten_report"
    DAILY_SUMMARY = "daily_summary"


class Priority(enum.IntEnum):
    """Delivery order: alerts go ahead of routine messages (cards, fills, reports), and
    both ahead of notices (the face's housekeeping: who was refused)."""

    ALERT = 0
    ROUTINE = 1
    NOTICE = 2


class Topic(enum.StrEnum):
    """What a notification is about; the owner sets how loud each topic is (``/notify``,
    see docs/telegram.md). ``ALERT`` is the drawdown guard's; ``WARNING`` everything else
    that went wrong or needs a look (a missing stop, an unknown order outcome, a foreign
    position, strangers); ``OTHER`` (demo messages, reports of the owner's own commands)
    is not configurable."""

    CARD = "card"
    FILL = "fill"
    EXIT = "exit"
    WARNING = "warning"
    HEARTBEAT = "heartbeat"
    DAILY_SUMMARY = "daily_summary"
    ALERT = "alert"
    OTHER = "other"


class Loudness(enum.StrEnum):
    """How a message is delivered: with a sound, without one (Bot API
    ``disable_notification``), or not at all."""

    LOUD = "loud"
    SILENT = "silent"
    OFF = "off"


#: Topics that can be silenced but never switched off: the drawdown guard's alerts, and
#: cards (a card never shown can never be approved; its signal would silently expire).
NEVER_OFF = frozenset({Topic.CARD, Topic.ALERT})

#: The topics ``/notify`` lists, in its order.
SETTABLE: tuple[Topic, ...] = (
    Topic.CARD,
    Topic.FILL,
    Topic.EXIT,
    Topic.WARNING,
    Topic.HEARTBEAT,
    Topic.DAILY_SUMMARY,
    Topic.ALERT,
)

#: Each topic's level until the owner changes it.
DEFAULT_LEVELS: Mapping[Topic, Loudness] = types.MappingProxyType(
    {topic: Loudness.SILENT if topic is Topic.HEARTBEAT else Loudness.LOUD for topic in Topic}
)

#: The topic of notifications emitted without one, by their kind.
_KIND_TOPICS: Mapping[str, Topic] = {
    NoticeKind.SIGNAL_CARD: Topic.CARD,
    NoticeKind.SIGNAL_UPDATE: Topic.CARD,
    NoticeKind.TRADE_EXIT: Topic.EXIT,
    NoticeKind.FLATTEN_REPORT: Topic.ALERT,
    NoticeKind.DAILY_SUMMARY: Topic.DAILY_SUMMARY,
}


@dataclass(frozen=True, slots=True)
class Notification:
    """Something the owner should hear about. ``topic`` decides how loud it is (the
    owner's ``/notify`` levels and quiet hours, :func:`loudness`); ``None`` takes the
    kind's topic (cards: CARD, trade exits: EXIT, the flatten report: ALERT), else OTHER."""

    kind: NoticeKind
    text: str = ""
    signal_id: int | None = None
    priority: Priority = Priority.ROUTINE
    topic: Topic | None = None
    #: typed figures of the kinds that carry them, as JSON (``TradeExit.to_payload``)
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def resolved_topic(self) -> Topic:
        """``topic``, else the kind's topic, else OTHER."""
        return self.topic or _KIND_TOPICS.get(self.kind, Topic.OTHER)


_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local wall-clock hours ``[start, end)`` when routine messages are silent; they span
    midnight when ``end`` is before ``start`` (23:00-07:00)."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> QuietHours | None:
        """``HH:MM-HH:MM`` (24-hour local times) as quiet hours; empty means none.

        Raises:
            ValueError: not two different ``HH:MM`` times joined by ``-``.
        """
        text = text.strip()
        if not text:
            return None
        first, dash, second = text.partition("-")
        ends = [_HHMM.match(part.strip()) for part in (first, second)]
        if not dash or None in ends:
            raise ValueError("expected HH:MM-HH:MM, e.g. 23:00-07:00")
        start, end = (time(int(m[1]), int(m[2])) for m in ends if m is not None)
        if start == end:
            raise ValueError("start and end must differ")
        return cls(start, end)

    def __contains__(self, local: time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True, slots=True)
class NoticeSettings:
    """The owner's levels per topic (missing topics: :data:`DEFAULT_LEVELS`), the quiet
    hours (``None``: none) and the zone they are read in (``DISPLAY_TIMEZONE``)."""

    levels: Mapping[Topic, Loudness] = field(default_factory=dict)
    quiet: QuietHours | None = None
    zone: tzinfo = UTC

    def level(self, topic: Topic) -> Loudness:
        """The level the owner chose for ``topic`` (or its default)."""
        return self.levels.get(topic, DEFAULT_LEVELS[topic])


def loudness(topic: Topic, priority: Priority, settings: NoticeSettings, now: datetime) -> Loudness:
    """How a message of ``topic`` and ``priority`` is delivered at ``now`` (UTC).

    The owner's level for the topic, with two floors: an alert (``Priority.ALERT``) or a
    topic in :data:`NEVER_OFF` is never OFF (an OFF level reads as SILENT); quiet hours
    (local time in ``settings.zone``) make a LOUD routine message SILENT, never an alert.
    """
    level = settings.level(topic)
    if level is Loudness.OFF and (priority is Priority.ALERT or topic in NEVER_OFF):
        level = Loudness.SILENT
    quiet = settings.quiet
    routine = level is Loudness.LOUD and priority is not Priority.ALERT
    if routine and quiet is not None and now.astimezone(settings.zone).time() in quiet:
        return Loudness.SILENT
    return level


async def read_settings(db: Database, quiet: QuietHours | None, zone: tzinfo) -> NoticeSettings:
    """The owner's levels (table ``notification_settings``) with ``quiet`` hours read in
    ``zone``. Topics never set, or holding a value this version does not know, keep their
    default level."""
    async with db.session() as session:
        rows = (await session.exec(select(NotificationSettingRow))).all()
    topics, levels = {t.value for t in Topic}, {v.value for v in Loudness}
    return NoticeSettings(
        {
            Topic(r.topic): Loudness(r.level)
            for r in rows
            if r.topic in topics and r.level in levels
        },
        quiet,
        zone,
    )


async def set_level(db: Database, topic: Topic, level: Loudness) -> None:
    """Persist ``level`` for ``topic`` (the owner's ``/notify`` choice).

    Raises:
        InvalidInputError: ``topic`` is not settable (OTHER), or ``level`` is OFF for a
            topic in :data:`NEVER_OFF`; nothing changes.
    """
    if topic not in SETTABLE:
        raise InvalidInputError(f"notifications of topic {topic} cannot be changed")
    if level is Loudness.OFF and topic in NEVER_OFF:
        raise InvalidInputError(f"{topic} notifications can be silenced but not switched off")
    async with db.session() as session:
        row = await session.get(NotificationSettingRow, topic.value)
        if row is None:
            session.add(NotificationSettingRow(topic=topic.value, level=level.value))
        else:
            row.level = level.value
            row.updated_at = utcnow()


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


def to_json(value: Any) -> Any:
    """``value`` as JSON-safe data for an outbox payload: dataclasses as dicts of their
    fields, enums as their values, Decimals as exact strings, datetimes in ISO 8601,
    tuples and lists as lists; anything else as it is. :func:`from_json` inverts it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return format(canonical(value), "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (tuple, list)):
        return [to_json(item) for item in value]
    return value


def from_json(kind: Any, data: Any) -> Any:
    """The value of type ``kind`` that :func:`to_json` turned into ``data``: a dataclass
    (its field types read from its annotations), ``X | None``, ``tuple[X, ...]``, an enum,
    Decimal, datetime, or a plain JSON type.

    Raises:
        KeyError, TypeError, ValueError, ArithmeticError: ``data`` does not fit ``kind``.
    """
    if data is None:
        return None
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        [inner] = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return from_json(inner, data)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        return tuple(from_json(item, value) for value in data)
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        hints = typing.get_type_hints(kind)
        return kind(
            **{
                f.name: from_json(hints[f.name], data[f.name])
                for f in dataclasses.fields(kind)
                if f.init and f.name in data
            }
        )
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(data)
    if kind is Decimal:
        return Decimal(data)
    if kind is datetime:
        return datetime.fromisoformat(data)
    return data


def enqueue(session: AsyncSession, notification: Notification) -> None:
    """Add ``notification``'s outbox row to the caller's transaction, so that it commits
    (exactly once) together with the change it reports; a deliverer finds it by polling."""
    session.add(_outbox_row(notification))


#: The outbox's Core INSERT, built once; the columns not given take their defaults.
_INSERT_OUTBOX = insert(OutboxRow.__table__)  # type: ignore[attr-defined]


async def insert_outbox(conn: AsyncConnection, *notifications: Notification) -> None:
    """:func:`enqueue` as a Core INSERT executed now in the transaction of the connection
    ``conn``: one statement for all ``notifications``, their rows in the order given; no
    session, no id read back. Nothing happens without any."""
    if notifications:
        values = [_outbox_values(n) for n in notifications]
        await conn.execute(_INSERT_OUTBOX, values[0] if len(values) == 1 else values)


def _outbox_row(notification: Notification) -> OutboxRow:
    return OutboxRow(**_outbox_values(notification))


def _outbox_values(notification: Notification) -> dict[str, Any]:
    return {
        "kind": notification.kind.value,
        "priority": int(notification.priority),
        "signal_id": notification.signal_id,
        "text": notification.text,
        "topic": notification.resolved_topic.value,
        "payload": notification.payload,
    }


class Notifier(Protocol):
    """What services call to tell the owner things. Must not block on Telegram."""

    async def notify(self, notification: Notification) -> None:
        """Queue ``notification`` for delivery."""
        ...

    def queued(self) -> None:
        """Rows were committed through :func:`enqueue` (in a service's own transaction):
        deliver them now rather than at the next poll."""
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
        self.queued()

    def queued(self) -> None:
        """Wake the in-process deliverer (``on_enqueue``) for rows committed by
        :func:`enqueue`."""
        if self.on_enqueue is not None:
            self.on_enqueue()
