"""TradingService: executes approved signals and runs the account (positions, closes,
pause/resume, status) through the broker port.

Exactly-once orders (DESIGN.md): the order row, with its client order id and state
SUBMITTED, is committed *before* the broker is called. A temporary error (by the broker
port's contract, the request had no effect) is retried a few times under the same client
order id; a permanent refusal, or temporary errors that outlast the retries, mark the
order FAILED; any other failure (an ambiguous timeout, a crash) leaves it UNKNOWN for the
reconciler, which looks it up by client order id. Nothing ambiguous is ever retried here.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.brokers.base import Broker, retry_temporary
from core.config import Settings
from core.db import repositories as repo
from core.db.engine import Database
from core.db.models import FillRow, OperatorStateRow, OrderRow
from core.domain import (
    ZERO,
    Account,
    OrderReport,
    OrderRequest,
    OrderState,
    Position,
    Signal,
    SignalStatus,
    TradingState,
    can_transition,
    utcnow,
)
from core.errors import (
    BrokerError,
    BrokerPermanentError,
    BrokerTemporaryError,
    SignalDeskError,
    TransitionConflictError,
)
from core.notify import NoticeKind, Notification, Notifier, Priority
from core.services.gate import BREACH_MAX, Gate, owns
from core.services.trades import TradeEvent, TradeService

__all__ = ["CloseResult", "OperatorStatus", "StatusSummary", "TradingService"]

#: At most this many closes run against the broker at once (close all, flatten).
CLOSE_CONCURRENCY = 4
#: Why close_all leaves a position alone.
FOREIGN_POSITION = "not opened by SignalDesk; left untouched"


@dataclass(frozen=True, slots=True)
class CloseResult:
    """Outcome of closing one symbol: ``report`` when an order was placed, ``error`` (a
    user-facing line) when it failed; both empty when there was nothing to close."""

    symbol: str
    report: OrderReport | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        """True unless the close failed."""
        return not self.error


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

    async def submit(self, session: AsyncSession, signal: Signal, actor: str) -> OrderRequest:
        """In the caller's transaction: move an APPROVED signal to SUBMITTED and insert its
        order row (state SUBMITTED, client order id ``sd<tag>-s<signal id>``). Once the
        transaction commits, pass the returned request to :meth:`send`.

        Raises:
            TransitionConflictError: the signal was not APPROVED.
        """
        now = self._clock()
        client_order_id = f"sd{await self._instance_tag(session)}-s{signal.id}"
        if not await repo.transition_signal(
            session,
            signal.id,
            SignalStatus.APPROVED,
            SignalStatus.SUBMITTED,
            actor=actor,
            at=now,
            reason=f"order {client_order_id}",
        ):
            current = await repo.get_signal(session, signal.id)
            raise TransitionConflictError(signal.id, current.status, "submit")
        session.add(
            OrderRow(
                client_order_id=client_order_id,
                signal_id=signal.id,
                symbol=signal.symbol,
                side=signal.side.value,
                quantity=signal.quantity,
                order_type=signal.order_type.value,
                limit_price=signal.limit_price,
                state=OrderState.SUBMITTED.value,
                created_at=now,
                updated_at=now,
            )
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
        nothing was placed); queues the card update.
        """
        report: OrderReport | None = None
        cid = request.client_order_id
        try:
            report = await retry_temporary(lambda: self.broker.place_order(request))
        except (BrokerPermanentError, BrokerTemporaryError) as exc:  # nothing was placed
            await self.record_failure(cid, OrderState.FAILED, str(exc), actor)
        except (BrokerError, OSError, TimeoutError) as exc:
            await self.record_failure(cid, OrderState.UNKNOWN, str(exc), actor)
        else:
            await self.record_report(report, actor)
        async with self._db.session() as session:
            final = await repo.get_signal(session, signal_id)
        await self._notifier.notify(Notification(NoticeKind.SIGNAL_UPDATE, signal_id=signal_id))
        return final, report

    async def _instance_tag(self, session: AsyncSession) -> str:
        """This database's client-order-id tag; it never changes, so it is read once."""
        if self._tag is None:
            self._tag = (await repo.load_operator_state(session)).instance_tag
        return self._tag

    async def record_report(self, report: OrderReport, actor: str) -> None:
        """Adopt a broker report for one of our orders: state, fills, the signal's status
        (FILLED when filled, FAILED when cancelled or rejected) and, in the same
        transaction, the trade record (:meth:`TradeService.apply_fills`). Idempotent:
        concurrent calls for one order serialize on its row and a known fill is skipped,
        so a fill counts once in its trade."""
        now = self._clock()
        async with self._db.session() as session:
            await self._lock_order(session, report.client_order_id, now)
            order = await self._order_by_client_id(session, report.client_order_id)
            order.state = report.state.value
            order.broker_order_id = report.broker_order_id or order.broker_order_id
            order.filled_quantity = report.filled_quantity
            order.average_price = report.average_price
            order.fee = report.fee
            order.fee_currency = report.fee_currency
            order.error = report.reason[:500]
            order.updated_at = now
            assert order.id is not None
            fills = await self._record_fills(session, order.id, report)
            events = await self.trades.apply_fills(session, order, fills)
            if order.signal_id is not None:
                await self._settle_signal(session, order, report.state, actor, report.reason)
        if report.fills and self.on_fill is not None:
            self.on_fill()
        if events and self.on_trades is not None:
            await self.on_trades(events)

    async def record_failure(
        self, client_order_id: str, state: OrderState, error: str, actor: str
    ) -> None:
        """Mark an order FAILED (refused) or UNKNOWN (outcome unknown) and its signal too."""
        async with self._db.session() as session:
            order = await self._order_by_client_id(session, client_order_id)
            order.state = state.value
            order.error = error[:500]
            order.updated_at = self._clock()
            if order.signal_id is not None:
                await self._settle_signal(session, order, state, actor, error)
        if state is OrderState.UNKNOWN:
            await self._notifier.notify(
                Notification(
                    NoticeKind.TEXT,
                    f"Order {client_order_id}: outcome unknown ({error}). "
                    "It will be reconciled with the broker by its client order id.",
                    priority=Priority.ALERT,
                )
            )

    async def _settle_signal(
        self, session: AsyncSession, order: OrderRow, state: OrderState, actor: str, why: str
    ) -> None:
        targets = {
            OrderState.FILLED: SignalStatus.FILLED,
            OrderState.FAILED: SignalStatus.FAILED,
            OrderState.CANCELLED: SignalStatus.FAILED,
            OrderState.UNKNOWN: SignalStatus.UNKNOWN,
        }
        new = targets.get(state)
        if new is None or order.signal_id is None:  # OPEN / SUBMITTED: nothing settled yet
            return
        current = (await repo.get_signal(session, order.signal_id)).status
        if current == new or not can_transition(current, new):
            return
        reason = why or f"order {order.client_order_id} {state.value.lower()}"
        await repo.transition_signal(
            session, order.signal_id, current, new, actor=actor, at=self._clock(), reason=reason
        )

    @staticmethod
    async def _lock_order(session: AsyncSession, client_order_id: str, now: datetime) -> None:
        """Make the order row this transaction's first write: a row lock on PostgreSQL,
        the write lock on SQLite, so two recordings of one report cannot interleave."""
        await session.exec(
            update(OrderRow)
            .where(col(OrderRow.client_order_id) == client_order_id)
            .values(updated_at=now)
        )

    @staticmethod
    async def _order_by_client_id(session: AsyncSession, client_order_id: str) -> OrderRow:
        query = select(OrderRow).where(col(OrderRow.client_order_id) == client_order_id)
        order = (await session.exec(query)).first()
        if order is None:
            raise SignalDeskError(f"no order with client order id {client_order_id}")
        return order

    @staticmethod
    async def _record_fills(
        session: AsyncSession, order_id: int, report: OrderReport
    ) -> list[FillRow]:
        """Add the report's fills not recorded yet; returns the new rows."""
        added: list[FillRow] = []
        known = set(
            (
                await session.exec(
                    select(FillRow.broker_fill_id).where(col(FillRow.order_id) == order_id)
                )
            ).all()
        )
        for fill in report.fills:
            if fill.broker_fill_id and fill.broker_fill_id in known:
                continue
            row = FillRow(
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
            session.add(row)
            added.append(row)
        return added

    # --- account --------------------------------------------------------------------------

    async def positions(self) -> list[Position]:
        """Open positions at the broker."""
        return await self.broker.positions()

    async def account(self) -> Account:
        """The broker's account figures."""
        return await self.broker.account()

    async def close_position(self, symbol: str, actor: str) -> CloseResult:
        """Close the whole position in ``symbol`` with a market order whose client order id
        is persisted first. Broker errors become ``CloseResult.error``; never raises them."""
        now = self._clock()
        try:
            position = next((p for p in await self.broker.positions() if p.symbol == symbol), None)
        except BrokerError as exc:
            return CloseResult(symbol, error=str(exc))
        if position is None:
            return CloseResult(symbol)
        async with self._db.session() as session:
            client_order_id = f"sd{await self._instance_tag(session)}-c{uuid.uuid4().hex[:12]}"
            order = OrderRow(
                client_order_id=client_order_id,
                purpose="close",
                symbol=symbol,
                side=position.side.opposite.value,
                quantity=abs(position.quantity),
                order_type="market",
                state=OrderState.SUBMITTED.value,
                created_at=now,
                updated_at=now,
            )
            session.add(order)
            await session.flush()
            await repo.add_audit(
                session, actor=actor, action="close", at=now, order_id=order.id, reason=symbol
            )
        try:
            report = await retry_temporary(
                lambda: self.broker.close_position(symbol, client_order_id)
            )
        except (BrokerPermanentError, BrokerTemporaryError) as exc:  # nothing was placed
            await self.record_failure(client_order_id, OrderState.FAILED, str(exc), actor)
            return CloseResult(symbol, error=str(exc))
        except (BrokerError, OSError, TimeoutError) as exc:
            await self.record_failure(client_order_id, OrderState.UNKNOWN, str(exc), actor)
            return CloseResult(symbol, error=f"outcome unknown, reconciling: {exc}")
        if report is None:
            await self.record_failure(client_order_id, OrderState.CANCELLED, "already flat", actor)
            return CloseResult(symbol)
        await self.record_report(report, actor)
        return CloseResult(symbol, report=report)

    async def close_all(self, actor: str) -> list[CloseResult]:
        """Close every position SignalDesk opened, at most :data:`CLOSE_CONCURRENCY` at a
        time. Positions it did not open are never touched: they come back as failed
        results saying so, so that the caller reports them as left open."""
        try:
            positions = await self.broker.positions()
        except BrokerError as exc:
            return [CloseResult("*", error=str(exc))]
        gate = asyncio.Semaphore(CLOSE_CONCURRENCY)

        async def close_one(position: Position) -> CloseResult:
            if not owns(position):
                return CloseResult(position.symbol, error=FOREIGN_POSITION)
            async with gate:
                return await self.close_position(position.symbol, actor)

        return list(await asyncio.gather(*(close_one(p) for p in positions)))

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
