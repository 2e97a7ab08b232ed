"""The pre-trade gate's pure rules (core/services/gate.py): each reason, in its order, and
reducing orders passing in every state. No I/O."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from core.domain import Position, TradingState
from core.services.gate import (
    BREACHED,
    GateState,
    OrderCheck,
    OrderLimits,
    check_order,
    owns,
    reduces_risk,
    state_reason,
)

LIMITS = OrderLimits(
    max_quantity=Decimal(1), max_notional=Decimal(10000), max_drift_pct=Decimal("1.0")
)
ACTIVE = GateState(TradingState.ACTIVE)
PAUSED = GateState(TradingState.HALTED, pause_reason="news at 14:30")
BREACH = GateState(TradingState.HALTED, "drawdown guard: drawdown 10.80%", "max")
REDUCING = GateState(TradingState.REDUCING, pause_reason="flattening")
#: 0.05 BTC at 100,000 (5,000 USDT), proposed at 100,500 (0.5 % drift), 2,000 free.
ORDER = OrderCheck(
    quantity=Decimal("0.05"),
    price=Decimal(100000),
    reference_price=Decimal(100500),
    free_margin=Decimal(2000),
)


def test_an_order_within_every_limit_passes_while_active() -> None:
    assert check_order(ACTIVE, ORDER, LIMITS) is None


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (PAUSED, "paused (news at 14:30)"),
        (GateState(TradingState.HALTED), "paused"),
        (BREACH, BREACHED),
        (REDUCING, "reducing only (flattening)"),
    ],
)
def test_the_state_blocks_an_order_that_adds_risk_with_its_reason(
    state: GateState, reason: str
) -> None:
    assert state_reason(state) == reason
    assert check_order(state, ORDER, LIMITS) == reason


def test_the_state_is_checked_before_the_limits() -> None:
    huge = replace(ORDER, quantity=Decimal(50), price=None)
    assert check_order(PAUSED, huge, LIMITS) == "paused (news at 14:30)"


@pytest.mark.parametrize("state", [ACTIVE, PAUSED, BREACH, REDUCING])
def test_a_reducing_order_passes_in_every_state_and_past_every_limit(state: GateState) -> None:
    close = OrderCheck(quantity=Decimal(50), reduces=True, price=None, free_margin=Decimal(-5))
    assert state_reason(state, reduces=True) is None
    assert check_order(state, close, LIMITS) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"quantity": Decimal("1.5")}, "quantity 1.5 over the limit 1"),
        ({"price": None, "price_error": "timeout"}, "no price from the broker (timeout)"),
        ({"price": None}, "no price from the broker"),
        ({"price": Decimal(101600)}, "price moved 1.1% (limit 1.0%)"),
        ({"quantity": Decimal("0.11")}, "notional 11000.00 over the limit 10000.00"),
        (
            {"quantity": Decimal("0.11"), "limit_price": Decimal(90000)},
            None,  # a limit order's notional is priced at its limit: 9,900
        ),
        ({"free_margin": Decimal(0)}, "no free margin (0.00)"),
        ({"free_margin": Decimal("-12.5")}, "no free margin (-12.50)"),
        ({"free_margin": None}, None),  # the account did not tell: the venue decides
        ({"reference_price": None}, None),  # no proposal price: no drift rule
    ],
)
def test_each_limit_blocks_with_its_reason(change: dict[str, object], reason: str | None) -> None:
    order = replace(ORDER, **change)  # type: ignore[arg-type]
    assert check_order(ACTIVE, order, LIMITS) == reason


def test_the_drift_limit_is_inclusive_and_symmetric() -> None:
    at_limit = replace(ORDER, price=Decimal(101505))  # exactly +1.0 %
    below = replace(ORDER, price=Decimal(99495))  # exactly -1.0 %
    assert check_order(ACTIVE, at_limit, LIMITS) is None
    assert check_order(ACTIVE, below, LIMITS) is None


@pytest.mark.parametrize(
    ("purpose", "reduce_only", "expected"),
    [
        ("open", False, False),
        ("open", True, True),
        ("close", False, True),
        ("stop_loss", False, True),
        ("take_profit", False, True),
    ],
)
def test_which_orders_reduce_risk(purpose: str, reduce_only: bool, expected: bool) -> None:
    assert reduces_risk(purpose, reduce_only) is expected


def test_owns_is_true_only_for_positions_signaldesk_opened() -> None:
    ours = Position("BTC/USDT", Decimal("0.1"), Decimal(100), Decimal(100))
    assert owns(ours)
    assert not owns(replace(ours, opened_by_signaldesk=False))
