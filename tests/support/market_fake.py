"""A local fake of Binance's public market-data endpoints, for offline market-data tests.

ccxt talks to it over real HTTP on 127.0.0.1 (``urls["api"]["public"]`` points here), so
ccxt's own request building and response parsing run as they would against Binance.

Served, in Binance's spot shapes (``/api/v3``): ``GET /exchangeInfo`` (several markets,
``PRICE_FILTER``, ``LOT_SIZE``, ``NOTIONAL``), ``GET /klines`` (``symbol``, ``interval``,
``limit``, ``startTime``), ``GET /ticker/24hr`` and ``GET /ticker/bookTicker`` (one
``symbol`` or several ``symbols``), ``GET /time``. Every request is counted per path in
:attr:`MarketFake.counts`.

Candles: each symbol has a list of closed candles and one forming candle. Open times are
derived when served from the fake's ``clock``: the forming candle opens at the current
``interval`` boundary and the closed ones precede it back to back, as on a real exchange.
:meth:`MarketFake.set_price` trades at a price: the forming candle takes it as its close
and is closed, and a new forming candle opens at that price.

    async with market_fake.running() as fake:
        market = fake.market_data()            # a CcxtMarketData pointed at the fake
        fake.set_history("ETH/USDT", closes)
        fake.set_price("ETH/USDT", "3100")
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from core.marketdata.ccxt_data import CcxtMarketData

__all__ = ["DEFAULT_MARKETS", "MarketFake", "MarketSpec", "running"]

_INTERVALS = {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "4h": 14400, "1d": 86400}


@dataclass(frozen=True)
class MarketSpec:
    """One listed spot market and its filters (Binance's values for the real ones)."""

    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    min_notional: Decimal
    price: Decimal

    @property
    def symbol(self) -> str:
        """Binance's id: ``ETHUSDT``."""
        return f"{self.base}{self.quote}"


DEFAULT_MARKETS = (
    MarketSpec(
        "BTC",
        "USDT",
        Decimal("0.01"),
        Decimal("0.00001"),
        Decimal("0.00001"),
        Decimal(5),
        Decimal(60000),
    ),
    MarketSpec(
        "ETH",
        "USDT",
        Decimal("0.01"),
        Decimal("0.0001"),
        Decimal("0.0001"),
        Decimal(5),
        Decimal(3000),
    ),
    MarketSpec(
        "ETH",
        "BTC",
        Decimal("0.00001"),
        Decimal("0.0001"),
        Decimal("0.0001"),
        Decimal("0.0001"),
        Decimal("0.05"),
    ),
    MarketSpec(
        "SOL", "USDT", Decimal("0.01"), Decimal("0.001"), Decimal("0.001"), Decimal(5), Decimal(150)
    ),
    MarketSpec(
        "PEPE",
        "USDT",
        Decimal("0.00000001"),
        Decimal(1),
        Decimal(1),
        Decimal(1),
        Decimal("0.00001"),
    ),
)


@dataclass
class _Series:
    closed: list[tuple[Decimal, Decimal, Decimal, Decimal]] = field(default_factory=list)
    forming: tuple[Decimal, Decimal, Decimal, Decimal] = (Decimal(0),) * 4


def _fmt(value: Decimal) -> str:
    return f"{value:.8f}"


class MarketFake:
    """The fake server (see the module docstring).

    Args:
        markets: the markets listed (default :data:`DEFAULT_MARKETS`), each starting with
            60 flat closed candles at its price.
        clock: current UTC time, from which candle open times are derived.

    Attributes:
        counts: requests served per path (``"/api/v3/klines"``).
    """

    def __init__(
        self,
        markets: Sequence[MarketSpec] = DEFAULT_MARKETS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.specs = {spec.symbol: spec for spec in markets}
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.series: dict[str, _Series] = {}
        for spec in markets:
            self.set_history(spec.symbol, [spec.price] * 60)
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self._made: list[CcxtMarketData] = []

    # --- scenario switches ----------------------------------------------------------------

    def set_history(self, symbol: str, closes: Sequence[Decimal | str | int]) -> None:
        """Replace ``symbol``'s closed candles by ones closing at ``closes`` (each opens at
        the previous close, high and low 0.2 % beyond); the forming candle opens at the
        last close."""
        spec = self.specs[symbol.replace("/", "")]
        prices = [Decimal(str(c)) for c in closes]
        candles = []
        previous = prices[0]
        for close in prices:
            high = max(previous, close) * Decimal("1.002")
            low = min(previous, close) * Decimal("0.998")
            candles.append((previous, high, low, close))
            previous = close
        last = prices[-1]
        self.series[spec.symbol] = _Series(candles, (last, last, last, last))

    def set_price(self, symbol: str, price: Decimal | str | int) -> None:
        """Trade at ``price``: close the forming candle there and open a new one."""
        series = self.series[symbol.replace("/", "")]
        value = Decimal(str(price))
        open_, high, low, _ = series.forming
        series.closed.append((open_, max(high, value), min(low, value), value))
        series.forming = (value, value, value, value)

    def last(self, symbol: str) -> Decimal:
        """``symbol``'s last price."""
        return self.series[symbol.replace("/", "")].forming[3]

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port; sets :attr:`base_url`."""
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Close what :meth:`market_data` made, then stop serving."""
        for market in self._made:
            await market.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_urls(self) -> dict[str, str]:
        """``urls["api"]`` entries pointing ccxt's binance spot API here."""
        return {"public": f"{self.base_url}/api/v3", "private": f"{self.base_url}/api/v3"}

    @property
    def ccxt_config(self) -> dict[str, Any]:
        """A ``CCXT_CONFIG`` pointing ccxt's binance spot API here (spot markets only)."""
        return {
            "urls": {"api": self.api_urls},
            "rateLimit": 1,
            "timeout": 3000,
            "timeout_on_exit": 0,
            "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
        }

    def market_data(self, **kwargs: Any) -> CcxtMarketData:
        """A :class:`CcxtMarketData` (binance spot) on this server; closed on :meth:`stop`."""
        from core.marketdata.ccxt_data import CcxtMarketData

        config = self.ccxt_config
        api = config.pop("urls")["api"]
        kwargs.setdefault("clock", self.clock)
        market = CcxtMarketData("binance", config=config, api_urls=api, **kwargs)
        self._made.append(market)
        return market

    # --- HTTP -----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.counts[path] += 1
        params = dict(request.query)
        routes: dict[str, Callable[[], Any]] = {
            "/api/v3/time": lambda: {"serverTime": self._now_ms()},
            "/api/v3/exchangeInfo": self._exchange_info,
            "/api/v3/klines": lambda: self._klines(params),
            "/api/v3/ticker/24hr": lambda: self._tickers(params, self._ticker_24hr),
            "/api/v3/ticker/bookTicker": lambda: self._tickers(params, self._book),
        }
        if path not in routes:
            return web.json_response({"code": -1000, "msg": f"not served: {path}"}, status=404)
        try:
            return web.json_response(routes[path]())
        except KeyError:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)

    def _now_ms(self) -> int:
        return int(self.clock().timestamp() * 1000)

    def _exchange_info(self) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": self._now_ms(),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": [self._symbol_info(spec) for spec in self.specs.values()],
        }

    @staticmethod
    def _symbol_info(spec: MarketSpec) -> dict[str, Any]:
        return {
            "symbol": spec.symbol,
            "status": "TRADING",
            "baseAsset": spec.base,
            "baseAssetPrecision": 8,
            "quoteAsset": spec.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "orderTypes": ["LIMIT", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": _fmt(spec.tick_size),
                    "maxPrice": "1000000.00000000",
                    "tickSize": _fmt(spec.tick_size),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": _fmt(spec.min_qty),
                    "maxQty": "9000.00000000",
                    "stepSize": _fmt(spec.step_size),
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": _fmt(spec.min_notional),
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
        }

    def _klines(self, params: Mapping[str, str]) -> list[list[Any]]:
        series = self.series[params["symbol"]]
        seconds = _INTERVALS[params.get("interval", "1m")]
        now = int(self.clock().timestamp())
        forming_at = (now - now % seconds) * 1000
        rows = [*series.closed, series.forming]
        step = seconds * 1000
        first_at = forming_at - (len(rows) - 1) * step
        klines: list[list[Any]] = []
        for index, (open_, high, low, close) in enumerate(rows):
            at = first_at + index * step
            klines.append(
                [
                    at,
                    _fmt(open_),
                    _fmt(high),
                    _fmt(low),
                    _fmt(close),
                    "10.00000000",
                    at + step - 1,
                    _fmt(close * 10),
                    100,
                    "5.00000000",
                    _fmt(close * 5),
                    "0",
                ]
            )
        if "startTime" in params:
            klines = [k for k in klines if k[0] >= int(params["startTime"])]
            return klines[: int(params.get("limit", 500))]
        return klines[-int(params.get("limit", 500)) :]

    def _tickers(self, params: Mapping[str, str], render: Callable[[MarketSpec], Any]) -> Any:
        if "symbol" in params:
            return render(self.specs[params["symbol"]])
        wanted = json.loads(params["symbols"]) if "symbols" in params else list(self.specs)
        return [render(self.specs[symbol]) for symbol in wanted]

    def _book_prices(self, spec: MarketSpec) -> tuple[Decimal, Decimal, Decimal]:
        last = self.series[spec.symbol].forming[3]
        return last - spec.tick_size, last + spec.tick_size, last

    def _ticker_24hr(self, spec: MarketSpec) -> dict[str, Any]:
        bid, ask, last = self._book_prices(spec)
        now = self._now_ms()
        return {
            "symbol": spec.symbol,
            "priceChange": "0.00000000",
            "priceChangePercent": "0.000",
            "weightedAvgPrice": _fmt(last),
            "prevClosePrice": _fmt(last),
            "lastPrice": _fmt(last),
            "lastQty": "0.01000000",
            "bidPrice": _fmt(bid),
            "bidQty": "1.50000000",
            "askPrice": _fmt(ask),
            "askQty": "2.00000000",
            "openPrice": _fmt(last),
            "highPrice": _fmt(last),
            "lowPrice": _fmt(last),
            "volume": "1000.00000000",
            "quoteVolume": _fmt(last * 1000),
            "openTime": now - 86_400_000,
            "closeTime": now,
            "firstId": 1,
            "lastId": 1000,
            "count": 1000,
        }

    def _book(self, spec: MarketSpec) -> dict[str, Any]:
        bid, ask, _ = self._book_prices(spec)
        return {
            "symbol": spec.symbol,
            "bidPrice": _fmt(bid),
            "bidQty": "1.50000000",
            "askPrice": _fmt(ask),
            "askQty": "2.00000000",
        }


@asynccontextmanager
async def running(**kwargs: Any) -> AsyncIterator[MarketFake]:
    """A started :class:`MarketFake` (keyword arguments as its constructor), stopped after."""
    fake = MarketFake(**kwargs)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
