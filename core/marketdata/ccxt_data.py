"""Market data from a ccxt exchange's public endpoints (no API key).

``fetch_ticker`` for quotes, ``fetch_ohlcv`` for candles and ``load_markets`` for the
symbols (Binance spot: ``GET /api/v3/ticker/24hr``, ``/api/v3/klines``,
``/api/v3/exchangeInfo``). ccxt's rate limiter is on (``enableRateLimit``), and answers
are cached for ``cache_seconds``: concurrent and repeated callers of the same request
inside that window share one HTTP request (ten callers in one second cost one request).

ccxt (the ``ccxt`` extra) is imported when a :class:`CcxtMarketData` is built, never when
this module is imported. Errors are translated at the boundary with the broker adapter's
table (:func:`core.brokers.ccxt_broker.translate_error`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from core.brokers._numbers import dec, dec_or_zero
from core.brokers.ccxt_broker import _import_ccxt, translate_error
from core.domain import Candle, Quote, utcnow
from core.errors import BrokerTemporaryError, ConfigError, UnknownSymbolError
from core.marketdata.base import Instrument, timeframe_delta

__all__ = ["CcxtMarketData", "instrument_from_market"]

#: ccxt's ``precisionMode`` value meaning precisions are tick sizes (TICK_SIZE).
_TICK_SIZE_MODE = 4


def instrument_from_market(market: Mapping[str, Any], precision_mode: int) -> Instrument:
    """An :class:`Instrument` from a ccxt market structure (pure).

    ``precision`` entries are tick sizes when ``precision_mode`` is ccxt's TICK_SIZE (4),
    else numbers of decimal places.
    """

    def step(value: object) -> Decimal:
        number = dec(value)
        if number is None or number <= 0:
            return Decimal("0.00000001")
        if precision_mode == _TICK_SIZE_MODE:
            return number
        return Decimal(1).scaleb(-int(number))

    precision = market.get("precision") or {}
    limits = market.get("limits") or {}
    kind = str(market.get("type") or "spot")
    return Instrument(
        symbol=str(market["symbol"]),
        base=str(market.get("base") or ""),
        quote=str(market.get("quote") or ""),
        kind=kind,
        price_tick=step(precision.get("price")),
        quantity_step=step(precision.get("amount")),
        min_quantity=dec_or_zero((limits.get("amount") or {}).get("min")),
        min_notional=dec_or_zero((limits.get("cost") or {}).get("min")),
        contract_size=dec(market.get("contractSize")) or Decimal(1),
    )


class CcxtMarketData:
    """:class:`~core.marketdata.base.MarketData` over one ccxt exchange's public API.

    Args:
        exchange_id: ccxt's id (``CCXT_EXCHANGE``).
        market_type: ``spot``, ``swap`` or ``future`` (ccxt's ``defaultType``).
        config: extra constructor options (``CCXT_CONFIG``: proxies, ``urls``, ``options``),
            merged over ``enableRateLimit: True``.
        api_urls: entries replacing ``urls["api"]`` (tests point them at a local server).
        cache_seconds: how long a quote or candle answer is reused.
        symbols_seconds: how long the loaded markets are reused by quotes and candles.
        clock: current UTC time; decides which candle is still forming.
        exchange: a ready ccxt exchange to read from instead (the ccxt broker's, so prices
            come from the venue that executes); ``exchange_id``, ``market_type``,
            ``config`` and ``api_urls`` are then ignored, and :meth:`close` leaves it open.

    Raises:
        BrokerUnavailableError: ccxt is not installed.
        ConfigError: ccxt does not know ``exchange_id``.
    """

    def __init__(
        self,
        exchange_id: str = "binance",
        *,
        market_type: str = "spot",
        config: Mapping[str, Any] | None = None,
        api_urls: Mapping[str, str] | None = None,
        cache_seconds: float = 1.0,
        symbols_seconds: float = 3600.0,
        clock: Callable[[], datetime] = utcnow,
        exchange: Any = None,
    ) -> None:
        ccxt_async, self._errors = _import_ccxt()
        self._owns = exchange is None
        if exchange is None:
            if exchange_id not in ccxt_async.exchanges:
                raise ConfigError(f"CCXT_EXCHANGE={exchange_id!r} is not an exchange ccxt knows")
            config = dict(config or {})
            options = {"defaultType": market_type, **dict(config.pop("options", {}))}
            exchange = getattr(ccxt_async, exchange_id)(
                {"enableRateLimit": True, **config, "options": options}
            )
            if api_urls:
                exchange.urls["api"] = {**exchange.urls["api"], **api_urls}
        self._exchange = exchange
        self.name = f"ccxt:{exchange.id}"
        self.cache_seconds = cache_seconds
        self.symbols_seconds = symbols_seconds
        self._clock = clock
        self._cache: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._inflight: dict[tuple[Any, ...], asyncio.Future[Any]] = {}

    @property
    def exchange(self) -> Any:
        """The ccxt exchange object, for diagnostics."""
        return self._exchange

    async def quote(self, symbol: str) -> Quote:
        """Bid, ask and last from ``fetch_ticker``; bid and ask fall back to the last.

        Raises:
            UnknownSymbolError, BrokerTemporaryError (no price, network), BrokerPermanentError.
        """
        await self._markets()
        ticker = await self._cached(
            ("ticker", symbol),
            self.cache_seconds,
            lambda: self._exchange.fetch_ticker(symbol),
            f"fetch the {symbol} ticker",
        )
        last = dec(ticker.get("last")) or dec(ticker.get("close"))
        bid, ask = dec(ticker.get("bid")), dec(ticker.get("ask"))
        if last is None and bid is not None and ask is not None:
            last = (bid + ask) / 2
        if last is None:
            raise BrokerTemporaryError(f"{self.name} has no price for {symbol} right now")
        stamp = ticker.get("timestamp")
        at = datetime.fromtimestamp(stamp / 1000, utcnow().tzinfo) if stamp else self._clock()
        return Quote(symbol=symbol, bid=bid or last, ask=ask or last, last=last, at=at)

    async def candles(self, symbol: str, timeframe: str, count: int) -> list[Candle]:
        """The last ``count`` closed candles: ``fetch_ohlcv`` with one more than asked,
        dropping a last candle whose close time is still in the future (forming).

        Raises:
            InvalidInputError: an unknown timeframe; and as :meth:`quote`.
        """
        rows = await self.ohlcv(symbol, timeframe, limit=count + 1)
        closed = self.closed(rows, timeframe)
        return closed[-count:] if count > 0 else []

    async def ohlcv(
        self, symbol: str, timeframe: str, *, limit: int, since: datetime | None = None
    ) -> list[Candle]:
        """Raw ``fetch_ohlcv`` rows as candles (the forming one included when the venue
        sends it), oldest first, cached for ``cache_seconds``."""
        timeframe_delta(timeframe)
        await self._markets()
        since_ms = int(since.timestamp() * 1000) if since is not None else None
        rows = await self._cached(
            ("ohlcv", symbol, timeframe, limit, since_ms),
            self.cache_seconds,
            lambda: self._exchange.fetch_ohlcv(symbol, timeframe, since=since_ms, limit=limit),
            f"fetch the {symbol} {timeframe} candles",
        )
        tz = utcnow().tzinfo
        return [
            Candle(
                at=datetime.fromtimestamp(row[0] / 1000, tz),
                open=Decimal(str(row[1])),
                high=Decimal(str(row[2])),
                low=Decimal(str(row[3])),
                close=Decimal(str(row[4])),
                volume=dec_or_zero(row[5]),
            )
            for row in rows
        ]

    def closed(self, candles: list[Candle], timeframe: str) -> list[Candle]:
        """``candles`` without those whose close time is after now (still forming)."""
        length = timeframe_delta(timeframe)
        now = self._clock()
        return [c for c in candles if c.at + length <= now]

    async def symbols(self) -> list[Instrument]:
        """Every active market, from a fresh ``load_markets`` (the database cache of
        :class:`~core.marketdata.search.SymbolSearch` is what saves requests)."""
        markets = await self._markets(0.0)
        mode = int(getattr(self._exchange, "precisionMode", _TICK_SIZE_MODE))
        return [instrument_from_market(m, mode) for m in markets.values() if m.get("active", True)]

    async def instrument(self, symbol: str) -> Instrument:
        """The instrument of ``symbol`` from the loaded markets (reloaded after
        ``symbols_seconds``, so this costs no request most of the time).

        Raises:
            UnknownSymbolError: the exchange does not list ``symbol``; and as :meth:`quote`.
        """
        markets = await self._markets()
        if symbol not in markets:
            raise UnknownSymbolError(f"{self.name} does not list {symbol}")
        mode = int(getattr(self._exchange, "precisionMode", _TICK_SIZE_MODE))
        return instrument_from_market(markets[symbol], mode)

    async def close(self) -> None:
        """Close ccxt's HTTP session when this built the exchange (idempotent)."""
        if self._owns:
            await self._exchange.close()

    async def _markets(self, ttl: float | None = None) -> dict[str, Any]:
        """The loaded markets, reloaded when older than ``ttl`` (default
        ``symbols_seconds``)."""
        markets: dict[str, Any] = await self._cached(
            ("markets",),
            self.symbols_seconds if ttl is None else ttl,
            lambda: self._exchange.load_markets(reload=True),
            "load the markets",
        )
        return markets

    async def _cached(
        self,
        key: tuple[Any, ...],
        ttl: float,
        fetch: Callable[[], Awaitable[Any]],
        action: str,
    ) -> Any:
        """The answer of ``fetch`` for ``key``: a fresh cached one, the one in flight, or
        a new request (the only one while it runs). Errors are not cached."""
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < ttl:
            return hit[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            try:
                value = await fetch()
            except self._errors.BaseError as exc:
                error = translate_error(exc, broker=self.name, action=action, placing=False)
                if isinstance(exc, self._errors.BadSymbol):
                    error = UnknownSymbolError(f"{self.name} does not list it: {error}")
                raise error from exc
            self._cache[key] = (time.monotonic(), value)
            future.set_result(value)
            return value
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            del self._inflight[key]
