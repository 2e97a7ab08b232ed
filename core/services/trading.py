"""TradingService: executes approved signals and runs the account (positions, closes,
pause/resume, status) through the broker port.

Exactly-once orders (docs/architecture.md): the order row, with its client order id and state
SUBMITTED, is committed *before* the broker is called. A temporary error (by the broker
port's contract, the request had no effect) is retried a few times under the same client
order id; a permanent refusal, or temporary errors that outlast the retries, mark the
order FAILED; any other failure (an ambiguous timeout, a crash) leaves it UNKNOWN for the
reconciler, which looks it up by client order id. Nothing ambiguous is ever retried here.
"""

from __future__ import annotations

import asyncio
import functools
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Row, bindparam, insert, update
from sqlalchemy import select as select_rows
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningUpdate
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.brokers.base import Broker, retry_temporary
from core.config import Settings
from core.db import repositories as repo
from core.db.engine import Database
from core.db.models import FillRow, OperatorStateRow, OrderRow, SignalRow
from core.db.types import canonical
from core.domain import (
    ZERO,
    Account,
    ExitReason,
    ExitStyle,
    OrderReport,
    OrderRequest,
    OrderState,
    Position,
    Signal,
    SignalStatus,
    Trade,
    TradingState,
    can_transition,
    utcnow,
)
from core.errors import (
    BrokerError,
    BrokerPermanentError,
    BrokerTemporaryError,
    InvalidInputError,
    NotFoundError,
    OrderNotFoundError,
    SignalDeskError,
)
from core.notify import (
    NoticeKind,
    Notification,
    Notifier,
    Priority,
    Topic,
    insert_outbox,
)
from core.services.gate import BREACH_MAX, Gate, owns
from core.services.trades import (
    NewFill,
    TradeEvent,
    TradeEventKind,
    TradeService,
    fee_in_quote,
)

__all__ = [
    "CancelResult",
    "CloseAmount",
    "ClosePlan",
    "CloseReport",
    "CloseResult",
    "OperatorStatus",
    "PositionView",
    "RestingOrder",
    "StatusSummary",
    "TradingService",
    "realized_pnl",
    "symbol_key",
]

HUNDRED = Decimal(100)

#: A signal's order row (:meth:`TradingService.submit`), one Core INSERT built once: no
#: unit of work, its id is not needed (the order is known by its client order id).
_INSERT_ORDER = insert(OrderRow.__table__)  # type: ignore[attr-defined]
#: The fills' Core INSERT, built once.
_INSERT_FILL = insert(FillRow.__table__)  # type: ignore[attr-defined]
#: The columns a new fill row is inserted with (its id is drawn by the database).
_FILL_COLUMNS = tuple(c.key for c in FillRow.__table__.columns if c.key != "id")  # type: ignore[attr-defined]

_SIGNALS = SignalRow.__table__  # type: ignore[attr-defined]
_ORDERS = OrderRow.__table__  # type: ignore[attr-defined]
#: Lock the order rows with client order ids ``cids`` (an expanding parameter), the first
#: write of a recording of several orders.
_TOUCH_ORDERS = (
    update(_ORDERS)
    .where(_ORDERS.c.client_order_id.in_(bindparam("cids", expanding=True)))
    .values(updated_at=bindparam("now"))
)
#: A signal's columns by id (``signal_id``), as a plain row (no ORM object).
_READ_SIGNAL = select_rows(_SIGNALS).where(_SIGNALS.c.id == bindparam("signal_id"))
#: Settle a SUBMITTED signal (compare-and-set ``cas_id`` from SUBMITTED) and return its
#: columns as written: the recording's common case in one statement, no read.
_SETTLE_SUBMITTED = (
    update(_SIGNALS)
    .where(_SIGNALS.c.id == bindparam("cas_id"), _SIGNALS.c.status == SignalStatus.SUBMITTED.value)
    .values(
        status=bindparam("v_status"),
        status_reason=bindparam("v_status_reason"),
        updated_at=bindparam("v_updated_at"),
    )
    .returning(*_SIGNALS.c)
)

#: The (order id, broker fill id) of the fills of the orders ``ids`` (an expanding
#: parameter), built once.
_KNOWN_FILLS = select(FillRow.order_id, FillRow.broker_fill_id).where(
    col(FillRow.order_id).in_(bindparam("ids", expanding=True))
)


@functools.cache
def _write_order_statement(names: tuple[str, ...]) -> ReturningUpdate[Any]:
    """``UPDATE orders SET <names> WHERE client_order_id = :cid RETURNING orders.*`` with
    each value as the parameter ``v_<name>``, built once per set of columns written
    (a handful: a report's, a failure's): a Core statement, the row comes back as a plain
    row (no ORM object)."""
    return (
        update(_ORDERS)
        .where(_ORDERS.c.client_order_id == bindparam("cid"))
        .values({name: bindparam(f"v_{name}") for name in names})
        .returning(*_ORDERS.c)
    )


#: Order purposes (``orders.purpose``): a signal's entry, a close, the protective exits.
ENTRY = "open"
CLOSE = "close"
PROTECTIVE = frozenset({"stop_loss", "take_profit"})


