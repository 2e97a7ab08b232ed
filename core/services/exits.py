"""Protective exits: a card's stop loss and take profit made true (docs/trades.md): every
filled entry with a stop loss or take profit gets its exits at the venue where it holds
them, else watched by SignalDesk; one cancels the other; every exit posts its PnL.

When an entry fills, :meth:`ExitService.sync` asks the venue where exits can live
(:meth:`~core.brokers.base.Broker.exit_style`) and records it on the trade:

- ``ORDERS`` (paper, ccxt swaps): reduce-only STOP and TAKE_PROFIT orders for the trade's
  open quantity. ``ATTACHED`` (MT5): the same calls with ``position_ref`` = the entry's
  client order id; the venue sets sl/tp on the ticket. Each exit is an order like any
  other: its row (purpose ``stop_loss`` / ``take_profit``, ``trade_id``, state SUBMITTED)
  is committed before the broker is called, under the client order id
  ``<entry cid>-sl<n>`` / ``<entry cid>-tp<n>``; ``n`` grows when the level or the
  quantity changes. A move places the new order first, then cancels the old one
  (ORDERS); on ATTACHED the new placement replaces the level, so the superseded row is
  only marked CANCELLED here. A stop the venue refuses is alerted (Priority.ALERT) and
  the trade falls back to WATCHED.
- ``WATCHED`` (ccxt spot): :meth:`ExitService.check` closes the trade's open quantity
  with a reduce-only market order under ``<entry cid>-w<version>`` the moment a price it
  sees trades through a level. The trigger is a compare-and-set on the trade row's
  ``version`` in the same transaction that inserts the exit order row, and a trade whose
  watched exit is still in flight is not triggered again, so two racing checks close it
  once. A crash between the trigger and the fill leaves the row SUBMITTED/UNKNOWN; the
  reconciler resolves it by client order id (never a second exit).

Prices: :meth:`ExitService.check` reads the market-data port (``market``, the engine's
market data when it is the venue's own or set by ``MARKET_DATA``; docs/architecture.md,
"Market data"), else the broker's quote. It runs from the ``exits`` job, every
``EXIT_CHECK_INTERVAL`` seconds, and as a background check after every quote the engine
takes, from the broker (:class:`PriceWatchBroker`) or from the market data
(:class:`PriceWatchMarket`): a quote of the price source is checked at its price, any
other quote makes the check read the price source. The check also looks up resting exit
orders and records any fill (the trade record then closes the trade and posts its one
exit message), cancels the sibling of a filled exit (one-cancels-other, on every venue),
moves trailing and break-even stops (never looser; each move a compare-and-set, an audit
event, and a new native order where the exits are native), and decides the exit style of
trades whose entry was recorded by a process that died before deciding it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import partial

import structlog
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.brokers.base import Broker, retry_temporary
from core.db import repositories as repo
from core.db.engine import Database, sql_literal
from core.db.models import OrderRow, SignalRow, TradeRow
from core.domain import (
    Account,
    Candle,
    ExitReason,
    ExitStyle,
    OrderReport,
    OrderRequest,
    OrderState,
    OrderType,
    Position,
    Quote,
    Side,
    TradeStatus,
    utcnow,
)
from core.errors import (
    BrokerError,
    BrokerPermanentError,
    BrokerTemporaryError,
    OrderNotFoundError,
)
from core.marketdata.base import Instrument, MarketData
from core.notify import NoticeKind, Notification, Notifier, Priority, Topic
from core.services.trades import EXIT_PURPOSES, TradeEvent, TradeEventKind, has_exit_levels
from core.services.trading import TradingService

__all__ = [
    "ACTOR",
    "CheckSummary",
    "ExitService",
    "PriceWatchBroker",
    "PriceWatchMarket",
    "trail_stop",
]

log = structlog.get_logger(__name__)

ACTOR = "exits"

_ACTIVE = (OrderState.SUBMITTED.value, OrderState.OPEN.value, OrderState.UNKNOWN.value)
_TRIGGER_TYPES = (OrderType.STOP.value, OrderType.TAKE_PROFIT.value)
_HUNDRED = Decimal(100)


def trail_stop(
    side: Side,
    stop: Decimal | None,
    best: Decimal,
    price: Decimal,
    average_entry: Decimal,
    *,
    trail_pct: Decimal | None,
    breakeven_at_r: Decimal | None,
    risk_per_unit: Decimal | None,
    tick: Decimal,
) -> Decimal | None:
    """The stop after the trailing and break-even rules, never looser than ``stop``.

    ``side`` is the trade's entry side; ``best`` its best price so far (highest for a
    long, lowest for a short), ``price`` the price now, all quote currency.

    - Trailing (``trail_pct`` percent): ``best x (1 - trail_pct / 100)`` for a long,
      ``best x (1 + trail_pct / 100)`` for a short, rounded to ``tick`` away from the
      price (down for a long, up for a short).
    - Break-even (``breakeven_at_r`` R): the average entry, once the open profit per unit
      ``(price - entry) x sign`` reaches ``breakeven_at_r x risk_per_unit``.

    The tighter of the candidates and ``stop`` wins (higher for a long, lower for a
    short); ``stop`` unchanged (or None) when no rule applies.
    """
    sign = side.sign
    candidates: list[Decimal] = []
    if trail_pct is not None:
        raw = best * (1 - sign * trail_pct / _HUNDRED)
        candidates.append(raw.quantize(tick, ROUND_FLOOR if sign > 0 else ROUND_CEILING))
    if breakeven_at_r is not None and risk_per_unit:
        profit_per_unit = (price - average_entry) * sign
        if profit_per_unit >= breakeven_at_r * risk_per_unit:
            candidates.append(average_entry)
    new = stop
    for candidate in candidates:
        if new is None or (candidate - new) * sign > 0:
            new = candidate
    return new


def _tick(price: Decimal) -> Decimal:
    """The price increment assumed for rounding a trailed stop: the last price's own
    precision, at least 0.01."""
    exponent = price.normalize().as_tuple().exponent
    places = max(2, -exponent if isinstance(exponent, int) else 2)
    return Decimal(1).scaleb(-places)


@dataclass(slots=True)
class CheckSummary:
    """What one check did: trades whose stop moved, watched trades closed, exit orders
    whose new state was recorded, trades whose exits were (re)placed because their style
    was undecided or their stop was missing (ids / client order ids)."""

    moved: list[int] = field(default_factory=list)
    triggered: list[int] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)
    decided: list[int] = field(default_factory=list)


class _Skip(Exception):
    """Rolls back a trigger transaction that lost to an exit already in flight."""


class ExitService:
    """Places, moves, watches and cancels the protective exits of trades (see the
    module docstring).

    Args:
        db: the database.
        broker: the venue (the engine's broker without the quote hook).
        trading: records reports and failures (the same path as every order), and owns
            the trade record.
        notifier: alerts (a refused stop, an exit whose outcome is unknown).
        clock: current UTC time (injectable).
        market: where prices are read (the market data without the quote hook); None
            reads ``broker.quote`` (a venue whose prices the market data does not give).
    """

    def __init__(
        self,
        db: Database,
        broker: Broker,
        trading: TradingService,
        notifier: Notifier,
        clock: Callable[[], datetime] = utcnow,
        market: MarketData | None = None,
    ) -> None:
        self._db = db
        self._broker = broker
        self._prices: MarketData | Broker = market if market is not None else broker
        self._trading = trading
        self._notifier = notifier
        self._clock = clock
        self._queued: dict[str, asyncio.Task[CheckSummary]] = {}
        self._background: set[asyncio.Task[CheckSummary]] = set()
        #: symbols with open trades that have exit levels (refreshed by every check and
        #: sync); a quote of another symbol needs no check
        self._symbols: set[str] = set()

    # --- hooks ----------------------------------------------------------------------------

    async def on_trades(self, events: Sequence[TradeEvent]) -> None:
        """``TradingService.on_trades``: place or resize the exits of opened, grown or
        reduced trades; cancel the remaining exits of closed ones (one-cancels-other).
        Trades without any exit level need nothing (and nothing is awaited for them).
        The exits of every closed trade are cancelled together (:meth:`_cancel_closed`: a
        close of 50 positions cancels their 50 stops at once); the other trades are
        synced one after another.

        Never raises: the fills are already recorded, so a failure here must not fail the
        caller (an approval, the reconciler); it is logged and alerted, and the ``exits``
        job (an undecided style) or the reconciler (a SUBMITTED exit) picks it up."""
        synced = dict.fromkeys(e.trade_id for e in events if e.has_exits)
        closed = [e.trade_id for e in events if e.has_exits and e.kind is TradeEventKind.CLOSED]
        if closed:
            try:
                await self._cancel_closed(closed)
            except Exception:  # each closed trade again alone, alerted on its own failure
                log.exception("exits of closed trades not cancelled together", trades=closed)
            else:
                synced = {t: None for t in synced if t not in closed}
        for trade_id in synced:
            try:
                await self.sync(trade_id)
            except Exception as exc:  # any failure: the owner must hear the stop may be missing
                log.exception("exits not synced", trade=trade_id)
                await self._alert(
                    f"🚨 The protective exits of trade #{trade_id} could not be placed "
                    f"({type(exc).__name__}: {exc}). SignalDesk retries on its next check."
                )

    async def _cancel_closed(self, trade_ids: Sequence[int]) -> None:
        """What :meth:`sync` does for closed trades, for all of ``trade_ids`` at once:
        their active native exits read in one query, cancelled concurrently and recorded
        together (:meth:`_cancel_all`)."""
        async with self._db.session() as session:
            active = await self._active_exits(session, *trade_ids)
        await self._cancel_all([o for o in active if o.order_type in _TRIGGER_TYPES])

    def observe(self, quote: Quote) -> None:
        """Schedule a background :meth:`check` of ``quote.symbol`` at ``quote.last`` and
        return at once (the quote hook of the price source). Requests made while one for
        the symbol waits to start are served by that one; a failed background check is
        logged. Only symbols with open trades that have exit levels are checked (the job
        catches the rest)."""
        self._schedule(quote.symbol, quote.last)

    def observe_elsewhere(self, quote: Quote) -> None:
        """As :meth:`observe` for a quote from a source the exits do not read (the
        broker's when prices come from the market data): the check reads the price
        source instead of trusting ``quote.last``."""
        self._schedule(quote.symbol, None)

    def _schedule(self, symbol: str, price: Decimal | None) -> None:
        if symbol in self._queued or symbol not in self._symbols:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): the job checks anyway
            return
        task = loop.create_task(self._observed(symbol, price))
        self._queued[symbol] = task
        self._background.add(task)
        task.add_done_callback(self._background_done)

    async def _observed(self, symbol: str, price: Decimal | None) -> CheckSummary:
        self._queued.pop(symbol, None)
        return await self.check(symbol, price)

    def _background_done(self, task: asyncio.Task[CheckSummary]) -> None:
        self._background.discard(task)
        for symbol, queued in list(self._queued.items()):
            if queued is task:
                del self._queued[symbol]
        if not task.cancelled() and task.exception() is not None:
            log.error("exit check after a quote failed", error=str(task.exception()))

    async def close(self) -> None:
        """Cancel background checks that have not finished (engine shutdown)."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- the check --------------------------------------------------------------------------

    async def check(self, symbol: str | None = None, price: Decimal | None = None) -> CheckSummary:
        """One pass over open trades (all, or ``symbol``'s; at ``price`` when given, else
        each symbol's last price from the price source: the market data, or the broker
        when the service has none): record fills of resting exit orders,
        decide undecided exit styles, move trailing and break-even stops, and close
        watched trades whose level traded. Broker errors are logged and left for the
        next pass; never raises BrokerError."""
        summary = CheckSummary()
        await self._poll_exit_orders(symbol, summary)
        async with self._db.session() as session:
            query = select(TradeRow).where(col(TradeRow.status) == TradeStatus.OPEN.value)
            if symbol is not None:
                query = query.where(col(TradeRow.symbol) == symbol)
            trades = list((await session.exec(query.order_by(col(TradeRow.id)))).all())
        watched = {t.symbol for t in trades if has_exit_levels(t)}
        if symbol is None:
            self._symbols = watched
        else:
            self._symbols.discard(symbol)
            self._symbols |= watched
        prices: dict[str, Decimal] = {symbol: price} if symbol and price is not None else {}
        for trade in trades:
            assert trade.id is not None
            if not trade.exit_style:
                await self.sync(trade.id)
                summary.decided.append(trade.id)
                continue
            if trade.symbol not in prices:
                try:
                    quote = await retry_temporary(partial(self._prices.quote, trade.symbol))
                except BrokerError as exc:
                    log.warning("exit check has no price", symbol=trade.symbol, error=str(exc))
                    continue
                prices[trade.symbol] = quote.last
            last = prices[trade.symbol]
            if await self._stop_missing(trade):  # e.g. a process died while placing it
                await self.sync(trade.id)
                summary.decided.append(trade.id)
            if await self._trail(trade, last):
                summary.moved.append(trade.id)
            if trade.exit_style == ExitStyle.WATCHED.value and await self._watch(trade.id, last):
                summary.triggered.append(trade.id)
        return summary

    async def _poll_exit_orders(self, symbol: str | None, summary: CheckSummary) -> None:
        """Look up resting exit orders at the venue; record any change (a fill closes the
        trade through the trade record, whose hook cancels the sibling)."""
        async with self._db.session() as session:
            query = select(OrderRow).where(
                col(OrderRow.purpose).in_(EXIT_PURPOSES),
                col(OrderRow.order_type).in_(_TRIGGER_TYPES),
                col(OrderRow.state) == sql_literal(OrderState.OPEN.value),  # rare: in the SQL
            )
            if symbol is not None:
                query = query.where(col(OrderRow.symbol) == symbol)
            orders = list((await session.exec(query.order_by(col(OrderRow.id)))).all())
        for order in orders:
            cid = order.client_order_id
            try:
                report = await retry_temporary(partial(self._broker.get_order, cid, order.symbol))
            except BrokerError as exc:
                log.warning("exit order lookup failed", client_order_id=cid, error=str(exc))
                continue
            if report is None:  # a lookup miss is not proof; the reconciler decides
                continue
            if report.state is OrderState.OPEN and report.filled_quantity == order.filled_quantity:
                continue
            await self._trading.record_report(report, ACTOR)
            summary.recorded.append(cid)

    # --- placing and cancelling -----------------------------------------------------------

    async def sync(self, trade_id: int) -> None:
        """Make the trade's exits at the venue match the trade row: nothing active once it
        is closed; otherwise decide its exit style once, then (ORDERS / ATTACHED) one
        stop and one take-profit order at the trade's levels for its open quantity.
        Idempotent; safe to call concurrently (client order ids are unique)."""
        async with self._db.session() as session:
            trade = await session.get(TradeRow, trade_id, populate_existing=True)
            if trade is None:
                return
            active = await self._active_exits(session, trade_id)
            entry_cid = await _entry_cid(session, trade)
        if trade.status == TradeStatus.CLOSED.value:
            await self._cancel_all([o for o in active if o.order_type in _TRIGGER_TYPES])
            return
        if has_exit_levels(trade):
            self._symbols.add(trade.symbol)
        if not trade.exit_style:
            try:
                style = await retry_temporary(lambda: self._broker.exit_style(trade.symbol))
            except BrokerError as exc:  # decided on a later check
                log.warning("exit style unknown", trade=trade_id, error=str(exc))
                return
            if not await self._set_style(trade, style):
                return
        native = [o for o in active if o.order_type in _TRIGGER_TYPES]
        if trade.exit_style == ExitStyle.WATCHED.value:
            await self._cancel_all(native)
            return
        style = ExitStyle(trade.exit_style)
        for purpose in EXIT_PURPOSES:
            mine = [o for o in native if o.purpose == purpose]
            if not await self._ensure(trade, purpose, style, entry_cid, mine):
                return  # fell back to WATCHED

    async def _ensure(
        self,
        trade: TradeRow,
        purpose: str,
        style: ExitStyle,
        entry_cid: str,
        active: list[OrderRow],
    ) -> bool:
        """One exit of ``purpose`` at the trade's level for its open quantity. Returns
        False when a refused stop made the trade fall back to WATCHED."""
        level = trade.stop_loss if purpose == "stop_loss" else trade.take_profit
        current = active[-1] if active else None
        if level is None:
            await self._cancel_all(active)
            return True
        if current is not None and current.state != OrderState.OPEN.value:
            return True  # in flight or unknown: the reconciler resolves it first
        if (
            current is not None
            and current.trigger_price == level
            and current.quantity == trade.quantity_open
        ):
            await self._cancel_all(active[:-1], style)
            return True
        assert trade.id is not None
        now = self._clock()
        kind = OrderType.STOP if purpose == "stop_loss" else OrderType.TAKE_PROFIT
        position_ref = entry_cid if style is ExitStyle.ATTACHED else trade.position_ref
        try:  # the order row is the record of a placement (no audit event: moves have one)
            async with self._db.session() as session:
                fresh = await session.get(TradeRow, trade.id, populate_existing=True)
                if fresh is None or fresh.status != TradeStatus.OPEN.value:
                    return True  # closed meanwhile (e.g. by the other exit): nothing to place
                placed = await session.exec(
                    select(func.count())
                    .select_from(OrderRow)
                    .where(
                        col(OrderRow.trade_id) == trade.id,
                        col(OrderRow.purpose) == purpose,
                        col(OrderRow.order_type).in_(_TRIGGER_TYPES),
                    )
                )
                cid = f"{entry_cid}-{'sl' if purpose == 'stop_loss' else 'tp'}{placed.one() + 1}"
                reason = await _reason(session, trade, purpose)
                row = _exit_row(trade, cid, purpose, kind, reason, position_ref, now, trigger=level)
                session.add(row)
        except IntegrityError:  # another check is placing this very exit
            return True
        request = OrderRequest(
            client_order_id=cid,
            symbol=trade.symbol,
            side=Side(row.side),
            quantity=row.quantity,
            order_type=kind,
            reduce_only=True,
            trigger_price=level,
            position_ref=position_ref,
        )
        outcome, error = await self._send(cid, partial(self._broker.place_order, request))
        if outcome == "refused" and purpose == "stop_loss":
            await self._fall_back(trade, error)
            return False
        if outcome == "refused":
            await self._alert(
                f"Take profit of trade #{trade.id} ({trade.symbol}) at {level} "
                f"was refused by {self._broker.name}: {error}."
            )
        if outcome == "done":
            await self._cancel_all(active, style, superseded_by=cid)
        return True

    async def _send(
        self, cid: str, call: Callable[[], Awaitable[OrderReport | None]]
    ) -> tuple[str, str]:
        """Send an exit whose row is committed and record the outcome: ``("done", "")``
        when the venue answered (a None answer, nothing to close, is recorded
        CANCELLED), ``("refused", why)`` when it refused (FAILED: nothing was placed),
        ``("unknown", why)`` when the outcome is unknown (UNKNOWN: the reconciler
        resolves it by client order id)."""
        try:
            report = await retry_temporary(call)
        except (BrokerPermanentError, BrokerTemporaryError) as exc:  # nothing was placed
            await self._trading.record_failure(cid, OrderState.FAILED, str(exc), ACTOR)
            return "refused", str(exc)
        except (BrokerError, OSError, TimeoutError) as exc:
            await self._trading.record_failure(cid, OrderState.UNKNOWN, str(exc), ACTOR)
            return "unknown", str(exc)
        if report is None:
            await self._trading.record_failure(cid, OrderState.CANCELLED, "already flat", ACTOR)
        else:
            await self._trading.record_report(report, ACTOR)
        return "done", ""

    async def _cancel_all(
        self,
        orders: Sequence[OrderRow],
        style: ExitStyle = ExitStyle.ORDERS,
        *,
        superseded_by: str = "",
    ) -> None:
        """Cancel ``orders`` at the venue, concurrently, and record the final reports in
        one transaction. A superseded ATTACHED level is replaced by the new placement, so
        its row is only closed here."""
        live = []
        for order in orders:
            if superseded_by and style is ExitStyle.ATTACHED:
                await self._trading.record_failure(
                    order.client_order_id,
                    OrderState.CANCELLED,
                    f"superseded by {superseded_by}",
                    ACTOR,
                )
            elif order.state == OrderState.OPEN.value:  # else in flight or unknown: the
                live.append(order)  # reconciler resolves it first
        outcomes = await asyncio.gather(
            *(
                retry_temporary(partial(self._broker.cancel_order, o.client_order_id, o.symbol))
                for o in live
            ),
            return_exceptions=True,
        )
        reports = []
        unexpected: list[BaseException] = []
        for order, outcome in zip(live, outcomes, strict=True):
            cid = order.client_order_id
            if isinstance(outcome, OrderNotFoundError):
                await self._trading.record_failure(
                    cid, OrderState.CANCELLED, "not found at the broker when cancelled", ACTOR
                )
            elif isinstance(outcome, BrokerError):
                log.warning("exit cancel failed", client_order_id=cid, error=str(outcome))
            elif isinstance(outcome, BaseException):
                unexpected.append(outcome)
            else:
                reports.append(outcome)
        await self._trading.record_reports(reports, ACTOR)
        if unexpected:
            raise unexpected[0]

    async def _fall_back(self, trade: TradeRow, error: str) -> None:
        """A refused stop: alert loudly, watch the trade instead, cancel its native exits."""
        assert trade.id is not None
        async with self._db.session() as session:
            await session.exec(
                update(TradeRow)
                .where(col(TradeRow.id) == trade.id)
                .values(
                    exit_style=ExitStyle.WATCHED.value,
                    version=TradeRow.version + 1,
                    updated_at=self._clock(),
                )
            )
            await repo.add_audit(
                session,
                actor=ACTOR,
                action="exit_fallback",
                at=self._clock(),
                reason=f"trade #{trade.id}: stop refused ({error}); watched by SignalDesk",
            )
            active = await self._active_exits(session, trade.id)
        await self._alert(
            f"🚨 The stop loss {trade.stop_loss} of trade #{trade.id} ({trade.symbol}) could "
            f"not be placed at {self._broker.name}: {error}. SignalDesk now watches the "
            "price itself and closes the trade with a market order when a level trades."
        )
        await self._cancel_all([o for o in active if o.order_type in _TRIGGER_TYPES])

    async def _set_style(self, trade: TradeRow, style: ExitStyle) -> bool:
        """Compare-and-set the trade's exit style (once); False when the row changed."""
        async with self._db.session() as session:
            result = await session.exec(
                update(TradeRow)
                .where(col(TradeRow.id) == trade.id, col(TradeRow.version) == trade.version)
                .values(exit_style=style.value, version=trade.version + 1, updated_at=self._clock())
            )
            won = result.rowcount == 1  # type: ignore[attr-defined]
        if won:
            trade.exit_style, trade.version = style.value, trade.version + 1
        return won

    # --- trailing and break-even ----------------------------------------------------------

    async def _trail(self, trade: TradeRow, price: Decimal) -> bool:
        """Move the trade's best price and stop (compare-and-set on ``version``); on a
        stop move write an audit event and re-place a native stop. True when it moved."""
        if trade.trail_pct is None and trade.breakeven_at_r is None:
            return False
        side = Side(trade.side)
        best = trade.extreme_price if trade.extreme_price is not None else trade.average_entry
        best = max(best, price) if side is Side.BUY else min(best, price)
        risk_per_unit = (
            trade.initial_risk / trade.quantity if trade.initial_risk and trade.quantity else None
        )
        stop = trail_stop(
            side,
            trade.stop_loss,
            best,
            price,
            trade.average_entry,
            trail_pct=trade.trail_pct,
            breakeven_at_r=trade.breakeven_at_r,
            risk_per_unit=risk_per_unit,
            tick=_tick(price),
        )
        if stop == trade.stop_loss and best == trade.extreme_price:
            return False
        now = self._clock()
        async with self._db.session() as session:
            result = await session.exec(
                update(TradeRow)
                .where(
                    col(TradeRow.id) == trade.id,
                    col(TradeRow.version) == trade.version,
                    col(TradeRow.status) == TradeStatus.OPEN.value,
                )
                .values(
                    extreme_price=best, stop_loss=stop, version=trade.version + 1, updated_at=now
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return False  # another check moved it; the next pass sees the new row
            moved = stop != trade.stop_loss
            if moved:
                await repo.add_audit(
                    session,
                    actor=ACTOR,
                    action="stop_moved",
                    at=now,
                    reason=f"trade #{trade.id} {trade.symbol}: stop {trade.stop_loss} -> {stop} "
                    f"(best {best})",
                )
        old = trade.stop_loss
        trade.extreme_price, trade.stop_loss, trade.version = best, stop, trade.version + 1
        if stop != old and trade.exit_style in (ExitStyle.ORDERS.value, ExitStyle.ATTACHED.value):
            assert trade.id is not None
            await self.sync(trade.id)
        return stop != old

    # --- watched exits --------------------------------------------------------------------

    async def _watch(self, trade_id: int, price: Decimal) -> bool:
        """Close a watched trade whose stop or take profit ``price`` trades through, once.
        True when this call triggered the exit."""
        async with self._db.session() as session:
            trade = await session.get(TradeRow, trade_id, populate_existing=True)
        if trade is None or trade.status != TradeStatus.OPEN.value or trade.quantity_open <= 0:
            return False
        sign = Side(trade.side).sign
        if trade.stop_loss is not None and (price - trade.stop_loss) * sign <= 0:
            purpose = "stop_loss"
        elif trade.take_profit is not None and (price - trade.take_profit) * sign >= 0:
            purpose = "take_profit"
        else:
            return False
        version = trade.version + 1
        now = self._clock()
        try:
            async with self._db.session() as session:
                won = await session.exec(
                    update(TradeRow)
                    .where(
                        col(TradeRow.id) == trade_id,
                        col(TradeRow.version) == trade.version,
                        col(TradeRow.status) == TradeStatus.OPEN.value,
                    )
                    .values(version=version, updated_at=now)
                )
                if won.rowcount != 1:  # type: ignore[attr-defined]
                    raise _Skip
                in_flight = await session.exec(
                    select(func.count())
                    .select_from(OrderRow)
                    .where(
                        col(OrderRow.trade_id) == trade_id,
                        col(OrderRow.purpose).in_(EXIT_PURPOSES),
                        col(OrderRow.order_type) == OrderType.MARKET.value,
                        col(OrderRow.state).in_(_ACTIVE),
                    )
                )
                if in_flight.one():
                    raise _Skip
                reason = await _reason(session, trade, purpose)
                cid = f"{await _entry_cid(session, trade)}-w{version}"
                row = _exit_row(
                    trade, cid, purpose, OrderType.MARKET, reason, trade.position_ref, now
                )
                session.add(row)
                await session.flush()
                level = trade.stop_loss if purpose == "stop_loss" else trade.take_profit
                await repo.add_audit(
                    session,
                    actor=ACTOR,
                    action="watched_exit",
                    at=now,
                    order_id=row.id,
                    reason=f"trade #{trade_id} {trade.symbol}: {reason.value} {level} "
                    f"traded at {price}",
                )
        except (_Skip, IntegrityError):
            return False
        await self._send_close(trade, cid)
        return True

    async def _send_close(self, trade: TradeRow, cid: str) -> None:
        """Send a watched exit's reduce-only market close and record the outcome."""
        call = partial(
            self._broker.close_position,
            trade.symbol,
            cid,
            trade.quantity_open,
            trade.position_ref,
        )
        outcome, error = await self._send(cid, call)
        if outcome == "refused":
            await self._alert(
                f"🚨 The watched exit of trade #{trade.id} ({trade.symbol}) was refused by "
                f"{self._broker.name}: {error}. SignalDesk tries again on its next check."
            )

    # --- helpers --------------------------------------------------------------------------

    @staticmethod
    async def _active_exits(session: AsyncSession, *trade_ids: int) -> list[OrderRow]:
        """The trades' exit orders not final yet (SUBMITTED, OPEN, UNKNOWN), oldest first."""
        query = (
            select(OrderRow)
            .where(
                col(OrderRow.trade_id).in_(sorted(set(trade_ids))),
                col(OrderRow.purpose).in_(EXIT_PURPOSES),
                col(OrderRow.state).in_(_ACTIVE),
            )
            .order_by(col(OrderRow.id))
            .execution_options(populate_existing=True)
        )
        return list((await session.exec(query)).all())

    async def _stop_missing(self, trade: TradeRow) -> bool:
        """True when a trade whose exits are native has a stop level but no stop order
        that is live or in flight at the venue."""
        if trade.stop_loss is None or trade.exit_style == ExitStyle.WATCHED.value:
            return False
        assert trade.id is not None
        async with self._db.session() as session:
            active = await self._active_exits(session, trade.id)
        return not any(o.purpose == "stop_loss" and o.order_type in _TRIGGER_TYPES for o in active)

    async def _alert(self, text: str) -> None:
        await self._notifier.notify(
            Notification(NoticeKind.TEXT, text, priority=Priority.ALERT, topic=Topic.WARNING)
        )


async def _entry_cid(session: AsyncSession, trade: TradeRow) -> str:
    """The client order id of the entry that opened the trade (the prefix of its exit ids
    and, on ATTACHED venues, the ticket's reference)."""
    query = select(OrderRow.client_order_id).where(
        col(OrderRow.trade_id) == trade.id, col(OrderRow.purpose) == "open"
    )
    cid = (await session.exec(query.order_by(col(OrderRow.id)))).first()
    return cid or f"sd-t{trade.id}"


async def _reason(session: AsyncSession, trade: TradeRow, purpose: str) -> ExitReason:
    """take_profit; stop_loss; or trailing_stop once the trailing or break-even rule moved
    the stop away from the signal's."""
    if purpose == "take_profit":
        return ExitReason.TAKE_PROFIT
    signal = await session.get(SignalRow, trade.signal_id) if trade.signal_id else None
    initial = signal.stop_loss if signal is not None else None
    return ExitReason.STOP_LOSS if trade.stop_loss == initial else ExitReason.TRAILING_STOP


def _exit_row(
    trade: TradeRow,
    cid: str,
    purpose: str,
    kind: OrderType,
    reason: ExitReason,
    position_ref: str,
    now: datetime,
    *,
    trigger: Decimal | None = None,
) -> OrderRow:
    """The SUBMITTED row of an exit of ``trade``: reduce-only, on the other side, for the
    trade's open quantity, written before the broker is called."""
    return OrderRow(
        client_order_id=cid,
        purpose=purpose,
        trade_id=trade.id,
        symbol=trade.symbol,
        side=Side(trade.side).opposite.value,
        quantity=trade.quantity_open,
        order_type=kind.value,
        trigger_price=trigger,
        reduce_only=True,
        position_ref=position_ref,
        exit_reason=reason.value,
        state=OrderState.SUBMITTED.value,
        created_at=now,
        updated_at=now,
    )


class PriceWatchBroker:
    """The engine's broker, unchanged but for one thing: every quote it returns is shown
    to ``on_quote`` (:meth:`ExitService.observe`, set once the service exists), so watched
    exits and trailing stops are checked on every price the engine takes. Other
    attributes of the wrapped adapter (the paper broker's ``feed``, ...) are reachable
    through it."""

    def __init__(self, broker: Broker, on_quote: Callable[[Quote], None] | None = None) -> None:
        self.inner = broker
        self.name = broker.name
        self.on_quote = on_quote

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def quote(self, symbol: str) -> Quote:
        """The wrapped broker's quote, shown to ``on_quote`` first."""
        quote = await self.inner.quote(symbol)
        if self.on_quote is not None:
            self.on_quote(quote)
        return quote

    async def account(self) -> Account:
        """See :meth:`Broker.account`."""
        return await self.inner.account()

    async def positions(self) -> list[Position]:
        """See :meth:`Broker.positions`."""
        return await self.inner.positions()

    async def place_order(self, request: OrderRequest) -> OrderReport:
        """See :meth:`Broker.place_order`."""
        return await self.inner.place_order(request)

    async def get_order(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """See :meth:`Broker.get_order`."""
        return await self.inner.get_order(client_order_id, symbol)

    async def close_position(
        self,
        symbol: str,
        client_order_id: str,
        quantity: Decimal | None = None,
        position_ref: str = "",
    ) -> OrderReport | None:
        """See :meth:`Broker.close_position`; the optional arguments are passed on only
        when given."""
        extra: dict[str, object] = {}
        if quantity is not None:
            extra["quantity"] = quantity
        if position_ref:
            extra["position_ref"] = position_ref
        return await self.inner.close_position(symbol, client_order_id, **extra)  # type: ignore[arg-type]

    async def cancel_order(self, client_order_id: str, symbol: str) -> OrderReport:
        """See :meth:`Broker.cancel_order`."""
        return await self.inner.cancel_order(client_order_id, symbol)

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        """See :meth:`Broker.open_orders`."""
        return await self.inner.open_orders(symbol)

    async def exit_style(self, symbol: str) -> ExitStyle:
        """See :meth:`Broker.exit_style`."""
        return await self.inner.exit_style(symbol)

    async def close(self) -> None:
        """See :meth:`Broker.close`."""
        await self.inner.close()


class PriceWatchMarket:
    """The engine's market data, unchanged but for one thing: every quote it returns is
    shown to ``on_quote`` (set once the exit service exists), so a proposal's reference
    price, the drift check and the strategies' quotes check the exits too. ``name`` and
    other attributes of the wrapped market data are reachable through it."""

    def __init__(self, market: MarketData, on_quote: Callable[[Quote], None] | None = None) -> None:
        self.inner = market
        self.name = market.name
        self.on_quote = on_quote

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def quote(self, symbol: str) -> Quote:
        """The wrapped market data's quote, shown to ``on_quote`` first."""
        quote = await self.inner.quote(symbol)
        if self.on_quote is not None:
            self.on_quote(quote)
        return quote

    async def candles(self, symbol: str, timeframe: str, count: int) -> list[Candle]:
        """See :meth:`MarketData.candles`."""
        return await self.inner.candles(symbol, timeframe, count)

    async def symbols(self) -> list[Instrument]:
        """See :meth:`MarketData.symbols`."""
        return await self.inner.symbols()

    async def close(self) -> None:
        """See :meth:`MarketData.close`."""
        await self.inner.close()
