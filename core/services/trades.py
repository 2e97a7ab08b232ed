"""The trade record: one row per position SignalDesk opened from a signal (docs/trades.md),
built from fills.

Accounting is pure functions over fills (:func:`add_entry`, :func:`add_exit`,
:func:`allocate_fifo`, :func:`split_fee`), tested without I/O; :class:`TradeService`
applies them inside the transaction that records a broker report
(:meth:`core.services.trading.TradingService.record_report`) and offers a read API.

Rules (documented in docs/trades.md):

- An entry fill (the order of a signal) belongs to that signal's trade: partial fills of
  one entry order add to one trade (average entry weighted by quantity).
- Netting account: an entry in the SAME direction as an open trade opens its OWN trade
  (each signal keeps its own stop; the venue's net position is the sum). An entry in the
  OPPOSITE direction first reduces the open trades of the symbol, oldest first (FIFO;
  their exit reason ``reversed``), and only the remainder opens the signal's trade.
- Hedging venue (one ticket per entry, ``hedging=True``): every entry is its own ticket
  and trade (``position_ref`` = the entry's client order id); nothing is netted.
- A reducing fill (a close, a stop, a take profit) reduces the order's own trade
  (``orders.trade_id``) or the ticket it names (``position_ref``); otherwise the open
  trades of the symbol on the other side, oldest first. Its exit reason is the order's
  ``exit_reason``, else ``stop_loss`` / ``take_profit`` by purpose, else ``manual_close``.
  Quantity no trade accounts for belongs to an external position (no trade row).
- A fee is in quote currency; a fee charged in the base currency (spot buys) is converted
  at the fill price, and the coins it took are not held: the trade's open quantity is
  what was bought less that fee (``0.01`` BTC bought paying ``0.00001`` BTC leaves
  ``0.00999`` open), so selling what is held closes the trade. A fill split over several
  trades splits its fee pro rata.
- Realized PnL is gross price PnL of the closed quantity against the average entry;
  ``fees`` holds every entry and exit fee; net PnL = realized - fees; the R multiple =
  net PnL / initial risk, the initial risk being |average entry - the signal's stop loss|
  x quantity (None without a stop loss).
- Each exit (each reducing order's fills for one trade, within one recorded report) posts
  one ``trade_exit`` notification, written in the same transaction, so exactly once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import Row, bindparam, func, insert, tuple_, update
from sqlalchemy import select as select_rows
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select

from core.db.engine import Database
from core.db.models import OrderRow, SignalRow, TradeRow
from core.domain import (
    ZERO,
    ExitReason,
    ExitStyle,
    Side,
    Signal,
    SignalStatus,
    Trade,
    TradeStatus,
    utcnow,
)
from core.errors import NotFoundError
from core.notify import Notification, TradeExit

__all__ = [
    "AVERAGE_QUANTUM",
    "Allocation",
    "Ledger",
    "NewFill",
    "SourceRecord",
    "TradeEvent",
    "TradeEventKind",
    "TradeService",
    "TradeStats",
    "add_entry",
    "add_exit",
    "allocate_fifo",
    "charged_in_base",
    "fee_in_quote",
    "has_exit_levels",
    "initial_risk",
    "split_fee",
    "trade_from_row",
    "trade_stats",
]

#: Averages and split fees are rounded (half-even) to this quantum so that SQLite (exact
#: text) and PostgreSQL (NUMERIC(36, 18)) store the same value.
AVERAGE_QUANTUM = Decimal("1e-12")

#: Order purposes whose fills reduce a trade rather than open one.
EXIT_PURPOSES = ("stop_loss", "take_profit")
_PURPOSE_REASON = {"stop_loss": ExitReason.STOP_LOSS, "take_profit": ExitReason.TAKE_PROFIT}


# --- pure accounting -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ledger:
    """A trade's figures. ``side`` is the entry side; quantities in base units; prices and
    amounts in quote currency. ``quantity`` is everything entered, ``quantity_open`` what
    is still held, ``quantity_closed`` what left at ``average_exit``; ``realized_pnl`` is
    gross (before fees), ``fees`` all entry and exit fees."""

    side: Side
    quantity: Decimal = ZERO
    quantity_open: Decimal = ZERO
    average_entry: Decimal = ZERO
    quantity_closed: Decimal = ZERO
    average_exit: Decimal | None = None
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO


def _average(q1: Decimal, p1: Decimal, q2: Decimal, p2: Decimal) -> Decimal:
    return ((q1 * p1 + q2 * p2) / (q1 + q2)).quantize(AVERAGE_QUANTUM, ROUND_HALF_EVEN)


def add_entry(
    ledger: Ledger,
    quantity: Decimal,
    price: Decimal,
    fee: Decimal,
    *,
    fee_in_base: Decimal = ZERO,
) -> Ledger:
    """``ledger`` after an entry fill of ``quantity`` at ``price`` paying ``fee`` (quote).
    ``fee_in_base`` is the part of the fee the venue took out of the coin bought (spot
    buys; base units, already counted in ``fee`` at its quote value): it is not held, so
    the open quantity grows by ``quantity - fee_in_base`` only.

    Raises:
        ValueError: ``quantity`` is not positive, or ``fee_in_base`` not below it.
    """
    if quantity <= 0:
        raise ValueError(f"an entry fill needs a positive quantity, got {quantity}")
    if not ZERO <= fee_in_base < quantity:
        raise ValueError(f"a base fee of {fee_in_base} does not fit a fill of {quantity}")
    return replace(
        ledger,
        quantity=ledger.quantity + quantity,
        quantity_open=ledger.quantity_open + quantity - fee_in_base,
        average_entry=_average(ledger.quantity, ledger.average_entry, quantity, price),
        fees=ledger.fees + fee,
    )


def add_exit(ledger: Ledger, quantity: Decimal, price: Decimal, fee: Decimal) -> Ledger:
    """``ledger`` after an exit fill of ``quantity`` at ``price`` paying ``fee`` (quote):
    realized PnL grows by ``quantity x (price - average entry)`` for a long (the reverse
    for a short); the average exit is weighted by quantity.

    Raises:
        ValueError: ``quantity`` is not positive or more than is open.
    """
    if quantity <= 0 or quantity > ledger.quantity_open:
        raise ValueError(f"cannot close {quantity} of a trade with {ledger.quantity_open} open")
    sign = ledger.side.sign
    previous = ledger.average_exit if ledger.average_exit is not None else ZERO
    return replace(
        ledger,
        quantity_open=ledger.quantity_open - quantity,
        quantity_closed=ledger.quantity_closed + quantity,
        average_exit=_average(ledger.quantity_closed, previous, quantity, price),
        realized_pnl=ledger.realized_pnl + quantity * (price - ledger.average_entry) * sign,
        fees=ledger.fees + fee,
    )


@dataclass(frozen=True, slots=True)
class Allocation:
    """``quantity`` base units of a fill assigned to trade ``trade_id``."""

    trade_id: int
    quantity: Decimal


def allocate_fifo(
    open_trades: Sequence[tuple[int, Decimal]], quantity: Decimal
) -> tuple[list[Allocation], Decimal]:
    """Assign ``quantity`` to ``open_trades`` (``(trade id, open quantity)``, oldest
    first), each up to its open quantity. Returns the allocations and what is left."""
    allocations: list[Allocation] = []
    left = quantity
    for trade_id, open_quantity in open_trades:
        if left <= 0:
            break
        take = min(left, open_quantity)
        if take > 0:
            allocations.append(Allocation(trade_id, take))
            left -= take
    return allocations, left


def split_fee(fee: Decimal, parts: Sequence[Decimal], total: Decimal) -> list[Decimal]:
    """``fee`` split over ``parts`` (quantities out of ``total``) pro rata, rounded to
    :data:`AVERAGE_QUANTUM`; the last part takes the rounding so the parts sum to
    ``fee x sum(parts) / total`` exactly when ``sum(parts) == total``."""
    if not parts:
        return []
    if total <= 0:
        return [ZERO for _ in parts]
    shares = [(fee * part / total).quantize(AVERAGE_QUANTUM, ROUND_HALF_EVEN) for part in parts]
    if sum(parts, ZERO) == total:
        shares[-1] = fee - sum(shares[:-1], ZERO)
    return shares


def charged_in_base(fee_currency: str, symbol: str) -> bool:
    """True when a fee in ``fee_currency`` is in ``symbol``'s base currency (``BTC`` for
    ``BTC/USDT``, as spot exchanges charge buys)."""
    return bool(fee_currency) and "/" in symbol and fee_currency == symbol.partition("/")[0]


def fee_in_quote(fee: Decimal, fee_currency: str, symbol: str, price: Decimal) -> Decimal:
    """A fill's fee in the symbol's quote currency: a fee charged in the base currency
    (:func:`charged_in_base`) is worth ``fee x price``."""
    return fee * price if charged_in_base(fee_currency, symbol) else fee


def initial_risk(
    average_entry: Decimal, stop_loss: Decimal | None, quantity: Decimal
) -> Decimal | None:
    """|average entry - stop loss| x quantity (quote currency); None without a stop."""
    if stop_loss is None:
        return None
    return abs(average_entry - stop_loss) * quantity


# --- rows -----------------------------------------------------------------------------------


def trade_from_row(row: TradeRow | _Trade) -> Trade:
    """The domain :class:`Trade` of a row (an undecided exit style reads as WATCHED)."""
    assert row.id is not None
    return Trade(
        id=row.id,
        signal_id=row.signal_id,
        symbol=row.symbol,
        side=Side(row.side),
        status=TradeStatus(row.status),
        quantity=row.quantity,
        quantity_open=row.quantity_open,
        average_entry=row.average_entry,
        opened_at=row.opened_at,
        average_exit=row.average_exit,
        realized_pnl=row.realized_pnl,
        fees=row.fees,
        initial_risk=row.initial_risk,
        stop_loss=row.stop_loss,
        take_profit=row.take_profit,
        trail_pct=row.trail_pct,
        breakeven_at_r=row.breakeven_at_r,
        exit_style=ExitStyle(row.exit_style) if row.exit_style else ExitStyle.WATCHED,
        exit_reason=ExitReason(row.exit_reason) if row.exit_reason else None,
        closed_at=row.closed_at,
        position_ref=row.position_ref,
    )


def has_exit_levels(row: TradeRow | _Trade) -> bool:
    """True when the trade has a stop loss, take profit or trailing stop to keep."""
    return any(level is not None for level in (row.stop_loss, row.take_profit, row.trail_pct))


def _ledger(row: _Trade) -> Ledger:
    return Ledger(
        side=Side(row.side),
        quantity=row.quantity,
        quantity_open=row.quantity_open,
        average_entry=row.average_entry,
        quantity_closed=row.quantity_closed,
        average_exit=row.average_exit,
        realized_pnl=row.realized_pnl,
        fees=row.fees,
    )


def _store(row: _Trade, ledger: Ledger, at: datetime) -> None:
    row.quantity = ledger.quantity
    row.quantity_open = ledger.quantity_open
    row.average_entry = ledger.average_entry
    row.quantity_closed = ledger.quantity_closed
    row.average_exit = ledger.average_exit
    row.realized_pnl = ledger.realized_pnl
    row.fees = ledger.fees
    row.version += 1
    row.updated_at = at


class TradeEventKind(enum.StrEnum):
    """What a recorded report did to a trade."""

    OPENED = "opened"
    """A new trade (its first entry fill)."""
    ADDED = "added"
    """More entry fills on an open trade."""
    REDUCED = "reduced"
    """Part of the trade closed; some is still open."""
    CLOSED = "closed"
    """Nothing is left open."""


@dataclass(frozen=True, slots=True)
class TradeEvent:
    """Trade ``trade_id`` was ``kind`` by the fills of order ``client_order_id``.
    ``has_exits``: the trade has a stop loss, take profit or trailing stop to keep."""

    trade_id: int
    kind: TradeEventKind
    client_order_id: str
    has_exits: bool = True


@dataclass(slots=True)
class _Exit:
    """Accumulates one trade's exit within one recorded report."""

    quantity: Decimal = ZERO
    notional: Decimal = ZERO
    reason: ExitReason = ExitReason.MANUAL_CLOSE


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """The track record of one signal source, from the trade record.

    ``approved``: its signals an owner approved (whatever came of them); ``closed``: its
    closed trades, of which ``wins`` made money after fees; ``average_r``: the mean R
    multiple of its closed trades that had an initial stop (``None`` when none had);
    ``net_pnl``: realized PnL after fees of its closed trades (quote currency, summed as
    is across symbols).
    """

    source: str
    approved: int
    closed: int
    wins: int
    average_r: Decimal | None
    net_pnl: Decimal

    @property
    def win_rate(self) -> Decimal | None:
        """Wins / closed trades as a fraction (0..1); ``None`` before the first close."""
        return Decimal(self.wins) / self.closed if self.closed else None


