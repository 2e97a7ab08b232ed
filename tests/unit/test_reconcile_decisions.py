"""The reconciler's pure decisions: what to do with an unresolved order given the broker's
answer, and which positions to report as not opened by SignalDesk. No I/O."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from core.domain import OrderReport, OrderState, Position, Side
from core.services.reconciler import (
    OrderView,
    Resolution,
    decide_order,
    foreign_key,
    foreign_positions,
)

UNKNOWN = OrderView(
    client_order_id="sdabc-s1",
    symbol="BTC/USDT",
    state=OrderState.UNKNOWN,
    purpose="open",
    resubmitted=False,
    age_seconds=120,
    filled_quantity=Decimal(0),
)


def report(state: OrderState, filled: str = "0") -> OrderReport:
    return OrderReport(
        client_order_id="sdabc-s1",
        symbol="BTC/USDT",
        side=Side.BUY,
        quantity=Decimal("0.01"),
        state=state,
        filled_quantity=Decimal(filled),
    )


def decide(order: OrderView, found: OrderReport | None, blocked: bool = False) -> Resolution:
    return decide_order(
        order, found, trading_blocked=blocked, max_resubmit_age_seconds=900
    ).resolution


@pytest.mark.parametrize("state", [OrderState.FILLED, OrderState.CANCELLED, OrderState.OPEN])
def test_an_unknown_order_found_at_the_broker_is_adopted_whatever_its_state(
    state: OrderState,
) -> None:
    assert decide(UNKNOWN, report(state)) is Resolution.ADOPT


def test_an_unknown_order_not_found_is_resubmitted_under_the_same_id() -> None:
    decision = decide_order(UNKNOWN, None, trading_blocked=False, max_resubmit_age_seconds=900)

    assert decision.resolution is Resolution.RESUBMIT
    assert decision.client_order_id == "sdabc-s1"


def test_an_order_not_found_after_its_one_resubmission_fails() -> None:
    assert decide(replace(UNKNOWN, resubmitted=True), None) is Resolution.FAIL


def test_a_resubmitted_order_found_later_is_still_adopted() -> None:
    found = report(OrderState.FILLED, "0.01")
    assert decide(replace(UNKNOWN, resubmitted=True), found) is Resolution.ADOPT


def test_a_young_submitted_order_waits_because_it_may_still_be_in_flight() -> None:
    young = replace(UNKNOWN, state=OrderState.SUBMITTED, age_seconds=5)

    assert decide(young, None) is Resolution.WAIT
    assert decide(young, report(OrderState.FILLED)) is Resolution.WAIT
    assert decide(replace(young, age_seconds=31), None) is Resolution.RESUBMIT


def test_a_stale_order_not_found_fails_instead_of_trading_on_an_old_idea() -> None:
    decision = decide_order(
        replace(UNKNOWN, age_seconds=901), None, trading_blocked=False, max_resubmit_age_seconds=900
    )

    assert decision.resolution is Resolution.FAIL
    assert "older than 900s" in decision.reason


def test_an_opening_order_is_not_resubmitted_while_trading_is_blocked() -> None:
    assert decide(UNKNOWN, None, blocked=True) is Resolution.FAIL


def test_a_closing_order_is_resubmitted_even_while_trading_is_blocked() -> None:
    assert decide(replace(UNKNOWN, purpose="close"), None, blocked=True) is Resolution.RESUBMIT


def test_a_resting_order_waits_until_the_broker_reports_a_change() -> None:
    resting = replace(UNKNOWN, state=OrderState.OPEN)

    assert decide(resting, report(OrderState.OPEN)) is Resolution.WAIT
    assert decide(resting, None) is Resolution.WAIT
    assert decide(resting, report(OrderState.OPEN, "0.005")) is Resolution.ADOPT
    assert decide(resting, report(OrderState.FILLED, "0.01")) is Resolution.ADOPT


def position(symbol: str, quantity: str, ours: bool = True) -> Position:
    return Position(
        symbol=symbol,
        quantity=Decimal(quantity),
        average_entry=Decimal(100),
        mark_price=Decimal(100),
        opened_by_signaldesk=ours,
    )


def test_positions_without_signaldesk_fills_or_flagged_foreign_are_reported() -> None:
    held = [
        position("BTC/USDT", "0.1"),
        position("ETH/USDT", "2"),
        position("XAUUSD", "1", ours=False),
    ]

    found = foreign_positions(held, signaldesk_symbols={"BTC/USDT", "XAUUSD"}, already_reported=())

    assert [p.symbol for p in found] == ["ETH/USDT", "XAUUSD"]


def test_a_foreign_position_is_reported_once_and_again_only_when_it_changes() -> None:
    eth = position("ETH/USDT", "2")
    reported = {foreign_key(eth)}

    assert foreign_positions([eth], set(), reported) == []
    assert foreign_positions([position("ETH/USDT", "3")], set(), reported) != []