@dataclass(frozen=True, slots=True)
class CloseAmount:
    """How much of a position to close: all of it (both fields None), ``percent`` of it
    (0 < percent <= 100) or ``quantity`` base units (0 < quantity <= held)."""

    percent: Decimal | None = None
    quantity: Decimal | None = None

    @classmethod
    def parse(cls, text: str) -> CloseAmount:
        """``""`` (all), ``50%`` (a percent) or ``0.01`` (base units).

        Raises:
            InvalidInputError: not a number, zero or negative, or a percent above 100.
        """
        text = text.strip()
        if not text:
            return cls()
        is_percent = text.endswith("%")
        number = text[:-1].strip() if is_percent else text
        try:
            value = Decimal(number)
        except InvalidOperation:
            raise InvalidInputError(
                f"{text!r} is not an amount: give a percent (50%) or a quantity (0.01)"
            ) from None
        if not value.is_finite() or value <= 0:
            raise InvalidInputError(f"the amount must be above zero, got {text}")
        if is_percent:
            if value > HUNDRED:
                raise InvalidInputError(f"at most 100% of a position can be closed, got {text}")
            return cls() if value == HUNDRED else cls(percent=value)
        return cls(quantity=value)

    @property
    def whole(self) -> bool:
        """True when the whole position is closed."""
        return self.percent is None and self.quantity is None

    def text(self) -> str:
        """The amount as :meth:`parse` reads it back (``""`` for all)."""
        if self.percent is not None:
            return f"{canonical(self.percent)}%"
        return "" if self.quantity is None else format(canonical(self.quantity), "f")

    def of(self, position: Position) -> Decimal | None:
        """Base units to close of ``position``; None for all of it.

        Raises:
            InvalidInputError: a quantity above what the position holds.
        """
        held = abs(position.quantity)
        if self.percent is not None:
            return held * self.percent / HUNDRED
        if self.quantity is None or self.quantity == held:
            return None
        if self.quantity > held:
            raise InvalidInputError(
                f"{position.symbol}: cannot close {canonical(self.quantity)}, "
                f"the position holds {canonical(held)}"
            )
        return self.quantity


@dataclass(frozen=True, slots=True)
class CloseResult:
    """Outcome of closing one position: ``report`` when an order was placed, ``error`` (a
    user-facing line) when it failed; both empty when there was nothing to close.

    ``net_pnl`` is the realized PnL after fees (quote currency) from the trade record:
    the closed trades' net PnL so far (realized less every entry and exit fee, the figure
    their exit message shows); for a position SignalDesk did not open, the fill against
    the broker's entry less the close's fee. None without a fill. ``partial`` is True when part
    of the position stays open; ``position_ref`` names the ticket on per-ticket venues.
    """

    symbol: str
    report: OrderReport | None = None
    error: str = ""
    net_pnl: Decimal | None = None
    partial: bool = False
    position_ref: str = ""

    @property
    def ok(self) -> bool:
        """True unless the close failed."""
        return not self.error


@dataclass(frozen=True, slots=True)
class CancelResult:
    """Outcome of cancelling one resting order. ``report`` is the final report (CANCELLED,
    or FILLED when it filled before the cancel arrived); ``error`` a user-facing line when
    the cancel failed. ``purpose`` is the order's (``open`` for a signal's entry)."""

    client_order_id: str
    symbol: str
    purpose: str = ENTRY
    signal_id: int | None = None
    report: OrderReport | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        """True unless the cancel failed."""
        return not self.error


@dataclass(frozen=True, slots=True)
class CloseReport:
    """What a close (one symbol, close all, the drawdown flatten) did, in order: the resting
    entry orders it cancelled first, each close, then the protective exits it cancelled
    once their position was closed. ``left_open`` lists positions SignalDesk did not open,
    left untouched; ``error`` is set when the positions could not be read (nothing done).
    """

    cancelled: tuple[CancelResult, ...] = ()
    closes: tuple[CloseResult, ...] = ()
    exits_cancelled: tuple[CancelResult, ...] = ()
    left_open: tuple[Position, ...] = ()
    error: str = ""

    @property
    def ok(self) -> bool:
        """True when positions were read and every cancel and close succeeded."""
        steps: tuple[CancelResult | CloseResult, ...] = (
            *self.cancelled,
            *self.closes,
            *self.exits_cancelled,
        )
        return not self.error and all(step.ok for step in steps)

    @property
    def net_pnl(self) -> Decimal:
        """Sum of the closes' net PnL (quote currency, after fees; see CloseResult)."""
        return sum((c.net_pnl for c in self.closes if c.net_pnl is not None), ZERO)


@dataclass(frozen=True, slots=True)
class RestingOrder:
    """A resting order at the venue joined with our order row: ``purpose`` (``open``,
    ``close``, ``stop_loss``, ``take_profit``; ``""`` for an order SignalDesk did not
    place), the ``signal_id`` of an entry and the ``trade_id`` of an exit."""

    report: OrderReport
    purpose: str = ""
    signal_id: int | None = None
    trade_id: int | None = None

    @property
    def ours(self) -> bool:
        """True for an order SignalDesk placed."""
        return bool(self.purpose)

    @property
    def is_entry(self) -> bool:
        """True for a signal's resting entry order (adds risk)."""
        return self.purpose == ENTRY

    @property
    def is_protective(self) -> bool:
        """True for a stop loss or take profit order (reduces risk)."""
        return self.purpose in PROTECTIVE


@dataclass(frozen=True, slots=True)
class PositionView:
    """One line of ``/positions``: the broker's ``position`` with the entry from our own
    fills (the open trades' average entry; the broker's only for an ``external``
    position), the unrealized PnL at the mark from that entry (quote), the live stop loss
    and take profit of the trade record (quote) and where the exits live
    (``exit_style``; None when nothing protects the position)."""

    position: Position
    entry: Decimal
    unrealized_pnl: Decimal
    external: bool
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    exit_style: ExitStyle | None = None

    @property
    def quantity(self) -> Decimal:
        """Base units held (unsigned)."""
        return abs(self.position.quantity)


@dataclass(frozen=True, slots=True)
class OperatorStatus:
    """Persisted operator state: the trading state (the gate decides on it alone), why and
    by whom it was stopped, the high-water mark (quote) and the breach level (``""``,
    ``warn``, ``max``; information)."""

    trading_state: TradingState
    pause_reason: str
    paused_by: str
    paused_at: datetime | None
    peak_equity: Decimal | None
    day_start_equity: Decimal | None
    breach_level: str

    @property
    def paused(self) -> bool:
        """True unless trading is ACTIVE (HALTED by a pause or a breach, or REDUCING)."""
        return self.trading_state is not TradingState.ACTIVE

    @property
    def breached(self) -> bool:
        """True while a max drawdown breach stands (only a confirmed resume clears it)."""
        return self.breach_level == BREACH_MAX


