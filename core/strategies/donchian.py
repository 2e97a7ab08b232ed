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

from core.domain import Candle, Side
from core.errors import InvalidInputError
from core.marketdata.base import round_to_tick
from core.services.signals import Proposal
from core.strategies.sizing import size_for_risk
from core.strategies.sma_cross import atr

__all__ = ["DonchianBreakout"]


class DonchianBreakout:
    """Donchian breakout (see the module docstring).

    Args:
        risk_pct: percent of equity lost if the stop is hit.
        max_quantity, max_notional: caps in base units and quote currency.
        period: channel length in candles (20 in Turtle System 1).
        atr_period, atr_multiple, reward_multiple: as :class:`SmaCross`.
        tick: the instrument's price tick; stops and targets are rounded to it.

    Attributes:
        indicators: the values the last :meth:`evaluate` saw (channel, ATR), for lineage.
    """

    name = "donchian_breakout"

    def __init__(
        self,
        risk_pct: Decimal,
        *,
        max_quantity: Decimal | None = None,
        max_notional: Decimal | None = None,
        period: int = 20,
        atr_period: int = 14,
        atr_multiple: Decimal = Decimal(2),
        reward_multiple: Decimal = Decimal(2),
        tick: Decimal = Decimal("0.01"),
    ) -> None:
        if period < 2:
            raise ValueError("need period >= 2")
        self.risk_pct = risk_pct
        self.max_quantity = max_quantity
        self.max_notional = max_notional
        self.period = period
        self.atr_period = atr_period
        self.atr_multiple = Decimal(atr_multiple)
        self.reward_multiple = Decimal(reward_multiple)
        self.tick = tick
        self.lookback = max(period + 1, 5 * atr_period + 1)
        self.indicators: dict[str, Decimal] = {}

    def evaluate(self, symbol: str, candles: Sequence[Candle], equity: Decimal) -> list[Proposal]:
        """A BUY above the channel, a SELL below it, else none."""
        if len(candles) < max(self.period + 1, self.atr_period + 1):
            return []
        window = candles[-self.period - 1 : -1]
        upper = max(c.high for c in window)
        lower = min(c.low for c in window)
        entry = candles[-1].close
        volatility = atr(candles, self.atr_period)
        self.indicators = {"upper": upper, "lower": lower, "atr": volatility, "close": entry}
        if entry > upper:
            side = Side.BUY
        elif entry < lower:
            side = Side.SELL
        else:
            return []
        distance = self.atr_multiple * volatility
        stop = round_to_tick(entry - side.sign * distance, self.tick)
        target = round_to_tick(entry + side.sign * distance * self.reward_multiple, self.tick)
        if stop <= 0 or target <= 0:
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
        level = upper if side is Side.BUY else lower
        word = "above the high" if side is Side.BUY else "below the low"
        note = (
            f"close {entry} broke {word} {level} of the last {self.period} candles; stop "
            f"{self.atr_multiple}xATR{self.atr_period} ({volatility:.{_places(self.tick)}f}) "
            f"away, risking {self.risk_pct}% of equity {equity:,.2f}"
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


def _places(tick: Decimal) -> int:
    exponent = tick.normalize().as_tuple().exponent
    return max(-exponent, 0) if isinstance(exponent, int) else 2
