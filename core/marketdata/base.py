"""The market-data port: quotes, closed candles and the symbols a venue lists.

Strategies, the drift check, charts and the exit watcher read prices here, never from a
broker's private feed (docs/architecture.md, "Market data"). Implementations:
:class:`~core.marketdata.replay.ReplayMarketData` (the embedded default, no network),
:class:`~core.marketdata.ccxt_data.CcxtMarketData` (public endpoints, no key) and
:class:`~core.marketdata.mt5_data.Mt5MarketData`.

An :class:`Instrument` carries the venue's increments so prices are rounded and printed
with the market's own precision instead of a guessed ``0.01``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

from core.db.types import canonical
from core.domain import Candle, Quote
from core.errors import InvalidInputError

__all__ = [
    "TIMEFRAMES",
    "Instrument",
    "MarketData",
    "PriceFeed",
    "floor_time",
    "round_to_tick",
    "timeframe_delta",
]

#: Candle timeframes every implementation understands (ccxt's spelling).
TIMEFRAMES = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
}


def timeframe_delta(timeframe: str) -> timedelta:
    """The length of one ``timeframe`` candle (``"1h"`` -> 1 hour).

    Raises:
        InvalidInputError: a timeframe not in :data:`TIMEFRAMES`.
    """
    try:
        return timedelta(seconds=TIMEFRAMES[timeframe])
    except KeyError:
        known = ", ".join(TIMEFRAMES)
        raise InvalidInputError(f"unknown timeframe {timeframe!r}; use one of {known}") from None


def floor_time(at: datetime, timeframe: str) -> datetime:
    """The open time (UTC) of the ``timeframe`` candle that contains ``at``."""
    seconds = TIMEFRAMES[timeframe]
    epoch = int(at.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def round_to_tick(value: Decimal, tick: Decimal, rounding: str = ROUND_HALF_UP) -> Decimal:
    """``value`` rounded to a multiple of ``tick`` (``tick`` > 0; half up by default)."""
    ticks = (value / tick).quantize(Decimal(1), rounding)
    return (ticks * tick).quantize(tick)


@dataclass(frozen=True, slots=True)
class Instrument:
    """A tradable market as the venue lists it.

    Attributes:
        symbol: the venue's unified symbol (``BTC/USDT``, ``BTC/USDT:USDT``, ``EURUSD``).
        base, quote: currencies; the price is in ``quote`` per one ``base``.
        kind: ``spot``, ``swap``, ``future``, ``forex`` or ``cfd``.
        price_tick: smallest price increment (quote currency).
        quantity_step: smallest quantity increment (base units, or contracts).
        min_quantity: smallest order quantity (0 = none known).
        min_notional: smallest order value in quote currency (0 = none known).
        contract_size: base units per contract (1 on spot; 100000 for one forex lot).
    """

    symbol: str
    base: str
    quote: str
    kind: str
    price_tick: Decimal
    quantity_step: Decimal
    min_quantity: Decimal = Decimal(0)
    min_notional: Decimal = Decimal(0)
    contract_size: Decimal = Decimal(1)

    @property
    def price_decimals(self) -> int:
        """Decimals of :attr:`price_tick` (``0.01`` -> 2, ``0.00001`` -> 5, ``0.5`` -> 1)."""
        exponent = self.price_tick.normalize().as_tuple().exponent
        return max(-exponent, 0) if isinstance(exponent, int) else 2

    def round_price(self, price: Decimal, rounding: str = ROUND_HALF_UP) -> Decimal:
        """``price`` rounded to a multiple of :attr:`price_tick` (half up by default)."""
        return round_to_tick(price, self.price_tick, rounding)

    def format_price(self, price: Decimal) -> str:
        """``price`` with thousands separators and the tick's decimals: ``1.08513``; a price
        between ticks (an average) is shown rounded as :meth:`round_price` rounds it."""
        return f"{self.round_price(price):,.{self.price_decimals}f}"


def format_price(value: Decimal, instrument: Instrument | None = None) -> str:
    """A price (quote currency) with thousands separators: with the ``instrument``'s tick
    decimals when it is given (``1.08513`` for EURUSD), else at least two decimals:
    ``43,120.50``. The one price format of the chat and the command line."""
    if instrument is not None:
        return instrument.format_price(value)
    exponent = canonical(value).as_tuple().exponent
    decimals = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    return f"{value:,.{max(2, decimals)}f}"


class MarketData(Protocol):
    """Where prices come from. Every call may raise :class:`~core.errors.BrokerError`
    subclasses: :class:`~core.errors.UnknownSymbolError` for a symbol the source does not
    list, :class:`~core.errors.BrokerTemporaryError` when it cannot be reached."""

    #: ``replay``, ``ccxt:binance``, ``mt5``: names the cache rows and messages.
    name: str

    async def quote(self, symbol: str) -> Quote:
        """The latest bid, ask and last price of ``symbol`` (quote currency)."""
        ...

    async def candles(self, symbol: str, timeframe: str, count: int) -> list[Candle]:
        """The last ``count`` CLOSED candles of ``symbol`` on ``timeframe``, oldest first,
        with UTC open times. The replay's current candle counts as closed."""
        ...

    async def symbols(self) -> list[Instrument]:
        """Every market the source lists."""
        ...

    async def close(self) -> None:
        """Release connections (idempotent)."""
        ...


class PriceFeed(Protocol):
    """The synchronous view the paper broker executes on (one per engine).

    ``price`` is the current price, ``tick`` the symbol's price increment, ``current()``
    the candle current now (its ``at`` marks when a resting order was placed) and
    ``candles_since`` the candles to match resting orders against.
    :class:`~core.marketdata.replay.ReplayFeed` is one;
    :class:`~core.marketdata.live.LiveFeed` serves live market data the same way.
    """

    def price(self, symbol: str) -> Decimal:
        """Current price of ``symbol`` (quote currency). Raises UnknownSymbolError."""
        ...

    def tick(self, symbol: str) -> Decimal:
        """Price tick of ``symbol``'s instrument (quote currency): fills and quotes are
        rounded to it. Raises UnknownSymbolError."""
        ...

    def current(self) -> Candle:
        """The candle current now."""
        ...

    def candles_since(self, symbol: str, at: datetime) -> Sequence[Candle]:
        """Candles from the one current at ``at`` up to now, oldest first."""
        ...