@dataclass(frozen=True, slots=True)
class StatusSummary:
    """What ``/status`` and ``signaldesk status`` show. ``drawdown_pct`` is percent below
    the high-water mark (None before the first equity reading)."""

    broker: str
    account: Account | None
    broker_error: str
    positions: list[Position]
    pending_signals: int
    operator: OperatorStatus

    @property
    def drawdown_pct(self) -> Decimal | None:
        """(1 - equity / peak) x 100, or None without both figures."""
        peak = self.operator.peak_equity
        if self.account is None or not peak:
            return None
        return max((1 - self.account.equity / peak) * 100, ZERO)


def _operator_status(row: OperatorStateRow) -> OperatorStatus:
    return OperatorStatus(
        trading_state=TradingState(row.trading_state),
        pause_reason=row.pause_reason,
        paused_by=row.paused_by,
        paused_at=row.paused_at,
        peak_equity=row.peak_equity,
        day_start_equity=row.day_start_equity,
        breach_level=row.breach_level,
    )


class TradingService:
    """Executes orders and runs the account. Every method may be called concurrently.

    Args:
        db: the database.
        broker: where orders go.
        notifier: tells the owner about fills, failures, pauses.
        clock: current UTC time (injectable).
        trades: the trade record that every recorded fill updates (default: a netting
            :class:`TradeService` on ``db``).
    """

    def __init__(
        self,
        db: Database,
        broker: Broker,
        notifier: Notifier,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
        trades: TradeService | None = None,
    ) -> None:
        self._db = db
        self.broker = broker
        self._notifier = notifier
        self._settings = settings
        self._clock = clock
        #: The one owner of the trading state and the pre-trade check.
        self.gate = Gate(db, broker, settings, clock)
        #: Called (without awaiting anything) after every recorded report carrying fills;
        #: the drawdown guard sets it to check after every fill. Must not block.
        self.on_fill: Callable[[], None] | None = None
        self.trades = trades or TradeService(db, clock=clock)
        #: Awaited after every recorded report that changed trades (opened, grown,
        #: reduced, closed); the exit service sets it to place, resize or cancel the
        #: protective exits (one-cancels-other).
        self.on_trades: Callable[[Sequence[TradeEvent]], Awaitable[None]] | None = None
        self._tag: str | None = None

    # --- execution ------------------------------------------------------------------------

    async def client_order_id(self, signal_id: int) -> str:
        """The client order id of ``signal_id``'s order, ``sd<tag>-s<signal id>``; the
        database's tag never changes, so it is read once (in a session of its own)."""
        if self._tag is None:
            async with self._db.session() as session:
                return f"sd{await self._instance_tag(session)}-s{signal_id}"
        return f"sd{self._tag}-s{signal_id}"

    async def submit(
        self, conn: AsyncConnection, signal: Signal, client_order_id: str
    ) -> OrderRequest:
        """In the caller's approving transaction (on the connection ``conn``), once the
        signal is SUBMITTED (see ``SignalService.approve``): insert its order row (state
        SUBMITTED, client order id from :meth:`client_order_id`). Once the transaction
        commits, pass the returned request to :meth:`send`."""
        now = self._clock()
        await conn.execute(
            _INSERT_ORDER,
            {
                "client_order_id": client_order_id,
                "signal_id": signal.id,
                "symbol": signal.symbol,
                "side": signal.side.value,
                "quantity": signal.quantity,
                "order_type": signal.order_type.value,
                "limit_price": signal.limit_price,
                "state": OrderState.SUBMITTED.value,
                "created_at": now,
                "updated_at": now,
            },
        )
        return OrderRequest(
            client_order_id=client_order_id,
            symbol=signal.symbol,
            side=signal.side,
            quantity=signal.quantity,
            order_type=signal.order_type,
            limit_price=signal.limit_price,
            stop_loss=signal.stop_loss,
            take_profit=signal.take_profit,
        )

    async def send(
        self, request: OrderRequest, signal_id: int, actor: str
    ) -> tuple[Signal, OrderReport | None]:
        """Send a submitted order (its row is committed) and record the outcome.

        Returns the signal in its new state (FILLED, SUBMITTED for a resting limit order,
        FAILED or UNKNOWN) and the broker's report (None when the outcome is unknown or
        nothing was placed). The outcome, the signal's state and the card update are
        written in one transaction.
        """
        report: OrderReport | None = None
        cid = request.client_order_id
        try:
            report = await retry_temporary(lambda: self.broker.place_order(request))
        except (BrokerPermanentError, BrokerTemporaryError) as exc:  # nothing was placed
            final = await self.record_failure(cid, OrderState.FAILED, str(exc), actor, card=True)
        except (BrokerError, OSError, TimeoutError) as exc:
            final = await self.record_failure(cid, OrderState.UNKNOWN, str(exc), actor, card=True)
        else:
            final = await self.record_report(report, actor, card=True)
        assert final is not None and final.id == signal_id
        return final, report

    async def _instance_tag(self, session: AsyncSession) -> str:
        """This database's client-order-id tag; it never changes, so it is read once."""
        if self._tag is None:
            self._tag = (await repo.load_operator_state(session)).instance_tag
        return self._tag

    async def record_report(
        self, report: OrderReport, actor: str, *, card: bool = False
    ) -> Signal | None:
        """Adopt one broker report (:meth:`record_reports`); returns the order's signal as
        recorded (None for an order without one).

        Raises:
            SignalDeskError: no order has the report's client order id.
        """
        [settled] = await self.record_reports([report], actor, card=card)
        return settled

    async def record_reports(
        self, reports: Sequence[OrderReport], actor: str, *, card: bool = False
    ) -> list[Signal | None]:
        """Adopt broker reports for orders of ours, all in one transaction: each order's
        state and fills, its signal's status (FILLED when filled, FAILED when cancelled or
        rejected), the trade record (:meth:`TradeService.apply_batch`) with its exit
        notifications, and with ``card`` each signal's card update; then ``on_fill`` once
        and ``on_trades`` once with every trade event. Idempotent: concurrent calls for one
        order serialize on its row (written before anything else of it is read; several
        orders are locked first in client order id order, so two batches cannot deadlock)
        and a known fill is skipped, so a fill counts once in its trade.

        Returns each report's signal as recorded, in the order of ``reports``.

        Raises:
            SignalDeskError: no order has a report's client order id.
        """
        if not reports:
            return []
        now = self._clock()
        async with self._db.engine.begin() as conn:  # Core statements only: no session
            orders = await self._write_orders(conn, reports, now)
            known = await self._known_fills(conn, orders, reports)
            settled = [
                await self._settle(conn, order, report.state, actor, report.reason)
                for report, order in zip(reports, orders, strict=True)
            ]
            fills = [
                self._new_fills(order, report, known)
                for report, order in zip(reports, orders, strict=True)
            ]
            outbox: list[Notification] = []  # the trades' exits, then the cards
            events = await self.trades.apply_batch(
                conn,
                list(zip(orders, fills, strict=True)),
                {signal.id: signal for signal in settled if signal is not None},
                outbox,
            )
            await _insert_fills(conn, [fill for new in fills for fill in new])
            if card:
                outbox.extend(
                    Notification(NoticeKind.SIGNAL_UPDATE, signal_id=signal.id)
                    for signal in settled
                    if signal is not None
                )
            await insert_outbox(conn, *outbox)
        if card or any(e.kind in _EXITED for e in events):  # outbox rows to deliver now
            self._notifier.queued()
        if any(r.fills for r in reports) and self.on_fill is not None:
            self.on_fill()
        if events and self.on_trades is not None:
            await self.on_trades(events)
        return settled

    async def record_failure(
        self,
        client_order_id: str,
        state: OrderState,
        error: str,
        actor: str,
        *,
        card: bool = False,
    ) -> Signal | None:
        """Mark an order FAILED (refused), UNKNOWN (outcome unknown: the owner is alerted
        in the same transaction) or CANCELLED, and its signal too; with ``card`` queue the
        signal's card update with it. Returns the order's signal as recorded (None for an
        order without one).

        Raises:
            SignalDeskError: no order has this client order id.
        """
        now = self._clock()
        values = {"state": state.value, "error": error[:500], "updated_at": now}
        notes: list[Notification] = []
        async with self._db.engine.begin() as conn:
            order = await self._write_order(conn, client_order_id, values)
            settled = await self._settle(conn, order, state, actor, error)
            if card and settled is not None:
                notes.append(Notification(NoticeKind.SIGNAL_UPDATE, signal_id=settled.id))
            if state is OrderState.UNKNOWN:
                notes.append(
                    Notification(
                        NoticeKind.TEXT,
                        f"Order {client_order_id}: outcome unknown ({error}). "
                        "It will be reconciled with the broker by its client order id.",
                        priority=Priority.ALERT,
                        topic=Topic.WARNING,
                    ),
                )
            await insert_outbox(conn, *notes)
        if card or state is OrderState.UNKNOWN:
            self._notifier.queued()
        return settled

    async def _settle(
        self,
        conn: AsyncConnection,
        order: Row[Any],
        state: OrderState,
        actor: str,
        why: str,
    ) -> Signal | None:
        """Move the order's signal to the status ``state`` settles (FILLED, FAILED,
        UNKNOWN; OPEN and SUBMITTED settle nothing) by compare-and-set from its current
        status, with its audit event, after the order row is written (so after any other
        recording of this order). Returns the signal as recorded (None for an order
        without one).

        The common case, a SUBMITTED signal settled, is one ``UPDATE ... WHERE status =
        'SUBMITTED' RETURNING`` (the signal as written, no read); otherwise, or when that
        finds the signal in another status, the signal is read (a plain row, no ORM
        object) and moved from what it is."""
        if order.signal_id is None:
            return None
        new = _SETTLES.get(state)
        now = self._clock()
        reason = why or f"order {order.client_order_id} {state.value.lower()}"
        if new is not None and can_transition(SignalStatus.SUBMITTED, new):
            params = {
                "cas_id": order.signal_id,
                "v_status": new.value,
                "v_status_reason": reason[:500],
                "v_updated_at": now,
            }
            written = (await conn.execute(_SETTLE_SUBMITTED, params)).first()
            if written is not None:
                await repo.add_audit(
                    conn,
                    actor=actor,
                    action=new.value.lower(),
                    at=now,
                    signal_id=order.signal_id,
                    from_status=SignalStatus.SUBMITTED.value,
                    to_status=new.value,
                    reason=reason,
                )
                return repo.signal_from_row(written)
        found = (await conn.execute(_READ_SIGNAL, {"signal_id": order.signal_id})).first()
        if found is None:
            return None
        signal = repo.signal_from_row(found)
        current = signal.status
        if new is None or current == new or not can_transition(current, new):
            return signal
        if await repo.transition_signal(
            conn, signal.id, current, new, actor=actor, at=now, reason=reason
        ):
            return replace(signal, status=new, status_reason=reason[:500])
        return signal

    @classmethod
    async def _write_orders(
        cls, conn: AsyncConnection, reports: Sequence[OrderReport], now: datetime
    ) -> list[Row[Any]]:
        """Write each report's state and figures to its order row, the rows being this
        transaction's first write (see :meth:`_write_order`), and return the rows as
        written, in the order of ``reports``. One report is one ``UPDATE ... RETURNING``;
        several lock every row first, in one statement in client order id order (two
        batches recording the same orders cannot interleave or deadlock), then each is
        one ``UPDATE ... RETURNING``.

        Raises:
            SignalDeskError: no order has a report's client order id.
        """
        if len(reports) > 1:
            cids = sorted({report.client_order_id for report in reports})
            await conn.execute(_TOUCH_ORDERS, {"cids": cids, "now": now})
        return [
            await cls._write_order(conn, report.client_order_id, _order_values(report, now))
            for report in reports
        ]

    @staticmethod
    async def _write_order(
        conn: AsyncConnection, client_order_id: str, values: Mapping[str, object]
    ) -> Row[Any]:
        """Write ``values`` to our order row (as this transaction's first statement: a row
        lock on PostgreSQL, the write lock on SQLite, so two recordings of one order cannot
        interleave) and return the row as written (``RETURNING``, no second read).

        Raises:
            SignalDeskError: no order has this client order id.
        """
        query = _write_order_statement(tuple(values))
        params = {f"v_{name}": value for name, value in values.items()}
        order = (await conn.execute(query, {"cid": client_order_id, **params})).first()
        if order is None:
            raise SignalDeskError(f"no order with client order id {client_order_id}")
        return order

    @staticmethod
    async def _known_fills(
        conn: AsyncConnection, orders: Sequence[Row[Any]], reports: Sequence[OrderReport]
    ) -> set[tuple[int, str]]:
        """(order id, broker fill id) of the fills already recorded for the orders whose
        report carries fills, in one query (after the orders are written, so after any
        other recording of them)."""
        ids = [o.id for o, r in zip(orders, reports, strict=True) if r.fills and o.id]
        if not ids:
            return set()
        found = await conn.execute(_KNOWN_FILLS, {"ids": ids})
        return {(order_id, fill_id) for order_id, fill_id in found.all()}

    @staticmethod
    def _new_fills(
        order: Row[Any], report: OrderReport, known: set[tuple[int, str]]
    ) -> list[NewFill]:
        """The report's fills of ``order`` not in ``known`` (which they join, so a fill
        reported twice in one batch is recorded once), as rows to insert (the trade
        record links them to their trade before they are inserted)."""
        assert order.id is not None
        order_id = order.id
        fresh = [
            fill
            for fill in report.fills
            if not (fill.broker_fill_id and (order_id, fill.broker_fill_id) in known)
        ]
        known.update((order_id, fill.broker_fill_id) for fill in fresh if fill.broker_fill_id)
        return [
            NewFill(
                order_id=order_id,
                client_order_id=fill.client_order_id,
                symbol=fill.symbol,
                side=fill.side.value,
                quantity=fill.quantity,
                price=fill.price,
                fee=fill.fee,
                fee_currency=fill.fee_currency,
                broker_fill_id=fill.broker_fill_id,
                at=fill.at,
            )
            for fill in fresh
        ]

    # --- account --------------------------------------------------------------------------

    async def positions(self) -> list[Position]:
        """Open positions at the broker."""
        return await self.broker.positions()

    async def account(self) -> Account:
        """The broker's account figures."""
        return await self.broker.account()

    async def book(self) -> list[PositionView]:
        """Every open position with the entry from our own fills (the open trades of the
        trade record), its unrealized PnL from that entry, the live stop loss and take
        profit and where they live; positions SignalDesk did not open are marked external
        and keep the broker's figures.

        Raises:
            BrokerError: the positions could not be read.
        """
        positions = await retry_temporary(self.broker.positions)
        trades = await self.trades.open_trades()
        return [_view(p, _trades_of(p, trades)) for p in positions]

    async def plan_close(
        self, symbol: str, amount: CloseAmount, position_ref: str = ""
    ) -> ClosePlan:
        """What ``/close SYMBOL [AMOUNT]`` would do, without doing it: the positions it
        closes and how much of each, and the ones it leaves alone. ``symbol`` is matched
        loosely (``btcusdt`` finds ``BTC/USDT``). Without ``position_ref`` only positions
        SignalDesk opened are closed (:func:`owns`); with it, exactly that ticket, ours
        or not (the owner named it).

        Raises:
            NotFoundError: no open position matches (nothing is changed).
            InvalidInputError: the amount cannot be applied (more than held, a quantity
                for several tickets, a position SignalDesk did not open).
            BrokerError: the positions could not be read.
        """
        wanted = symbol_key(symbol)
        found = [
            p
            for p in await retry_temporary(self.broker.positions)
            if symbol_key(p.symbol) == wanted
            and (not position_ref or p.position_ref == position_ref)
        ]
        if not found:
            raise NotFoundError(f"no open position in {symbol}")
        targets = found if position_ref else [p for p in found if owns(p)]
        left = tuple(p for p in found if p not in targets)
        if not targets:
            raise InvalidInputError(
                f"{found[0].symbol} was not opened by SignalDesk and is left untouched; "
                "to close it anyway use its Close buttons under /positions"
            )
        if amount.quantity is not None and len(targets) > 1:
            raise InvalidInputError(
                f"{found[0].symbol} is held in {len(targets)} tickets: close a percent "
                "of each, or one ticket with its buttons under /positions"
            )
        return ClosePlan(
            symbol=targets[0].symbol,
            amount=amount,
            targets=tuple((p, amount.of(p)) for p in targets),
            left_open=left,
        )

    async def close(
        self, symbol: str, amount: CloseAmount, actor: str, position_ref: str = ""
    ) -> CloseReport:
        """Close (part of) the position in ``symbol`` as :meth:`plan_close` plans it, with
        the positions read once now: a market order per position whose client order id is
        persisted first. Recording the fill reduces or closes the trade in the trade
        record, and the exit service (``on_trades``) then re-places the trade's protective
        exits for the quantity left, or cancels them once nothing is left (the cancelled
        ones are reported). Broker errors become the results' ``error``; planning errors
        are raised before anything is sent.

        Raises:
            NotFoundError, InvalidInputError: as :meth:`plan_close` (nothing changed).
        """
        plan = await self.plan_close(symbol, amount, position_ref)
        closes, exits = await self._close_many(plan.targets, actor, ExitReason.MANUAL_CLOSE)
        return CloseReport(closes=closes, exits_cancelled=exits, left_open=plan.left_open)

    async def close_all(
        self,
        actor: str,
        *,
        include_external: bool = False,
        reason: ExitReason = ExitReason.CLOSE_ALL,
    ) -> CloseReport:
        """Cancel every resting entry order, read the positions, close the ones
        SignalDesk opened (all of them with ``include_external``: the drawdown flatten
        under ``FLATTEN_EXTERNAL``) at most ``CLOSE_CONCURRENCY`` at a time; the exit
        service cancels the protective exits of each trade the closes end. Per-ticket venues
        are closed per ticket.

        The positions are read while the resting orders are listed (one venue round trip
        instead of two); when an entry was cancelled they are read again after the
        cancels, as it may have filled first.

        Exits are cancelled after their position is closed, never before: until the close
        fills they still protect it, and being reduce-only they cannot open anything.
        Positions left alone come back in ``left_open``. Never raises broker errors.
        """
        early = asyncio.ensure_future(retry_temporary(self.broker.positions))
        try:
            cancelled = tuple(await self.cancel_entries(actor))
        finally:
            [read] = await asyncio.gather(early, return_exceptions=True)
        try:
            if cancelled:
                read = await retry_temporary(self.broker.positions)
            elif isinstance(read, BaseException):
                raise read
            positions = read
        except (BrokerError, OSError, TimeoutError) as exc:
            return CloseReport(cancelled=cancelled, error=str(exc))
        mine = tuple((p, None) for p in positions if include_external or owns(p))
        left = tuple(p for p in positions if not (include_external or owns(p)))
        closes, exits = await self._close_many(mine, actor, reason)
        return CloseReport(cancelled, closes, exits, left)

    async def _close_many(
        self,
        targets: tuple[tuple[Position, Decimal | None], ...],
        actor: str,
        reason: ExitReason,
    ) -> tuple[tuple[CloseResult, ...], tuple[CancelResult, ...]]:
        """Close ``targets``: every close order's row (with its client order id) and audit
        event persisted in one transaction, then the orders sent concurrently, at most
        ``CLOSE_CONCURRENCY`` at a time, then every report recorded in one transaction
        (failures each in their own). Also returns the protective exits of the positions
        closed whole that were resting before and are cancelled after."""
        trades = await self.trades.open_trades()
        held = [_trades_of(p, trades) for p, _ in targets]
        now = self._clock()
        async with self._db.session() as session:
            exits = await repo.live_orders(session, PROTECTIVE)
            tag = await self._instance_tag(session)
            orders = [
                self._close_order(tag, p, q, t, reason, now)
                for (p, q), t in zip(targets, held, strict=True)
            ]
            session.add_all(orders)
            await session.flush()
            for order, (p, q) in zip(orders, targets, strict=True):
                what = p.symbol if q is None else f"{p.symbol} {q}"
                await repo.add_audit(
                    session, actor=actor, action="close", at=now, order_id=order.id, reason=what
                )
        gate = asyncio.Semaphore(self._settings.close_concurrency)

        async def send(
            order: OrderRow, position: Position, quantity: Decimal | None
        ) -> OrderReport | None:
            cid, symbol, ref = order.client_order_id, position.symbol, position.position_ref
            async with gate:
                return await retry_temporary(
                    lambda: self.broker.close_position(symbol, cid, quantity, ref)
                )

        sent = await asyncio.gather(
            *(send(o, p, q) for o, (p, q) in zip(orders, targets, strict=True)),
            return_exceptions=True,
        )
        await self.record_reports([r for r in sent if isinstance(r, OrderReport)], actor)
        booked = await self.trades.by_ids(t.id for before in held for t in before)
        closes = [
            await self._close_result(order, position, quantity, before, booked, outcome, actor)
            for order, (position, quantity), before, outcome in zip(
                orders, targets, held, sent, strict=True
            )
        ]
        ended = {
            t.id
            for c, before in zip(closes, held, strict=True)
            if c.report is not None and not c.partial
            for t in before
        }
        watched = [o.client_order_id for o in exits if o.trade_id in ended]
        async with self._db.session() as session:
            after = await repo.orders_by_client_ids(session, watched)
        cancelled = tuple(
            CancelResult(o.client_order_id, o.symbol, o.purpose)
            for o in after
            if o.state == OrderState.CANCELLED.value
        )
        return tuple(closes), cancelled

    @staticmethod
    def _close_order(
        tag: str,
        position: Position,
        quantity: Decimal | None,
        trades: list[Trade],
        reason: ExitReason,
        now: datetime,
    ) -> OrderRow:
        """The row of one close order (all of ``position``, or ``quantity`` base units),
        reduce-only, SUBMITTED, under a new client order id."""
        return OrderRow(
            client_order_id=f"sd{tag}-c{uuid.uuid4().hex[:12]}",
            purpose=CLOSE,
            trade_id=trades[0].id if len(trades) == 1 else None,
            symbol=position.symbol,
            side=position.side.opposite.value,
            quantity=abs(position.quantity) if quantity is None else quantity,
            order_type="market",
            state=OrderState.SUBMITTED.value,
            reduce_only=True,
            position_ref=position.position_ref,
            exit_reason=reason.value,
            created_at=now,
            updated_at=now,
        )

    async def _close_result(
        self,
        order: OrderRow,
        position: Position,
        quantity: Decimal | None,
        trades: list[Trade],
        booked: Mapping[int, Trade],
        outcome: OrderReport | BaseException | None,
        actor: str,
    ) -> CloseResult:
        """One close's result from what the broker answered (its report is recorded): a
        broker error marks the row as :meth:`_execute` does; None (flat) cancels the row;
        the net PnL comes from the position's ``trades`` as ``booked`` after the close."""
        symbol, ref, cid = position.symbol, position.position_ref, order.client_order_id
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, (BrokerError, OSError, TimeoutError)):
                raise outcome
            return CloseResult(
                symbol, error=await self._failed(cid, outcome, actor), position_ref=ref
            )
        if outcome is None:
            await self.record_failure(cid, OrderState.CANCELLED, "already flat", actor)
            return CloseResult(symbol, position_ref=ref)
        return CloseResult(
            symbol,
            report=outcome,
            net_pnl=_net(position, trades, booked, outcome),
            partial=quantity is not None and outcome.filled_quantity < abs(position.quantity),
            position_ref=ref,
        )

    async def _execute(
        self,
        client_order_id: str,
        call: Callable[[], Awaitable[OrderReport | None]],
        actor: str,
    ) -> tuple[OrderReport | None, str]:
        """Send an order whose row is committed (temporary errors retried) and record the
        outcome: (the report, "") when the venue answered (None: nothing to do), else
        (None, a user-facing error) with the row FAILED (refused: nothing was placed) or
        UNKNOWN (may exist: the reconciler looks it up by client order id)."""
        try:
            report = await retry_temporary(call)
        except (BrokerError, OSError, TimeoutError) as exc:
            return None, await self._failed(client_order_id, exc, actor)
        if report is not None:
            await self.record_report(report, actor)
        return report, ""

    async def _failed(
        self, client_order_id: str, exc: BrokerError | OSError | TimeoutError, actor: str
    ) -> str:
        """Mark a sent order whose call raised ``exc``: FAILED when the broker refused it
        (nothing was placed), else UNKNOWN (it may exist: the reconciler looks it up by
        client order id). Returns the user-facing error."""
        if isinstance(exc, (BrokerPermanentError, BrokerTemporaryError)):
            await self.record_failure(client_order_id, OrderState.FAILED, str(exc), actor)
            return str(exc)
        await self.record_failure(client_order_id, OrderState.UNKNOWN, str(exc), actor)
        return f"outcome unknown, reconciling: {exc}"

    # --- resting orders -------------------------------------------------------------------

    async def open_orders(self, symbol: str | None = None) -> list[RestingOrder]:
        """The venue's resting orders (all symbols or one), joined with our order rows:
        purpose, signal and trade. Orders SignalDesk did not place have ``purpose`` "".

        Raises:
            BrokerError: the venue could not be asked.
        """
        reports = await retry_temporary(lambda: self.broker.open_orders(symbol))
        ids = [r.client_order_id for r in reports if r.client_order_id]
        async with self._db.session() as session:
            rows = {
                row.client_order_id: row for row in await repo.orders_by_client_ids(session, ids)
            }
        out = []
        for report in reports:
            row = rows.get(report.client_order_id)
            if row is None:
                out.append(RestingOrder(report))
            else:
                out.append(RestingOrder(report, row.purpose, row.signal_id, row.trade_id))
        return out

    async def cancel(self, client_order_id: str, actor: str) -> CancelResult:
        """Cancel one of our resting orders by client order id and record its final report
        on our order row (a cancelled entry moves its signal to FAILED, "cancelled by ...";
        one that filled before the cancel arrived is recorded as filled).

        Raises:
            NotFoundError: we have no open order with this id, or the venue has none;
                nothing was changed.
        """
        async with self._db.session() as session:
            row = await repo.order_by_client_id(session, client_order_id)
        if row is None or row.state not in _LIVE:
            raise NotFoundError(f"no open order {client_order_id}")
        result = await self._cancel_row(row, actor)
        if result.error == _GONE:
            raise NotFoundError(f"no open order {client_order_id}")
        return result

    async def cancel_entries(self, actor: str) -> list[CancelResult]:
        """Cancel every resting entry order of ours (a signal's limit order), keeping the
        protective exits; a failure to list them comes back as one failed result."""
        try:
            resting = await self.open_orders()
        except (BrokerError, OSError, TimeoutError) as exc:
            return [CancelResult("*", "*", error=f"could not list open orders: {exc}")]
        entries = [o for o in resting if o.is_entry]
        if not entries:
            return []
        async with self._db.session() as session:
            ids = [o.report.client_order_id for o in entries]
            rows = await repo.orders_by_client_ids(session, ids)
        return list(await asyncio.gather(*(self._cancel_row(row, actor) for row in rows)))

    async def after_pause(self, actor: str) -> list[CancelResult]:
        """The pause's second step (call it after :meth:`pause`): with
        ``PAUSE_CANCELS_ENTRIES`` (the default) cancel the resting entry orders, so nothing
        opens while paused; protective exits always stay."""
        if not self._settings.pause_cancels_entries:
            return []
        return await self.cancel_entries(actor)

    async def _cancel_row(self, row: OrderRow, actor: str) -> CancelResult:
        """Cancel ``row``'s order at the venue and record the final report."""
        cid = row.client_order_id
        base = CancelResult(cid, row.symbol, row.purpose, row.signal_id)
        try:
            report = await retry_temporary(lambda: self.broker.cancel_order(cid, row.symbol))
        except OrderNotFoundError:
            return replace(base, error=_GONE)
        except (BrokerError, OSError, TimeoutError) as exc:
            return replace(base, error=str(exc))
        if report.state is OrderState.CANCELLED and not report.reason:
            report = replace(report, reason=f"cancelled by {actor}")
        await self.record_report(report, actor)
        now = self._clock()
        async with self._db.session() as session:
            await repo.add_audit(
                session, actor=actor, action="cancel", at=now, order_id=row.id, reason=cid
            )
        if row.signal_id is not None:
            await self._notifier.notify(
                Notification(NoticeKind.SIGNAL_UPDATE, signal_id=row.signal_id)
            )
        return replace(base, report=report)

    # --- operator state -------------------------------------------------------------------

    async def operator_status(self) -> OperatorStatus:
        """The persisted pause, high-water mark and breach state."""
        async with self._db.session() as session:
            return _operator_status(await repo.load_operator_state(session))

    async def pause(self, reason: str, actor: str) -> OperatorStatus:
        """HALT trading (approvals are blocked, reducing orders still pass) until an owner
        resumes. Idempotent: a second pause keeps the first reason."""
        await self.gate.pause(reason, actor)
        return await self.operator_status()

    async def resume(self, actor: str) -> OperatorStatus:
        """Trading ACTIVE again, clearing a max-level breach (the owner has looked at it;
        after a breach the caller confirms first, see RiskService.resume)."""
        await self.gate.resume(actor)
        return await self.operator_status()

    async def status(self) -> StatusSummary:
        """Broker, account, positions, pending signals and operator state in one read.
        A broker failure is reported in ``broker_error`` instead of raised."""
        async with self._db.session() as session:
            operator = _operator_status(await repo.load_operator_state(session))
            pending = len(await repo.list_signals(session, [SignalStatus.PROPOSED], limit=1000))
        account: Account | None = None
        positions: list[Position] = []
        error = ""
        try:
            account = await self.broker.account()
            positions = await self.broker.positions()
        except BrokerError as exc:
            error = str(exc)
        return StatusSummary(
            broker=self.broker.name,
            account=account,
            broker_error=error,
            positions=positions,
            pending_signals=pending,
            operator=operator,
        )


