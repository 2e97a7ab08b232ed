"""Domain value types: signals, orders, fills, positions and accounts.

Conventions, everywhere in SignalDesk:

- Money, prices and quantities are :class:`~decimal.Decimal`, never float.
- Prices and amounts are in the symbol's quote currency (USDT for ``BTC/USDT``);
  quantities are in the base currency (BTC for ``BTC/USDT``).
- Symbols use the unified ``BASE/QUOTE`` form (ccxt's convention); MT5 symbols such as
  ``EURUSD`` are used as the terminal names them.
- Datetimes are timezone-aware UTC.
- Percent values are named ``*_pct`` (1.5 means 1.5 %); fractions are named ``*_fraction``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

__all__ = [
    "ALLOWED_TRANSITIONS",
    "ZERO",
    "Account",
    "AuditEvent",
    "Candle",
    "ExitReason",
    "ExitStyle",
    "Fill",
    "OrderReport",
    "OrderRequest",
    "OrderState",
    "OrderType",
    "Position",
    "Quote",
    "Side",
    "Signal",
    "SignalStatus",
    "Trade",
    "TradeStatus",
    "TradingState",
    "can_transition",
    "utcnow",
]

ZERO = Decimal(0)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Side(enum.StrEnum):
    """Order or signal side. A position's side is derived from the sign of its quantity."""

    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """+1 for buy, -1 for sell: the sign a fill of this side adds to a net position."""
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        """The side that closes a position opened by this side."""
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(enum.StrEnum):
    """Market orders fill at once at the best price; limit orders at ``limit_price`` or better.

    ``STOP`` (a stop-market order) and ``TAKE_PROFIT`` (a take-profit-market order) rest
    until the market trades through ``trigger_price`` (at or below it for a sell stop, at
    or above for a buy stop; the reverse for a take profit), then execute at market. They
    are protective exits: always ``reduce_only``.
    """

    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    TAKE_PROFIT = "take_profit"

    @property
    def is_trigger(self) -> bool:
        """True for the protective trigger orders (STOP, TAKE_PROFIT)."""
        return self in (OrderType.STOP, OrderType.TAKE_PROFIT)


class TradingState(enum.StrEnum):
    """The one switch of the pre-trade gate (nautilus_trader's ``TradingState``).

    ACTIVE: every order may pass. REDUCING: only orders that reduce risk (closes,
    protective exits). HALTED: no new risk at all; reducing orders still pass, so a stop
    or a flatten is never held back. Pause, resume, a drawdown breach and the flatten
    change it; nothing else does.
    """

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class ExitStyle(enum.StrEnum):
    """Where a trade's protective exits live.

    ``ORDERS``: the venue holds separate reduce-only stop and take-profit orders (paper,
    ccxt exchanges that accept trigger orders). ``ATTACHED``: the venue holds stop loss and
    take profit on the position itself (MT5 ``sl``/``tp``). ``WATCHED``: the venue holds
    neither, so SignalDesk watches prices and closes with a market order when a level
    trades (ccxt spot without trigger orders).
    """

    ORDERS = "orders"
    ATTACHED = "attached"
    WATCHED = "watched"


class TradeStatus(enum.StrEnum):
    """A trade is OPEN while any quantity of it is held, CLOSED after."""

    OPEN = "OPEN"
    CLOSED = "CLOSED"


class ExitReason(enum.StrEnum):
    """Why (part of) a trade was closed."""

    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TRAILING_STOP = "trailing_stop"
    MANUAL_CLOSE = "manual_close"
    CLOSE_ALL = "close_all"
    DRAWDOWN_FLATTEN = "drawdown_flatten"
    REVERSED = "reversed"
    RECONCILED = "reconciled"


class SignalStatus(enum.StrEnum):
    """States of the signal lifecycle (docs/architecture.md, "The signal lifecycle")."""

    PROPOSED = "PROPOSED"
    APPROVED = "APPROVED"
    SUBMITTED = "SUBMITTED"
    FILLED = "FILLED"
    REJECTED = "REJECTED"
    BLOCKED = "BLOCKED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_final(self) -> bool:
        """True when no further transition is allowed."""
        return not ALLOWED_TRANSITIONS[self]


