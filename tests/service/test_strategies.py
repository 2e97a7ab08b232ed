"""The built-in SMA crossover strategy on the real candles, run by the StrategyRunner into
PROPOSED signals, with risk-based sizing and no duplicate while one is pending."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from core.domain import Candle, Side, SignalStatus
from core.errors import ConfigError, InvalidInputError
from core.strategies import SmaCross, shorthand, size_for_risk
from core.strategies.sma_cross import atr, sma
from tests.conftest import Clock
from tests.support.duties import BTC, Engines, outbox


@pytest.fixture
async def engines(make_settings: Callable[..., Any], clock: Clock) -> AsyncIterator[Engines]:
    factory = Engines(make_settings, clock)
    yield factory
    await factory.close_all()


async def test_a_crossover_proposes_a_buy_with_an_atr_stop_sized_to_lose_one_percent(
    engines: Engines, database_url: str
) -> None:
    engine = await engines.start(database_url, strategy="sma_cross", strategy_risk_pct=1)
    runner = engine.strategies
    assert runner is not None
    engine.feed.step(50)
    assert await runner.run() == []  # 2025-08-22 13:00: SMA10 still below SMA30

    engine.feed.step()  # 14:00, close 115,808.23: SMA10 crosses above SMA30
    [signal] = await runner.run()

    assert (signal.source, signal.side, signal.status) == ("sma_cross", Side.BUY, "PROPOSED")
    assert signal.reference_price == Decimal("115808.23")
    # ATR14 = 781.29 -> stop 2 ATR below, rounded to the 0.01 tick; quantity = 1% x 10,000
    # / (115,808.23 - 114,245.65), rounded down: the risk is measured to the real stop.
    assert signal.stop_loss == Decimal("114245.65")
    assert signal.take_profit == Decimal("118933.39")
    assert signal.quantity == Decimal("0.06399672")
    assert signal.risk is not None and Decimal("99.99") < signal.risk <= Decimal(100)
    assert signal.note.startswith("SMA10 crossed above SMA30 at 115808.23")
    assert [(r.kind, r.signal_id) for r in await outbox(engine)] == [("signal_card", signal.id)]


async def test_while_a_buy_is_pending_the_next_buy_crossover_is_not_proposed_again(
    engines: Engines, database_url: str
) -> None:
    engine = await engines.start(database_url, strategy="sma_cross")
    runner = engine.strategies
    assert runner is not None

    proposed = []
    for _ in range(210):  # through the crossovers at candles 51 (buy), 75 (sell),
        engine.feed.step()  # 154 (buy) and 204 (sell), the first two left undecided
        proposed += await runner.run()

    assert [(s.side, s.reference_price) for s in proposed] == [
        (Side.BUY, Decimal("115808.23")),
        (Side.SELL, Decimal("114621.47")),
    ]
    assert len(await engine.signals.pending()) == 2

    await engine.signals.reject(proposed[0].id, "owner:1")
    engine.feed.step(154 - 210)  # back to the buy crossover of 2025-08-26 21:00
    [again] = await runner.run()
    assert (again.side, again.status) == (Side.BUY, SignalStatus.PROPOSED)


def candle(high: str, low: str, close: str, hour: int = 0) -> Candle:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=hour)
    return Candle(at, Decimal(close), Decimal(high), Decimal(low), Decimal(close), Decimal(1))


def test_atr_uses_true_ranges_and_wilders_smoothing() -> None:
    candles = [
        candle("10", "8", "9", 0),
        candle("12", "9", "11", 1),  # TR 3
        candle("11", "10", "10", 2),  # TR 1
        candle("15", "11", "14", 3),  # TR max(4, 5, 1) = 5 (gap above the close)
    ]

    # First ATR(2) = (3 + 1) / 2 = 2; then (2 x 1 + 5) / 2 = 3.5.
    assert atr(candles, 2) == Decimal("3.5")
    assert sma([Decimal(1), Decimal(2), Decimal(6)], 2) == 4
    with pytest.raises(ValueError, match="needs 5 candles"):
        atr(candles, 4)


def test_size_for_risk_loses_the_risk_percent_at_the_stop_and_respects_the_caps() -> None:
    assert size_for_risk(Decimal(10000), Decimal(1), Decimal(100), Decimal(95)) == 20
    assert size_for_risk(Decimal(10000), Decimal(1), Decimal(95), Decimal(100)) == 20  # short
    capped = size_for_risk(
        Decimal(10000), Decimal(1), Decimal(100), Decimal(95), max_quantity=Decimal(5)
    )
    assert capped == 5
    by_notional = size_for_risk(
        Decimal(10000), Decimal(1), Decimal(100), Decimal(95), max_notional=Decimal(1000)
    )
    assert by_notional == 10
    assert size_for_risk(Decimal(1000), Decimal(1), Decimal(3), Decimal("0.5")) == 4
    with pytest.raises(InvalidInputError, match="equals the entry"):
        size_for_risk(Decimal(10000), Decimal(1), Decimal(100), Decimal(100))


def test_the_strategy_is_chosen_by_name_and_an_unknown_name_is_a_config_error(
    make_settings: Callable[..., Any],
) -> None:
    assert shorthand(make_settings(strategy="none"), "1h") == []
    [spec] = shorthand(make_settings(strategy="sma_cross", strategy_interval=30), "1h")
    assert (spec.kind, spec.symbols, spec.every_seconds, spec.timeframe) == (
        "sma_cross",
        ("BTC/USDT",),
        30,
        "1h",
    )
    with pytest.raises(ConfigError, match="STRATEGY: unknown strategy 'rsi'"):
        shorthand(make_settings(strategy="rsi"), "1h")


def test_a_crossover_whose_risk_rounds_to_no_quantity_proposes_nothing() -> None:
    closes = [Decimal(100)] * 30 + [Decimal(90)] * 10 + [Decimal(200)]  # crosses up at the end
    candles = [
        Candle(datetime(2026, 1, 1, tzinfo=UTC), c, c + 1, c - 1, c, Decimal(1)) for c in closes
    ]

    [buy] = SmaCross(Decimal(1)).evaluate(BTC, candles, Decimal(10))
    assert buy.side is Side.BUY
    assert SmaCross(Decimal("0.000000001")).evaluate(BTC, candles, Decimal(10)) == []
