"""Market data from a MetaTrader 5 terminal (the ``mt5`` extra, Windows).

Quotes are ``symbol_info_tick`` (through the broker adapter's own quote), candles
``copy_rates_from_pos(symbol, timeframe, 1, count)`` (position 0 is the forming bar, so
starting at 1 gives closed bars only), symbols ``symbols_get()``. The ``MetaTrader5``
package is one connection per process and not thread-safe, so this rides on an
:class:`~core.brokers.mt5_broker.Mt5Broker`'s connection and worker thread: the trading
broker's when ``BROKER=mt5``, else one of its own.

Caveat (MetaQuotes' documentation): bar times are the trade server's clock, which many
brokers run at UTC+2/+3; they are taken as UTC here, so bar open times can be off by that
offset. Kinds: ``trade_calc_mode`` 0 (``SYMBOL_CALC_MODE_FOREX``) is ``forex``, the rest
``cfd``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from core.brokers._numbers import dec_or_zero
from core.brokers.mt5_broker import Mt5Broker
from core.config import Settings
from core.domain import Candle, Quote
from core.errors import InvalidInputError
from core.marketdata.base import Instrument, timeframe_delta

__all__ = ["Mt5MarketData"]

#: SignalDesk timeframes to the package's TIMEFRAME_* constant names.
_TIMEFRAMES = {
    "1m": "TIMEFRAME_M1",
    "5m": "TIMEFRAME_M5",
    "15m": "TIMEFRAME_M15",
    "30m": "TIMEFRAME_M30",
    "1h": "TIMEFRAME_H1",
    "4h": "TIMEFRAME_H4",
    "1d": "TIMEFRAME_D1",
}


def _field(row: Any, name: str) -> Any:
    """A rate row's field: numpy records and dicts by key, named tuples by attribute."""
    try:
        return row[name]
    except (TypeError, KeyError, IndexError, ValueError):
        return getattr(row, name)


class Mt5MarketData:
    """:class:`~core.marketdata.base.MarketData` on an MT5 terminal.

    Args:
        broker: whose connection and worker thread to use.
        owns_broker: close the broker with this (True when it was built for it).
    """

    name = "mt5"

    def __init__(self, broker: Mt5Broker, *, owns_broker: bool = False) -> None:
        self._broker = broker
        self._owns = owns_broker

    @classmethod
    def from_settings(cls, settings: Settings, broker: Any = None) -> Mt5MarketData:
        """On ``broker`` when it is an :class:`Mt5Broker`, else on a connection of its own
        (``MT5_*`` settings).

        Raises:
            BrokerUnavailableError: the MetaTrader5 package is not installed.
        """
        if isinstance(broker, Mt5Broker):
            return cls(broker)
        return cls(Mt5Broker.from_settings(settings), owns_broker=True)

    async def quote(self, symbol: str) -> Quote:
        """``symbol_info_tick``: bid, ask, last (the mid for forex). Raises
        UnknownSymbolError, BrokerTemporaryError."""
        return await self._broker.quote(symbol)

    async def candles(self, symbol: str, timeframe: str, count: int) -> list[Candle]:
        """The last ``count`` closed bars (``copy_rates_from_pos(symbol, tf, 1, count)``),
        oldest first; volume is the tick volume.

        Raises:
            InvalidInputError: an unknown timeframe; UnknownSymbolError, BrokerTemporaryError.
        """
        timeframe_delta(timeframe)
        if timeframe not in _TIMEFRAMES:
            raise InvalidInputError(f"MT5 has no {timeframe} timeframe")
        broker = self._broker

        def read() -> list[Candle]:
            broker._ensure_connected()
            broker._symbol(symbol)
            mt5 = broker._mt5
            rates = mt5.copy_rates_from_pos(symbol, getattr(mt5, _TIMEFRAMES[timeframe]), 1, count)
            return [
                Candle(
                    at=datetime.fromtimestamp(int(_field(r, "time")), UTC),
                    open=dec_or_zero(_field(r, "open")),
                    high=dec_or_zero(_field(r, "high")),
                    low=dec_or_zero(_field(r, "low")),
                    close=dec_or_zero(_field(r, "close")),
                    volume=dec_or_zero(_field(r, "tick_volume")),
                )
                for r in broker._rows(rates, f"read {symbol} bars")
            ]

        return await broker._run(read, f"read the {symbol} {timeframe} bars")

    async def symbols(self) -> list[Instrument]:
        """Every symbol of ``symbols_get()``: tick ``trade_tick_size``, step and minimum
        in lots (``volume_step``, ``volume_min``), contract size ``trade_contract_size``."""
        broker = self._broker

        def read() -> list[Instrument]:
            broker._ensure_connected()
            infos = broker._rows(broker._mt5.symbols_get(), "list the symbols")
            return [
                Instrument(
                    symbol=info.name,
                    base=info.currency_base,
                    quote=info.currency_profit,
                    kind="forex" if info.trade_calc_mode == 0 else "cfd",
                    price_tick=dec_or_zero(info.trade_tick_size)
                    or Decimal(1).scaleb(-int(info.digits)),
                    quantity_step=dec_or_zero(info.volume_step),
                    min_quantity=dec_or_zero(info.volume_min),
                    contract_size=dec_or_zero(info.trade_contract_size) or Decimal(1),
                )
                for info in infos
            ]

        return await broker._run(read, "list the symbols")

    async def close(self) -> None:
        """Close the broker's connection when this owns it (idempotent)."""
        if self._owns:
            await self._broker.close()