@dataclass(frozen=True, slots=True)
class ClosePlan:
    """What a ``/close`` would do: ``targets`` are the positions to close with the base
    quantity of each (None: all of it); ``left_open`` the matching positions SignalDesk
    did not open, left alone."""

    symbol: str
    amount: CloseAmount
    targets: tuple[tuple[Position, Decimal | None], ...]
    left_open: tuple[Position, ...] = ()


def symbol_key(text: str) -> str:
    """The loose form symbols are matched by: ``BTC/USDT``, ``btcusdt`` and
    ``BTC/USDT:USDT`` all give ``BTCUSDT``."""
    return re.sub(r"[^A-Z0-9]", "", text.upper().partition(":")[0])


def realized_pnl(held: Decimal, entry: Decimal, report: OrderReport) -> Decimal | None:
    """Quote-currency PnL, before fees, of the quantity ``report`` closed out of a position
    of signed quantity ``held`` entered at ``entry``: (exit - entry) x quantity for a long,
    (entry - exit) x quantity for a short. None when nothing filled."""
    if report.average_price is None or not report.filled_quantity:
        return None
    direction = 1 if held > 0 else -1
    return (report.average_price - entry) * report.filled_quantity * direction


#: What a recorded report did to a trade that posts an exit message (the trade record).
_EXITED = frozenset({TradeEventKind.REDUCED, TradeEventKind.CLOSED})
#: The signal status an order's final state settles (OPEN and SUBMITTED settle nothing).
_SETTLES = {
    OrderState.FILLED: SignalStatus.FILLED,
    OrderState.FAILED: SignalStatus.FAILED,
    OrderState.CANCELLED: SignalStatus.FAILED,
    OrderState.UNKNOWN: SignalStatus.UNKNOWN,
}
#: Our order states that may still rest at the venue.
_LIVE = frozenset({OrderState.SUBMITTED.value, OrderState.OPEN.value})
#: The cancel's error when the venue has no such order.
_GONE = "the venue has no such order"


