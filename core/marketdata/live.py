"""The paper broker's synchronous price view over live market data.

:class:`LiveFeed` offers the three calls the paper broker executes on (``price``,
``current``, ``candles_since``, see :class:`~core.marketdata.base.PriceFeed`) from a
snapshot that :meth:`LiveFeed.refresh` fills from the market data before each broker
call (:class:`~core.brokers.paper_live.LivePaperBroker` does that).

Matching resting and trigger orders on live data (the choice, documented): the feed's
"current candle" is the forming :data:`MATCH_TIMEFRAME` candle, so an order placed now
records that candle's open time, and only candles that OPEN LATER are matched against it
(the path inside the candle it was placed in is unknown, as on the replay). Those are the
closed one-minute candles since the order was placed plus the forming one's high and low
so far, so a stop is triggered within the minute its level trades, not a minute later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from core.domain import ZERO, Candle, utcnow
from core.errors import BrokerTemporaryError
from core.marketdata.base import Instrument, MarketData, floor_time

__all__ = ["MATCH_TIMEFRAME", "CandleHistory", "LiveFeed"]

#: The candles resting orders are matched against on live data.
MATCH_TIMEFRAME = "1m"

#: The most candles one refresh reads per symbol: the last ``MAX_MATCH_CANDLES`` minutes.
#: Resting orders are matched on every broker call (the drawdown check makes one every
#: few seconds), so only a process down for longer than that skips the oldest candles.
MAX_MATCH_CANDLES = 1000

_MINUTE = timedelta(minutes=1)


class CandleHistory(MarketData, Protocol):
    """Market data that can also give raw candles, the forming one included."""

    async def ohlcv(
        self, symbol: str, timeframe: str, *, limit: int, since: datetime | None = None
    ) -> list[Candle]:
        """Candles from ``since`` (or the last ``limit``), oldest first, forming included."""
        ...

    async def instrument(self, symbol: str) -> Instrument:
        """The listed instrument of ``symbol`` (its price tick rounds paper fills)."""
        ...


class LiveFeed:
    """A :class:`~core.marketdata.base.PriceFeed` over ``market``'s latest answers.

    Args:
        market: the live market data.
        clock: current UTC time (the forming candle's open time derives from it).
    """

    def __init__(self, market: CandleHistory, clock: Callable[[], datetime] = utcnow) -> None:
        self.market = market
        self._clock = clock
        self._prices: dict[str, Decimal] = {}
        self._ticks: dict[str, Decimal] = {}
        self._candles: dict[str, list[Candle]] = {}

    async def refresh(self, symbols: Iterable[str], since: Mapping[str, datetime]) -> None:
        """Read the last price and the instrument's price tick of every symbol in
        ``symbols`` and, for each symbol in ``since``, the :data:`MATCH_TIMEFRAME` candles
        from that instant.

        Raises:
            UnknownSymbolError: the market data does not list a symbol.
            BrokerTemporaryError: it cannot be reached.
        """
        for symbol in sorted(set(symbols) | set(since)):
            self._ticks[symbol] = (await self.market.instrument(symbol)).price_tick
            self._prices[symbol] = (await self.market.quote(symbol)).last
        oldest = floor_time(self._clock(), MATCH_TIMEFRAME) - (MAX_MATCH_CANDLES - 1) * _MINUTE
        for symbol, at in since.items():
            start = max(floor_time(at, MATCH_TIMEFRAME), oldest)
            self._candles[symbol] = await self.market.ohlcv(
                symbol, MATCH_TIMEFRAME, limit=MAX_MATCH_CANDLES, since=start
            )

    def price(self, symbol: str) -> Decimal:
        """The last price read for ``symbol``.

        Raises:
            BrokerTemporaryError: no price was read yet (refresh first).
        """
        try:
            return self._prices[symbol]
        except KeyError:
            raise BrokerTemporaryError(f"no live price for {symbol} yet; try again") from None

    def tick(self, symbol: str) -> Decimal:
        """The price tick of ``symbol``'s instrument, read by the last refresh.

        Raises:
            BrokerTemporaryError: not read yet (refresh first).
        """
        try:
            return self._ticks[symbol]
        except KeyError:
            raise BrokerTemporaryError(f"no instrument for {symbol} yet; try again") from None

    def current(self) -> Candle:
        """The forming :data:`MATCH_TIMEFRAME` candle; only its open time is meaningful
        (the paper broker records it as the candle an order was placed on)."""
        at = floor_time(self._clock(), MATCH_TIMEFRAME)
        return Candle(at=at, open=ZERO, high=ZERO, low=ZERO, close=ZERO, volume=ZERO)

    def candles_since(self, symbol: str, at: datetime) -> list[Candle]:
        """The candles read by the last refresh that opened at or after the candle
        containing ``at``, the forming one last."""
        start = floor_time(at, MATCH_TIMEFRAME)
        return [c for c in self._candles.get(symbol, []) if c.at >= start]
