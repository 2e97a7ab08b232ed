"""StrategyRunner: runs the configured strategy on schedule and proposes its trades.

Each run reads the latest candles and the account's equity, evaluates the strategy once
per new candle, and proposes what it returns through
:class:`~core.services.signals.SignalService` (cards go through the outbox). While a
PROPOSED signal for the same symbol and side is pending, from any source, the same trade
is not proposed again.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

import structlog

from core.brokers.base import Broker
from core.config import Settings
from core.domain import Candle, Signal
from core.errors import ConfigError
from core.services.signals import SignalService
from core.strategies.base import Strategy
from core.strategies.sma_cross import SmaCross

__all__ = ["STRATEGIES", "CandleSource", "StrategyRunner", "build_strategy"]

log = structlog.get_logger(__name__)

#: ``STRATEGY`` values besides ``none``.
STRATEGIES = ("sma_cross",)


class CandleSource(Protocol):
    """Where candles come from (the replay feed provides this)."""

    def candles(self, symbol: str, count: int) -> list[Candle]:
        """The last ``count`` candles of ``symbol``, oldest first, the last one current."""
        ...


def build_strategy(settings: Settings) -> Strategy | None:
    """The strategy named by ``STRATEGY`` (None for ``none``), sized by
    ``STRATEGY_RISK_PCT`` and capped by ``MAX_ORDER_QUANTITY`` / ``MAX_ORDER_NOTIONAL``.

    Raises:
        ConfigError: an unknown name.
    """
    name = settings.strategy.strip().lower()
    if name == "none":
        return None
    if name == "sma_cross":
        return SmaCross(
            settings.strategy_risk_pct,
            max_quantity=settings.max_order_quantity,
            max_notional=settings.max_order_notional,
        )
    raise ConfigError(f"STRATEGY: unknown strategy {settings.strategy!r}; use none or sma_cross")


class StrategyRunner:
    """Runs one strategy on one symbol.

    Args:
        strategy: what to evaluate.
        candles: the candle source.
        broker: gives the equity used for sizing.
        signals: receives the proposals.
        symbol: the traded symbol (``FEED_SYMBOL``).
    """

    def __init__(
        self,
        strategy: Strategy,
        candles: CandleSource,
        broker: Broker,
        signals: SignalService,
        symbol: str,
    ) -> None:
        self.strategy = strategy
        self._candles = candles
        self._broker = broker
        self._signals = signals
        self.symbol = symbol
        self._last_candle: Candle | None = None

    async def run(self) -> list[Signal]:
        """Evaluate on a new candle and propose; returns the signals proposed (usually
        none). A candle already evaluated in this process is not evaluated again.

        Raises:
            BrokerError: equity or a price could not be read (the run is retried on the
                next schedule).
        """
        candles = self._candles.candles(self.symbol, self.strategy.lookback)
        if not candles or candles[-1] == self._last_candle:
            return []
        equity: Decimal = (await self._broker.account()).equity
        proposals = self.strategy.evaluate(self.symbol, candles, equity)
        self._last_candle = candles[-1]
        pending = {(s.symbol, s.side) for s in await self._signals.pending()}
        proposed = []
        for proposal in proposals:
            if (proposal.symbol, proposal.side) in pending:
                log.info(
                    "proposal skipped: one is pending",
                    strategy=self.strategy.name,
                    symbol=proposal.symbol,
                    side=proposal.side.value,
                )
                continue
            signal = await self._signals.propose(proposal)
            pending.add((signal.symbol, signal.side))
            proposed.append(signal)
        return proposed