#: The state machine: for each status, the statuses it may move to.
ALLOWED_TRANSITIONS: dict[SignalStatus, frozenset[SignalStatus]] = {
    SignalStatus.PROPOSED: frozenset(
        {
            SignalStatus.APPROVED,
            SignalStatus.REJECTED,
            SignalStatus.EXPIRED,
            SignalStatus.CANCELLED,
            SignalStatus.BLOCKED,  # the account changed since the proposal passed the checks
        }
    ),
    SignalStatus.APPROVED: frozenset({SignalStatus.SUBMITTED, SignalStatus.BLOCKED}),
    SignalStatus.SUBMITTED: frozenset(
        {SignalStatus.FILLED, SignalStatus.FAILED, SignalStatus.UNKNOWN}
    ),
    SignalStatus.UNKNOWN: frozenset({SignalStatus.FILLED, SignalStatus.FAILED}),
    SignalStatus.FILLED: frozenset(),
    SignalStatus.REJECTED: frozenset(),
    SignalStatus.BLOCKED: frozenset(),
    SignalStatus.EXPIRED: frozenset(),
    SignalStatus.CANCELLED: frozenset(),
    SignalStatus.FAILED: frozenset(),
}


def can_transition(current: SignalStatus, new: SignalStatus) -> bool:
    """True when the lifecycle allows ``current -> new``."""
    return new in ALLOWED_TRANSITIONS[current]