_TRADES = TradeRow.__table__  # type: ignore[attr-defined]

#: The OPEN trades of the (symbol, side) pairs ``keys`` (an expanding parameter), oldest
#: first, locked for update: :meth:`TradeService._open_pool`'s query, built once (its
#: cache key is computed once, not on every recording). Plain rows: no ORM object.
_OPEN_POOL = (
    select_rows(_TRADES)
    .where(
        tuple_(_TRADES.c.symbol, _TRADES.c.side).in_(bindparam("keys", expanding=True)),
        _TRADES.c.status == TradeStatus.OPEN.value,
    )
    .order_by(_TRADES.c.opened_at, _TRADES.c.id)
    .with_for_update()
)
#: One trade by id (``trade_id``), locked for update.
_LOCK_TRADE = select_rows(_TRADES).where(_TRADES.c.id == bindparam("trade_id")).with_for_update()
#: A new trade, every column but the id, which comes back.
_INSERT_TRADE = insert(_TRADES).returning(_TRADES.c.id)
#: The columns recording a fill changes (never the protective levels: the exit service's).
_RECORDED = (
    "status",
    "quantity",
    "quantity_open",
    "average_entry",
    "average_exit",
    "quantity_closed",
    "realized_pnl",
    "fees",
    "initial_risk",
    "exit_reason",
    "version",
    "closed_at",
    "updated_at",
)
#: Write :data:`_RECORDED` (parameters ``v_<column>``) to trade ``trade_id``.
_UPDATE_TRADE = (
    update(_TRADES)
    .where(_TRADES.c.id == bindparam("trade_id"))
    .values({name: bindparam(f"v_{name}") for name in _RECORDED})
)
#: Link order ``order_id`` to the trade ``trade_id`` its fills opened.
_LINK_ORDER = (
    update(OrderRow.__table__)  # type: ignore[attr-defined]
    .where(OrderRow.__table__.c.id == bindparam("order_id"))  # type: ignore[attr-defined]
    .values(trade_id=bindparam("trade_id"))
)


