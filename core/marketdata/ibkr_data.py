"""Market data from Interactive Brokers (the ``ibkr`` extra), on an
:class:`~core.brokers.ibkr_broker.IbkrBroker`'s connection: the trading broker's when
``BROKER=ibkr``, else one of its own.

- Quotes are snapshots (``reqTickersAsync``, through the broker's own quote). Without a
  market data subscription IB answers error 354; ``IBKR_DELAYED_DATA`` asks for delayed
  data instead (``reqMarketDataType(3)``, 15-20 minutes late). IB still sends live data
  where the account has a subscription, so each quote says what it got
  (:attr:`~core.domain.Quote.delayed`, from the ticker's ``marketDataType``), and the
  signal card it prices says "delayed data".
- Candles are ``reqHistoricalDataAsync(contract, "", <duration>, <bar size>, "TRADES" (or
  "MIDPOINT" for forex), useRTH=False, formatDate=2)``; the last bar IB sends is the one
  still forming and is dropped, so only closed bars are returned.
- Symbols: IB has no listing of every market. :meth:`symbols` lists the contracts this
  process has resolved; :meth:`match` searches IB with ``reqMatchingSymbolsAsync`` and
  resolves what it finds (stocks as ``AAPL.NASDAQ``, forex as ``EUR.USD``), which
  :class:`~core.marketdata.search.SymbolSearch` uses for ``/symbols`` when its cached
  listing has no match.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from core.brokers._numbers import dec_or_zero
from core.brokers.ibkr_broker import ContractSpec, IbkrBroker
from core.config import Settings
from core.domain import Candle, Quote
from core.errors import InvalidInputError, UnknownSymbolError
from core.marketdata.base import TIMEFRAMES, Instrument, timeframe_delta

__all__ = ["IbkrMarketData"]

#: SignalDesk timeframes to IB bar sizes.
_BAR_SIZES = {
    "1m": "1 min",
    "5m": "5 mins",
    "15m": "15 mins",
    "30m": "30 mins",
    "1h": "1 hour",
    "4h": "4 hours",
    "1d": "1 day",
}
#: IB's market data type for delayed quotes (``reqMarketDataType``).
_DELAYED = 3


def _duration(timeframe: str, count: int) -> str:
    """An IB duration string covering ``count`` + 1 bars (seconds up to a day, else days;
    markets close, so days are doubled to cover weekends and nights)."""
    seconds = TIMEFRAMES[timeframe] * (count + 1)
    if seconds <= 86400:
        return f"{seconds} S"
    return f"{min(seconds * 2 // 86400 + 2, 365)} D"


class IbkrMarketData:
    """:class:`~core.marketdata.base.MarketData` on TWS / IB Gateway (module docstring).

    Args:
        broker: whose connection and contract cache to use.
        owns_broker: close the broker with this (True when it was built for it).
        delayed: ask IB for delayed quotes where the account has no real-time
            subscription (``IBKR_DELAYED_DATA``).
    """

    name = "ibkr"

    def __init__(
        self, broker: IbkrBroker, *, owns_broker: bool = False, delayed: bool = False
    ) -> None:
        self._broker = broker
        self._owns = owns_broker
        self.delayed = delayed
        self._type_set = False

    @classmethod
    def from_settings(cls, settings: Settings, broker: Any = None) -> IbkrMarketData:
        """On ``broker`` when it is an :class:`IbkrBroker`, else on a connection of its own
        (``IBKR_*`` settings, client id + 1 so it does not collide with the trader).

        Raises:
            BrokerUnavailableError: ``ib_async`` is not installed.
        """
        if isinstance(broker, IbkrBroker):
            return cls(broker, delayed=settings.ibkr_delayed_data)
        own = IbkrBroker.from_settings(settings)
        own.client_id += 1
        return cls(own, owns_broker=True, delayed=settings.ibkr_delayed_data)

    async def _ready(self) -> Any:
        await self._broker.connect()
        ib = self._broker.ib
        if self.delayed and not self._type_set:
            ib.reqMarketDataType(_DELAYED)
            self._type_set = True
        return ib

    async def quote(self, symbol: str) -> Quote:
        """A snapshot quote. Raises UnknownSymbolError, BrokerTemporaryError."""
        await self._ready()
        return await self._broker.quote(symbol)

    async def candles(self, symbol: str, timeframe: str, count: int) -> list[Candle]:
        """The last ``count`` closed bars of ``symbol``, oldest first, UTC open times.

        Raises:
            InvalidInputError: an unknown timeframe; UnknownSymbolError, BrokerTemporaryError.
        """
        timeframe_delta(timeframe)
        if timeframe not in _BAR_SIZES:
            raise InvalidInputError(f"IBKR has no {timeframe} bars")
        spec = await self._broker.spec(symbol)
        ib = await self._ready()
        show = "MIDPOINT" if spec.contract.secType == "CASH" else "TRADES"
        bars = await ib.reqHistoricalDataAsync(
            spec.contract,
            "",
            _duration(timeframe, count),
            _BAR_SIZES[timeframe],
            show,
            False,
            2,
        )
        closed = list(bars)[:-1]
        return [
            Candle(
                at=_utc(bar.date),
                open=dec_or_zero(bar.open),
                high=dec_or_zero(bar.high),
                low=dec_or_zero(bar.low),
                close=dec_or_zero(bar.close),
                volume=max(dec_or_zero(bar.volume), Decimal(0)),
            )
            for bar in closed[-count:]
        ]

    async def symbols(self) -> list[Instrument]:
        """The contracts this process has resolved (IB lists no full universe)."""
        return [self._instrument(spec) for spec in self._broker.resolved()]

    async def match(self, pattern: str, limit: int = 8) -> list[Instrument]:
        """Instruments IB matches for ``pattern`` (``reqMatchingSymbolsAsync``), each
        resolved to its contract (so :meth:`symbols` lists it afterwards): stocks as
        ``SYMBOL.PRIMARY``, forex as ``BASE.QUOTE``, at most ``limit``; a match that does
        not resolve to exactly one contract is left out.

        Raises:
            BrokerTemporaryError: not connected.
        """
        ib = await self._ready()
        found = await ib.reqMatchingSymbolsAsync(pattern) or []
        names: list[str] = []
        for description in found:
            c = description.contract
            if c is None:
                continue
            if c.secType == "STK":
                name = f"{c.symbol}.{c.primaryExchange}" if c.primaryExchange else c.symbol
            elif c.secType == "CASH":
                name = f"{c.symbol}.{c.currency}"
            else:
                name = self._broker.symbol_of(c)
            if name not in names:
                names.append(name)
        instruments = []
        for name in names[:limit]:
            try:
                spec = await self._broker.spec(name)
            except UnknownSymbolError:
                continue
            instruments.append(self._instrument(spec))
        return instruments

    @staticmethod
    def _instrument(spec: ContractSpec) -> Instrument:
        contract = spec.contract
        kinds = {"STK": "stock", "FUT": "future", "CASH": "forex"}
        return Instrument(
            symbol=spec.symbol,
            base=contract.symbol,
            quote=contract.currency,
            kind=kinds.get(contract.secType, contract.secType.lower()),
            price_tick=spec.tick,
            quantity_step=spec.size_step,
            min_quantity=spec.min_size,
            contract_size=spec.multiplier,
        )

    async def close(self) -> None:
        """Close the broker's connection when this owns it (idempotent)."""
        if self._owns:
            await self._broker.close()


def _utc(value: date | datetime) -> datetime:
    """A bar's date as UTC: IB sends datetimes (formatDate=2: UTC) or dates for daily bars."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)
