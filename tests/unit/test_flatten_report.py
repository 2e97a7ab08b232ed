"""The drawdown flatten's report is a typed notification: its figures survive the outbox
payload unchanged, and only bot/render.py words them (net PnL after fees, labelled)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bot.render import close_results_text, flatten_text
from core.domain import Fill, OrderReport, OrderState, Position, Side
from core.notify import NoticeKind, Priority
from core.services.risk import FlattenReport
from core.services.trading import CancelResult, CloseReport, CloseResult

D = Decimal
AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _report() -> CloseReport:
    fill = Fill(
        "sd1-c1", "BTC/USDT", Side.SELL, D("0.01"), D("113643.94"), D("1.1364394"), "USDT", AT
    )
    sold = OrderReport(
        "sd1-c1",
        "BTC/USDT",
        Side.SELL,
        D("0.01"),
        OrderState.FILLED,
        filled_quantity=D("0.01"),
        average_price=D("113643.94"),
        fee=D("1.1364394"),
        fee_currency="USDT",
        fills=(fill,),
    )
    cancelled = OrderReport("sd1-s2", "BTC/USDT", Side.BUY, D("0.001"), OrderState.CANCELLED)
    return CloseReport(
        cancelled=(CancelResult("sd1-s2", "BTC/USDT", signal_id=2, report=cancelled),),
        closes=(
            CloseResult("BTC/USDT", report=sold, net_pnl=D("-2.7281336")),
            CloseResult("ETH/USDT", error="the venue refused"),
        ),
        left_open=(Position("SOL/USDT", D(3), D(150), D(151), opened_by_signaldesk=False),),
    )


def test_the_payload_is_json_and_gives_back_the_same_figures() -> None:
    flatten = FlattenReport(_report(), still_open=(Position("ETH/USDT", D(1), D(3000), D(2990)),))

    notification = flatten.notification()
    payload = json.loads(json.dumps(notification.payload))  # what the outbox row keeps

    assert (notification.kind, notification.priority) == (
        NoticeKind.FLATTEN_REPORT,
        Priority.ALERT,
    )
    assert FlattenReport.from_payload(payload) == flatten
    with pytest.raises((KeyError, TypeError)):  # what the deliverer reports as malformed
        FlattenReport.from_payload({"still_open": []})


def test_the_flatten_alert_shows_each_step_the_net_pnl_and_what_is_still_open() -> None:
    report = _report()

    still = flatten_text(
        FlattenReport(report, still_open=(Position("ETH/USDT", D(1), D(3000), D(2990)),))
    )
    unconfirmed = flatten_text(FlattenReport(report, unconfirmed="timeout"))
    done = flatten_text(FlattenReport(report))
    flat = flatten_text(FlattenReport(CloseReport(closes=report.closes[:1])))

    assert still.startswith("Flatten results (drawdown limit)")
    assert "🚫 BTC/USDT entry order of signal #2 sd1-s2 cancelled" in still
    assert "✅ BTC/USDT: sold 0.01 @ 113,643.94 (fee 1.14 USDT) · net PnL -2.73 after fees" in still
    assert "⚠️ ETH/USDT: failed: the venue refused" in still
    assert "external, left untouched" in still
    assert "⚠️ STILL OPEN: ETH/USDT 1. Close by hand or retry /closeall." in still
    assert "Could not confirm the account is flat (timeout)" in unconfirmed
    assert done.endswith("Everything SignalDesk opened is closed.")
    assert flat.endswith("The account is flat.")
    # the same close reads the same in a /closeall report
    assert "net PnL -2.73 after fees" in close_results_text(report, "@ada")
    assert "before fees" not in still + close_results_text(report, "@ada")