async def _insert_fills(conn: AsyncConnection, fills: Sequence[NewFill]) -> None:
    """Insert ``fills`` (linked to their trades) in the caller's transaction now, in one
    Core INSERT: no id read back. Nothing happens without any."""
    if fills:
        values = [{name: getattr(fill, name) for name in _FILL_COLUMNS} for fill in fills]
        await conn.execute(_INSERT_FILL, values[0] if len(values) == 1 else values)


def _order_values(report: OrderReport, now: datetime) -> dict[str, object]:
    """What a broker report writes to our order row."""
    values: dict[str, object] = {
        "state": report.state.value,
        "filled_quantity": report.filled_quantity,
        "average_price": report.average_price,
        "fee": report.fee,
        "fee_currency": report.fee_currency,
        "error": report.reason[:500],
        "updated_at": now,
    }
    if report.broker_order_id:
        values["broker_order_id"] = report.broker_order_id
    return values


def _net(
    position: Position, before: list[Trade], booked: Mapping[int, Trade], report: OrderReport
) -> Decimal | None:
    """A close's net PnL (quote, after fees; see :class:`CloseResult`): the net PnL of the
    position's trades (``before``) as the trade record ``booked`` them after the close; for a
    position without a trade record, the fill against the broker's entry less the close's
    fee. None when nothing filled."""
    if not report.filled_quantity:
        return None
    if not before:
        gross = realized_pnl(position.quantity, position.average_entry, report)
        price = report.average_price or ZERO
        fee = fee_in_quote(report.fee, report.fee_currency, report.symbol, price)
        return None if gross is None else gross - fee
    return sum((booked[t.id].net_pnl for t in before), ZERO)


