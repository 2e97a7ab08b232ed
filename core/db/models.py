"""SQLModel tables. Money columns are :class:`~core.db.types.Money` (NUMERIC, exact);
datetimes are :class:`~core.db.types.UTCDateTime`. Status columns hold the enum values
of :mod:`core.domain` as text so the database stays readable."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index
from sqlmodel import Field, SQLModel
from sqlmodel.main import SQLModelConfig

from core.db.types import Money, UTCDateTime
from core.domain import ZERO, utcnow

__all__ = [
    "AuditEventRow",
    "ChatAliasRow",
    "EquitySnapshotRow",
    "FillRow",
    "NotificationSettingRow",
    "OperatorStateRow",
    "OrderRow",
    "OutboxRow",
    "PaperAccountRow",
    "PaperOrderRow",
    "PaperPositionRow",
    "SignalCardRow",
    "SignalRow",
    "StrategyStateRow",
    "SymbolCacheRow",
    "TradeRow",
]


class _Table(SQLModel):
    """The tables' base: a row is built by SQLAlchemy or by its constructor, which never
    runs pydantic's validation, so the validator and serializer of each table are built
    only if something asks for them (``model_validate``, ``model_dump``): ~1 MiB resident
    in every process that imports the tables, and never asked for by the engine."""

    model_config = SQLModelConfig(defer_build=True)


def _money(default: Decimal | None = None, *, nullable: bool = False) -> Any:
    return Field(default=default, sa_type=Money, nullable=nullable)


def _when(*, nullable: bool = False, index: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_type=UTCDateTime, nullable=True, index=index)
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False, index=index)


class SignalRow(_Table, table=True):
    """A proposed trade and where it is in the lifecycle (see ``core.domain.SignalStatus``)."""

    __tablename__ = "signals"

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=64)
    symbol: str = Field(max_length=32)
    side: str = Field(max_length=4)
    quantity: Decimal = _money()
    order_type: str = Field(max_length=8)
    limit_price: Decimal | None = _money(nullable=True)
    stop_loss: Decimal | None = _money(nullable=True)
    take_profit: Decimal | None = _money(nullable=True)
    reference_price: Decimal = _money()
    note: str = Field(default="", max_length=500)
    status: str = Field(max_length=16, index=True)
    status_reason: str = Field(default="", max_length=500)
    decided_by: str = Field(default="", max_length=128)
    decided_at: datetime | None = _when(nullable=True)
    created_at: datetime = _when()
    expires_at: datetime = _when()
    updated_at: datetime = _when()
    trail_pct: Decimal | None = _money(nullable=True)
    breakeven_at_r: Decimal | None = _money(nullable=True)
    #: bumped by every edit of the pending signal; an Approve button carries the version
    #: it was rendered with, and approval refuses another one
    card_version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class SignalCardRow(_Table, table=True):
    """Where a signal's card was posted, so it can be edited in place."""

    __tablename__ = "signal_cards"

    signal_id: int = Field(foreign_key="signals.id", primary_key=True)
    #: Telegram chat ids exceed 32 bits (supergroups: -100XXXXXXXXXX)
    chat_id: int = Field(sa_type=BigInteger, primary_key=True)
    message_id: int
    #: ``text`` (sendMessage) or ``photo`` (sendPhoto with the card as caption): edits
    #: use editMessageText or editMessageCaption accordingly
    kind: str = Field(default="text", max_length=8, sa_column_kwargs={"server_default": "text"})


