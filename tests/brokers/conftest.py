"""Fixtures for the broker adapter tests: a fake Binance server and a fake MT5 terminal,
each with a ready broker (closed when the test ends)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.brokers.ccxt_broker import CcxtBroker
from core.brokers.mt5_broker import Mt5Broker
from tests.support import binance_fake, mt5_fake


@pytest.fixture
async def binance() -> AsyncIterator[binance_fake.BinanceFake]:
    """A running fake Binance spot API with 10 000 USDT."""
    async with binance_fake.running() as fake:
        yield fake


@pytest.fixture
def ccxt_broker(binance: binance_fake.BinanceFake) -> CcxtBroker:
    """A CcxtBroker (binance spot) on the fake server, 1 s request timeout."""
    return binance.broker(timeout_ms=1000)


@pytest.fixture
async def mt5() -> AsyncIterator[mt5_fake.FakeTerminal]:
    """A fake MT5 terminal: hedging USD account with 10 000."""
    async with mt5_fake.running() as fake:
        yield fake


@pytest.fixture
def mt5_broker(mt5: mt5_fake.FakeTerminal) -> Mt5Broker:
    """An Mt5Broker on the fake terminal's module."""
    return mt5.broker()