@dataclass(slots=True)
class NewFill:
    """A fill being recorded, a row of ``fills`` to insert (the columns of
    :class:`~core.db.models.FillRow` but the id): the venue's figures for our order
    ``order_id`` (base quantity, quote price, the fee in ``fee_currency``) and, once
    :meth:`TradeService.apply_batch` has placed it, the ``trade_id`` of its (first)
    trade (None: an external position's)."""

    order_id: int
    client_order_id: str
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    broker_fill_id: str
    at: datetime
    trade_id: int | None = None


@dataclass(slots=True)
class _Trade:
    """A trade as a recording reads and changes it: the columns of :class:`TradeRow`
    (same names, same defaults) in a plain object, no ORM state. Read from a plain row
    (``_Trade(**row._mapping)``; a column this lacks fails loudly), written back with
    :data:`_UPDATE_TRADE` or, new (``id`` None), inserted with :data:`_INSERT_TRADE`."""

    symbol: str
    side: str
    opened_at: datetime
    updated_at: datetime
    id: int | None = None
    signal_id: int | None = None
    status: str = TradeStatus.OPEN.value
    quantity: Decimal = ZERO
    quantity_open: Decimal = ZERO
    average_entry: Decimal = ZERO
    average_exit: Decimal | None = None
    quantity_closed: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    initial_risk: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    trail_pct: Decimal | None = None
    breakeven_at_r: Decimal | None = None
    extreme_price: Decimal | None = None
    exit_style: str = "watched"
    exit_reason: str = ""
    position_ref: str = ""
    version: int = 0
    closed_at: datetime | None = None