class ChatAliasRow(_Table, table=True):
    """A chat that moved: Telegram upgraded group ``old_chat_id`` to the supergroup
    ``new_chat_id`` (Bot API error parameter ``migrate_to_chat_id``). Messages meant for
    the old id go to the new one, also after a restart."""

    __tablename__ = "chat_aliases"

    old_chat_id: int = Field(
        sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    new_chat_id: int = Field(sa_type=BigInteger)
    migrated_at: datetime = _when()


class OrderRow(_Table, table=True):
    """An order SignalDesk sent (or is about to send). Written SUBMITTED before the broker
    is called; ``client_order_id`` is unique, so an order can never be recorded twice."""

    __tablename__ = "orders"

    id: int | None = Field(default=None, primary_key=True)
    client_order_id: str = Field(max_length=64, unique=True)
    signal_id: int | None = Field(default=None, foreign_key="signals.id", index=True)
    #: open (a signal's entry) | close (manual, close all, flatten) | stop_loss | take_profit
    purpose: str = Field(default="open", max_length=16)
    trade_id: int | None = Field(default=None, foreign_key="trades.id", index=True)
    symbol: str = Field(max_length=32)
    side: str = Field(max_length=4)
    quantity: Decimal = _money()
    order_type: str = Field(max_length=16)
    limit_price: Decimal | None = _money(nullable=True)
    state: str = Field(max_length=16, index=True)
    broker_order_id: str = Field(default="", max_length=128)
    filled_quantity: Decimal = _money(ZERO)
    average_price: Decimal | None = _money(nullable=True)
    fee: Decimal = _money(ZERO)
    fee_currency: str = Field(default="", max_length=16)
    error: str = Field(default="", max_length=500)
    resubmitted: bool = False
    created_at: datetime = _when()
    updated_at: datetime = _when()
    trigger_price: Decimal | None = _money(nullable=True)
    reduce_only: bool = False
    position_ref: str = Field(default="", max_length=64)
    exit_reason: str = Field(default="", max_length=32)


class FillRow(_Table, table=True):
    """One execution of an order, as reported by the broker."""

    __tablename__ = "fills"
    __table_args__ = (Index("ix_fills_order_broker_fill", "order_id", "broker_fill_id"),)

    id: int | None = Field(default=None, primary_key=True)
    order_id: int = Field(foreign_key="orders.id")
    trade_id: int | None = Field(default=None, foreign_key="trades.id", index=True)
    client_order_id: str = Field(max_length=64)
    symbol: str = Field(max_length=32, index=True)
    side: str = Field(max_length=4)
    quantity: Decimal = _money()
    price: Decimal = _money()
    fee: Decimal = _money(ZERO)
    fee_currency: str = Field(default="", max_length=16)
    broker_fill_id: str = Field(default="", max_length=128)
    at: datetime = _when()


class AuditEventRow(_Table, table=True):
    """Append-only trail: who did what, when, from which state to which, and why."""

    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _when(index=True)
    actor: str = Field(max_length=128)
    action: str = Field(max_length=32, index=True)
    signal_id: int | None = Field(default=None, foreign_key="signals.id", index=True)
    order_id: int | None = Field(default=None, foreign_key="orders.id")
    from_status: str = Field(default="", max_length=16)
    to_status: str = Field(default="", max_length=16)
    reason: str = Field(default="", max_length=500)


class TradeRow(_Table, table=True):
    """A position SignalDesk opened from a signal (see :class:`core.domain.Trade` for the
    units): entry and exit averages, the open quantity, realized PnL and fees in quote
    currency, the live protective levels and where they live, and why it closed."""

    __tablename__ = "trades"

    id: int | None = Field(default=None, primary_key=True)
    signal_id: int | None = Field(default=None, foreign_key="signals.id", index=True)
    symbol: str = Field(max_length=32, index=True)
    side: str = Field(max_length=4)
    status: str = Field(default="OPEN", max_length=8, index=True)
    quantity: Decimal = _money(ZERO)
    quantity_open: Decimal = _money(ZERO)
    average_entry: Decimal = _money(ZERO)
    average_exit: Decimal | None = _money(nullable=True)
    quantity_closed: Decimal = _money(ZERO)
    realized_pnl: Decimal = _money(ZERO)
    fees: Decimal = _money(ZERO)
    initial_risk: Decimal | None = _money(nullable=True)
    stop_loss: Decimal | None = _money(nullable=True)
    take_profit: Decimal | None = _money(nullable=True)
    trail_pct: Decimal | None = _money(nullable=True)
    breakeven_at_r: Decimal | None = _money(nullable=True)
    #: best price since entry (highest for a long, lowest for a short): the trailing anchor
    extreme_price: Decimal | None = _money(nullable=True)
    exit_style: str = Field(default="watched", max_length=16)
    exit_reason: str = Field(default="", max_length=32)
    position_ref: str = Field(default="", max_length=64)
    #: bumped on every change of the protective levels (compare-and-set for trailing moves)
    version: int = 0
    opened_at: datetime = _when()
    closed_at: datetime | None = _when(nullable=True)
    updated_at: datetime = _when()


class EquitySnapshotRow(_Table, table=True):
    """Account equity over time (quote currency), written by the drawdown checks."""

    __tablename__ = "equity_snapshots"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _when(index=True)
    balance: Decimal = _money()
    equity: Decimal = _money()
    peak_equity: Decimal = _money()
    drawdown_pct: Decimal = _money()


class OperatorStateRow(_Table, table=True):
    """The single row (id 1) of state that must survive restarts: the trading state (and
    why, by whom, since when it was stopped), high-water mark, day-start equity, the
    drawdown breach, and this installation's client-id tag. Only
    ``core.services.gate.Gate`` writes ``trading_state``."""

    __tablename__ = "operator_state"

    id: int = Field(default=1, primary_key=True)
    instance_tag: str = Field(max_length=8)
    pause_reason: str = Field(default="", max_length=500)
    paused_by: str = Field(default="", max_length=128)
    paused_at: datetime | None = _when(nullable=True)
    peak_equity: Decimal | None = _money(nullable=True)
    day_start_equity: Decimal | None = _money(nullable=True)
    day_start_date: str = Field(default="", max_length=10)
    breach_level: str = Field(default="", max_length=16)  # "", warn, max
    breach_at: datetime | None = _when(nullable=True)
    replay_anchor_at: datetime | None = _when(nullable=True)
    #: core.domain.TradingState; the pre-trade gate re-reads it inside every approval
    trading_state: str = Field(default="ACTIVE", max_length=16)


class OutboxRow(_Table, table=True):
    """A message for the owner, written before it is delivered (the outbox).

    ``priority`` 0 is an alert (delivered first), 1 routine. ``kind`` says how the face
    renders it: ``signal_card``, ``signal_update`` (edit the card), ``text``. ``topic``
    (``core.notify.Topic``) decides how loud it is at delivery, and ``silent`` records
    how it went out (Bot API ``disable_notification``).
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "delivered_at", "priority", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    priority: int = 1
    signal_id: int | None = Field(default=None, foreign_key="signals.id")
    text: str = Field(default="")
    silent: bool = False
    topic: str = Field(default="other", max_length=16)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _when()
    delivered_at: datetime | None = _when(nullable=True)
    attempts: int = 0
    last_error: str = Field(default="", max_length=500)


class NotificationSettingRow(_Table, table=True):
    """The owner's choice of how loud one notification topic is (``/notify``): ``topic``
    and ``level`` are ``core.notify.Topic`` and ``core.notify.Loudness`` values; a topic
    without a row has its default level."""

    __tablename__ = "notification_settings"

    topic: str = Field(primary_key=True, max_length=16)
    level: str = Field(max_length=8)
    updated_at: datetime = _when()


class PaperAccountRow(_Table, table=True):
    """The paper broker's cash balance (quote currency). ``seq`` is bumped first in every
    paper transaction so that writers serialize on this row, on SQLite and PostgreSQL."""

    __tablename__ = "paper_account"

    id: int = Field(default=1, primary_key=True)
    currency: str = Field(max_length=16)
    balance: Decimal = _money()
    seq: int = 0


class PaperOrderRow(_Table, table=True):
    """An order as the paper broker's own ledger records it."""

    __tablename__ = "paper_orders"

    id: int | None = Field(default=None, primary_key=True)
    client_order_id: str = Field(max_length=64, unique=True)
    symbol: str = Field(max_length=32)
    side: str = Field(max_length=4)
    quantity: Decimal = _money()
    order_type: str = Field(max_length=16)
    limit_price: Decimal | None = _money(nullable=True)
    state: str = Field(max_length=16, index=True)
    placed_candle_at: datetime = _when()
    fill_price: Decimal | None = _money(nullable=True)
    fee: Decimal = _money(ZERO)
    created_at: datetime = _when()
    filled_at: datetime | None = _when(nullable=True)
    #: the level of a STOP / TAKE_PROFIT order (quote currency)
    trigger_price: Decimal | None = _money(nullable=True)
    #: base quantity filled when a reduce-only trigger was capped at what was held;
    #: None means the whole ``quantity`` (every other fill)
    fill_quantity: Decimal | None = _money(nullable=True)


class PaperPositionRow(_Table, table=True):
    """The paper ledger's net position per symbol: signed base quantity, average entry
    (quote) and realized PnL (quote, before fees)."""

    __tablename__ = "paper_positions"

    symbol: str = Field(primary_key=True, max_length=32)
    quantity: Decimal = _money(ZERO)
    average_entry: Decimal = _money(ZERO)
    realized_pnl: Decimal = _money(ZERO)


class StrategyStateRow(_Table, table=True):
    """What must survive a restart about one strategy instance (by its name in the
    strategies file): paused by the owner, and its last run and last signal."""

    __tablename__ = "strategy_state"

    name: str = Field(primary_key=True, max_length=64)
    paused: bool = False
    paused_by: str = Field(default="", max_length=128)
    updated_at: datetime | None = _when(nullable=True)
    last_run_at: datetime | None = _when(nullable=True)
    last_signal_id: int | None = None
    last_signal_at: datetime | None = _when(nullable=True)


class SymbolCacheRow(_Table, table=True):
    """One market listed by a market-data source (``source`` = its name, ``ccxt:binance``),
    cached for symbol search; ``fetched_at`` is when the list was read (UTC)."""

    __tablename__ = "symbol_cache"

    source: str = Field(primary_key=True, max_length=64)
    symbol: str = Field(primary_key=True, max_length=64)
    base: str = Field(max_length=32)
    quote: str = Field(max_length=32)
    kind: str = Field(max_length=16)
    price_tick: Decimal = _money()
    quantity_step: Decimal = _money()
    min_quantity: Decimal = _money()
    min_notional: Decimal = _money()
    contract_size: Decimal = _money()
    fetched_at: datetime = _when()
