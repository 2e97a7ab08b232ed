"""The strategy interface: candles in, proposals out.

A strategy is a pure object: :meth:`Strategy.evaluate` looks at the latest candles of a
symbol and the account's equity and returns the trades it would propose. It does no I/O;
:class:`core.strategies.runner.StrategyRunner` fetches the candles and the equity, drops
duplicates and hands the proposals to :class:`~core.services.signals.SignalService`, which
posts them as cards for the owner to approve.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Protocol

from core.domain import Candle
from core.services.signals import Proposal

__all__ = ["Strategy"]


class Strategy(Protocol):
    """A signal source. ``name`` becomes the proposals' ``source``; ``lookback`` is how
    many candles (oldest first, the last one current) :meth:`evaluate` needs."""

    name: str
    lookback: int

    def evaluate(self, symbol: str, candles: Sequence[Candle], equity: Decimal) -> list[Proposal]:
        """Proposals for ``symbol`` given ``candles`` and ``equity`` (quote currency).

        Returns an empty list when there is nothing to do or too few candles.
        """
        ...
