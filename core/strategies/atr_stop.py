"""What the built-in strategies share: an ATR stop, a take profit a multiple of it away,
both on the instrument's tick, and fixed-fractional sizing to the stop.

The stop loss is ``atr_multiple`` x ATR from the entry (below for a buy, above for a sell;
the volatility stop of the Turtle rules, C. Faith, *Way of the Turtle*, 2007); the take
profit is ``reward_multiple`` times that distance on the other side. Both are rounded to
the price tick BEFORE sizing, so the quantity risks ``risk_pct`` % of equity to the real
stop (:func:`~core.strategies.sizing.size_for_risk`).
"""

from __future__ import annotations

from decimal import Decimal

from core.domain import Side
from core.errors import InvalidInputError
from core.marketdata.base import round_to_tick
from core.services.signals import Proposal
from core.strategies.sizing import size_for_risk

__all__ = ["AtrStopStrategy"]


class AtrStopStrategy:
    """Base of the strategies with an ATR stop (see the module docstring).

    Args:
        risk_pct: percent of equity lost if the stop is hit.
        max_quantity, max_notional: caps in base units and quote currency.
        atr_period: ATR period in candles.
        atr_multiple: stop distance in ATRs.
        reward_multiple: take-profit distance in stop distances.
        tick: the instrument's price tick.

    Attributes:
        indicators: the values the last ``evaluate`` saw, for the signal's lineage.
    """

    name = "atr_stop"

    def __init__(
        self,
        risk_pct: Decimal,
        *,
        max_quantity: Decimal | None = None,
        max_notional: Decimal | None = None,
        atr_period: int = 14,
        atr_multiple: Decimal = Decimal(2),
        reward_multiple: Decimal = Decimal(2),
        tick: Decimal = Decimal("0.01"),
    ) -> None:
        self.risk_pct = risk_pct
        self.max_quantity = max_quantity
        self.max_notional = max_notional
        self.atr_period = atr_period
        self.atr_multiple = Decimal(atr_multiple)
        self.reward_multiple = Decimal(reward_multiple)
        self.tick = tick
        self.indicators: dict[str, Decimal] = {}

    def propose(
        self,
        symbol: str,
        side: Side,
        entry: Decimal,
        volatility: Decimal,
        equity: Decimal,
        reason: str,
    ) -> list[Proposal]:
        """One proposal entering at ``entry`` with the ATR exits and the risk-based size;
        none when the stop or target would not be positive or the size rounds to zero.
        ``reason`` opens the card's note."""
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
        places = max(-int(self.tick.normalize().as_tuple().exponent), 2)
        note = (
            f"{reason}; stop {self.atr_multiple}xATR{self.atr_period} "
            f"({volatility:.{places}f}) away, risking {self.risk_pct}% of equity {equity:,.2f}"
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
