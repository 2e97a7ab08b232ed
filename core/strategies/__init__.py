"""Signal sources: the :class:`Strategy` interface, the built-in strategies (SMA crossover,
Donchian breakout), strategy instances from the strategies file, the risk-based sizing
they share with webhook alerts, the runner and the desk the scheduler and the chat call."""

from core.strategies.base import Strategy
from core.strategies.desk import InstanceStatus, StrategyDesk
from core.strategies.donchian import DonchianBreakout
from core.strategies.instances import KINDS, StrategySpec, load_strategies_file, shorthand
from core.strategies.runner import CandleSource, StrategyRunner
from core.strategies.sizing import size_for_risk
from core.strategies.sma_cross import SmaCross

__all__ = [
    "KINDS",
    "CandleSource",
    "DonchianBreakout",
    "InstanceStatus",
    "SmaCross",
    "Strategy",
    "StrategyDesk",
    "StrategyRunner",
    "StrategySpec",
    "load_strategies_file",
    "shorthand",
    "size_for_risk",
]
