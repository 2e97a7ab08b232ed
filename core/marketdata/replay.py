"""Replay of real OHLCV candles as a price feed.

The current candle advances with wall time at ``speed`` candles per second from an
``anchor`` instant, plus any manual :meth:`ReplayFeed.step` calls. Processes that share the
same anchor (persisted in the database by the composition root) see the same candle, so a
proposal made by one process and an approval made by another agree on the price. At the
end of the data the replay stays on the last candle.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import overload

from core.domain import Candle, Quote, utcnow
from core.errors import ConfigError, InvalidInputError, UnknownSymbolError
from core.marketdata.base import TIMEFRAMES, Instrument

__all__ = ["REPLAY_INSTRUMENT", "CandleRows", "ReplayFeed", "ReplayMarketData", "load_candles"]


def load_candles(path: Path) -> CandleRows:
    """Read ``timestamp,open,high,low,close,volume`` rows (``.csv`` or ``.csv.gz``).

    Timestamps are ISO 8601 UTC candle open times. Every row is checked here; the candles
    are kept as their rows (:class:`CandleRows`). Raises ConfigError if the file is
    missing, empty or malformed (with the line number).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"FEED_CSV: cannot read {path}: {exc.strerror}") from exc
    text = gzip.decompress(raw).decode() if path.suffix == ".gz" else raw.decode()
    lines = csv.reader(io.StringIO(text))
    header = next(lines, [])
    missing = [name for name in _COLUMNS if name not in header]
    places = [header.index(name) for name in _COLUMNS if name in header]
    rows: list[str] = []
    # numbered as csv.DictReader numbers them: blank lines are skipped, not counted
    for line_no, values in enumerate(filter(None, lines), start=2):
        try:
            if missing:
                raise ValueError(f"the header has no {missing[0]} column")
            fields = [values[place] for place in places]  # IndexError: a short row
            _check(fields)
        except (LookupError, ValueError, ArithmeticError) as exc:
            raise ConfigError(f"FEED_CSV: {path} line {line_no} is malformed: {exc}") from exc
        rows.append(",".join(fields))
    if not rows:
        raise ConfigError(f"FEED_CSV: {path} has no candles")
    return CandleRows(rows)


_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
#: Decoded candles a :class:`CandleRows` keeps (the current one and the strategies' and
#: charts' look-backs fit many times over).
DECODED_KEPT = 1024


def _check(fields: Sequence[str]) -> None:
    """Raise ValueError or ArithmeticError unless ``fields`` decode (:func:`_decode`) to a
    candle with a UTC-aware time; cheaper than decoding (no Candle is built)."""
    at, *figures = fields
    if datetime.fromisoformat(at).utcoffset() is None:
        raise ValueError(f"timestamp {at} has no UTC offset (add Z)")
    for figure in figures:
        Decimal(figure)


def _decode(fields: Sequence[str]) -> Candle:
    at, open_, high, low, close, volume = fields
    return Candle(
        at=datetime.fromisoformat(at),
        open=Decimal(open_),
        high=Decimal(high),
        low=Decimal(low),
        close=Decimal(close),
        volume=Decimal(volume),
    )


class CandleRows(Sequence[Candle]):
    """Chronological candles kept as their checked CSV rows (``at,open,high,low,close,
    volume``) and decoded when read: a row is ~120 bytes, a :class:`Candle` with its five
    Decimals ~650, and a replay reads only its current candle and look-backs from it. The
    last :data:`DECODED_KEPT` decoded candles are kept, so a candle read again (the current
    one, on every quote) is the same object and costs no decoding. A slice is a list."""

    def __init__(self, rows: list[str]) -> None:
        self._rows = rows
        self._decoded = lru_cache(maxsize=DECODED_KEPT)(self._decode_at)

    def _decode_at(self, index: int) -> Candle:
        return _decode(self._rows[index].split(","))

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Candle: ...

    @overload
    def __getitem__(self, index: slice) -> list[Candle]: ...

    def __getitem__(self, index: int | slice) -> Candle | list[Candle]:
        size = len(self._rows)
        if isinstance(index, slice):
            return [self._decoded(i) for i in range(*index.indices(size))]
        if not -size <= index < size:
            raise IndexError("candle index out of range")
        return self._decoded(index % size)


