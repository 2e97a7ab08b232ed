"""Reconciliation: bring SignalDesk's order records in line with the broker, and report
positions SignalDesk did not open.

Exactly-once orders (docs/architecture.md): an order whose placement timed out or whose process
crashed is left SUBMITTED or UNKNOWN. The reconciler (at start-up and every
``RECONCILE_INTERVAL`` seconds) looks each one up by its client order id and

- adopts the broker's report when the broker has the order (the fills are recorded and the
  signal settles FILLED or FAILED);
- waits while the order is younger than ``IN_FLIGHT_GRACE_SECONDS`` (the broker's own
  timeout: a request the broker is still working on may not be visible yet);
- an OPENING order the broker has no trace of after that is marked FAILED and reported to
  the owner ("... was not found at the broker; re-approve if you still want it"). It is
  **never** resubmitted: had the original reached the venue after all (a lookup miss is
  evidence, not proof), a resubmission would double the position;
- a REDUCING order (close, stop_loss, take_profit, or ``reduce_only``) proven absent is
  re-sent **once under a NEW client order id**, on a new order row written before the
  send; the old row is marked FAILED in the same transaction (a compare-and-set, so one
  process wins). A re-sent order that is absent too is failed and reported.

Why a new id and not the same one: a venue's duplicate-id refusal protects only while the
first order is open there. Binance refuses a ``newClientOrderId`` that duplicates an OPEN
order (-2010 "Duplicate order sent", which the ccxt adapter reports as ambiguous, so a
same-id re-send would itself end UNKNOWN); a filled or cancelled order's id may be reused.
MT5 has no client order id at all (our id rides in the comment), and IBKR's ``orderRef``
is not unique. So the same id buys no exactly-once guarantee, while every order having its
own row and id, persisted before the send, keeps the record exact. Exactly-once then rests
on (1) re-sending only after the lookup by the old id proved it absent past the broker's
timeout, (2) re-sending at most once, and (3) re-sending only orders that reduce risk:
closes are reduce-only (``close_position`` finds nothing to close when the position is
already flat) and exits are reduce-only trigger orders, so a late original cannot add
exposure together with its re-send.

Resting limit orders (OPEN) are looked up too, so a later fill is adopted.

The decisions are pure functions of the recorded order and the broker's answer
(:func:`decide_order`, :func:`foreign_positions`), tested without I/O in the style of
nautilus_trader's reconciliation; :class:`Reconciler` does the I/O around them.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import structlog
from sqlalchemy import Select, exists, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.brokers.base import Broker, retry_temporary
from core.config import Settings
from core.db import repositories as repo
from core.db.engine import Database, sql_literal
from core.db.models import AuditEventRow, FillRow, OrderRow
from core.domain import (
    OrderReport,
    OrderRequest,
    OrderState,
    OrderType,
    Position,
    Side,
    utcnow,
)
from core.errors import BrokerError, BrokerPermanentError, BrokerTemporaryError
from core.notify import NoticeKind, Notification, Notifier, Priority, Topic
from core.services.gate import reduces_risk
from core.services.trading import TradingService

__all__ = [
    "IN_FLIGHT_GRACE_SECONDS",
    "OrderDecision",
    "OrderView",
    "ReconcileSummary",
    "Reconciler",
    "Resolution",
    "decide_order",
    "foreign_positions",
]

log = structlog.get_logger(__name__)

#: A SUBMITTED order younger than this (seconds) may still be in flight in the process
#: that placed it, so it is not looked up yet.
IN_FLIGHT_GRACE_SECONDS = 30.0

#: The audit action that records a reported foreign position (so it is reported once).
FOREIGN_ACTION = "foreign_position"

ACTOR = "reconciler"

#: The orders a pass looks at, oldest first; their states are rare in a long history, so
#: written into the SQL (``sql_literal``).
_UNRESOLVED = (
    select(OrderRow)
    .where(
        col(OrderRow.state).in_(
            [
                sql_literal(s.value)
                for s in (OrderState.SUBMITTED, OrderState.UNKNOWN, OrderState.OPEN)
            ]
        )
    )
    .order_by(col(OrderRow.id))
)


class Resolution(enum.StrEnum):
    """What to do with one recorded order."""

    ADOPT = "adopt"
    """The broker has the order: record its report."""
    RESUBMIT = "resubmit"
    """A reducing order the broker has no trace of, never re-sent: send it again under a
    new client order id (a new order row)."""
    FAIL = "fail"
    """Not found and must not be sent (again): mark it FAILED."""
    WAIT = "wait"
    """Nothing to do now (possibly in flight, or a resting order with no news)."""


@dataclass(frozen=True, slots=True)
class OrderView:
    """What a decision needs to know about one recorded order.

    ``purpose`` is ``open`` (a signal's entry), ``close``, ``stop_loss`` or
    ``take_profit``; ``reduce_only`` marks an order that can only reduce a position;
    ``resubmitted`` is True for an order row that is itself a re-send; ``age_seconds`` is
    the time since the order row was written; ``filled_quantity`` is in base units.
    """

    client_order_id: str
    symbol: str
    state: OrderState
    purpose: str
    resubmitted: bool
    age_seconds: float
    filled_quantity: Decimal
    reduce_only: bool = False

    @property
    def reduces(self) -> bool:
        """True for an order that only reduces risk (see :func:`reduces_risk`)."""
        return reduces_risk(self.purpose, self.reduce_only)


@dataclass(frozen=True, slots=True)
class OrderDecision:
    """A :class:`Resolution` for one order and the reason (a user-facing line)."""

    client_order_id: str
    resolution: Resolution
    reason: str


def decide_order(
    order: OrderView,
    report: OrderReport | None,
    *,
    max_resubmit_age_seconds: float,
    in_flight_grace_seconds: float = IN_FLIGHT_GRACE_SECONDS,
) -> OrderDecision:
    """Decide what to do with a SUBMITTED, UNKNOWN or OPEN order given the broker's answer
    to a lookup by client order id (``report`` None = the broker has no such order).

    Rules, in order:

    ==  =====================================================  =========================
    #   when                                                   then
    ==  =====================================================  =========================
    1   SUBMITTED, younger than ``in_flight_grace_seconds``    WAIT (may be in flight)
    2   not found, younger than ``in_flight_grace_seconds``    WAIT (the broker's timeout)
    3   found, OPEN before and after, same filled quantity     WAIT (still resting)
    4   found                                                  ADOPT the report
    5   not found, OPEN                                        WAIT (a miss on a resting
                                                               order proves nothing)
    6   not found, an opening order                            FAIL and tell the owner
                                                               (never resubmitted)
    7   not found, itself a re-send                            FAIL (re-sent once only)
    8   not found, older than ``max_resubmit_age_seconds``     FAIL (stale)
    9   not found, a reducing order                            RESUBMIT under a new
                                                               client order id
    ==  =====================================================  =========================
    """
    cid = order.client_order_id

    def decision(resolution: Resolution, reason: str) -> OrderDecision:
        return OrderDecision(cid, resolution, reason)

    young = order.age_seconds < in_flight_grace_seconds
    if young and (order.state is OrderState.SUBMITTED or report is None):
        return decision(Resolution.WAIT, "may still be in flight")
    if report is not None:
        unchanged = (
            order.state is OrderState.OPEN
            and report.state is OrderState.OPEN
            and report.filled_quantity == order.filled_quantity
        )
        if unchanged:
            return decision(Resolution.WAIT, "still resting")
        return decision(Resolution.ADOPT, f"found at the broker: {report.state.value.lower()}")
    if order.state is OrderState.OPEN:
        return decision(Resolution.WAIT, "resting order not reported by the broker")
    if not order.reduces:
        return decision(
            Resolution.FAIL,
            f"order {cid} was not found at the broker; re-approve if you still want it",
        )
    if order.resubmitted:
        return decision(Resolution.FAIL, "not found at the broker after one re-send")
    if order.age_seconds > max_resubmit_age_seconds:
        return decision(
            Resolution.FAIL,
            f"not found at the broker and older than {max_resubmit_age_seconds:.0f}s; not re-sent",
        )
    return decision(
        Resolution.RESUBMIT, "not found at the broker; re-sending under a new client order id"
    )


def foreign_key(position: Position) -> str:
    """How a reported foreign position is remembered: symbol and signed quantity, so a
    changed foreign position is reported again."""
    return f"{position.symbol} {position.quantity}"


def foreign_positions(
    positions: Iterable[Position],
    signaldesk_symbols: Collection[str],
    already_reported: Collection[str],
) -> list[Position]:
    """The positions to report as not opened by SignalDesk: those the broker flags
    (``opened_by_signaldesk`` False) or in a symbol SignalDesk never had a fill in, and
    whose :func:`foreign_key` was not reported before."""
    return [
        p
        for p in positions
        if (not p.opened_by_signaldesk or p.symbol not in signaldesk_symbols)
        and foreign_key(p) not in already_reported
    ]


@dataclass(slots=True)
class ReconcileSummary:
    """What one pass did: client order ids per outcome, symbols of newly reported foreign
    positions, and orders whose lookup failed (retried on the next pass)."""

    adopted: list[str] = field(default_factory=list)
    resubmitted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


class Reconciler:
    """Runs reconciliation passes (see the module docstring).

    Args:
        db: the database.
        broker: where orders are looked up and resubmitted.
        trading: records reports and failures (the same code path as a live placement).
        notifier: tells the owner about resolved orders and foreign positions.
        settings: ``SIGNAL_TTL_SECONDS`` bounds the age of an order that is resubmitted.
        clock: current UTC time (injectable).
    """

    def __init__(
        self,
        db: Database,
        broker: Broker,
        trading: TradingService,
        notifier: Notifier,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._broker = broker
        self._trading = trading
        self._notifier = notifier
        self._settings = settings
        self._clock = clock

    async def run(self) -> ReconcileSummary:
        """One pass over unresolved orders, then the foreign-position report.

        Broker errors on one order are logged and leave it for the next pass; a failed
        position read skips the foreign-position report. Never raises BrokerError.
        """
        summary = ReconcileSummary()
        async with self._db.session() as session:
            orders = list((await session.exec(_UNRESOLVED)).all())
        for order in orders:
            await self._reconcile_order(order, summary)
        await self._report_foreign(summary)
        if summary.adopted or summary.resubmitted or summary.failed or summary.foreign:
            log.info(
                "reconciled",
                adopted=summary.adopted,
                resubmitted=summary.resubmitted,
                failed=summary.failed,
                foreign=summary.foreign,
            )
        return summary

    async def _reconcile_order(self, order: OrderRow, summary: ReconcileSummary) -> None:
        cid = order.client_order_id
        try:
            report = await retry_temporary(lambda: self._broker.get_order(cid, order.symbol))
        except BrokerError as exc:
            log.warning("reconcile lookup failed", client_order_id=cid, error=str(exc))
            summary.unreachable.append(cid)
            return
        view = OrderView(
            client_order_id=cid,
            symbol=order.symbol,
            state=OrderState(order.state),
            purpose=order.purpose,
            resubmitted=order.resubmitted,
            age_seconds=(self._clock() - order.created_at).total_seconds(),
            filled_quantity=order.filled_quantity,
            reduce_only=order.reduce_only,
        )
        decision = decide_order(
            view, report, max_resubmit_age_seconds=self._settings.signal_ttl_seconds
        )
        if decision.resolution is Resolution.WAIT:
            return
        if decision.resolution is Resolution.ADOPT:
            assert report is not None
            await self._trading.record_report(report, ACTOR)
            summary.adopted.append(cid)
            await self._tell(order, f"found at the broker, {_describe(report)}")
        elif decision.resolution is Resolution.FAIL:
            await self._trading.record_failure(cid, OrderState.FAILED, decision.reason, ACTOR)
            summary.failed.append(cid)
            await self._tell(order, f"marked failed: {decision.reason}", alert=True)
        elif await self._resubmit(order):
            summary.resubmitted.append(cid)

    async def _resubmit(self, order: OrderRow) -> bool:
        """Re-send a reducing order proven absent under a NEW client order id: in one
        transaction, mark the old row FAILED (compare-and-set on its state, so one process
        wins) and insert the new row (``resubmitted`` True, state SUBMITTED); then send it.
        Returns False when another pass won."""
        now = self._clock()
        async with self._db.session() as session:
            tag = (await repo.load_operator_state(session)).instance_tag
            new_cid = f"sd{tag}-r{uuid.uuid4().hex[:12]}"
            won = await session.exec(
                update(OrderRow)
                .where(col(OrderRow.id) == order.id, col(OrderRow.state) == order.state)
                .values(
                    state=OrderState.FAILED.value,
                    error=f"not found at the broker; re-sent as {new_cid}",
                    updated_at=now,
                )
            )
            if won.rowcount != 1:  # type: ignore[attr-defined]
                return False
            resend = OrderRow(
                client_order_id=new_cid,
                signal_id=None,
                purpose=order.purpose,
                trade_id=order.trade_id,
                symbol=order.symbol,
                side=order.side,
                quantity=order.quantity,
                order_type=order.order_type,
                limit_price=order.limit_price,
                state=OrderState.SUBMITTED.value,
                resubmitted=True,
                created_at=now,
                updated_at=now,
                trigger_price=order.trigger_price,
                reduce_only=order.reduce_only,
                position_ref=order.position_ref,
                exit_reason=order.exit_reason,
            )
            session.add(resend)
            await session.flush()
            await repo.add_audit(
                session,
                actor=ACTOR,
                action="resend",
                at=now,
                order_id=resend.id,
                reason=f"{order.client_order_id} not found at the broker; re-sent as {new_cid}",
            )
        # a close, or a watched exit (a reduce-only market close of the trade's quantity),
        # closes the quantity and ticket it recorded, so a partial close never comes back whole
        watched_exit = order.reduce_only and order.order_type == OrderType.MARKET.value
        send: Callable[[], Awaitable[OrderReport | None]]
        if order.purpose == "close" or watched_exit:
            send = lambda: self._broker.close_position(  # noqa: E731
                order.symbol, new_cid, order.quantity, order.position_ref
            )
        else:
            request = OrderRequest(
                client_order_id=new_cid,
                symbol=order.symbol,
                side=Side(order.side),
                quantity=order.quantity,
                order_type=OrderType(order.order_type),
                limit_price=order.limit_price,
                reduce_only=True,
                trigger_price=order.trigger_price,
                position_ref=order.position_ref,
            )
            send = lambda: self._broker.place_order(request)  # noqa: E731
        what = f"re-sent as {new_cid}"
        try:
            report = await retry_temporary(send)
        except (BrokerPermanentError, BrokerTemporaryError) as exc:  # nothing was placed
            await self._trading.record_failure(new_cid, OrderState.FAILED, str(exc), ACTOR)
            await self._tell(order, f"{what}, refused: {exc}", alert=True)
            return True
        except (BrokerError, OSError, TimeoutError) as exc:
            await self._trading.record_failure(new_cid, OrderState.UNKNOWN, str(exc), ACTOR)
            return True
        if report is None:  # a close found nothing to close
            await self._trading.record_failure(new_cid, OrderState.CANCELLED, "already flat", ACTOR)
            await self._tell(order, f"{what}; the position was already flat")
            return True
        await self._trading.record_report(report, ACTOR)
        await self._tell(order, f"{what}, {_describe(report)}")
        return True

    async def _tell(self, order: OrderRow, what: str, *, alert: bool = False) -> None:
        """Tell the owner what happened to ``order`` and refresh its signal's card."""
        await self._notifier.notify(
            Notification(
                NoticeKind.TEXT,
                f"Reconciled order {order.client_order_id} ({order.symbol}): {what}.",
                priority=Priority.ALERT if alert else Priority.ROUTINE,
                topic=Topic.WARNING if alert else Topic.FILL,
            )
        )
        if order.signal_id is not None:
            await self._notifier.notify(
                Notification(NoticeKind.SIGNAL_UPDATE, signal_id=order.signal_id)
            )

    async def _report_foreign(self, summary: ReconcileSummary) -> None:
        """Report, once each, positions SignalDesk did not open. They are never touched."""
        try:
            positions = await retry_temporary(self._broker.positions)
        except BrokerError as exc:
            log.warning("reconcile could not read positions", error=str(exc))
            return
        held = sorted({p.symbol for p in positions})
        async with self._db.session() as session:
            symbols = await _traded(session, held)
            reports = select(AuditEventRow.reason).where(
                col(AuditEventRow.action) == FOREIGN_ACTION
            )
            reported = set((await session.exec(reports)).all())
            found = foreign_positions(positions, symbols, reported)
            for position in found:
                await repo.add_audit(
                    session,
                    actor=ACTOR,
                    action=FOREIGN_ACTION,
                    at=self._clock(),
                    reason=foreign_key(position),
                )
        for position in found:
            summary.foreign.append(position.symbol)
            await self._notifier.notify(
                Notification(
                    NoticeKind.TEXT,
                    f"Position not opened by SignalDesk: {position.symbol} "
                    f"{position.quantity} (entry {position.average_entry}). "
                    "SignalDesk leaves it alone (only /closeall or a drawdown flatten closes "
                    "it); its profit and loss count in the equity the drawdown guard watches.",
                    topic=Topic.WARNING,
                )
            )


#: Held symbols asked about in one statement by :func:`_traded`.
_EXISTS_PER_STATEMENT = 100


async def _traded(session: AsyncSession, symbols: list[str]) -> set[str]:
    """Which of ``symbols`` SignalDesk ever had a fill in: one ``EXISTS`` probe of the
    ``fills.symbol`` index per symbol (it stops at the first entry), so the cost stays
    flat however many fills a symbol has; a ``DISTINCT`` over the index would read every
    fill of every held symbol."""
    traded: set[str] = set()
    for start in range(0, len(symbols), _EXISTS_PER_STATEMENT):
        chunk = symbols[start : start + _EXISTS_PER_STATEMENT]
        probes = [exists().where(col(FillRow.symbol) == sql_literal(symbol)) for symbol in chunk]
        query: Select[tuple[bool, ...]] = Select(*probes)
        row = (await (await session.connection()).execute(query)).one()
        traded.update(symbol for symbol, found in zip(chunk, row, strict=True) if found)
    return traded


def _describe(report: OrderReport) -> str:
    """``filled 0.01 at 113689.42`` or the state in words."""
    if report.state is OrderState.FILLED and report.average_price is not None:
        return f"filled {report.filled_quantity} at {report.average_price}"
    return report.state.value.lower() + (f" ({report.reason})" if report.reason else "")
