"""The paper broker: simulated execution on the replay feed, persisted in the database.

The account is a netting margin account (like an MT5 netting account or a futures
account): one signed net position per symbol; the balance moves only by realized PnL and
fees; equity = balance + unrealized PnL; margin = sum of |quantity| x mark / leverage.

Execution rules (deterministic for a given feed position):

- A market buy fills at ``price x (1 + (spread_bps / 2 + slippage_bps) / 10_000)``, a sell at
  ``price x (1 - (spread_bps / 2 + slippage_bps) / 10_000)``, where ``price`` is the current
  candle's close; the fill price is rounded to the symbol's price tick (its instrument's,
  from the feed: 0.01 on the replay's BTC/USDT, 0.00000001 on PEPE/USDT) against the taker.
- A limit order that is marketable on arrival fills like a market order but never worse
  than its limit; otherwise it rests and fills at its limit (or at a candle's open if that
  is better) on the first later candle whose low (buy) or high (sell) reaches the limit.
- A STOP or TAKE_PROFIT order (always reduce-only) rests with its ``trigger_price`` and is
  matched on each later candle. A sell stop (a long's stop) triggers when the candle's low
  <= trigger, a buy stop (a short's stop) when its high >= trigger; a sell take profit
  triggers when the high >= trigger, a buy take profit when the low <= trigger. The base
  price is the trigger, or the candle's open when the candle OPENED beyond the trigger (a
  gap: worse than the trigger for a stop, better for a take profit). The fill is then
  executed like a market order from that base price: ``base x (1 -/+ (spread_bps / 2 +
  slippage_bps) / 10_000)`` (minus for a sell, plus for a buy), rounded to the tick against
  the trader, and pays the same fee. A trigger whose level the current close has already
  passed when it arrives executes at once as a market order.
- Resting orders are matched candle by candle, oldest candle first across every resting
  order of the symbol; within one candle stops are matched first, then the other orders in
  the order they were placed. So when ONE candle touches both the stop and the take profit
  of a position, the stop wins (the conservative reading of a candle whose path inside is
  unknown) and the take profit then finds nothing left to reduce.
- A reduce-only trigger never opens or flips a position: it fills at most what is held
  against it (``fill_quantity`` records a capped fill); with nothing held in the opposite
  direction it is CANCELLED.
- The fee is ``fill notional x fee_bps / 10_000`` in the quote currency, rounded half-up to
  1e-8.
- An order that adds exposure needs free margin for ``added notional / leverage + fee``.

Every order, fill, position and the balance are rows in the database, so a restart loses
nothing, and a second process on the same database sees the same account.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Row, bindparam, insert, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core.brokers.base import closing_request
from core.config import Settings
from core.db.engine import Database, sql_literal
from core.db.models import PaperAccountRow, PaperOrderRow, PaperPositionRow
from core.domain import (
    ZERO,
    Account,
    Candle,
    ExitStyle,
    Fill,
    OrderReport,
    OrderRequest,
    OrderState,
    OrderType,
    Position,
    Quote,
    Side,
    utcnow,
)
from core.errors import (
    BrokerAmbiguousError,
    InsufficientMarginError,
    InvalidQuantityError,
    OrderNotFoundError,
    OrderRejectedError,
)
from core.marketdata.base import PriceFeed, round_to_tick

__all__ = ["PaperBroker"]

FEE_QUANTUM = Decimal("0.00000001")
BPS = Decimal(10_000)

_ACCOUNTS = PaperAccountRow.__table__  # type: ignore[attr-defined]
_ORDERS = PaperOrderRow.__table__  # type: ignore[attr-defined]
_POSITIONS = PaperPositionRow.__table__  # type: ignore[attr-defined]
_OPEN = OrderState.OPEN.value

# The ledger's statements, Core and built once (SQLAlchemy computes a statement object's
# cache key once; values come as parameters). No ORM unit of work: a transaction holds
# what it read in a :class:`_Book` and writes what changed when it ends.
#: The transaction's first statement: bump ``seq`` (the lock), and return it, the balance
#: and the id of the order with client order id ``cid`` (NULL: none, or no ``cid`` asked).
_BUMP_SEQ = (
    update(_ACCOUNTS)
    .where(_ACCOUNTS.c.id == 1)
    .values(seq=_ACCOUNTS.c.seq + 1)
    .returning(
        _ACCOUNTS.c.seq,
        _ACCOUNTS.c.balance,
        select(_ORDERS.c.id)
        .where(_ORDERS.c.client_order_id == bindparam("cid"))
        .scalar_subquery()
        .label("known"),
    )
)
_ORDERS_BY_CLIENT_ID = select(_ORDERS).where(
    _ORDERS.c.client_order_id.in_(bindparam("cids", expanding=True))
)
#: "the order rests": rare in a long history, so written into the SQL (``sql_literal``)
_IS_RESTING = _ORDERS.c.state == sql_literal(_OPEN)
_RESTING = select(_ORDERS).where(_IS_RESTING).order_by(_ORDERS.c.id)
#: the resting orders and the orders with client order ids ``cids``, oldest first
_RESTING_AND = (
    select(_ORDERS)
    .where(_IS_RESTING | _ORDERS.c.client_order_id.in_(bindparam("cids", expanding=True)))
    .order_by(_ORDERS.c.id)
)
_ALL_POSITIONS = select(_POSITIONS)
_INSERT_ORDERS = insert(_ORDERS).returning(_ORDERS.c.id, sort_by_parameter_order=True)
#: an order's outcome (executed for several at once); parameters named as the columns
_SETTLE_ORDER = update(_ORDERS).where(_ORDERS.c.id == bindparam("order_id"))
_INSERT_POSITION = insert(_POSITIONS)
_UPDATE_POSITION = update(_POSITIONS).where(_POSITIONS.c.symbol == bindparam("at_symbol"))
_SET_BALANCE = update(_ACCOUNTS).where(_ACCOUNTS.c.id == 1)
#: The balance, whether any order rests, and every position (NULLs without one).
_SNAPSHOT = (
    select(
        _ACCOUNTS.c.balance,
        select(_ORDERS.c.id).where(_IS_RESTING).exists().label("resting"),
        _POSITIONS.c.symbol,
        _POSITIONS.c.quantity,
        _POSITIONS.c.average_entry,
        _POSITIONS.c.realized_pnl,
    )
    .select_from(_ACCOUNTS)
    .outerjoin(_POSITIONS, true())
    .where(_ACCOUNTS.c.id == 1)
    .order_by(_POSITIONS.c.symbol)
)
#: what an order's outcome writes (see :meth:`_Book.write`)
_OUTCOME = ("state", "fill_price", "fee", "filled_at", "fill_quantity")


@dataclass(slots=True)
class _Order:
    """A paper order as a ledger transaction holds it (the columns of ``paper_orders``;
    ``id`` None until the transaction inserts it). Prices and quantities are Decimal in
    the quote / base currency, times UTC."""

    client_order_id: str
    symbol: str
    side: str
    quantity: Decimal
    order_type: str
    limit_price: Decimal | None
    trigger_price: Decimal | None
    state: str
    placed_candle_at: datetime
    created_at: datetime
    id: int | None = None
    fill_price: Decimal | None = None
    fee: Decimal = ZERO
    filled_at: datetime | None = None
    fill_quantity: Decimal | None = None

    @classmethod
    def of(cls, row: Row[Any]) -> _Order:
        """The order of a ``paper_orders`` row."""
        return cls(**row._mapping)

    def columns(self) -> dict[str, Any]:
        """The row to insert (without ``id``)."""
        return {name: getattr(self, name) for name in self.__slots__ if name != "id"}


@dataclass(slots=True)
class _Held:
    """A net position as a ledger transaction holds it: signed base quantity, average
    entry and realized PnL (quote, before fees)."""

    symbol: str
    quantity: Decimal = ZERO
    average_entry: Decimal = ZERO
    realized_pnl: Decimal = ZERO

    def columns(self, *, key: bool = True) -> dict[str, Any]:
        """The row's values (without ``symbol`` unless ``key``)."""
        values = {
            "quantity": self.quantity,
            "average_entry": self.average_entry,
            "realized_pnl": self.realized_pnl,
        }
        return {"symbol": self.symbol, **values} if key else values


