"""Price feeds: a replay of real candles (the default) behind one small interface."""

from core.marketdata.replay import ReplayFeed, load_candles

__all__ = ["ReplayFeed", "load_candles"]
