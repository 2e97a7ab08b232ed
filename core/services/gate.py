"""The trading state and the one pre-trade gate (nautilus_trader's ``TradingState`` and
``RiskEngine`` are the model).

**One owner.** :class:`Gate` is the only code that writes ``operator_state.trading_state``
(:class:`~core.domain.TradingState`): the owner's pause (HALTED), the drawdown guard's max
breach (HALTED, in the same transaction as the breach), and the owner's resume (ACTIVE;
after a breach only through the confirmed resume, which also clears ``breach_level``).
``pause_reason``, ``paused_by``, ``paused_at`` and ``breach_level`` are kept beside it as
information for the owner; the gate decides on ``trading_state`` alone. It lives in its own
module, not inside TradingService, because four services ask it (approvals, the guard,
the reconciler, the account commands): a small module with pure rules is one place to
read, and is testable without I/O.

**One check.** Every order that adds risk passes :func:`check_order` (pure): the state,
then ``MAX_ORDER_QUANTITY``, the price (a quote the broker could give), the drift since the
proposal (``MAX_PRICE_DRIFT_PCT``), ``MAX_ORDER_NOTIONAL`` (quote currency), and the free
margin the broker's account reports (an order cannot be afforded when none is free; the
venue does the exact margin arithmetic, since only it knows the leverage). On a broker that
keeps market hours with ``MARKET_CLOSED_POLICY=block`` (IBKR), an approval while the
market is closed is refused too (:meth:`Gate.closed_market`): BLOCKED, no order row, the
same outcome as a proposal made while it is closed. Orders that
reduce risk (closes, stops, take profits, the flatten: ``reduce_only`` or a purpose other
than ``open``) pass in every state and are exempt from the caps, so a kill switch never
holds back an exit. The order's quote is awaited BEFORE any transaction
(:meth:`Gate.check_entry`), never inside one.

**No approval overtakes a pause.** The approving transaction (``SignalService.approve``)
runs, in this order, in ONE transaction:

1. the compare-and-set ``UPDATE signals SET status='SUBMITTED' (or 'BLOCKED' when the
   checks before it failed) WHERE id=? AND status='PROPOSED'``: PROPOSED -> APPROVED ->
   the outcome the checks so far predict, in one write;
2. :meth:`Gate.state_in` — ``SELECT ... FROM operator_state WHERE id = 1 FOR UPDATE``;
3. when the state is ACTIVE, the order row; otherwise the signal is made BLOCKED with the
   reason and no order row is written. Both transitions' audit events (PROPOSED ->
   APPROVED, APPROVED -> SUBMITTED or BLOCKED) are inserted here, after the state was read.

A pause (:meth:`Gate.pause`, :meth:`Gate.halt_in`) is one transaction whose first write is
``UPDATE operator_state SET trading_state='HALTED' ... WHERE id = 1``, and whose audit
event is inserted after that UPDATE.

- SQLite (WAL): there is one writer at a time. Python's sqlite3 opens the transaction at
  the first write, and a write statement that starts a transaction takes the write lock
  together with a fresh snapshot (SQLite retries the lock on busy while no read is open).
  Step 1 is that first write, so steps 2-3 run holding the write lock and read the latest
  committed state; the pause cannot commit between them. Either the pause committed first
  (step 2 reads HALTED: BLOCKED) or the approval commits first (its order row precedes the
  pause). A read *before* the first write would be a separate, unprotected snapshot: the
  old code read the state that way, which is why approvals overtook pauses.
- PostgreSQL (READ COMMITTED): ``FOR UPDATE`` on the one ``operator_state`` row conflicts
  with the pause's UPDATE. An approval holding the row lock commits before the pause's
  UPDATE can proceed (so before the pause commits, and before the pause's audit event id
  is drawn); an approval that asks for the lock while the pause holds or awaits it waits
  for the pause to commit and then, READ COMMITTED re-reading the newest row version,
  sees HALTED. The lock is exclusive rather than ``FOR SHARE`` on purpose: share lockers
  do not queue behind a waiting UPDATE, so a stream of overlapping approvals could hold
  the kill switch back; with FOR UPDATE every locker queues in order. Approvals hold it
  for a few statements (no broker I/O), so serialising them costs nothing a person
  tapping buttons could notice. No deadlock: the approval locks its signal row, then
  this row; the pause and the guard lock this row only.

So no order row of an approval is committed after a pause commits, on either database.
Orders committed just before a pause may still be on their way to the broker;
:meth:`Gate.settle_in_flight` waits for them (the flatten calls it before it closes
positions, so the account is flat when it says so).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import Row, case, func, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.brokers.base import Broker, MarketHoursSource
from core.config import MarketClosedPolicy, Settings
from core.db import repositories as repo
from core.db.engine import Database
from core.db.models import OperatorStateRow, OrderRow
from core.domain import OrderState, Position, Signal, TradingState, utcnow
from core.errors import BrokerError
from core.marketdata.base import MarketData

__all__ = [
    "BREACHED",
    "BREACH_MAX",
    "IN_FLIGHT_WAIT_SECONDS",
    "Gate",
    "GateState",
    "OrderCheck",
    "OrderLimits",
    "check_order",
    "owns",
    "reduces_risk",
    "state_reason",
]

log = structlog.get_logger(__name__)

#: The reason an order is blocked while a max drawdown breach stands.
BREACHED = "drawdown limit breached"
#: How long (seconds of loop time) the flatten waits for opening orders committed before
#: the halt to come back from the broker.
IN_FLIGHT_WAIT_SECONDS = 30.0
#: The ``breach_level`` of a max drawdown breach (``core.services.risk.BreachLevel.MAX``).
BREACH_MAX = "max"
HUNDRED = Decimal(100)


#: The state's columns the gate reads, the row locked (:meth:`Gate.state_in`), as a plain
#: row (no ORM object); built once, so SQLAlchemy computes its cache key once.
_LOCK_STATE = (
    select(
        col(OperatorStateRow.trading_state),
        col(OperatorStateRow.pause_reason),
        col(OperatorStateRow.breach_level),
    )
    .where(col(OperatorStateRow.id) == 1)
    .with_for_update()
)


# --- the pure rules -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GateState:
    """The trading state and the information the owner reads beside it.

    ``pause_reason`` is why trading stopped (owner's words or the guard's cause);
    ``breach_level`` is the drawdown guard's level (``""``, ``warn``, ``max``).
    """

    trading_state: TradingState
    pause_reason: str = ""
    breach_level: str = ""

    @classmethod
    def of(cls, row: OperatorStateRow | Row[Any]) -> GateState:
        """The gate's view of the operator state (its ORM row, or its columns as a plain
        row)."""
        return cls(TradingState(row.trading_state), row.pause_reason, row.breach_level)


@dataclass(frozen=True, slots=True)
class OrderLimits:
    """Per-order limits: ``max_quantity`` in base units, ``max_notional`` in quote
    currency, ``max_drift_pct`` in percent of the proposal's reference price."""

    max_quantity: Decimal
    max_notional: Decimal
    max_drift_pct: Decimal

    @classmethod
    def from_settings(cls, settings: Settings) -> OrderLimits:
        """``MAX_ORDER_QUANTITY``, ``MAX_ORDER_NOTIONAL`` and ``MAX_PRICE_DRIFT_PCT``."""
        return cls(
            settings.max_order_quantity, settings.max_order_notional, settings.max_price_drift_pct
        )


