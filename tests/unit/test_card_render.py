"""The card answers the trader's questions in a few lines (pure rendering, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from bot import render
from core.brokers.ibkr_hours import MarketHours
from core.config import MarketClosedPolicy
from core.domain import Account, OrderType, Side, Signal, SignalStatus, TradingState
from core.services.gate import BREACH_MAX, GateState
from core.services.trades import SourceRecord

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _signal(**overrides: object) -> Signal:
    values: dict[str, object] = {
        "id": 7, "source": "ema-cross", "symbol": "BTC/USDT", "side": Side.SELL,
        "quantity": Decimal("0.025"), "order_type": OrderType.LIMIT,
        "reference_price": Decimal(100500), "created_at": NOW,
        "expires_at": NOW + timedelta(minutes=4, seconds=30), "limit_price": Decimal(100000),
        "stop_loss": Decimal(101000), "take_profit": Decimal(97000),
    }  # fmt: skip
    values.update(overrides)
    return Signal(**values)  # type: ignore[arg-type]


def test_a_short_limit_card_with_record_in_a_local_zone() -> None:
    # 3 closed trades: +30, -10, +20 net; R 1.5, -0.5, 1.0 -> avg 0.67; 2 of 3 won
    record = SourceRecord("ema-cross", approved=4, closed=3, wins=2,
                          average_r=Decimal("2") / 3, net_pnl=Decimal(40))  # fmt: skip
    account = Account(Decimal(10000), Decimal(10000), Decimal(0), "USDT")
    context = render.CardContext(NOW, ZoneInfo("Europe/Berlin"), Decimal(0), record)

    card = render.card(_signal(), None, account, context=context)

    assert card.text.splitlines() == [
        "<b>🔴 SELL 0.025 BTC/USDT</b> · signal #7",
        "Limit 100,000.00 · notional 2,500.00 USDT",
        # stop +1 %, target -3 %: reward 3,000 / risk 1,000 per unit
        "SL 101,000.00 (+1.00%) · TP 97,000.00 (-3.00%) · R:R 3.0",
        "Risk: 25.00 USDT (0.25% of equity)",  # 0.025 x 1,000
        "Opens short 0.025 BTC",
        "Source: ema-cross ★ 4 approved · 67% won of 3 · avg +0.67R · +40.00 USDT",
        "Expires in 4 min (10:04 CET)",
    ]
    assert card.markup is not None and len(card.text) <= render.MAX_CAPTION


def test_what_the_order_does_to_the_position() -> None:
    def effect(side: Side, qty: str, held: str) -> str:
        context = render.CardContext(NOW, UTC, Decimal(held))
        signal = _signal(side=side, quantity=Decimal(qty), stop_loss=None, take_profit=None)
        return render.card(signal, None, None, context=context).text.splitlines()[4]

    assert effect(Side.BUY, "0.01", "0.02") == "Adds to long 0.02 BTC → long 0.03 BTC"
    assert effect(Side.SELL, "0.075", "0.075") == "Reduces long 0.075 BTC → flat"
    assert effect(Side.BUY, "0.05", "-0.02") == "Reverses short 0.02 BTC → long 0.03 BTC"
    reducing = render.card(
        _signal(quantity=Decimal("0.01")), None, None,
        context=render.CardContext(NOW, UTC, Decimal("0.075")),
    )  # fmt: skip
    assert "Risk: none added, it reduces the position" in reducing.text
    assert "Reduces long 0.075 BTC → long 0.065 BTC" in reducing.text


def test_a_long_note_never_pushes_the_card_past_a_caption() -> None:
    card = render.card(_signal(note="x" * 2000, source="s" * 64), None, None)

    assert len(card.text) <= render.MAX_CAPTION


#: AAPL's regular hours on Wednesday 2 December 2026 (09:30-16:00 New York: 14:30 UTC).
AAPL_HOURS = "20261202:0930-20261202:1600"


def _aapl(**overrides: object) -> Signal:
    return _signal(
        symbol="AAPL", side=Side.BUY, quantity=Decimal(10), order_type=OrderType.MARKET,
        reference_price=Decimal("230.10"), limit_price=None, stop_loss=None,
        take_profit=None, **overrides,
    )  # fmt: skip


def test_a_closed_market_and_delayed_prices_are_said_on_the_pending_card() -> None:
    hours = MarketHours.of(AAPL_HOURS, "US/Eastern", NOW + timedelta(minutes=30))  # 09:30 UTC
    day = render.CardContext(
        NOW, ZoneInfo("Europe/Berlin"), market=hours,
        closed_policy=MarketClosedPolicy.DAY_ORDER, delayed=True,
    )  # fmt: skip
    block = render.CardContext(NOW, UTC, market=hours)

    lines = render.card(_aapl(), None, None, context=day).text.splitlines()
    refused = render.card(_aapl(), None, None, context=block)

    assert lines[1:3] == [
        "Market ≈ 230.10 · notional 2,301.00",
        "⏱ Priced on delayed data (15-20 min)",
    ]
    assert lines[-1] == (
        "🌙 Market closed, opens in 5 h (Wed 15:30 CET): "
        "approved, it rests as a DAY order until the open"
    )
    assert refused.text.splitlines()[-1] == (
        "🌙 Market closed, opens in 5 h (Wed 14:30 UTC): approval is refused until the open"
    )
    assert refused.markup is not None  # the broker refuses at the tap; the card says so


def test_a_proposal_blocked_by_the_closed_market_has_no_buttons() -> None:
    signal = _aapl(status=SignalStatus.BLOCKED, status_reason="market closed, opens in 2 h")

    card = render.card(signal, None, None, context=render.CardContext(NOW))

    assert card.text.splitlines()[-1] == "<b>⛔ Blocked: market closed, opens in 2 h</b>"
    assert card.markup is None


def test_an_open_market_live_prices_or_another_broker_add_no_line() -> None:
    open_now = MarketHours.of(AAPL_HOURS, "US/Eastern", datetime(2026, 12, 2, 15, tzinfo=UTC))
    plain = render.card(_aapl(), None, None, context=render.CardContext(NOW)).text

    assert (
        render.card(_aapl(), None, None, context=render.CardContext(NOW, market=open_now)).text
        == plain
    )
    assert "🌙" not in plain and "⏱" not in plain and "delayed" not in plain


def test_a_pending_card_says_when_approvals_are_off_and_keeps_only_reject() -> None:
    cases = [
        (GateState(TradingState.HALTED, "news"), "⏸ Paused (news) — approvals off until /resume"),
        (GateState(TradingState.HALTED, "guard", BREACH_MAX),
         "🛑 Drawdown breach — approvals off until /resume"),
        (GateState(TradingState.REDUCING), "↘️ Reducing only — approvals off until /resume"),
    ]  # fmt: skip
    for state, line in cases:
        card = render.card(_signal(), None, None, context=render.CardContext(NOW, trading=state))

        assert card.text.splitlines()[-1] == f"<b>{line}</b>"
        assert card.markup is not None
        assert [[b.text for b in row] for row in card.markup.inline_keyboard] == [["❌ Reject"]]

    active = render.CardContext(NOW, trading=GateState(TradingState.ACTIVE))
    card = render.card(_signal(), None, None, context=active)
    assert "approvals off" not in card.text
    assert card.markup is not None and card.markup.inline_keyboard[0][0].text == "✅ Approve"
    # a decided card has no buttons whatever the state
    decided = _signal(status=SignalStatus.REJECTED)
    paused = render.CardContext(NOW, trading=GateState(TradingState.HALTED))
    assert render.card(decided, None, None, context=paused).markup is None
