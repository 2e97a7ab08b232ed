"""A Donchian channel breakout with an ATR stop (the Turtle traders' entry).

Rules, evaluated on the latest closed candle:

- BUY when the close is above the highest high of the ``period`` candles before it; SELL
  when it is below their lowest low.
- Entry is the latest close; the stop loss is ``atr_multiple`` x ATR away, the take profit
  ``reward_multiple`` times that distance on the other side; the quantity risks
  ``risk_pct`` % of equity at the stop.

Source: R. Donchian's four-week rule (*Commodity Year Book*, 1960); the 20-candle breakout
with a 2 ATR stop is System 1 of the Turtle rules (C. Faith, *Way of the Turtle*, 2007,
ch. 3; the original Turtle rules, 1983). It proposes; the owner decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from core.domain import Candle, Side
from core.services.signals import Proposal
from core.strategies.atr_stop import AtrStopStrategy
from core.strategies.sma_cross import atr

__all__ = ["DonchianBreakout"]


class DonchianBreakout(AtrStopStrategy):
    """Donchian breakout (see the module docstring).

    Args:
        risk_pct: percent of equity lost if the stop is hit.
        period: channel length in candles (20 in Turtle System 1).
        max_quantity, max_notional, atr_period, atr_multiple, reward_multiple, tick: as
            :class:`~core.strategies.atr_stop.AtrStopStrategy`.

    Attributes:
        indicators: the values the last :meth:`evaluate` saw (channel, ATR), for lineage.
    """

    name = "donchian_breakout"

    def __init__(
        self, risk_pct: Decimal, *, period: int = 20, atr_period: int = 14, **risk: Any
    ) -> None:
        if period < 2:
            raise ValueError("need period >= 2")
        super().__init__(risk_pct, atr_period=atr_period, **risk)
        self.period = period
        self.lookback = max(period + 1, 5 * atr_period + 1)

    def evaluate(self, symbol: str, candles: Sequence[Candle], equity: Decimal) -> list[Proposal]:
        """A BUY above the channel, a SELL below it, else none."""
        if len(candles) < max(self.period + 1, self.atr_period + 1):
            return []
        window = candles[-self.period - 1 : -1]
        upper = max(c.high for c in window)
        lower = min(c.low for c in window)
        entry = candles[-1].close
        volatility = atr(candles, self.atr_period)
        self.indicators = {"upper": upper, "lower": lower, f"atr{self.atr_period}": volatility}
        if entry > upper:
            side, level, word = Side.BUY, upper, "above the high"
        elif entry < lower:
            side, level, word = Side.SELL, lower, "below the low"
        else:
            return []
        reason = f"close {entry} broke {word} {level} of the last {self.period} candles"
        return self.propose(symbol, side, entry, volatility, equity, reason)