class ReplayFeed:
    """Replays ``candles`` of one ``symbol``.

    Args:
        symbol: unified symbol the candles belong to, e.g. ``BTC/USDT``.
        candles: chronological candles.
        speed: candles per second of wall time; 0 replays only on :meth:`step`.
        start_index: index of the candle current at ``anchor``.
        anchor: the instant (UTC) at which ``start_index`` was current; default now.
        clock: returns the current UTC time (injectable for tests).
    """

    def __init__(
        self,
        symbol: str,
        candles: Sequence[Candle],
        *,
        speed: float = 0.0,
        start_index: int = 0,
        anchor: datetime | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if not candles:
            raise ConfigError("a replay needs at least one candle")
        self.symbol = symbol
        self._candles = candles if isinstance(candles, CandleRows) else list(candles)
        self.speed = speed
        self._start = min(max(start_index, 0), len(self._candles) - 1)
        self._clock = clock
        self.anchor = anchor or clock()
        self._steps = 0

    @classmethod
    def index_of(cls, candles: Sequence[Candle], at: datetime) -> int:
        """Index of the last candle opening at or before ``at`` (0 if ``at`` is earlier)."""
        index = 0
        for i, candle in enumerate(candles):
            if candle.at > at:
                break
            index = i
        return index

    @property
    def index(self) -> int:
        """Index of the current candle."""
        elapsed = max((self._clock() - self.anchor).total_seconds(), 0.0)
        advanced = int(elapsed * self.speed) if self.speed > 0 else 0
        return min(self._start + advanced + self._steps, len(self._candles) - 1)

    @property
    def at_end(self) -> bool:
        """True once the last candle is current."""
        return self.index == len(self._candles) - 1

    def step(self, count: int = 1) -> Candle:
        """Advance the replay by ``count`` candles (clamped at the end); returns the new one."""
        self._steps += count
        return self.current()

    def current(self) -> Candle:
        """The current candle."""
        return self._candles[self.index]

    def price(self, symbol: str) -> Decimal:
        """Current price of ``symbol``: the current candle's close (quote currency).

        Raises UnknownSymbolError for any symbol other than the feed's.
        """
        self._check(symbol)
        return self.current().close

    def tick(self, symbol: str) -> Decimal:
        """The price tick of replayed instruments (:data:`REPLAY_INSTRUMENT`'s).

        Raises UnknownSymbolError for any symbol other than the feed's.
        """
        self._check(symbol)
        return REPLAY_INSTRUMENT.price_tick

    def candles(self, symbol: str, count: int) -> list[Candle]:
        """The last ``count`` candles up to and including the current one, oldest first."""
        self._check(symbol)
        end = self.index + 1
        return self._candles[max(end - count, 0) : end]

    def candles_since(self, symbol: str, at: datetime) -> list[Candle]:
        """Candles from the one current at ``at`` up to the current one, oldest first."""
        self._check(symbol)
        first = self.index_of(self._candles, at)
        return self._candles[first : self.index + 1]

    def _check(self, symbol: str) -> None:
        if symbol != self.symbol:
            raise UnknownSymbolError(f"unknown symbol {symbol}; the replay feed has {self.symbol}")


#: The increments replay instruments get: Binance spot BTC/USDT's (price tick 0.01, lot
#: step 0.00001, minimum notional 5). A replayed symbol is a spot market of its own.
REPLAY_INSTRUMENT = Instrument(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    kind="spot",
    price_tick=Decimal("0.01"),
    quantity_step=Decimal("0.00001"),
    min_quantity=Decimal("0.00001"),
    min_notional=Decimal(5),
)


class ReplayMarketData:
    """The replay as a :class:`~core.marketdata.base.MarketData` (the embedded default).

    One :class:`ReplayFeed` per symbol; all share the anchor and speed, so every process on
    one database sees the same candle. The first feed is the primary one: its
    :meth:`current` candle is the paper broker's "now". Quotes have bid = ask = last (the
    paper broker adds its own spread). Instruments get :data:`REPLAY_INSTRUMENT`'s
    increments under their own symbol.

    It also serves the synchronous :class:`~core.marketdata.base.PriceFeed` calls
    (``price``, ``tick``, ``current``, ``candles_since``) the paper broker executes on.
    """

    name = "replay"

    def __init__(self, feeds: Sequence[ReplayFeed]) -> None:
        if not feeds:
            raise ConfigError("a replay needs at least one feed")
        self.feeds = {feed.symbol: feed for feed in feeds}
        self.primary = feeds[0]

    @property
    def timeframe(self) -> str:
        """The primary feed's candle length in :data:`TIMEFRAMES` spelling (``1h``)."""
        candles = self.primary._candles
        if len(candles) < 2:
            return "1h"
        seconds = int((candles[1].at - candles[0].at).total_seconds())
        return next((name for name, s in TIMEFRAMES.items() if s == seconds), f"{seconds}s")

    def feed(self, symbol: str) -> ReplayFeed:
        """The feed of ``symbol``. Raises UnknownSymbolError."""
        try:
            return self.feeds[symbol]
        except KeyError:
            listed = ", ".join(self.feeds)
            raise UnknownSymbolError(f"unknown symbol {symbol}; the replay has {listed}") from None

    # --- MarketData -----------------------------------------------------------------------

    async def quote(self, symbol: str) -> Quote:
        """The current candle's close as bid, ask and last. Raises UnknownSymbolError."""
        last = self.feed(symbol).price(symbol)
        return Quote(symbol=symbol, bid=last, ask=last, last=last, at=self.current().at)

    async def candles(self, symbol: str, timeframe: str, count: int) -> list[Candle]:
        """The last ``count`` candles up to the current one (which counts as closed).

        Raises:
            UnknownSymbolError: not replayed.
            InvalidInputError: ``timeframe`` is not the replay's (no resampling).
        """
        feed = self.feed(symbol)
        if timeframe != self.timeframe:
            raise InvalidInputError(f"the replay has {self.timeframe} candles, not {timeframe}")
        return feed.candles(symbol, count)

    async def symbols(self) -> list[Instrument]:
        """One spot instrument per replayed symbol."""
        listed = []
        for symbol in self.feeds:
            base, _, quote = symbol.partition("/")
            listed.append(
                Instrument(
                    symbol=symbol,
                    base=base,
                    quote=quote,
                    kind="spot",
                    price_tick=REPLAY_INSTRUMENT.price_tick,
                    quantity_step=REPLAY_INSTRUMENT.quantity_step,
                    min_quantity=REPLAY_INSTRUMENT.min_quantity,
                    min_notional=REPLAY_INSTRUMENT.min_notional,
                )
            )
        return listed

    async def close(self) -> None:
        """Nothing to release."""

    # --- PriceFeed (the paper broker's synchronous view) ---------------------------------

    def price(self, symbol: str) -> Decimal:
        """Current close of ``symbol``. Raises UnknownSymbolError."""
        return self.feed(symbol).price(symbol)

    def tick(self, symbol: str) -> Decimal:
        """Price tick of ``symbol`` (as :meth:`symbols` lists it). Raises UnknownSymbolError."""
        return self.feed(symbol).tick(symbol)

    def current(self) -> Candle:
        """The primary feed's current candle."""
        return self.primary.current()

    def candles_since(self, symbol: str, at: datetime) -> list[Candle]:
        """Candles of ``symbol`` from the one current at ``at`` to the current one."""
        return self.feed(symbol).candles_since(symbol, at)
