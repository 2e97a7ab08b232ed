"""StrategyRunner: runs one strategy on one symbol and proposes its trades.

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
from core.domain import Candle, Signal
from core.errors import InvalidInputError
from core.services.signals import SignalService
from core.strategies.base import Strategy

__all__ = ["CandleSource", "StrategyRunner"]

log = structlog.get_logger(__name__)


class CandleSource(Protocol):
    """Where candles come from (the replay feed provides this)."""

    def candles(self, symbol: str, count: int) -> list[Candle]:
        """The last ``count`` candles of ``symbol``, oldest first, the last one current."""
        ...


class StrategyRunner:
    """Runs one strategy on one symbol.

    Args:
        strategy: what to evaluate.
        candles: the candle source :meth:`run` reads (None when the caller fetches the
            candles itself and calls :meth:`evaluate`, as the strategy desk does).
        broker: gives the equity used for sizing.
        signals: receives the proposals.
        symbol: the traded symbol.
    """

    def __init__(
        self,
        strategy: Strategy,
        candles: CandleSource | None,
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

    @property
    def last_candle(self) -> Candle | None:
        """The last candle evaluated in this process."""
        return self._last_candle

    async def run(self) -> list[Signal]:
        """Read the latest candles from the candle source and :meth:`evaluate` them.

        Raises:
            BrokerError: equity or a price could not be read (the run is retried on the
                next schedule).
        """
        assert self._candles is not None, "a runner without a candle source is evaluated"
        return await self.evaluate(self._candles.candles(self.symbol, self.strategy.lookback))

    async def evaluate(self, candles: list[Candle], equity: Decimal | None = None) -> list[Signal]:
        """Evaluate on ``candles`` (oldest first) if the last one is new, and propose;
        returns the signals proposed (usually none). A proposal the gate's size rules
        refuse is logged and skipped, never posted. A candle already evaluated in this
        process is not evaluated again. ``equity`` (in the symbol's quote currency)
        defaults to the broker's account equity.

        Raises:
            BrokerError: equity or a price could not be read.
        """
        if not candles or candles[-1] == self._last_candle:
            return []
        if equity is None:
            equity = (await self._broker.account()).equity
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
            try:
                signal = await self._signals.propose(proposal)
            except InvalidInputError as exc:  # the gate's size rules refuse it: not posted
                log.warning(
                    "proposal refused",
                    strategy=self.strategy.name,
                    symbol=proposal.symbol,
                    side=proposal.side.value,
                    reason=str(exc),
                )
                continue
            pending.add((signal.symbol, signal.side))
            proposed.append(signal)
        return proposed