@dataclass(frozen=True, slots=True)
class OrderCheck:
    """One order as the gate sees it.

    ``quantity`` in base units; ``reduces`` is True for an order that only reduces risk
    (see :func:`reduces_risk`); ``price`` is the market price now (quote currency; None
    with ``price_error`` when the broker could not give one); ``reference_price`` is the
    price at proposal (None: no drift rule); ``limit_price`` prices a limit order's
    notional; ``free_margin`` is the account's free margin (quote; None when unknown).
    """

    quantity: Decimal
    reduces: bool = False
    price: Decimal | None = None
    price_error: str = ""
    reference_price: Decimal | None = None
    limit_price: Decimal | None = None
    free_margin: Decimal | None = None


def reduces_risk(purpose: str, reduce_only: bool) -> bool:
    """True for an order that only reduces risk: ``reduce_only``, or any purpose other
    than ``open`` (close, stop_loss, take_profit, flatten)."""
    return reduce_only or purpose != "open"


def state_reason(state: GateState, reduces: bool = False) -> str | None:
    """Why the trading state forbids an order, or None when it passes.

    ACTIVE passes everything; REDUCING and HALTED pass only orders that reduce risk.
    The reason reads ``drawdown limit breached`` while a max breach stands, else
    ``paused (reason)`` (HALTED) or ``reducing only (reason)`` (REDUCING).
    """
    if reduces or state.trading_state is TradingState.ACTIVE:
        return None
    if state.breach_level == BREACH_MAX:
        return BREACHED
    why = f" ({state.pause_reason})" if state.pause_reason else ""
    if state.trading_state is TradingState.REDUCING:
        return "reducing only" + why
    return "paused" + why