def _trades_of(position: Position, trades: list[Trade]) -> list[Trade]:
    """The open trades that make up ``position``: same symbol, same direction and, on
    per-ticket venues, the same ticket. None for a position SignalDesk did not open."""
    if not owns(position):
        return []
    return [
        t
        for t in trades
        if t.symbol == position.symbol
        and t.side is position.side
        and (not position.position_ref or t.position_ref == position.position_ref)
    ]


def _entry(position: Position, trades: list[Trade]) -> Decimal:
    """The average entry of our open trades weighted by their open quantity; the
    broker's figure only when no trade record holds the position."""
    held = sum((t.quantity_open for t in trades), ZERO)
    if not held:
        return position.average_entry
    return sum((t.average_entry * t.quantity_open for t in trades), ZERO) / held


def _view(position: Position, trades: list[Trade]) -> PositionView:
    entry = _entry(position, trades)
    levels = {(t.stop_loss, t.take_profit) for t in trades}
    stop, target = levels.pop() if len(levels) == 1 else (None, None)
    styles = {t.exit_style for t in trades if t.stop_loss or t.take_profit or t.trail_pct}
    return PositionView(
        position=position,
        entry=entry,
        unrealized_pnl=(position.mark_price - entry) * position.quantity,
        external=not owns(position),
        stop_loss=stop,
        take_profit=target,
        exit_style=styles.pop() if len(styles) == 1 else None,
    )
