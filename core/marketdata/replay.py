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
from pathlib import Path

from core.domain import Candle, utcnow
from core.errors import ConfigError, UnknownSymbolError

__all__ = ["ReplayFeed", "load_candles"]


def load_candles(path: Path) -> list[Candle]:
    """Read ``timestamp,open,high,low,close,volume`` rows (``.csv`` or ``.csv.gz``).

    Timestamps are ISO 8601 UTC candle open times. Raises ConfigError if the file is
    missing, empty or malformed (with the line number).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"FEED_CSV: cannot read {path}: {exc.strerror}") from exc
    text = gzip.decompress(raw).decode() if path.suffix == ".gz" else raw.decode()
    candles: list[Candle] = []
    for line_no, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            at = datetime.fromisoformat(row["timestamp"])
            if at.utcoffset() is None:
                raise ValueError(f"timestamp {row['timestamp']} has no UTC offset (add Z)")
            candles.append(
                Candle(
                    at=at,
                    open=Decimal(row["open"]),
                    high=Decimal(row["high"]),
                    low=Decimal(row["low"]),
                    close=Decimal(row["close"]),
                    volume=Decimal(row["volume"]),
                )
            )
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise ConfigError(f"FEED_CSV: {path} line {line_no} is malformed: {exc}") from exc
    if not candles:
        raise ConfigError(f"FEED_CSV: {path} has no candles")
    return candles


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
        self._candles = list(candles)
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