def check_order(state: GateState, order: OrderCheck, limits: OrderLimits) -> str | None:
    """The pre-trade rules, in order; the first that fails gives the reason, None passes.

    1. The trading state (:func:`state_reason`). A reducing order passes every rule.
    2. Quantity over ``max_quantity``.
    3. No price from the broker.
    4. Price drift ``|price - reference| / reference x 100`` over ``max_drift_pct``.
    5. Notional ``quantity x (limit price or price)`` over ``max_notional``.
    6. No free margin (``free_margin`` known and not positive).
    """
    if order.reduces:
        return None
    reason = state_reason(state)
    if reason:
        return reason
    if order.quantity > limits.max_quantity:
        return f"quantity {order.quantity} over the limit {limits.max_quantity}"
    if order.price is None:
        return "no price from the broker" + (f" ({order.price_error})" if order.price_error else "")
    reference = order.reference_price
    if reference is not None and reference > 0:
        drift = abs(order.price - reference) / reference * HUNDRED
        if drift > limits.max_drift_pct:
            return f"price moved {drift:.1f}% (limit {limits.max_drift_pct:.1f}%)"
    notional = order.quantity * (order.limit_price or order.price)
    if notional > limits.max_notional:
        return f"notional {notional:.2f} over the limit {limits.max_notional:.2f}"
    if order.free_margin is not None and order.free_margin <= 0:
        return f"no free margin ({order.free_margin:.2f})"
    return None


def owns(position: Position) -> bool:
    """True when SignalDesk may close ``position`` (close all, the flatten, /close): the
    broker reports it as opened by SignalDesk (our magic number, our sub-account)."""
    return position.opened_by_signaldesk


# --- the owner of the state ---------------------------------------------------------------


