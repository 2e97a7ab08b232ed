"""The built-in strategy: a simple moving average crossover with an ATR stop loss.

Rules, evaluated on the latest candle (the current one counts as closed):

- BUY when the fast SMA of closes crosses above the slow SMA (fast <= slow on the previous
  candle, fast > slow on this one); SELL when it crosses below.
- Entry is the latest close. The stop loss is ``atr_multiple`` x ATR away from the entry
  (below for a buy, above for a sell); the take profit is ``reward_multiple`` times that
  distance on the other side. Both are rounded to the instrument's price tick.
- The quantity risks ``risk_pct`` % of equity at the stop (:func:`size_for_risk`).

The crossover is the textbook trend-following signal (e.g. J. Murphy, *Technical Analysis
of the Financial Markets*, 1999, ch. 9); the ATR and its smoothing are J. Welles Wilder's,
*New Concepts in Technical Trading Systems* (1978); stops a multiple of ATR away are the
volatility stop of the Turtle rules (C. Faith, *Way of the Turtle*, 2007). It proposes; the
owner decides. It is a demonstration, not advice.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from itertools import pairwise
from typing import Any

from core.domain import Candle, Side
from core.services.signals import Proposal
from core.strategies.atr_stop import AtrStopStrategy

__all__ = ["SmaCross", "atr", "sma"]


def sma(values: Sequence[Decimal], period: int) -> Decimal:
    """Mean of the last ``period`` values. Raises ValueError with fewer values."""
    if len(values) < period or period <= 0:
        raise ValueError(f"an SMA of {period} needs {period} values, got {len(values)}")
    return sum(values[-period:], Decimal(0)) / period


def atr(candles: Sequence[Candle], period: int) -> Decimal:
    """Wilder's average true range at the last candle (quote currency).

    True range = max(high - low, |high - previous close|, |low - previous close|); the
    first ATR is the mean of the first ``period`` true ranges, then
    ATR = (previous ATR x (period - 1) + true range) / period. Raises ValueError with
    fewer than ``period + 1`` candles.
    """
    if len(candles) < period + 1 or period <= 0:
        raise ValueError(f"an ATR of {period} needs {period + 1} candles, got {len(candles)}")
    ranges = [
        max(c.high - c.low, abs(c.high - prev.close), abs(c.low - prev.close))
        for prev, c in pairwise(candles)
    ]
    value = sum(ranges[:period], Decimal(0)) / period
    for true_range in ranges[period:]:
        value = (value * (period - 1) + true_range) / period
    return value


class SmaCross(AtrStopStrategy):
    """SMA crossover with an ATR stop (see the module docstring).

    Args:
        risk_pct: percent of equity lost if the stop is hit (``risk_pct`` of the instance).
        fast, slow: SMA periods in candles.
        max_quantity, max_notional, atr_period, atr_multiple, reward_multiple, tick: as
            :class:`~core.strategies.atr_stop.AtrStopStrategy`.

    Attributes:
        indicators: the values the last :meth:`evaluate` saw (SMAs, ATR), for lineage.
    """

    name = "sma_cross"

    def __init__(
        self,
        risk_pct: Decimal,
        *,
        fast: int = 10,
        slow: int = 30,
        atr_period: int = 14,
        **risk: Any,
    ) -> None:
        if not 0 < fast < slow:
            raise ValueError("need 0 < fast < slow")
        super().__init__(risk_pct, atr_period=atr_period, **risk)
        self.fast, self.slow = fast, slow
        #: Enough candles for both SMAs on the previous candle and a settled ATR.
        self.lookback = max(slow + 1, 5 * atr_period + 1)

    def evaluate(self, symbol: str, candles: Sequence[Candle], equity: Decimal) -> list[Proposal]:
        """A BUY or SELL proposal on a crossover at the last candle, else none."""
        if len(candles) < max(self.slow + 1, self.atr_period + 1):
            return []
        closes = [c.close for c in candles]
        before = sma(closes[:-1], self.fast) - sma(closes[:-1], self.slow)
        fast, slow = sma(closes, self.fast), sma(closes, self.slow)
        now = fast - slow
        self.indicators = {f"sma{self.fast}": fast, f"sma{self.slow}": slow}
        if before <= 0 < now:
            side = Side.BUY
        elif before >= 0 > now:
            side = Side.SELL
        else:
            return []
        entry = closes[-1]
        volatility = atr(candles, self.atr_period)
        self.indicators[f"atr{self.atr_period}"] = volatility
        direction = "above" if side is Side.BUY else "below"
        reason = f"SMA{self.fast} crossed {direction} SMA{self.slow} at {entry}"
        return self.propose(symbol, side, entry, volatility, equity, reason)
