"""Reconciliation: bring SignalDesk's order records in line with the broker, and report
positions SignalDesk did not open.

DESIGN.md, "Exactly-once orders": an order whose placement timed out or whose process
crashed is left SUBMITTED or UNKNOWN. The reconciler (at start-up and every
``RECONCILE_INTERVAL`` seconds) looks each one up by its client order id and

- adopts the broker's report when the broker has the order (the fills are recorded and the
  signal settles FILLED or FAILED);
- resubmits it under the **same** client order id, once, when the broker has no such order
  (the id makes the resubmission idempotent: a broker never holds two orders with one id);
- marks it FAILED when it is still not found after that one resubmission.

Resting limit orders (OPEN) are looked up too, so a later fill is adopted.

The decisions are pure functions of the recorded order and the broker's answer
(:func:`decide_order`, :func:`foreign_positions`), tested without I/O in the style of
nautilus_trader's reconciliation; :class:`Reconciler` does the I/O around them.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import structlog
from sqlalchemy import update
from sqlmodel import col, select

from core.brokers.base import Broker, retry_temporary
from core.config import Settings
from core.db import repositories as repo
from core.db.engine import Database
from core.db.models import AuditEventRow, FillRow, OrderRow, SignalRow
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
from core.notify import NoticeKind, Notification, Notifier, Priority
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


class Resolution(enum.StrEnum):
    """What to do with one recorded order."""

    ADOPT = "adopt"
    """The broker has the order: record its report."""
    RESUBMIT = "resubmit"
    """The broker has no such order and it was never resubmitted: send it again, same id."""
    FAIL = "fail"
    """Not found and must not be sent (again): mark it FAILED."""
    WAIT = "wait"
    """Nothing to do now (possibly in flight, or a resting order with no news)."""


@dataclass(frozen=True, slots=True)
class OrderView:
    """What a decision needs to know about one recorded order.

    ``purpose`` is ``open`` (a signal's order) or ``close``; ``age_seconds`` is the time
    since the order row was written; ``filled_quantity`` is in base units.
    """

    client_order_id: str
    symbol: str
    state: OrderState
    purpose: str
    resubmitted: bool
    age_seconds: float
    filled_quantity: Decimal


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
    trading_blocked: bool,
    max_resubmit_age_seconds: float,
    in_flight_grace_seconds: float = IN_FLIGHT_GRACE_SECONDS,
) -> OrderDecision:
    """Decide what to do with a SUBMITTED, UNKNOWN or OPEN order given the broker's answer
    to a lookup by client order id (``report`` None = the broker has no such order).

    Rules, in order:

    1. A SUBMITTED order younger than ``in_flight_grace_seconds`` waits: the process that
       wrote it may still be waiting for the broker.
    2. Found: adopt the report, unless the order is OPEN and the report shows no change.
    3. Not found and OPEN: wait (the order was acknowledged earlier; a lookup miss on a
       resting order is not evidence that it never existed).
    4. Not found after one resubmission: fail.
    5. Not found and older than ``max_resubmit_age_seconds``: fail; the trade idea is stale.
    6. Not found, an opening order, and trading paused or the drawdown limit breached
       (``trading_blocked``): fail; resubmitting would add exposure the guard forbids.
       Closing orders and protective exits (stop loss, take profit) are resubmitted
       regardless, since they reduce exposure.
    7. Otherwise: resubmit under the same client order id.
    """
    cid = order.client_order_id

    def decision(resolution: Resolution, reason: str) -> OrderDecision:
        return OrderDecision(cid, resolution, reason)

    if order.state is OrderState.SUBMITTED and order.age_seconds < in_flight_grace_seconds:
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
    if order.resubmitted:
        return decision(Resolution.FAIL, "not found at the broker after one resubmission")
    if order.age_seconds > max_resubmit_age_seconds:
        return decision(
            Resolution.FAIL,
            f"not found at the broker and older than {max_resubmit_age_seconds:.0f}s; "
            "not resubmitted",
        )
    if order.purpose == "open" and trading_blocked:
        return decision(
            Resolution.FAIL, "not found at the broker; not resubmitted while trading is blocked"
        )
    return decision(Resolution.RESUBMIT, "not found at the broker; resubmitting under the same id")


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
            query = select(OrderRow).where(
                col(OrderRow.state).in_(
                    [OrderState.SUBMITTED.value, OrderState.UNKNOWN.value, OrderState.OPEN.value]
                )
            )
            orders = list((await session.exec(query.order_by(col(OrderRow.id)))).all())
            operator = await repo.load_operator_state(session)
            blocked = operator.paused or operator.breach_level == "max"
        for order in orders:
            await self._reconcile_order(order, blocked, summary)
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

    async def _reconcile_order(
        self, order: OrderRow, blocked: bool, summary: ReconcileSummary
    ) -> None:
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
        )
        decision = decide_order(
            view,
            report,
            trading_blocked=blocked,
            max_resubmit_age_seconds=self._settings.signal_ttl_seconds,
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
        """Mark the order resubmitted (compare-and-set, so one process wins), then send it
        again under the same client order id. Returns False when another pass won."""
        cid = order.client_order_id
        async with self._db.session() as session:
            won = await session.exec(
                update(OrderRow)
                .where(col(OrderRow.id) == order.id, col(OrderRow.resubmitted).is_(False))
                .values(resubmitted=True, updated_at=self._clock())
            )
            if won.rowcount != 1:  # type: ignore[attr-defined]
                return False
        # a watched exit is a reduce-only market close of the trade's quantity
        watched_exit = order.reduce_only and order.order_type == OrderType.MARKET.value
        closing = order.purpose == "close" or watched_exit
        request = None if closing else await self._request_for(order)
        send: Callable[[], Awaitable[OrderReport | None]]
        if request is None:
            # a close or a watched exit: the recorded quantity and ticket, so a partial
            # close never comes back whole
            send = lambda: self._broker.close_position(  # noqa: E731
                order.symbol, cid, order.quantity, order.position_ref
            )
        else:
            send = lambda: self._broker.place_order(request)  # noqa: E731
        try:
            report = await retry_temporary(send)
        except (BrokerPermanentError, BrokerTemporaryError) as exc:  # nothing was placed
            await self._trading.record_failure(cid, OrderState.FAILED, str(exc), ACTOR)
            await self._tell(order, f"resubmission refused: {exc}", alert=True)
            return True
        except (BrokerError, OSError, TimeoutError) as exc:
            await self._trading.record_failure(cid, OrderState.UNKNOWN, str(exc), ACTOR)
            return True
        if report is None:  # a close found nothing to close
            await self._trading.record_failure(cid, OrderState.CANCELLED, "already flat", ACTOR)
            await self._tell(order, "resubmitted close found the position already flat")
            return True
        await self._trading.record_report(report, ACTOR)
        await self._tell(order, f"resubmitted under the same id, {_describe(report)}")
        return True

    async def _request_for(self, order: OrderRow) -> OrderRequest:
        """The original request of an opening order (its exits read from its signal) or
        of a protective STOP / TAKE_PROFIT order (trigger, reduce-only, ticket)."""
        stop_loss = take_profit = None
        if order.signal_id is not None:
            async with self._db.session() as session:
                signal = await session.get(SignalRow, order.signal_id)
            if signal is not None:
                stop_loss, take_profit = signal.stop_loss, signal.take_profit
        return OrderRequest(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=Side(order.side),
            quantity=order.quantity,
            order_type=OrderType(order.order_type),
            limit_price=order.limit_price,
            stop_loss=stop_loss,
            take_profit=take_profit,
            reduce_only=order.reduce_only,
            trigger_price=order.trigger_price,
            position_ref=order.position_ref,
        )

    async def _tell(self, order: OrderRow, what: str, *, alert: bool = False) -> None:
        """Tell the owner what happened to ``order`` and refresh its signal's card."""
        await self._notifier.notify(
            Notification(
                NoticeKind.TEXT,
                f"Reconciled order {order.client_order_id} ({order.symbol}): {what}.",
                priority=Priority.ALERT if alert else Priority.ROUTINE,
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
        async with self._db.session() as session:
            symbols = set((await session.exec(select(FillRow.symbol).distinct())).all())
            reported = set(
                (
                    await session.exec(
                        select(AuditEventRow.reason).where(
                            col(AuditEventRow.action) == FOREIGN_ACTION
                        )
                    )
                ).all()
            )
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
                )
            )


def _describe(report: OrderReport) -> str:
    """``filled 0.01 at 113689.42`` or the state in words."""
    if report.state is OrderState.FILLED and report.average_price is not None:
        return f"filled {report.filled_quantity} at {report.average_price}"
    return report.state.value.lower() + (f" ({report.reason})" if report.reason else "")