class Gate:
    """Owns the trading state and runs the pre-trade check (see the module docstring).

    Args:
        db: holds ``operator_state`` and ``orders``.
        broker: the source of the quote and the account for :meth:`check_entry`.
        settings: the order limits.
        clock: current UTC time (injectable).
    """

    def __init__(
        self,
        db: Database,
        broker: Broker,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self.broker = broker
        self.limits = OrderLimits.from_settings(settings)
        # the broker, when it keeps market hours and refuses new risk while the market is
        # closed (MARKET_CLOSED_POLICY=block); both are fixed when the broker is built
        self._closing_hours: MarketHoursSource | None = (
            broker
            if isinstance(broker, MarketHoursSource)
            and broker.closed_policy is MarketClosedPolicy.BLOCK
            else None
        )
        self._clock = clock
        #: Called after a change of the trading state commits (the pending cards follow
        #: it: ``SignalService.follow_state``, wired by the engine).
        self.on_change: Callable[[], Awaitable[None]] | None = None

    # --- reads ----------------------------------------------------------------------------

    async def state(self) -> GateState:
        """The persisted state, read without a lock or a transaction (for display and
        early answers); created first on a database no engine has started on yet."""
        async with self._db.reading() as session:
            row = await repo.find_operator_state(session)
        if row is not None:
            return GateState.of(row)
        async with self._db.session() as session:
            return GateState.of(await repo.load_operator_state(session))

    async def state_in(self, conn: AsyncConnection) -> GateState:
        """The state inside the transaction of the caller's connection ``conn``, locked
        against a concurrent pause (``FOR UPDATE`` on PostgreSQL; on SQLite the caller
        must already have written in this transaction, which holds the database's write
        lock); created first on a database no engine has started on yet. See the module
        docstring."""
        row = (await conn.execute(_LOCK_STATE)).first()
        if row is None:  # a database no engine has started on yet: create it, lock it
            await repo.create_operator_state(conn)
            row = (await conn.execute(_LOCK_STATE)).one()
        return GateState.of(row)

    async def check_entry(
        self,
        signal: Signal,
        prices: MarketData | Broker | None = None,
        state: GateState | None = None,
    ) -> str | None:
        """Run :func:`check_order` for an approval of ``signal`` with a quote from
        ``prices`` (the market-data port the signal was priced with; default the broker)
        and the broker's account, and ask whether its market is closed
        (:meth:`closed_market`), all awaited here together, outside any transaction.
        Returns the reason the signal must not be sent, or None. The state is read again,
        locked, when the approval commits (:meth:`state_in`). Never raises BrokerError: a
        missing quote is a reason; a missing account skips the margin rule and missing
        market hours skip the closed-market rule (the venue still checks both).
        ``state`` is the state the caller has just read; None leaves the state to the
        approving transaction alone (the other rules are checked as if trading were
        ACTIVE)."""
        if state is None:
            state = GateState(TradingState.ACTIVE)
        held = state_reason(state)
        if held is not None:  # no broker call needed to say no
            return held
        asks: list[Awaitable[Any]] = [
            (prices or self.broker).quote(signal.symbol),
            self.broker.account(),
        ]
        if self._closing_hours is not None:  # no task for it on other brokers
            asks.append(self.closed_market(signal.symbol))
        quote, account, *closed = await asyncio.gather(*asks, return_exceptions=True)
        for outcome in (quote, account, *closed):
            if isinstance(outcome, BaseException) and not isinstance(outcome, BrokerError):
                raise outcome
        if closed and isinstance(closed[0], str) and closed[0]:
            return closed[0]
        price = None if isinstance(quote, BaseException) else quote.last
        price_error = str(quote) if isinstance(quote, BaseException) else ""
        free_margin = None if isinstance(account, BaseException) else account.free_margin
        order = OrderCheck(
            quantity=signal.quantity,
            price=price,
            price_error=price_error,
            reference_price=signal.reference_price,
            limit_price=signal.limit_price,
            free_margin=free_margin,
        )
        return check_order(state, order, self.limits)

    async def closed_market(self, symbol: str) -> str:
        """Why an order that adds risk on ``symbol`` is refused now: its market is closed
        on a broker that keeps market hours (:class:`MarketHoursSource`: IBKR's regular
        trading hours) and refuses such orders meanwhile (``MARKET_CLOSED_POLICY=block``),
        as ``market closed, opens in 2 h``; "" otherwise (no broker call on a broker
        without market hours, or with ``day_order``). Raises BrokerError (the hours could
        not be read; UnknownSymbolError)."""
        if self._closing_hours is None:
            return ""
        hours = await self._closing_hours.market_hours(symbol)
        return "" if hours.is_open else hours.describe()

    async def check_size(
        self, quantity: Decimal, price: Decimal, limit_price: Decimal | None = None
    ) -> str | None:
        """The rules of :func:`check_order` that a proposal must pass whatever the trading
        state: quantity, notional (``quantity x (limit_price or price)``, quote currency)
        and free margin, with the broker's account read here (no account skips the
        margin rule; the venue still checks it). Run at proposal, when a card is first
        posted, on an edit and on resume (see ``SignalService``); the trading state and
        the drift are the approval's business. Returns the reason, or None. Never raises
        BrokerError."""
        try:
            free_margin: Decimal | None = (await self.broker.account()).free_margin
        except BrokerError:
            free_margin = None
        order = OrderCheck(
            quantity=quantity, price=price, limit_price=limit_price, free_margin=free_margin
        )
        return check_order(GateState(TradingState.ACTIVE), order, self.limits)

    # --- the only writers of trading_state ------------------------------------------------

    async def pause(self, reason: str, actor: str) -> bool:
        """HALTED by ``actor`` (the owner's pause) with ``reason``; True when this call
        halted, False when trading was already halted (idempotent). After the commit,
        :meth:`announce`."""
        async with self._db.session() as session:
            halted = await self.halt_in(session, reason or "paused by owner", actor)
        if halted:
            await self.announce()
        return halted

    async def announce(self) -> None:
        """Tell :attr:`on_change` that the trading state changed; call it after the
        change commits (the pause and the resume do; the guard after its breach's
        transaction, as :meth:`halt_in` runs inside it). A failing listener is logged:
        the change has committed, and the kill switch never waits for a card."""
        if self.on_change is None:
            return
        try:
            await self.on_change()
        except Exception:
            log.exception("gate.listener_failed")

    async def halt_in(self, session: AsyncSession, reason: str, actor: str) -> bool:
        """In the caller's transaction: HALTED with ``reason``, and its ``pause`` audit
        event, unless already HALTED. The UPDATE is the first write of this step and the
        audit event is inserted after it (module docstring). True when this call halted."""
        await session.flush()  # the caller's pending changes first, then make sure the row exists
        await repo.load_operator_state(session)
        now = self._clock()
        result = await session.exec(
            update(OperatorStateRow)
            .where(
                col(OperatorStateRow.id) == 1,
                col(OperatorStateRow.trading_state) != TradingState.HALTED.value,
            )
            .values(
                trading_state=TradingState.HALTED.value,
                pause_reason=reason[:500],
                paused_by=actor[:128],
                paused_at=now,
            )
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        await repo.add_audit(session, actor=actor, action="pause", at=now, reason=reason)
        await session.flush()
        return True

    async def resume(self, actor: str) -> bool:
        """ACTIVE by ``actor``, clearing the pause information and a max breach (callers
        confirm a breach with the owner first). True when something was lifted; then,
        after the commit, :meth:`announce`."""
        now = self._clock()
        async with self._db.session() as session:
            await repo.load_operator_state(session)
            breached = col(OperatorStateRow.breach_level) == BREACH_MAX
            stopped = (col(OperatorStateRow.trading_state) != TradingState.ACTIVE.value) | breached
            result = await session.exec(
                update(OperatorStateRow)
                .where(col(OperatorStateRow.id) == 1, stopped)
                .values(
                    trading_state=TradingState.ACTIVE.value,
                    pause_reason="",
                    paused_by="",
                    paused_at=None,
                    breach_level=case((breached, ""), else_=col(OperatorStateRow.breach_level)),
                    breach_at=case((breached, None), else_=col(OperatorStateRow.breach_at)),
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return False
            await repo.add_audit(session, actor=actor, action="resume", at=now)
        await self.announce()
        return True

    # --- in-flight orders -----------------------------------------------------------------

    async def settle_in_flight(self, wait_seconds: float = IN_FLIGHT_WAIT_SECONDS) -> int:
        """Wait until no opening order is SUBMITTED (committed before the halt, still on
        its way to the broker), polling every 50 ms for at most ``wait_seconds`` seconds of
        loop time. Returns how many are still in flight (0 when all came back); those are
        left to the reconciler."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            async with self._db.session() as session:
                pending = (
                    await session.exec(
                        select(func.count())
                        .select_from(OrderRow)
                        .where(
                            col(OrderRow.state) == OrderState.SUBMITTED.value,
                            col(OrderRow.purpose) == "open",
                            col(OrderRow.reduce_only).is_(False),
                        )
                    )
                ).one()
            if not pending or loop.time() >= deadline:
                return int(pending)
            await asyncio.sleep(0.05)
