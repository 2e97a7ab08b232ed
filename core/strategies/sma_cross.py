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

from core.domain import Candle, Side
from core.errors import InvalidInputError
from core.marketdata.base import round_to_tick
from core.services.signals import Proposal
from core.strategies.sizing import size_for_risk

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


class SmaCross:
    """SMA crossover with an ATR stop (see the module docstring).

    Args:
        risk_pct: percent of equity lost if the stop is hit (``STRATEGY_RISK_PCT``).
        max_quantity: cap in base units (``MAX_ORDER_QUANTITY``).
        max_notional: cap in quote currency (``MAX_ORDER_NOTIONAL``).
        fast, slow: SMA periods in candles.
        atr_period: ATR period in candles.
        atr_multiple: stop distance in ATRs.
        reward_multiple: take-profit distance in stop distances.
        tick: the instrument's price tick; stops and targets are rounded to it.

    Attributes:
        indicators: the values the last :meth:`evaluate` saw (SMAs, ATR), for lineage.
    """

    name = "sma_cross"

    def __init__(
        self,
        risk_pct: Decimal,
        *,
        max_quantity: Decimal | None = None,
        max_notional: Decimal | None = None,
        fast: int = 10,
        slow: int = 30,
        atr_period: int = 14,
        atr_multiple: Decimal = Decimal(2),
        reward_multiple: Decimal = Decimal(2),
        tick: Decimal = Decimal("0.01"),
    ) -> None:
        if not 0 < fast < slow:
            raise ValueError("need 0 < fast < slow")
        self.risk_pct = risk_pct
        self.max_quantity = max_quantity
        self.max_notional = max_notional
        self.fast, self.slow = fast, slow
        self.atr_period = atr_period
        self.atr_multiple = Decimal(atr_multiple)
        self.reward_multiple = Decimal(reward_multiple)
        self.tick = tick
        self.indicators: dict[str, Decimal] = {}
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
        distance = self.atr_multiple * volatility
        # rounded to the tick before sizing, so the risk is measured to the real stop
        stop = round_to_tick(entry - side.sign * distance, self.tick)
        target = round_to_tick(entry + side.sign * distance * self.reward_multiple, self.tick)
        if stop <= 0:
            return []
        try:
            quantity = size_for_risk(
                equity,
                self.risk_pct,
                entry,
                stop,
                max_quantity=self.max_quantity,
                max_notional=self.max_notional,
            )
        except InvalidInputError:
            return []
        direction = "above" if side is Side.BUY else "below"
        note = (
            f"SMA{self.fast} crossed {direction} SMA{self.slow} at {entry}; stop "
            f"{self.atr_multiple}xATR{self.atr_period} ({volatility:.2f}) away, "
            f"risking {self.risk_pct}% of equity {equity:,.2f}"
        )
        return [
            Proposal(
                source=self.name,
                symbol=symbol,
                side=side,
                quantity=quantity,
                stop_loss=stop,
                take_profit=target,
                note=note,
            )
        ]
