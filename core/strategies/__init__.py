"""Signal sources: the :class:`Strategy` interface, the built-in SMA/ATR strategy, the
risk-based sizing it shares with webhook alerts, and the runner the scheduler calls."""

from core.strategies.base import Strategy
from core.strategies.runner import STRATEGIES, CandleSource, StrategyRunner, build_strategy
from core.strategies.sizing import size_for_risk
from core.strategies.sma_cross import SmaCross

__all__ = [
    "STRATEGIES",
    "CandleSource",
    "SmaCross",
    "Strategy",
    "StrategyRunner",
    "build_strategy",
    "size_for_risk",
]
