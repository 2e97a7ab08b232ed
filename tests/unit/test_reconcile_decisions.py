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


CLOSE = replace(UNKNOWN, client_order_id="sdabc-c1", purpose="close")


def decide(order: OrderView, found: OrderReport | None) -> Resolution:
    return decide_order(order, found, max_resubmit_age_seconds=900).resolution


@pytest.mark.parametrize("state", [OrderState.FILLED, OrderState.CANCELLED, OrderState.OPEN])
@pytest.mark.parametrize("order", [UNKNOWN, CLOSE])
def test_an_unknown_order_found_at_the_broker_is_adopted_whatever_its_state(
    order: OrderView, state: OrderState
) -> None:
    assert decide(order, report(state)) is Resolution.ADOPT


def test_an_opening_order_the_broker_has_no_trace_of_fails_and_asks_for_re_approval() -> None:
    decision = decide_order(UNKNOWN, None, max_resubmit_age_seconds=900)

    assert decision.resolution is Resolution.FAIL
    assert decision.reason == (
        "order sdabc-s1 was not found at the broker; re-approve if you still want it"
    )


@pytest.mark.parametrize("state", [OrderState.UNKNOWN, OrderState.SUBMITTED])
def test_an_opening_order_is_never_resubmitted_whatever_its_age_or_state(
    state: OrderState,
) -> None:
    for age in (31, 120, 899, 10_000):
        assert decide(replace(UNKNOWN, state=state, age_seconds=age), None) is Resolution.FAIL


@pytest.mark.parametrize(
    "order",
    [
        CLOSE,
        replace(UNKNOWN, purpose="stop_loss"),
        replace(UNKNOWN, purpose="take_profit"),
        replace(UNKNOWN, reduce_only=True),  # a reduce-only order whatever its purpose
    ],
)
def test_a_reducing_order_proven_absent_is_re_sent_under_a_new_id(order: OrderView) -> None:
    decision = decide_order(order, None, max_resubmit_age_seconds=900)

    assert decision.resolution is Resolution.RESUBMIT
    assert "new client order id" in decision.reason


def test_a_re_sent_reducing_order_not_found_either_fails() -> None:
    decision = decide_order(replace(CLOSE, resubmitted=True), None, max_resubmit_age_seconds=900)

    assert decision.resolution is Resolution.FAIL
    assert decision.reason == "not found at the broker after one re-send"


def test_a_re_sent_order_found_later_is_still_adopted() -> None:
    found = report(OrderState.FILLED, "0.01")
    assert decide(replace(CLOSE, resubmitted=True), found) is Resolution.ADOPT


def test_a_young_order_waits_because_it_may_still_be_in_flight_at_the_broker() -> None:
    young = replace(CLOSE, state=OrderState.SUBMITTED, age_seconds=5)

    assert decide(young, None) is Resolution.WAIT
    assert decide(young, report(OrderState.FILLED)) is Resolution.WAIT
    # an UNKNOWN order (its placement timed out) not found yet: the broker's timeout first
    assert decide(replace(young, state=OrderState.UNKNOWN), None) is Resolution.WAIT
    assert decide(replace(young, state=OrderState.UNKNOWN), report(OrderState.FILLED)) is (
        Resolution.ADOPT
    )
    assert decide(replace(young, age_seconds=31), None) is Resolution.RESUBMIT
    assert decide(replace(UNKNOWN, age_seconds=5), None) is Resolution.WAIT


def test_a_stale_reducing_order_not_found_fails_instead_of_acting_on_an_old_position() -> None:
    decision = decide_order(replace(CLOSE, age_seconds=901), None, max_resubmit_age_seconds=900)

    assert decision.resolution is Resolution.FAIL
    assert "older than 900s" in decision.reason


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