class OrderState(enum.StrEnum):
    """State of one order as SignalDesk records it.

    SUBMITTED is written before the broker is called; UNKNOWN means the call's outcome is
    unknown (timeout, crash) and the reconciler must resolve it by client order id.
    """

    SUBMITTED = "SUBMITTED"
    OPEN = "OPEN"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class Signal:
    """A proposed trade waiting for (or past) the owner's decision.

    ``quantity`` is in base units; ``limit_price``, ``stop_loss``, ``take_profit`` and
    ``reference_price`` (the market price when proposed) are in quote currency.
    """

    id: int
    source: str
    symbol: str
    side: Side
    quantity: Decimal
    order_type: OrderType
    reference_price: Decimal
    created_at: datetime
    expires_at: datetime
    status: SignalStatus = SignalStatus.PROPOSED
    limit_price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    note: str = ""
    status_reason: str = ""
    decided_by: str = ""
    decided_at: datetime | None = None
    trail_pct: Decimal | None = None
    breakeven_at_r: Decimal | None = None
    #: how many times the pending signal was edited (0: as proposed); see SignalService.edit
    card_version: int = 0

    @property
    def risk(self) -> Decimal | None:
        """Loss in quote currency if the stop loss is hit, from the entry price
        (limit price, else reference price); None without a stop loss."""
        if self.stop_loss is None:
            return None
        entry = self.limit_price if self.limit_price is not None else self.reference_price
        return abs(entry - self.stop_loss) * self.quantity


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What is sent to a broker. ``client_order_id`` is persisted before the broker is
    called and makes the request idempotent: a broker never holds two orders with one id.

    ``trigger_price`` (quote) is the level of a STOP or TAKE_PROFIT order.
    ``position_ref`` names the position an order reduces on venues that keep one position
    per ticket (MT5 hedging: the client order id of the entry that opened it); empty
    elsewhere.
    """

    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    reduce_only: bool = False
    trigger_price: Decimal | None = None
    position_ref: str = ""


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution: ``quantity`` base units at ``price`` (quote); ``fee`` in ``fee_currency``."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    at: datetime
    broker_fill_id: str = ""


@dataclass(frozen=True, slots=True)
class OrderReport:
    """A broker's account of one order, looked up or returned by ``place_order``.

    ``filled_quantity`` in base units, ``average_price`` in quote currency (None before any
    fill), ``fee`` the total fee in ``fee_currency``.
    """

    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    state: OrderState
    broker_order_id: str = ""
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    filled_quantity: Decimal = ZERO
    average_price: Decimal | None = None
    fee: Decimal = ZERO
    fee_currency: str = ""
    fills: tuple[Fill, ...] = ()
    reason: str = ""
    trigger_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Position:
    """A net position in one symbol.

    ``quantity`` is signed base units (positive long, negative short); ``average_entry``
    and ``mark_price`` are quote prices; ``realized_pnl`` and ``unrealized_pnl`` are in quote
    currency, before fees. ``opened_by_signaldesk`` is False for a position the broker holds
    that SignalDesk did not open (reported, never touched). ``position_ref`` is set on
    venues that keep one position per ticket (MT5 hedging): the client order id of the
    entry that opened it, or ``ticket:<n>`` for a ticket SignalDesk did not open.
    """

    symbol: str
    quantity: Decimal
    average_entry: Decimal
    mark_price: Decimal
    realized_pnl: Decimal = ZERO
    unrealized_pnl: Decimal = ZERO
    opened_by_signaldesk: bool = True
    position_ref: str = ""

    @property
    def side(self) -> Side:
        """BUY for a long position, SELL for a short one."""
        return Side.BUY if self.quantity > 0 else Side.SELL

    @property
    def notional(self) -> Decimal:
        """Absolute position value at the mark price, in quote currency."""
        return abs(self.quantity) * self.mark_price


@dataclass(frozen=True, slots=True)
class Account:
    """Account figures in ``currency`` (the quote currency of the account).

    ``balance`` is cash after realized PnL and fees; ``equity`` is balance plus unrealized
    PnL of open positions; ``margin`` is the margin in use; ``free_margin`` = equity - margin.
    """

    balance: Decimal
    equity: Decimal
    margin: Decimal
    currency: str

    @property
    def free_margin(self) -> Decimal:
        """Equity not tied up as margin, in ``currency``."""
        return self.equity - self.margin


@dataclass(frozen=True, slots=True)
class Quote:
    """Best bid and ask and the last traded price of ``symbol`` (quote currency), at ``at``.
    ``delayed``: the venue sent delayed prices (IBKR without a market data subscription:
    15-20 minutes late, IB market data type 3 or 4); False for every live source."""

    symbol: str
    bid: Decimal
    ask: Decimal
    last: Decimal
    at: datetime = field(default_factory=utcnow)
    delayed: bool = False

    @property
    def mid(self) -> Decimal:
        """(bid + ask) / 2."""
        return (self.bid + self.ask) / 2


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV candle; ``at`` is the candle's open time (UTC); volume in base units."""

    at: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One entry of the audit trail: ``actor`` did ``action`` at ``at`` (UTC), moving
    signal ``signal_id`` (if any) ``from_status -> to_status``, because ``reason``."""

    id: int
    at: datetime
    actor: str
    action: str
    signal_id: int | None = None
    order_id: int | None = None
    from_status: str = ""
    to_status: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Trade:
    """A position SignalDesk opened from a signal, from its entry fills to its last exit.

    ``side`` is the entry side (BUY: a long trade). Quantities are base units; prices are
    quote currency; ``realized_pnl`` is the gross price PnL of the quantity closed so far
    (quote), ``fees`` every entry and exit fee (quote), so ``net_pnl`` = realized - fees.
    ``initial_risk`` is |entry - initial stop| x quantity (quote; None without a stop),
    and ``r_multiple`` = net PnL / initial risk. ``exit_style`` says where the protective
    exits live. Times are UTC.
    """

    id: int
    signal_id: int | None
    symbol: str
    side: Side
    status: TradeStatus
    quantity: Decimal
    quantity_open: Decimal
    average_entry: Decimal
    opened_at: datetime
    average_exit: Decimal | None = None
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    initial_risk: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    trail_pct: Decimal | None = None
    breakeven_at_r: Decimal | None = None
    exit_style: ExitStyle = ExitStyle.WATCHED
    exit_reason: ExitReason | None = None
    closed_at: datetime | None = None
    position_ref: str = ""

    @property
    def net_pnl(self) -> Decimal:
        """Realized PnL after fees, quote currency."""
        return self.realized_pnl - self.fees

    @property
    def r_multiple(self) -> Decimal | None:
        """Net PnL in units of the initial risk; None without an initial stop."""
        if not self.initial_risk:
            return None
        return self.net_pnl / self.initial_risk
