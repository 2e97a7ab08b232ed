"""Brokers: the :class:`Broker` port and its adapters (paper by default, ccxt, MT5)."""

from core.brokers.base import Broker

__all__ = ["Broker"]
