"""SignalService: the signal lifecycle (propose, approve, reject, cancel, expire).

Every transition is a compare-and-set in the database with an audit event (see
:func:`core.db.repositories.transition_signal`): of two taps, two owners, a retry or a
replayed callback, exactly one wins; the others get :class:`TransitionConflictError`
carrying the current state.

Approval re-checks at tap time (docs/architecture.md, "The signal lifecycle"): not
expired, then the one pre-trade gate
(:mod:`core.services.gate`: trading state, size, price drift, notional, free margin), with
the trading state read again, locked, inside the transaction that approves the signal and
inserts its order row, so no approval commits after a pause or a breach has committed. A
failed check leaves the signal BLOCKED with the reason; nothing is sent to the broker.

The gate's size rules (quantity, notional, free margin: ``Gate.check_size``) also run when
a signal is proposed or edited (refused with InvalidInputError, nothing stored) and again
before its card is first posted and on resume (:meth:`SignalService.recheck`: a signal
whose account changed since moves PROPOSED -> BLOCKED with the reason).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from core.brokers.base import Broker
from core.config import Settings
from core.db import repositories as repo
from core.db.engine import Database
from core.db.models import SignalRow
from core.domain import (
    AuditEvent,
    OrderReport,
    OrderType,
    Side,
    Signal,
    SignalStatus,
    TradingState,
    utcnow,
)
from core.errors import (
    CardChangedError,
    InvalidInputError,
    TransitionConflictError,
)
from core.marketdata.base import MarketData
from core.notify import NoticeKind, Notification, Notifier, insert_outbox
from core.services.gate import GateState, state_reason
from core.services.trading import TradingService

__all__ = ["Decision", "Proposal", "SignalEdit", "SignalService"]


@dataclass(frozen=True, slots=True)
class Proposal:
    """A trade idea before validation. Quantity in base units, prices in quote currency;
    ``ttl_seconds`` overrides ``SIGNAL_TTL_SECONDS``. ``trail_pct`` (percent, 0 < x < 100)
    trails the stop behind the best price; ``breakeven_at_r`` (R, > 0, needs a stop loss)
    moves the stop to the entry once the open profit reaches that many times the risk."""

    source: str
    symbol: str
    side: Side
    quantity: Decimal
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    note: str = ""
    ttl_seconds: int | None = None
    trail_pct: Decimal | None = None
    breakeven_at_r: Decimal | None = None


@dataclass(frozen=True, slots=True)
class SignalEdit:
    """Changes to a pending signal; None leaves a field as it is.

    ``quantity`` in base units; ``scale`` multiplies the current quantity (half: 0.5);
    ``risk_pct`` (percent of account equity, 0 < x <= 100) sizes the quantity instead,
    from the entry and the stop loss (the edited one, else the signal's); ``limit_price``
    (quote) makes the order a limit order, ``market`` makes it a market order again;
    ``stop_loss`` / ``take_profit`` in quote currency."""

    quantity: Decimal | None = None
    scale: Decimal | None = None
    risk_pct: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    limit_price: Decimal | None = None
    market: bool = False

    @property
    def empty(self) -> bool:
        """True when the edit changes nothing."""
        return self == SignalEdit()


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome of an approval: the signal in its new state and the order's report, if an
    order was placed and the broker answered."""

    signal: Signal
    report: OrderReport | None = None


class SignalService:
    """Runs the signal lifecycle.

    Args:
        db: the database.
        broker: used for the reference price at proposal and the drift check at approval.
        trading: executes approved signals.
        notifier: posts cards and card updates.
        settings: TTL, drift and size limits.
        clock: current UTC time (injectable).
        market: where the reference price and the drift check read the price (the
            market-data port); default the broker's own quote.
    """

    def __init__(
        self,
        db: Database,
        broker: Broker,
        trading: TradingService,
        notifier: Notifier,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
        *,
        market: MarketData | None = None,
    ) -> None:
        self._db = db
        self._broker = broker
        self._prices: MarketData | Broker = market if market is not None else broker
        self._trading = trading
        self._notifier = notifier
        self._settings = settings
        self._clock = clock

    async def propose(self, proposal: Proposal) -> Signal:
        """Validate ``proposal``, store it as PROPOSED with the current price as reference,
        and post its card. On a broker that keeps market hours (IBKR) with
        ``MARKET_CLOSED_POLICY=block``, a proposal while its market is closed is stored
        and posted BLOCKED instead (``market closed, opens in 2 h``), without buttons.

        Raises:
            InvalidInputError: non-positive quantity or prices, a limit order without a
                limit price, a stop loss or take profit on the wrong side of the entry,
                ``trail_pct`` outside (0, 100), ``breakeven_at_r`` not positive or
                without a stop loss.
                A proposal the gate's size rules refuse (quantity or notional over the
                limit, no free margin: :meth:`Gate.check_size`), with the reason; nothing
                is stored.
            UnknownSymbolError: the broker does not trade the symbol.
            BrokerError: the broker could not give a price (or its market hours).
        """
        _validate(proposal)
        quote = await self._prices.quote(proposal.symbol)
        entry = proposal.limit_price if proposal.limit_price is not None else quote.last
        _check_exits(proposal.side, entry, proposal.stop_loss, proposal.take_profit)
        await self._check_size(proposal.quantity, quote.last, proposal.limit_price)
        closed = await self._trading.gate.closed_market(proposal.symbol)
        status = SignalStatus.BLOCKED if closed else SignalStatus.PROPOSED
        now = self._clock()
        ttl = proposal.ttl_seconds or self._settings.signal_ttl_seconds
        row = SignalRow(
            source=proposal.source[:64],
            symbol=proposal.symbol,
            side=proposal.side.value,
            quantity=proposal.quantity,
            order_type=proposal.order_type.value,
            limit_price=proposal.limit_price,
            stop_loss=proposal.stop_loss,
            take_profit=proposal.take_profit,
            trail_pct=proposal.trail_pct,
            breakeven_at_r=proposal.breakeven_at_r,
            reference_price=quote.last,
            note=proposal.note[:500],
            status=status.value,
            status_reason=closed,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
            updated_at=now,
        )
        async with self._db.session() as session:
            session.add(row)
            await session.flush()
            assert row.id is not None
            await repo.add_audit(
                session,
                actor=proposal.source[:128],
                action="propose",
                at=now,
                signal_id=row.id,
                to_status=status.value,
                reason=closed or proposal.note,
            )
            signal = repo.signal_from_row(row)
        await self._notifier.notify(Notification(NoticeKind.SIGNAL_CARD, signal_id=signal.id))
        return signal

    async def get(self, signal_id: int) -> Signal:
        """One signal. Raises NotFoundError."""
        async with self._db.session() as session:
            return await repo.get_signal(session, signal_id)

    async def order_for(self, signal_id: int) -> OrderReport | None:
        """The recorded order of a signal, if one was placed."""
        async with self._db.session() as session:
            row = await repo.order_row_for_signal(session, signal_id)
            return None if row is None else repo.order_report(row)

    async def recent(
        self, statuses: list[SignalStatus] | None = None, limit: int = 50
    ) -> list[Signal]:
        """Signals, newest first, optionally only those in ``statuses``."""
        async with self._db.session() as session:
            return await repo.list_signals(session, statuses, limit)

    async def pending(self) -> list[Signal]:
        """PROPOSED signals, oldest first (the order the owner should decide them)."""
        return list(reversed(await self.recent([SignalStatus.PROPOSED], limit=100)))

    async def history(self, limit: int = 20, signal_id: int | None = None) -> list[AuditEvent]:
        """Audit events, newest first (one signal's lineage when ``signal_id`` is given)."""
        async with self._db.session() as session:
            return await repo.list_audit(session, limit=limit, signal_id=signal_id)

    async def edit(self, signal_id: int, version: int, change: SignalEdit, actor: str) -> Signal:
        """Change a pending signal's size, stop loss, take profit or entry before approval.

        The new terms go through the proposal's validation (positive numbers, the stop and
        target on the right sides of the entry, priced now from the market-data port) and
        the gate's size rules (:meth:`core.services.gate.Gate.check_size`: quantity and
        notional limits, free margin; the trading state is the approval's business). Then ONE
        compare-and-set writes them: the signal must still be PROPOSED with
        ``card_version == version`` (the card the owner edited), and the version goes up by
        one, so an Approve button rendered before the edit is refused. An audit event
        ``edit`` records old -> new; the card is re-rendered through ``signal_update``.

        Returns the edited signal.

        Raises:
            InvalidInputError: an empty edit, invalid terms, or terms the size limits refuse.
            CardChangedError: the signal was edited since ``version`` was rendered.
            TransitionConflictError: the signal is no longer PROPOSED.
            NotFoundError: no such signal.
            BrokerError: no price for the symbol, or no account for ``risk_pct``.
        """
        if change.empty:
            raise InvalidInputError("nothing to change")
        signal = await self.get(signal_id)
        if signal.status is not SignalStatus.PROPOSED:
            raise TransitionConflictError(signal_id, signal.status, "edit")
        if signal.card_version != version:
            raise CardChangedError(signal_id)
        quote = await self._prices.quote(signal.symbol)
        new = await self._edited(signal, change, quote.last)
        now = self._clock()
        changes = _changes(signal, new)
        if not changes:
            raise InvalidInputError("nothing to change")
        async with self._db.session() as session:
            if not await repo.update_pending_signal(
                session,
                signal_id,
                version,
                actor=actor[:128],
                at=now,
                reason="; ".join(changes),
                quantity=new.quantity,
                order_type=new.order_type.value,
                limit_price=new.limit_price,
                stop_loss=new.stop_loss,
                take_profit=new.take_profit,
            ):
                current = await repo.get_signal(session, signal_id)
                if current.status is not SignalStatus.PROPOSED:
                    raise TransitionConflictError(signal_id, current.status, "edit")
                raise CardChangedError(signal_id)
            edited = await repo.get_signal(session, signal_id)
        await self._card_update(signal_id)
        return edited

    async def recheck(self, signal_id: int) -> Signal:
        """Run the proposal's size rules (:meth:`Gate.check_size`, priced at the signal's
        reference price) again on a PROPOSED signal, whose account may have changed since
        it was proposed; a signal that now fails moves PROPOSED -> BLOCKED with the reason
        (compare-and-set, audited, its card updated). Called before a card is first posted
        and on resume. Returns the signal as it is now (any status: a decided one is left
        alone). Raises NotFoundError."""
        signal = await self.get(signal_id)
        if signal.status is not SignalStatus.PROPOSED:
            return signal
        reason = await self._trading.gate.check_size(
            signal.quantity, signal.reference_price, signal.limit_price
        )
        if reason is None:
            return signal
        try:
            return await self._decide(signal_id, SignalStatus.BLOCKED, "system", reason)
        except TransitionConflictError:  # decided meanwhile
            return await self.get(signal_id)

    async def follow_state(self) -> None:
        """Make the pending cards follow the trading state and the account (the gate calls
        this after a pause, a breach or a resume commits; the owner's close-all after its
        closes): signals past their TTL expire; while trading is ACTIVE every other pending
        signal is re-checked (:meth:`recheck`); each one still PROPOSED gets a card update
        (``signal_update``), which renders the card with the trading state and positions
        now: approvals off while paused, the buttons back on resume."""
        await self.expire_due()
        active = (await self._trading.gate.state()).trading_state is TradingState.ACTIVE
        for signal in await self.pending():
            if active and (await self.recheck(signal.id)).status is not SignalStatus.PROPOSED:
                continue
            await self._card_update(signal.id)

    async def _check_size(
        self, quantity: Decimal, price: Decimal, limit_price: Decimal | None
    ) -> None:
        """Raise InvalidInputError with the gate's reason when the size rules refuse."""
        refused = await self._trading.gate.check_size(quantity, price, limit_price)
        if refused:
            raise InvalidInputError(refused)

    async def risk_size(self, risk_pct: Decimal, entry: Decimal, stop_loss: Decimal) -> Decimal:
        """The quantity (base units) that loses ``risk_pct`` percent of the broker's equity
        at ``stop_loss`` from ``entry`` (quote), capped by ``MAX_ORDER_QUANTITY`` and
        ``MAX_ORDER_NOTIONAL`` (see :func:`core.strategies.sizing.size_for_risk`).

        Raises InvalidInputError (see size_for_risk), BrokerError (no account)."""
        # core.strategies imports this module (Proposal): import the helper late
        from core.strategies.sizing import size_for_risk

        equity = (await self._broker.account()).equity
        limits = self._trading.gate.limits
        return size_for_risk(
            equity,
            risk_pct,
            entry,
            stop_loss,
            max_quantity=limits.max_quantity,
            max_notional=limits.max_notional,
        )

    async def _edited(self, signal: Signal, change: SignalEdit, price: Decimal) -> Signal:
        """``signal`` with ``change`` applied and checked (see :meth:`edit`)."""
        limit = None if change.market else (change.limit_price or signal.limit_price)
        order_type = OrderType.LIMIT if limit is not None else OrderType.MARKET
        stop = change.stop_loss if change.stop_loss is not None else signal.stop_loss
        take = change.take_profit if change.take_profit is not None else signal.take_profit
        entry = limit if limit is not None else price
        quantity = change.quantity or signal.quantity
        if change.scale is not None:
            quantity = (signal.quantity * change.scale).normalize()
        if change.risk_pct is not None:
            if stop is None:
                raise InvalidInputError("risk % needs a stop loss (the risk is to the stop)")
            quantity = await self.risk_size(change.risk_pct, entry, stop)
        proposal = Proposal(
            source=signal.source,
            symbol=signal.symbol,
            side=signal.side,
            quantity=quantity,
            order_type=order_type,
            limit_price=limit,
            stop_loss=stop,
            take_profit=take,
            trail_pct=signal.trail_pct,
            breakeven_at_r=signal.breakeven_at_r,
        )
        _validate(proposal)
        _check_exits(signal.side, entry, stop, take)
        await self._check_size(quantity, price, limit)
        return replace(
            signal,
            quantity=quantity,
            order_type=order_type,
            limit_price=limit,
            stop_loss=stop,
            take_profit=take,
        )

    async def approve(
        self,
        signal_id: int,
        actor: str,
        version: int | None = None,
        on_decided: Callable[[Signal], Awaitable[None]] | None = None,
        *,
        shown: Signal | None = None,
    ) -> Decision:
        """Approve and, if the pre-trade gate passes, execute the signal.

        ``version`` is the card version the tapped button was rendered with (None: any,
        for the CLI, which shows the signal it approves); a signal edited since is refused
        with :class:`CardChangedError`, so an approval always executes what the card
        showed.

        ``shown`` is the signal as the tapped card showed it (PROPOSED, at ``version``),
        when the caller drew that card: then nothing is read before the approving
        transaction. That is safe because every edit of a pending signal's terms bumps its
        card version and the compare-and-set requires ``version``: the write succeeds only
        if the signal still reads as shown; the trading state is read (locked) inside the
        transaction as always. Any other ``shown`` is ignored.

        The gate's checks that need the broker (quote for the drift, account, market hours
        where the broker keeps them) are awaited first, with the signal and the trading
        state read in one statement, outside any transaction. Then ONE transaction (Core
        statements on a plain connection: no session to build, flush or track) moves the
        signal PROPOSED -> APPROVED -> the outcome the checks predict (SUBMITTED, or BLOCKED
        with their reason) in one compare-and-set (the write that exactly one concurrent
        approver wins; on SQLite this first write takes the write lock), reads the trading
        state locked (:meth:`Gate.state_in`), makes the signal BLOCKED when the state
        forbids the order, records both transitions' audit events in one INSERT, and writes
        the order row (or, when BLOCKED, the card update). Only after that commit is the
        broker called; its outcome is recorded in one more transaction (see
        :meth:`TradingService.send`). See :mod:`core.services.gate` for why no approval can
        commit after a pause commits.

        ``on_decided`` is awaited once the approval is committed and before the broker is
        called, with the signal as decided (SUBMITTED: the order goes out; BLOCKED with the
        reason), so a caller can answer the owner at once whatever the broker's latency.
        It is not called for an expired signal (no decision to wait for).

        Returns the decision; the signal ends EXPIRED, BLOCKED (with the reason), FILLED,
        SUBMITTED (a resting limit order), FAILED or UNKNOWN.

        Raises:
            NotFoundError: no such signal.
            TransitionConflictError: the signal was no longer PROPOSED (already decided by
                another tap); ``current`` carries its state.
            CardChangedError: ``version`` is not the signal's card version.
        """
        gate = self._trading.gate
        trading = self._trading
        state: GateState | None = None  # None: left to the approving transaction
        if _as_shown(shown, signal_id, version):
            assert shown is not None
            signal = shown
        else:
            signal, state = await self._approvable(signal_id, version)
        client_order_id = await trading.client_order_id(signal_id)
        now = self._clock()
        if now >= signal.expires_at:
            return Decision(
                await self._decide(signal_id, SignalStatus.EXPIRED, "system", "expired")
            )
        checked = await gate.check_entry(signal, self._prices, state)
        # the outcome the checks so far predict; the state read after the compare-and-set
        # may still block it (then BLOCKED is written over it before anyone can see it)
        outcome = SignalStatus.BLOCKED if checked else SignalStatus.SUBMITTED
        reason = checked or f"order {client_order_id}"
        async with self._db.engine.begin() as conn:  # Core statements only: no session
            if not await repo.approve_signal(
                conn, signal_id, outcome, actor=actor, at=now, reason=reason, version=version
            ):
                raise await self._refusal(signal_id)
            blocked = state_reason(await gate.state_in(conn)) or checked
            if blocked and blocked != checked:
                await repo.block_approved_signal(conn, signal_id, outcome, at=now, reason=blocked)
            decided = replace(
                signal,
                status=SignalStatus.BLOCKED if blocked else SignalStatus.SUBMITTED,
                status_reason=blocked or reason,
                decided_by=actor[:128],
                decided_at=now,
            )
            await repo.record_approval(
                conn, signal_id, decided.status, actor=actor, at=now, reason=blocked or reason
            )
            if blocked:
                await insert_outbox(
                    conn, Notification(NoticeKind.SIGNAL_UPDATE, signal_id=signal_id)
                )
            else:
                request = await trading.submit(conn, decided, client_order_id)
        if on_decided is not None:
            await on_decided(decided)
        if blocked:
            self._notifier.queued()
            return Decision(decided)
        final, report = await self._trading.send(request, signal_id, actor)
        return Decision(final, report)

    async def _refusal(self, signal_id: int) -> CardChangedError | TransitionConflictError:
        """Why the approval's compare-and-set of ``signal_id`` changed nothing, from the
        signal as committed now (its status only ever leaves PROPOSED): CardChangedError
        while it is still PROPOSED (edited since it was shown), else
        TransitionConflictError with its current status. Raises NotFoundError (no such
        signal)."""
        current, _ = await repo.get_signal_and_state(self._db, signal_id)
        if current.status is SignalStatus.PROPOSED:
            return CardChangedError(signal_id)
        return TransitionConflictError(signal_id, current.status, "approve")

    async def _approvable(self, signal_id: int, version: int | None) -> tuple[Signal, GateState]:
        """The signal and the trading state as committed, read in one statement outside
        any transaction (the approving write re-checks both). Raises NotFoundError,
        TransitionConflictError (no longer PROPOSED), CardChangedError (not at
        ``version``)."""
        signal, row = await repo.get_signal_and_state(self._db, signal_id)
        state = GateState.of(row) if row is not None else await self._trading.gate.state()
        if signal.status is not SignalStatus.PROPOSED:
            raise TransitionConflictError(signal_id, signal.status, "approve")
        if version is not None and version != signal.card_version:
            raise CardChangedError(signal_id)
        return signal, state

    async def reject(self, signal_id: int, actor: str, reason: str = "") -> Signal:
        """PROPOSED -> REJECTED by ``actor``. Raises NotFoundError, TransitionConflictError."""
        return await self._decide(signal_id, SignalStatus.REJECTED, actor, reason, record=True)

    async def cancel(self, signal_id: int, actor: str, reason: str) -> Signal:
        """PROPOSED -> CANCELLED (owner cancels, or the pause policy). Raises as reject."""
        return await self._decide(signal_id, SignalStatus.CANCELLED, actor, reason, record=True)

    async def expire_due(self) -> list[Signal]:
        """Move every PROPOSED signal past its ``expires_at`` to EXPIRED; returns them."""
        now = self._clock()
        expired = []
        for signal in await self.recent([SignalStatus.PROPOSED], limit=1000):
            if now < signal.expires_at:
                continue
            try:
                expired.append(
                    await self._decide(signal.id, SignalStatus.EXPIRED, "system", "ttl passed")
                )
            except TransitionConflictError:  # decided meanwhile: nothing to expire
                continue
        return expired

    async def _decide(
        self, signal_id: int, new: SignalStatus, actor: str, reason: str, record: bool = False
    ) -> Signal:
        now = self._clock()
        extra: dict[str, Any] = {"decided_by": actor[:128], "decided_at": now} if record else {}
        async with self._db.session() as session:
            if not await repo.transition_signal(
                session,
                signal_id,
                SignalStatus.PROPOSED,
                new,
                actor=actor,
                at=now,
                reason=reason,
                **extra,
            ):
                current = await repo.get_signal(session, signal_id)
                raise TransitionConflictError(signal_id, current.status, new.value.lower())
            signal = await repo.get_signal(session, signal_id)
        await self._card_update(signal_id)
        return signal

    async def _card_update(self, signal_id: int) -> None:
        await self._notifier.notify(Notification(NoticeKind.SIGNAL_UPDATE, signal_id=signal_id))


def _as_shown(shown: Signal | None, signal_id: int, version: int | None) -> bool:
    """True when ``shown`` is signal ``signal_id`` PROPOSED at card ``version``."""
    return (
        shown is not None
        and version is not None
        and shown.id == signal_id
        and shown.status is SignalStatus.PROPOSED
        and shown.card_version == version
    )


def _changes(old: Signal, new: Signal) -> list[str]:
    """The edited fields as ``"sl none -> 61000"`` lines (for the audit event)."""

    def shown(value: Decimal | None) -> str:
        return "none" if value is None else format(value.normalize(), "f")

    out = []
    for label, name in (
        ("qty", "quantity"),
        ("limit", "limit_price"),
        ("sl", "stop_loss"),
        ("tp", "take_profit"),
    ):
        before, after = getattr(old, name), getattr(new, name)
        if before != after:
            out.append(f"{label} {shown(before)} -> {shown(after)}")
    return out


def _validate(proposal: Proposal) -> None:
    if proposal.quantity <= 0:
        raise InvalidInputError(f"quantity must be positive, got {proposal.quantity}")
    for name in ("limit_price", "stop_loss", "take_profit"):
        value = getattr(proposal, name)
        if value is not None and value <= 0:
            raise InvalidInputError(f"{name.replace('_', ' ')} must be positive, got {value}")
    if proposal.order_type is OrderType.LIMIT and proposal.limit_price is None:
        raise InvalidInputError("a limit order needs a limit price")
    if proposal.order_type is OrderType.MARKET and proposal.limit_price is not None:
        raise InvalidInputError("a market order takes no limit price")
    _validate_trailing(proposal)


def _validate_trailing(proposal: Proposal) -> None:
    """trail_pct is a percent strictly between 0 and 100; breakeven_at_r is a positive R
    multiple and needs the stop loss that defines R."""
    trail = proposal.trail_pct
    if trail is not None and not (0 < trail < 100):
        raise InvalidInputError(f"trail_pct must be above 0 and below 100 (percent), got {trail}")
    breakeven = proposal.breakeven_at_r
    if breakeven is not None and breakeven <= 0:
        raise InvalidInputError(f"breakeven_at_r must be positive (R), got {breakeven}")
    if breakeven is not None and proposal.stop_loss is None:
        raise InvalidInputError("breakeven_at_r needs a stop loss (R is the risk to the stop)")


def _check_exits(
    side: Side, entry: Decimal, stop_loss: Decimal | None, take_profit: Decimal | None
) -> None:
    """A buy's stop loss is below the entry and its take profit above; a sell's reversed."""
    below, above = (
        ("stop loss", "take profit") if side is Side.BUY else ("take profit", "stop loss")
    )
    low = stop_loss if side is Side.BUY else take_profit
    high = take_profit if side is Side.BUY else stop_loss
    if low is not None and low >= entry:
        raise InvalidInputError(f"the {below} {low} must be below the entry {entry} for a {side}")
    if high is not None and high <= entry:
        raise InvalidInputError(f"the {above} {high} must be above the entry {entry} for a {side}")