def _trade_values(row: _Trade) -> dict[str, Any]:
    """:data:`_UPDATE_TRADE`'s parameters for ``row`` as it stands."""
    values = {f"v_{name}": getattr(row, name) for name in _RECORDED}
    values["trade_id"] = row.id
    return values


def _new_trade_values(row: _Trade) -> dict[str, Any]:
    """:data:`_INSERT_TRADE`'s parameters: every column of the new ``row`` but its id."""
    return {c.key: getattr(row, c.key) for c in _TRADES.columns if c.key != "id"}


#: Statuses a signal reaches only after an owner approved it.
_APPROVED = tuple(
    s.value
    for s in (
        SignalStatus.APPROVED,
        SignalStatus.SUBMITTED,
        SignalStatus.FILLED,
        SignalStatus.FAILED,
        SignalStatus.UNKNOWN,
    )
)


class TradeService:
    """Keeps the trade record (see the module docstring) and reads it.

    Args:
        db: the database.
        hedging: True on a venue that keeps one position per ticket (MT5 hedging): no
            netting between trades; an exit reduces only the ticket its order names. A
            callable is asked at every fill (an MT5 account says whether it hedges only
            once it has connected, after the engine is built).
        currency: the account currency, shown with PnL in exit messages.
        clock: current UTC time (injectable).
    """

    def __init__(
        self,
        db: Database,
        *,
        hedging: bool | Callable[[], bool] = False,
        currency: str = "",
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._hedging = hedging
        self._currency = currency
        self._clock = clock

    @property
    def hedging(self) -> bool:
        """True when the venue keeps one position per ticket, read now (see ``hedging``
        in the class docstring)."""
        return self._hedging() if callable(self._hedging) else self._hedging

    # --- writing (inside TradingService.record_report's transaction) ----------------------

    async def apply_batch(
        self,
        conn: AsyncConnection,
        batch: Sequence[tuple[Row[Any], Sequence[NewFill]]],
        signals: Mapping[int, Signal],
        outbox: list[Notification],
    ) -> list[TradeEvent]:
        """Apply each (order, its new fills) of ``batch`` in turn to the trade record in
        the caller's transaction, each seeing the trades as the ones before left them:
        open or grow the signal's trade for an entry (its stop loss, take profit, trailing
        stop and break-even from ``signals``, the orders' signals by id), reduce trades
        for an exit, link each fill to its (first) trade and each entry order to its trade
        (``order.trade_id``), and append one ``trade_exit`` notification per reduced trade
        to ``outbox``. The fills and the notifications are left to the caller, who
        inserts them in the same transaction (each fill once with its trade; the
        notifications in one INSERT with any of its own).

        Core statements only, no unit of work: the open trades any fill may reduce are read
        and locked in one query (oldest first, so two batches lock in one order), a new
        trade is one INSERT, the changed trades one UPDATE (one row each). Returns every
        order's events in the order of ``batch``.
        """
        keys = {
            (fill.symbol if _is_entry(order) else order.symbol, Side(fill.side).opposite.value)
            for order, fills in batch
            for fill in fills
        }
        pool = await self._open_pool(conn, keys)
        changed: dict[int, _Trade] = {}
        linked: dict[int, int] = {}
        events: list[TradeEvent] = []
        for order, fills in batch:
            events.extend(
                await self._apply(conn, order, fills, pool, signals, changed, outbox, linked)
            )
        if changed:
            values = [_trade_values(row) for row in changed.values()]
            await conn.execute(_UPDATE_TRADE, values[0] if len(values) == 1 else values)
        return events

    async def _apply(
        self,
        conn: AsyncConnection,
        order: Row[Any],
        fills: Sequence[NewFill],
        pool: dict[tuple[str, str], list[_Trade]],
        signals: Mapping[int, Signal],
        changed: dict[int, _Trade],
        exits: list[Notification],
        linked: dict[int, int],
    ) -> list[TradeEvent]:
        """One order of :meth:`apply_batch` against ``pool``, the open trades by (symbol,
        side) that :meth:`_open_pool` read (a trade the order opens joins it). Existing
        trades it changes are put in ``changed`` (by id; written once by the caller), its
        exit notifications appended to ``exits``; a new trade is inserted here. ``linked``
        holds the trade each entry order of the batch was linked to so far (by order id:
        the order rows are as read before the batch)."""
        if not fills:
            return []
        entry = _is_entry(order)
        assert order.id is not None
        trade_id: int | None = linked.get(order.id, order.trade_id)
        touched: dict[int, _Trade] = {}
        tallies: dict[int, _Exit] = {}
        own: _Trade | None = None  # the signal's trade (an entry)
        own_fills: list[NewFill] = []
        signal = signals.get(order.signal_id) if order.signal_id is not None else None
        for fill in fills:
            side = Side(fill.side)
            fee = fee_in_quote(fill.fee, fill.fee_currency, fill.symbol, fill.price)
            if entry:
                targets = [] if self.hedging else _open_in(pool, fill.symbol, side.opposite)
                reason = ExitReason.REVERSED
            else:
                candidates = _open_in(pool, order.symbol, side.opposite)
                targets = self._exit_targets(order, trade_id, candidates)
                reason = _exit_reason(order)
            allocations, left = allocate_fifo(
                [(t.id or 0, t.quantity_open) for t in targets], fill.quantity
            )
            parts = [a.quantity for a in allocations] + ([left] if entry and left > 0 else [])
            fees = split_fee(fee, parts, fill.quantity)
            by_id = {t.id: t for t in targets}
            for allocation, part_fee in zip(allocations, fees, strict=False):
                row = by_id[allocation.trade_id]
                self._close_part(row, allocation.quantity, fill.price, part_fee, fill.at)
                touched[allocation.trade_id] = row
                tally = tallies.setdefault(allocation.trade_id, _Exit(reason=reason))
                tally.quantity += allocation.quantity
                tally.notional += allocation.quantity * fill.price
            if entry and left > 0:
                own = own or await self._entry_trade(conn, order, trade_id, signal, pool, fill.at)
                in_base = charged_in_base(fill.fee_currency, fill.symbol)
                base_fee = fill.fee * left / fill.quantity if in_base else ZERO
                ledger = add_entry(_ledger(own), left, fill.price, fees[-1], fee_in_base=base_fee)
                _store(own, ledger, self._clock())
                stop = signal.stop_loss if signal is not None else None
                own.initial_risk = initial_risk(own.average_entry, stop, own.quantity)
                own_fills.append(fill)
            elif allocations:
                fill.trade_id = allocations[0].trade_id
        events: list[TradeEvent] = []
        for trade_id, row in touched.items():
            changed[trade_id] = row
            if trade_id in tallies:
                kind = TradeEventKind.CLOSED if row.quantity_open == 0 else TradeEventKind.REDUCED
                exits.append(self._exit_notification(row, tallies[trade_id]))
            else:
                kind = TradeEventKind.ADDED
            events.append(TradeEvent(trade_id, kind, order.client_order_id, has_exit_levels(row)))
        if own is not None:
            if own.id is None:  # new: inserted complete, once
                own.id = (await conn.execute(_INSERT_TRADE, _new_trade_values(own))).one()[0]
            else:
                changed[own.id] = own
            trades = pool.setdefault((own.symbol, own.side), [])
            if all(t is not own for t in trades):
                trades.append(own)
            kind = TradeEventKind.ADDED if trade_id == own.id else TradeEventKind.OPENED
            if trade_id != own.id:
                await conn.execute(_LINK_ORDER, {"order_id": order.id, "trade_id": own.id})
                linked[order.id] = own.id
            for fill in own_fills:
                fill.trade_id = own.id
            events.append(TradeEvent(own.id, kind, order.client_order_id, has_exit_levels(own)))
        return events

    def _close_part(
        self, row: _Trade, quantity: Decimal, price: Decimal, fee: Decimal, at: datetime
    ) -> None:
        _store(row, add_exit(_ledger(row), quantity, price, fee), self._clock())
        if row.quantity_open == 0:
            row.status = TradeStatus.CLOSED.value
            row.closed_at = at

    def _exit_notification(self, row: _Trade, tally: _Exit) -> Notification:
        """The ``trade_exit`` notification of ``tally`` (one exit of trade ``row``); a
        closed trade takes the exit's reason."""
        if row.quantity_open == 0:
            row.exit_reason = tally.reason.value
        trade = trade_from_row(row)
        assert trade.average_exit is not None
        return TradeExit(
            trade_id=trade.id,
            symbol=trade.symbol,
            side=trade.side,
            quantity=trade.quantity,
            quantity_open=trade.quantity_open,
            closed_quantity=tally.quantity,
            exit_price=(tally.notional / tally.quantity).quantize(AVERAGE_QUANTUM),
            average_entry=trade.average_entry,
            average_exit=trade.average_exit,
            realized_pnl=trade.realized_pnl,
            fees=trade.fees,
            r_multiple=trade.r_multiple,
            reason=tally.reason,
            opened_at=trade.opened_at,
            at=row.closed_at or self._clock(),
            currency=self._currency,
            exit_style=row.exit_style,
        ).notification()

    @staticmethod
    async def _open_pool(
        conn: AsyncConnection, keys: set[tuple[str, str]]
    ) -> dict[tuple[str, str], list[_Trade]]:
        """The OPEN trades of each (symbol, side) of ``keys``, oldest first, locked for
        update, in one query, as :class:`_Trade` objects."""
        pool: dict[tuple[str, str], list[_Trade]] = {key: [] for key in keys}
        if not keys:
            return pool
        read = await conn.execute(_OPEN_POOL, {"keys": sorted(keys)})
        for found in read.all():
            row = _Trade(**found._mapping)
            pool[(row.symbol, row.side)].append(row)
        return pool

    def _exit_targets(
        self, order: Row[Any], trade_id: int | None, candidates: list[_Trade]
    ) -> list[_Trade]:
        """The trades a reducing fill reduces, in order (see the module docstring), of the
        open trades on its opposite side (``candidates``, oldest first): the order's own
        trade (``trade_id``) first, else the named ticket, else FIFO."""
        if trade_id is not None:
            own = [t for t in candidates if t.id == trade_id]
            if self.hedging:
                return own
            return own + [t for t in candidates if t.id != trade_id]
        if order.position_ref:
            return [t for t in candidates if t.position_ref == order.position_ref]
        return candidates

    async def _entry_trade(
        self,
        conn: AsyncConnection,
        order: Row[Any],
        trade_id: int | None,
        signal: Signal | None,
        pool: dict[tuple[str, str], list[_Trade]],
        at: datetime,
    ) -> _Trade:
        """The signal's trade: the one the order is linked to (``trade_id``; the pool's
        copy when the pool holds it, else read and locked), or a new one, not yet inserted
        (``id`` None), with the ``signal``'s exits, on the order's first fill that opens
        anything (so an entry order without a trade id has no trade yet)."""
        if trade_id is not None:
            for rows in pool.values():
                for row in rows:
                    if row.id == trade_id:
                        return row
            read = await conn.execute(_LOCK_TRADE, {"trade_id": trade_id})
            return _Trade(**read.one()._mapping)
        assert signal is not None
        return _Trade(
            signal_id=order.signal_id,
            symbol=order.symbol,
            side=order.side,
            status=TradeStatus.OPEN.value,
            stop_loss=signal.stop_loss,
            take_profit=signal.take_profit,
            trail_pct=signal.trail_pct,
            breakeven_at_r=signal.breakeven_at_r,
            exit_style="",  # decided by the exit service (ExitService.sync)
            position_ref=order.client_order_id if self.hedging else "",
            opened_at=at,
            updated_at=self._clock(),
        )

    # --- reading --------------------------------------------------------------------------

    async def open_trades(self, symbol: str | None = None) -> list[Trade]:
        """OPEN trades, oldest first; only ``symbol``'s when given."""
        query = select(TradeRow).where(col(TradeRow.status) == TradeStatus.OPEN.value)
        if symbol is not None:
            query = query.where(col(TradeRow.symbol) == symbol)
        async with self._db.session() as session:
            rows = (await session.exec(query.order_by(col(TradeRow.id)))).all()
        return [trade_from_row(row) for row in rows]

    async def trade(self, trade_id: int) -> Trade:
        """One trade. Raises NotFoundError."""
        async with self._db.session() as session:
            row = await session.get(TradeRow, trade_id, populate_existing=True)
        if row is None:
            raise NotFoundError(f"no trade with id {trade_id}")
        return trade_from_row(row)

    async def by_ids(self, trade_ids: Iterable[int]) -> dict[int, Trade]:
        """The trades with these ids (those that exist), by id, read in one transaction."""
        wanted = set(trade_ids)
        if not wanted:
            return {}
        query = select(TradeRow).where(col(TradeRow.id).in_(wanted))
        async with self._db.session() as session:
            rows = (await session.exec(query.execution_options(populate_existing=True))).all()
        return {trade.id: trade for trade in map(trade_from_row, rows)}

    async def for_signal(self, signal_id: int) -> Trade | None:
        """The trade a signal opened, if its entry filled."""
        query = select(TradeRow).where(col(TradeRow.signal_id) == signal_id)
        async with self._db.session() as session:
            row = (await session.exec(query)).first()
        return None if row is None else trade_from_row(row)

    async def for_symbol(self, symbol: str, *, limit: int = 50) -> list[Trade]:
        """Trades of ``symbol``, open and closed, newest first (at most ``limit``)."""
        query = (
            select(TradeRow)
            .where(col(TradeRow.symbol) == symbol)
            .order_by(col(TradeRow.id).desc())
            .limit(limit)
        )
        async with self._db.session() as session:
            rows = (await session.exec(query)).all()
        return [trade_from_row(row) for row in rows]

    async def closed_since(self, since: datetime | None = None) -> list[Trade]:
        """CLOSED trades whose ``closed_at`` is at or after ``since`` (UTC; None: all),
        oldest close first."""
        query = select(TradeRow).where(col(TradeRow.status) == TradeStatus.CLOSED.value)
        if since is not None:
            query = query.where(col(TradeRow.closed_at) >= since)
        async with self._db.session() as session:
            rows = (await session.exec(query.order_by(col(TradeRow.closed_at)))).all()
        return [trade_from_row(row) for row in rows]

    async def recent(self, *, limit: int = 50) -> list[Trade]:
        """Trades of every symbol, open and closed, newest first (at most ``limit``)."""
        query = select(TradeRow).order_by(col(TradeRow.id).desc()).limit(limit)
        async with self._db.session() as session:
            rows = (await session.exec(query)).all()
        return [trade_from_row(row) for row in rows]

    async def source_record(self, source: str) -> SourceRecord:
        """The track record of signals from ``source`` (see :class:`SourceRecord`). Every
        card render asks for it, so only the three money columns of the closed trades are
        read (no trade objects) and summed here as exact decimals (SQLite would sum the
        stored text as floats)."""
        approved_q = (
            select(func.count())
            .select_from(SignalRow)
            .where(col(SignalRow.source) == source, col(SignalRow.status).in_(_APPROVED))
        )
        trades_q = (
            select(col(TradeRow.realized_pnl), col(TradeRow.fees), col(TradeRow.initial_risk))
            .join(SignalRow, col(SignalRow.id) == col(TradeRow.signal_id))
            .where(col(SignalRow.source) == source)
            .where(col(TradeRow.status) == TradeStatus.CLOSED.value)
        )
        async with self._db.session() as session:
            approved = (await session.exec(approved_q)).one()
            closed = (await session.exec(trades_q)).all()
        nets = [realized - fees for realized, fees, _ in closed]
        rs = [net / risk for net, (_, _, risk) in zip(nets, closed, strict=True) if risk]
        return SourceRecord(
            source=source,
            approved=approved,
            closed=len(closed),
            wins=sum(1 for net in nets if net > 0),
            average_r=sum(rs, ZERO) / len(rs) if rs else None,
            net_pnl=sum(nets, ZERO),
        )


@dataclass(frozen=True, slots=True)
class TradeStats:
    """Figures of a set of closed trades. Money in quote currency.

    ``realized_pnl`` is before fees, ``fees`` every entry and exit fee, ``net_pnl`` the
    difference. ``win_rate`` is a fraction (0..1) of trades with a positive net PnL;
    ``profit_factor`` = sum of winning net PnL / |sum of losing net PnL| (None without a
    losing trade); ``best`` / ``worst`` the highest and lowest net PnL of one trade;
    ``average_r`` the mean R multiple of the trades that had an initial stop (None if
    none did). An empty set has zeros and Nones."""

    trades: int
    wins: int
    realized_pnl: Decimal
    fees: Decimal
    win_rate: Decimal | None
    profit_factor: Decimal | None
    best: Decimal | None
    worst: Decimal | None
    average_r: Decimal | None

    @property
    def net_pnl(self) -> Decimal:
        """Realized PnL after fees, quote currency."""
        return self.realized_pnl - self.fees


def trade_stats(trades: Sequence[Trade]) -> TradeStats:
    """The :class:`TradeStats` of ``trades`` (pure; callers pass closed trades)."""
    nets = [t.net_pnl for t in trades]
    won = sum((n for n in nets if n > 0), ZERO)
    lost = sum((n for n in nets if n < 0), ZERO)
    rs = [r for r in (t.r_multiple for t in trades) if r is not None]
    wins = sum(1 for n in nets if n > 0)
    return TradeStats(
        trades=len(trades),
        wins=wins,
        realized_pnl=sum((t.realized_pnl for t in trades), ZERO),
        fees=sum((t.fees for t in trades), ZERO),
        win_rate=Decimal(wins) / len(trades) if trades else None,
        profit_factor=won / -lost if lost < 0 else None,
        best=max(nets) if nets else None,
        worst=min(nets) if nets else None,
        average_r=sum(rs, ZERO) / len(rs) if rs else None,
    )


def _is_entry(order: Row[Any]) -> bool:
    """True for a signal's entry order (its fills open or grow the signal's trade)."""
    return order.purpose == "open" and order.signal_id is not None


def _open_in(pool: dict[tuple[str, str], list[_Trade]], symbol: str, side: Side) -> list[_Trade]:
    """The trades of ``pool`` (see :meth:`TradeService._open_pool`) still OPEN in ``symbol``
    on ``side``, oldest first."""
    rows = [t for t in pool.get((symbol, side.value), []) if t.status == TradeStatus.OPEN.value]
    return sorted(rows, key=lambda t: (t.opened_at, t.id or 0))


def _exit_reason(order: Row[Any]) -> ExitReason:
    """Why a reducing order's fills closed a trade (see the module docstring)."""
    if order.exit_reason:
        return ExitReason(order.exit_reason)
    return _PURPOSE_REASON.get(order.purpose, ExitReason.MANUAL_CLOSE)