class _Book:
    """The paper ledger inside one transaction (the connection ``conn``, ``seq`` already
    bumped): the balance, the orders and the positions it has read, each read at most
    once, changed in memory; :meth:`write` sends the changes, a statement per kind."""

    def __init__(
        self,
        conn: AsyncConnection,
        balance: Decimal,
        known: int | None,
        positions: dict[str, _Held] | None = None,
    ) -> None:
        self.conn = conn
        #: the id of the order with the client order id the transaction was opened for
        #: (None: no such order, or none asked)
        self.known = known
        self.balance = balance
        self._balance_read = balance
        #: every order read or entered, by client order id; the state each stored one had
        self._orders: dict[str, _Order] = {}
        self._stored_state: dict[str, str] = {}
        #: the client order ids looked up (found or not)
        self._looked_up: set[str] = set()
        #: every position row by symbol: ``positions`` (known current) or read when asked
        self._positions = positions
        self._stored_symbols: set[str] = set() if positions is None else set(positions)
        self._changed_symbols: dict[str, None] = {}

    def _adopt(self, rows: Iterable[Row[Any]]) -> list[_Order]:
        """The orders of ``rows``; an order this transaction already holds is that one."""
        adopted = []
        for row in rows:
            held = self._orders.get(row.client_order_id)
            if held is None:
                held = self._orders[row.client_order_id] = _Order.of(row)
                self._stored_state[held.client_order_id] = held.state
            adopted.append(held)
        return adopted

    async def orders(self, client_order_ids: Iterable[str]) -> dict[str, _Order]:
        """The orders with these client order ids that the ledger holds, by client id."""
        wanted = set(client_order_ids)
        missing = sorted(wanted - self._orders.keys() - self._looked_up)
        if missing:
            found = await self.conn.execute(_ORDERS_BY_CLIENT_ID, {"cids": missing})
            self._adopt(found)
            self._looked_up.update(missing)
        return {cid: self._orders[cid] for cid in wanted if cid in self._orders}

    async def resting(self, client_order_ids: Sequence[str] = ()) -> list[_Order]:
        """The orders resting when read, oldest first; in the same statement the orders
        with ``client_order_ids`` (for :meth:`orders`)."""
        if not client_order_ids:
            return self._adopt(await self.conn.execute(_RESTING))
        cids = sorted(set(client_order_ids))
        rows = (await self.conn.execute(_RESTING_AND, {"cids": cids})).all()
        self._looked_up.update(cids)
        adopted = self._adopt(rows)
        return [order for order, row in zip(adopted, rows, strict=True) if row.state == _OPEN]

    def enter(self, order: _Order) -> None:
        """Hold ``order``, new to the ledger, for :meth:`write` to insert."""
        self._orders[order.client_order_id] = order

    @property
    def positions_held(self) -> dict[str, _Held] | None:
        """Every position row by symbol as this transaction leaves them, if it read them."""
        return self._positions

    async def positions(self) -> dict[str, _Held]:
        """Every position row by symbol (read at most once per transaction)."""
        if self._positions is None:
            rows = await self.conn.execute(_ALL_POSITIONS)
            self._positions = {row.symbol: _Held(*row) for row in rows}
            self._stored_symbols = set(self._positions)
        return self._positions

    async def position(self, symbol: str) -> _Held:
        """``symbol``'s position, to change (a new flat one when none is held); written by
        :meth:`write`."""
        positions = await self.positions()
        held = positions.get(symbol)
        if held is None:
            held = positions[symbol] = _Held(symbol)
        self._changed_symbols[symbol] = None
        return held

    async def write(self) -> None:
        """Send what changed: new orders (their ids set), orders filled or cancelled,
        positions, the balance."""
        new = [o for o in self._orders.values() if o.id is None]
        if new:
            ids = await self.conn.execute(_INSERT_ORDERS, [o.columns() for o in new])
            for order, order_id in zip(new, ids.scalars(), strict=True):
                order.id = order_id
        settled = [
            {"order_id": o.id, **{name: getattr(o, name) for name in _OUTCOME}}
            for cid, o in self._orders.items()
            if cid in self._stored_state and o.state != self._stored_state[cid]
        ]
        if settled:
            await self.conn.execute(_SETTLE_ORDER, settled)
        if self._positions is not None:
            changed = [self._positions[s] for s in self._changed_symbols]
            added = [p.columns() for p in changed if p.symbol not in self._stored_symbols]
            kept = [
                {"at_symbol": p.symbol, **p.columns(key=False)}
                for p in changed
                if p.symbol in self._stored_symbols
            ]
            if added:
                await self.conn.execute(_INSERT_POSITION, added)
            if kept:
                await self.conn.execute(_UPDATE_POSITION, kept)
        if self.balance != self._balance_read:
            await self.conn.execute(_SET_BALANCE, {"balance": self.balance})


@dataclass(frozen=True, slots=True)
class _Request:
    """A ``close_position`` (``cancel`` False: all of the position, or ``quantity``) or
    ``cancel_order`` call waiting for its ledger transaction; ``outcome`` is set once that
    transaction has committed (or failed)."""

    symbol: str
    client_order_id: str
    outcome: asyncio.Future[OrderReport | None]
    quantity: Decimal | None = None
    cancel: bool = False


class PaperBroker:
    """Simulated broker over a price feed: the replay, or live market data through
    :class:`~core.brokers.paper_live.LivePaperBroker` (see the module docstring for the rules).

    Args:
        db: where the ledger lives (tables ``paper_account``, ``paper_orders``,
            ``paper_positions``).
        feed: the price source; the symbols it prices are the tradable ones.
        currency: account currency (the feed's quote currency).
        starting_balance: the balance of a new account, in ``currency``.
        spread_bps, slippage_bps, fee_bps: execution costs in basis points.
        leverage: margin = notional / leverage.
        clock: current UTC time (injectable).
    """

    name = "paper"

    def __init__(
        self,
        db: Database,
        feed: PriceFeed,
        *,
        currency: str = "USDT",
        starting_balance: Decimal = Decimal(10000),
        spread_bps: Decimal = Decimal(2),
        slippage_bps: Decimal = Decimal(1),
        fee_bps: Decimal = Decimal(10),
        leverage: Decimal = Decimal(1),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self.feed = feed
        self.currency = currency
        self.starting_balance = starting_balance
        self.spread_bps = spread_bps
        self.slippage_bps = slippage_bps
        self.fee_bps = fee_bps
        self.leverage = leverage
        self._clock = clock
        self._lock = asyncio.Lock()
        self._account_ready = False
        #: close_position and cancel_order calls waiting for their ledger transaction,
        #: and the task that runs them (None when none wait).
        self._queue: list[_Request] = []
        self._runner: asyncio.Task[None] | None = None
        #: the ``seq`` this broker's last committed ledger transaction left, and the
        #: positions as it left them (None: unknown; see :meth:`_transaction`)
        self._last_book: tuple[int, dict[str, _Held]] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, db: Database, feed: PriceFeed) -> PaperBroker:
        """A paper broker configured by the ``PAPER_*`` settings (``MAX_ORDER_*`` are the
        pre-trade gate's, :mod:`core.services.gate`)."""
        return cls(
            db,
            feed,
            currency=settings.paper_currency,
            starting_balance=settings.paper_starting_balance,
            spread_bps=settings.paper_spread_bps,
            slippage_bps=settings.paper_slippage_bps,
            fee_bps=settings.paper_fee_bps,
            leverage=settings.paper_leverage,
        )

    # --- prices ---------------------------------------------------------------------------

    async def quote(self, symbol: str) -> Quote:
        """Bid and ask around the current close by half the spread, rounded outwards to
        the symbol's price tick. Raises UnknownSymbolError."""
        last = self.feed.price(symbol)
        half = last * self.spread_bps / 2 / BPS
        tick = self.feed.tick(symbol)
        return Quote(
            symbol=symbol,
            bid=round_to_tick(last - half, tick, ROUND_FLOOR),
            ask=round_to_tick(last + half, tick, ROUND_CEILING),
            last=last,
            at=self._clock(),
        )

    def market_fill_price(self, symbol: str, side: Side) -> Decimal:
        """Where a market order of ``side`` fills now (see the module docstring)."""
        return self.executed_price(symbol, self.feed.price(symbol), side)

    def executed_price(self, symbol: str, price: Decimal, side: Side) -> Decimal:
        """``price`` (quote) after half the spread and the slippage against a taker of
        ``side``, rounded to ``symbol``'s price tick against the taker (up for a buy, down
        for a sell). Raises UnknownSymbolError."""
        cost = (self.spread_bps / 2 + self.slippage_bps) / BPS
        tick = self.feed.tick(symbol)
        if side is Side.BUY:
            return round_to_tick(price * (1 + cost), tick, ROUND_CEILING)
        return round_to_tick(price * (1 - cost), tick, ROUND_FLOOR)

    def fee_for(self, quantity: Decimal, price: Decimal) -> Decimal:
        """Fee in quote currency for ``quantity`` base units filled at ``price``."""
        return (quantity * price * self.fee_bps / BPS).quantize(FEE_QUANTUM, ROUND_HALF_UP)

    # --- orders ---------------------------------------------------------------------------

    async def place_order(self, request: OrderRequest) -> OrderReport:
        """Execute or rest ``request``; idempotent on its client order id.

        STOP and TAKE_PROFIT orders are reduce-only whatever ``request.reduce_only`` says;
        they rest until triggered (or execute at once when the close already passed the
        trigger; CANCELLED when nothing is held against them then).

        Raises:
            UnknownSymbolError, InvalidQuantityError, InsufficientMarginError,
            OrderRejectedError (limit order without a price, trigger order without a trigger
            price). ``MAX_ORDER_*`` is the pre-trade gate's rule, not checked here.
        """
        self.feed.price(request.symbol)  # unknown symbol -> UnknownSymbolError
        trigger = request.order_type.is_trigger
        if request.quantity <= 0:
            raise InvalidQuantityError(f"quantity must be positive, got {request.quantity}")
        if request.order_type is OrderType.LIMIT and (
            request.limit_price is None or request.limit_price <= 0
        ):
            raise OrderRejectedError("a limit order needs a positive limit price")
        if trigger and (request.trigger_price is None or request.trigger_price <= 0):
            raise OrderRejectedError(
                f"a {request.order_type.value} order needs a positive trigger price"
            )
        async with self._ledger(request.client_order_id) as book:
            if book.known:
                return self._report(
                    (await book.orders([request.client_order_id]))[request.client_order_id]
                )
            order = await self._enter(book, request)
        return self._report(order)

    async def _enter(self, book: _Book, request: OrderRequest, *, closes: bool = False) -> _Order:
        """Execute or rest ``request`` in the ledger transaction ``book`` (checked, its
        client order id new to the ledger): the order, held by ``book`` for its write (it
        has no id until then). ``closes``: the request was built from the position held in
        this transaction (:func:`closing_request`), so it only reduces it and has no
        margin to check."""
        trigger = request.order_type.is_trigger
        order = _Order(
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side.value,
            quantity=request.quantity,
            order_type=request.order_type.value,
            limit_price=request.limit_price,
            trigger_price=request.trigger_price if trigger else None,
            state=_OPEN,
            placed_candle_at=self.feed.current().at,
            created_at=self._clock(),
        )
        book.enter(order)
        if trigger:
            close = self.feed.price(request.symbol)
            if self._trigger_base(order, close, close, close) is not None:
                await self._fill_reducing(
                    book, order, self.executed_price(request.symbol, close, request.side)
                )
            return order
        price = self.market_fill_price(request.symbol, request.side)
        if request.order_type is OrderType.LIMIT:
            assert request.limit_price is not None
            marketable = (
                price <= request.limit_price
                if request.side is Side.BUY
                else price >= request.limit_price
            )
            if not marketable:
                await self._check_margin(book, request, request.limit_price)
                return order
        if not closes:
            await self._check_margin(book, request, price)
        await self._fill(book, order, price)
        return order

    async def get_order(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """The paper ledger's order with this client id, after matching resting limits."""
        async with self._ledger() as book:
            await self._match_resting(book, [client_order_id])
            order = (await book.orders([client_order_id])).get(client_order_id)
        return None if order is None else self._report(order)

    async def close_position(
        self,
        symbol: str,
        client_order_id: str,
        quantity: Decimal | None = None,
        position_ref: str = "",
    ) -> OrderReport | None:
        """Reduce-only market order for the net position in ``symbol``: all of it, or
        ``quantity`` base units (capped at what is held). None when flat. Idempotent on
        ``client_order_id``: an id the ledger holds returns that order. ``position_ref`` is
        ignored (one netting position per symbol).

        Closes and cancels called concurrently share one ledger transaction (a group
        commit: the ones that arrive while the ledger is busy go together in the next),
        executed in the order they were called; each returns once its transaction has
        committed. A caller cancelled before its request was taken never has it executed.

        Raises:
            UnknownSymbolError, InvalidQuantityError (``quantity`` not positive).
            BrokerAmbiguousError: the broker was stopped while the close was in flight.
        """
        self.feed.price(symbol)
        if quantity is not None and quantity <= 0:
            raise InvalidQuantityError(f"quantity must be positive, got {quantity}")
        return await self._queued(symbol, client_order_id, quantity=quantity)

    async def cancel_order(self, client_order_id: str, symbol: str) -> OrderReport:
        """Cancel a resting order; its final report (FILLED if a candle filled it before
        the cancel: resting orders are matched first). A final order is returned unchanged.
        Concurrent cancels and closes share a ledger transaction (see
        :meth:`close_position`).

        Raises:
            OrderNotFoundError: the ledger has no order with this client id.
            BrokerAmbiguousError: the broker was stopped while the cancel was in flight.
        """
        report = await self._queued(symbol, client_order_id, cancel=True)
        assert report is not None, "a cancel answers a report or raises"
        return report

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        """Resting orders (limit, stop, take profit), oldest first, after matching."""
        async with self._ledger() as book:
            resting = await self._match_resting(book)
        return [
            self._report(order)
            for order in resting
            if order.state == _OPEN and (symbol is None or order.symbol == symbol)
        ]

    async def exit_style(self, symbol: str) -> ExitStyle:
        """ORDERS: the paper ledger holds stop and take-profit orders.
        Raises UnknownSymbolError."""
        self.feed.price(symbol)
        return ExitStyle.ORDERS

    # --- account --------------------------------------------------------------------------

    async def positions(self) -> list[Position]:
        """Open positions marked at the current close."""
        _, held = await self._state()
        return [self._position(h) for h in held if h.quantity != 0]

    async def account(self) -> Account:
        """Balance, equity and margin in the account currency."""
        balance, held = await self._state()
        return self._account(balance, [self._position(h) for h in held if h.quantity])

    async def close(self) -> None:
        """Let the closes in flight finish; nothing else to release (the ledger lives in
        the database)."""
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)

    # --- internals ------------------------------------------------------------------------

    async def _state(self) -> tuple[Decimal, list[_Held]]:
        """The balance and every position (flat ones included), after matching the
        resting orders: one statement when none rests (:meth:`_snapshot`), else a ledger
        transaction."""
        snapshot = await self._snapshot()
        if snapshot is not None:
            return snapshot
        async with self._ledger() as book:
            await self._match_resting(book)
            positions = await book.positions()
        return book.balance, sorted(positions.values(), key=lambda h: h.symbol)

    async def _snapshot(self) -> tuple[Decimal, list[_Held]] | None:
        """The balance and every position, read in ONE statement outside the ledger lock
        (one statement sees one committed state, on SQLite and on PostgreSQL), or None
        when the ledger must be entered instead: resting orders may be due for matching,
        or no account exists yet."""
        rows = await self._db.read_rows(_SNAPSHOT)
        if not rows or rows[0].resting:
            return None
        held = [_Held(*row[2:]) for row in rows if row.symbol is not None]
        return rows[0].balance, held

    @asynccontextmanager
    async def _ledger(self, client_order_id: str | None = None) -> AsyncIterator[_Book]:
        """One serialized paper transaction: :meth:`_transaction` under the broker's lock."""
        async with self._lock, self._transaction(client_order_id) as book:
            yield book

    @asynccontextmanager
    async def _transaction(self, client_order_id: str | None = None) -> AsyncIterator[_Book]:
        """One paper transaction; the caller holds ``self._lock``. Its first statement bumps
        ``paper_account.seq`` and returns the balance (and whether the ledger holds an
        order with ``client_order_id``: :attr:`_Book.known`), so writers in other
        processes queue behind it (a row lock on PostgreSQL, the write lock on SQLite) and
        every read inside sees a stable ledger. The book's changes are written when the
        block ends without an error, then committed.

        Every ledger transaction bumps ``seq`` first, so when the bump returns one more than
        this broker's last committed transaction left, no other transaction has written
        the ledger since, and the positions that transaction left are the stored ones: the
        book starts with them instead of reading them again. A transaction that fails
        leaves none behind (its rolled-back ``seq`` would not match the next one either)."""
        if not self._account_ready:
            await self._ensure_account()
            self._account_ready = True
        last, self._last_book = self._last_book, None
        async with self._db.engine.begin() as conn:
            bumped = (await conn.execute(_BUMP_SEQ, {"cid": client_order_id})).one()
            known = last[1] if last is not None and bumped.seq == last[0] + 1 else None
            book = _Book(conn, bumped.balance, bumped.known, known)
            yield book
            await book.write()
        if book.positions_held is not None:  # committed
            self._last_book = (bumped.seq, book.positions_held)

    async def _queued(
        self,
        symbol: str,
        client_order_id: str,
        *,
        quantity: Decimal | None = None,
        cancel: bool = False,
    ) -> OrderReport | None:
        """Queue a close or a cancel for the next ledger transaction and wait for it."""
        request = _Request(
            symbol,
            client_order_id,
            asyncio.get_running_loop().create_future(),
            quantity=quantity,
            cancel=cancel,
        )
        self._queue.append(request)
        if self._runner is None:
            self._runner = asyncio.create_task(self._run_queue())
        return await request.outcome

    async def _run_queue(self) -> None:
        """Run the queued requests under the ledger lock, all that wait in one transaction,
        until none wait. If this task is stopped, the requests not answered yet fail as
        ambiguous (the batch in flight may have committed; the reconciler looks it up)."""
        batch: list[_Request] = []
        try:
            async with self._lock:
                while self._queue:
                    # a request whose caller was cancelled before it was taken is dropped
                    batch = [r for r in self._queue if not r.outcome.done()]
                    self._queue = []
                    if batch:
                        await self._run_batch(batch)
        finally:
            self._runner = None
            for request in (*batch, *self._queue):
                if not request.outcome.done():
                    request.outcome.set_exception(
                        BrokerAmbiguousError("the paper broker stopped before answering")
                    )
            self._queue = []

    async def _run_batch(self, batch: list[_Request]) -> None:
        """Execute ``batch`` in one ledger transaction and, once it has committed, answer
        each request. When the transaction fails, each request is executed again alone, in
        its own, so one failing close cannot take the others' fills with it (a close the
        failed transaction did commit is found by its client order id)."""
        try:
            async with self._transaction() as book:
                outcomes = await self._execute(book, batch)
        except Exception as exc:  # each caller gets its own error, alone
            if len(batch) > 1:
                for request in batch:
                    await self._run_batch([request])
            elif not batch[0].outcome.done():
                batch[0].outcome.set_exception(exc)
            return
        for request, outcome in zip(batch, outcomes, strict=True):
            if request.outcome.done():
                continue
            if isinstance(outcome, OrderNotFoundError):
                request.outcome.set_exception(outcome)
            else:
                request.outcome.set_result(None if outcome is None else self._report(outcome))

    async def _execute(
        self, book: _Book, batch: list[_Request]
    ) -> list[_Order | OrderNotFoundError | None]:
        """The requests of ``batch`` executed in order in the ledger transaction ``book``,
        with one read of their orders (with the resting ones) and, when it closes, one of
        the positions: per
        request its order (a close whose client order id the ledger holds answers that
        order; None when flat), or the error of a cancel of an order the ledger does not
        hold."""
        cids = [request.client_order_id for request in batch]
        await self._match_resting(book, cids)
        orders: dict[str, _Order | None] = {**await book.orders(cids)}
        outcomes: list[_Order | OrderNotFoundError | None] = []
        for request in batch:
            cid = request.client_order_id
            order = orders.get(cid)
            if request.cancel:
                if order is None:
                    outcomes.append(OrderNotFoundError(f"paper has no order {cid}"))
                    continue
                if order.state == _OPEN:
                    order.state = OrderState.CANCELLED.value
            elif cid not in orders:
                position = (await book.positions()).get(request.symbol)
                held = position.quantity if position is not None else ZERO
                close = closing_request(request.symbol, cid, held, request.quantity)
                order = orders[cid] = (
                    None if close is None else await self._enter(book, close, closes=True)
                )
            outcomes.append(order)
        return outcomes

    async def _ensure_account(self) -> None:
        try:
            async with self._db.session() as session:
                if await session.get(PaperAccountRow, 1) is None:
                    session.add(
                        PaperAccountRow(id=1, currency=self.currency, balance=self.starting_balance)
                    )
        except IntegrityError:  # created concurrently by another process
            pass

    def _position(self, held: _Held) -> Position:
        mark = self.feed.price(held.symbol)
        return Position(
            symbol=held.symbol,
            quantity=held.quantity,
            average_entry=held.average_entry,
            mark_price=mark,
            realized_pnl=held.realized_pnl,
            unrealized_pnl=(mark - held.average_entry) * held.quantity,
        )

    def _account(self, balance: Decimal, positions: list[Position]) -> Account:
        unrealized = sum((p.unrealized_pnl for p in positions), ZERO)
        margin = sum((p.notional for p in positions), ZERO) / self.leverage
        return Account(
            balance=balance, equity=balance + unrealized, margin=margin, currency=self.currency
        )

    async def _check_margin(self, book: _Book, request: OrderRequest, price: Decimal) -> None:
        positions = await book.positions()
        own = positions.get(request.symbol)
        held = ZERO if own is None else own.quantity
        after = held + request.side.sign * request.quantity
        added = abs(after) - abs(held)
        if added <= 0:
            return
        marked = [self._position(h) for h in positions.values() if h.quantity]
        free = self._account(book.balance, marked).free_margin
        needed = added * price / self.leverage + self.fee_for(request.quantity, price)
        if needed > free:
            raise InsufficientMarginError(
                f"order needs {needed:.2f} {self.currency} of margin, "
                f"free margin is {free:.2f} {self.currency}"
            )

    async def _fill(
        self, book: _Book, row: _Order, price: Decimal, quantity: Decimal | None = None
    ) -> None:
        """Fill ``row`` at ``price``: completely, or ``quantity`` of it (a capped
        reduce-only trigger); update position, balance and the order."""
        side = Side(row.side)
        size = row.quantity if quantity is None else quantity
        fee = self.fee_for(size, price)
        position = await book.position(row.symbol)
        held, entry = position.quantity, position.average_entry
        signed = side.sign * size
        realized = ZERO
        if held == 0 or (held > 0) == (signed > 0):  # opening or adding
            new_quantity = held + signed
            position.average_entry = (abs(held) * entry + size * price) / abs(new_quantity)
        else:  # reducing, closing or flipping
            closed = min(abs(held), size)
            realized = closed * (price - entry) * (1 if held > 0 else -1)
            new_quantity = held + signed
            if new_quantity == 0:
                position.average_entry = ZERO
            elif (new_quantity > 0) != (held > 0):  # flipped: the rest opens at price
                position.average_entry = price
        position.quantity = new_quantity
        position.realized_pnl += realized
        book.balance += realized - fee
        row.state = OrderState.FILLED.value
        row.fill_price = price
        row.fee = fee
        row.fill_quantity = None if size == row.quantity else size
        row.filled_at = self._clock()

    async def _fill_reducing(self, book: _Book, row: _Order, price: Decimal) -> None:
        """Fill a reduce-only trigger at ``price`` for at most what is held against it;
        CANCELLED when nothing is."""
        position = (await book.positions()).get(row.symbol)
        held = position.quantity if position is not None else ZERO
        against = -Side(row.side).sign * held  # > 0 when the order reduces the position
        if against <= 0:
            row.state = OrderState.CANCELLED.value
            return
        await self._fill(book, row, price, min(row.quantity, against))

    @staticmethod
    def _trigger_base(row: _Order, open_: Decimal, high: Decimal, low: Decimal) -> Decimal | None:
        """The base price a trigger order executes from on a candle (open, high, low), or
        None when the candle does not reach its trigger (see the module docstring)."""
        assert row.trigger_price is not None
        level = row.trigger_price
        # a sell stop and a buy take profit wait for the price to fall to the level
        falling = (row.order_type == OrderType.STOP.value) == (row.side == Side.SELL.value)
        if falling:
            return min(level, open_) if low <= level else None
        return max(level, open_) if high >= level else None

    async def _match_resting(
        self, book: _Book, client_order_ids: Sequence[str] = ()
    ) -> list[_Order]:
        """Fill resting orders that a later candle reached, candle by candle: oldest
        candle first across every resting order of a symbol; within a candle stops
        first, then the rest in placement order (see the module docstring). Returns the
        orders that were resting, oldest first, as they are now. The orders with
        ``client_order_ids`` are read in the same statement (see :meth:`_Book.resting`)."""
        resting = await book.resting(client_order_ids)
        by_symbol: dict[str, list[_Order]] = {}
        for row in resting:
            by_symbol.setdefault(row.symbol, []).append(row)
        for symbol, rows in sorted(by_symbol.items()):
            since = min(row.placed_candle_at for row in rows)
            for candle in self.feed.candles_since(symbol, since):
                due = [r for r in rows if r.state == OrderState.OPEN.value and self._due(r, candle)]
                due.sort(key=lambda r: r.order_type != OrderType.STOP.value)  # stable: stops first
                for row in due:
                    await self._match_one(book, row, candle)
        return resting

    @staticmethod
    def _due(row: _Order, candle: Candle) -> bool:
        """True when ``candle`` opened after the candle ``row`` was placed on."""
        return candle.at > row.placed_candle_at

    async def _match_one(self, book: _Book, row: _Order, candle: Candle) -> None:
        """Fill ``row`` on ``candle`` if the candle reaches its limit or trigger."""
        side = Side(row.side)
        if OrderType(row.order_type).is_trigger:
            base = self._trigger_base(row, candle.open, candle.high, candle.low)
            if base is not None:
                await self._fill_reducing(book, row, self.executed_price(row.symbol, base, side))
            return
        assert row.limit_price is not None
        limit = row.limit_price
        if side is Side.BUY and candle.low <= limit:
            await self._fill(book, row, min(limit, candle.open))
        elif side is Side.SELL and candle.high >= limit:
            await self._fill(book, row, max(limit, candle.open))

    def _report(self, row: _Order) -> OrderReport:
        filled = row.state == OrderState.FILLED.value
        side = Side(row.side)
        size = row.quantity if row.fill_quantity is None else row.fill_quantity
        fills: tuple[Fill, ...] = ()
        if filled:
            assert row.fill_price is not None and row.filled_at is not None
            fills = (
                Fill(
                    client_order_id=row.client_order_id,
                    symbol=row.symbol,
                    side=side,
                    quantity=size,
                    price=row.fill_price,
                    fee=row.fee,
                    fee_currency=self.currency,
                    at=row.filled_at,
                    broker_fill_id=f"paper-{row.client_order_id}",
                ),
            )
        return OrderReport(
            client_order_id=row.client_order_id,
            symbol=row.symbol,
            side=side,
            quantity=row.quantity,
            state=OrderState(row.state),
            broker_order_id=f"paper-{row.id}" if row.id else "",
            order_type=OrderType(row.order_type),
            limit_price=row.limit_price,
            filled_quantity=size if filled else ZERO,
            average_price=row.fill_price,
            fee=row.fee,
            fee_currency=self.currency,
            fills=fills,
            trigger_price=row.trigger_price,
        )
