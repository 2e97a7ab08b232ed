"""Editing a pending signal before approval: compare-and-set on the card version, audited,
re-checked; a tap on a card rendered before an edit is refused. SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlmodel import col, func, select

from core.app import Engine
from core.db.models import OutboxRow
from core.domain import OrderType, Side, SignalStatus
from core.errors import CardChangedError, InvalidInputError, TransitionConflictError
from core.services import Proposal
from core.services.signals import SignalEdit

BTC = "BTC/USDT"
PRICE = Decimal("113666.68")  # close of the first real candle of the replay


async def updates(engine: Engine) -> int:
    async with engine.db.session() as session:
        query = select(func.count()).where(col(OutboxRow.kind) == "signal_update")
        return (await session.exec(query.select_from(OutboxRow))).one()


async def test_doubling_the_size_bumps_the_version_audits_and_rerenders_the_card(
    engine: Engine,
) -> None:
    signal = await engine.signals.propose(Proposal("test", BTC, Side.BUY, Decimal("0.01")))
    assert signal.card_version == 0

    edited = await engine.signals.edit(signal.id, 0, SignalEdit(quantity=Decimal("0.02")), "ada")

    assert (edited.quantity, edited.card_version, edited.status) == (
        Decimal("0.02"),
        1,
        SignalStatus.PROPOSED,
    )
    event = (await engine.signals.history(1, signal.id))[0]
    assert (event.action, event.actor, event.reason) == ("edit", "ada", "qty 0.01 -> 0.02")
    assert await updates(engine) == 1


async def test_a_tap_on_the_card_before_the_edit_is_refused_and_the_new_card_executes(
    engine: Engine,
) -> None:
    signal = await engine.signals.propose(Proposal("test", BTC, Side.BUY, Decimal("0.01")))
    await engine.signals.edit(signal.id, 0, SignalEdit(quantity=Decimal("0.02")), "ada")

    with pytest.raises(CardChangedError, match="the card changed, look again"):
        await engine.signals.approve(signal.id, "bob", version=0)
    assert (await engine.signals.get(signal.id)).status is SignalStatus.PROPOSED

    decision = await engine.signals.approve(signal.id, "ada", version=1)
    assert decision.signal.status is SignalStatus.FILLED
    assert decision.report is not None and decision.report.quantity == Decimal("0.02")


async def test_risk_percent_sizes_from_equity_and_the_stop(engine: Engine) -> None:
    # equity 10000 USDT, stop 2000 below the market entry: 1% = 100 USDT / 2000 = 0.05 BTC
    stop = PRICE - 2000
    signal = await engine.signals.propose(
        Proposal("test", BTC, Side.BUY, Decimal("0.01"), stop_loss=stop)
    )

    edited = await engine.signals.edit(signal.id, 0, SignalEdit(risk_pct=Decimal(1)), "ada")

    assert edited.quantity == Decimal("0.05")
    assert edited.risk == Decimal("100.0000")


async def test_a_reply_edit_sets_stop_target_size_and_limit_together(engine: Engine) -> None:
    signal = await engine.signals.propose(Proposal("test", BTC, Side.BUY, Decimal("0.01")))
    change = SignalEdit(
        stop_loss=Decimal(110000),
        take_profit=Decimal(120000),
        quantity=Decimal("0.02"),
        limit_price=Decimal(112000),
    )

    edited = await engine.signals.edit(signal.id, 0, change, "ada")

    assert edited.order_type is OrderType.LIMIT
    assert (edited.limit_price, edited.stop_loss, edited.take_profit) == (
        Decimal(112000),
        Decimal(110000),
        Decimal(120000),
    )
    event = (await engine.signals.history(1, signal.id))[0]
    assert event.reason == (
        "qty 0.01 -> 0.02; limit none -> 112000; sl none -> 110000; tp none -> 120000"
    )


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (SignalEdit(stop_loss=PRICE + 10), "stop loss .* must be below the entry"),
        (SignalEdit(quantity=Decimal(5)), "quantity 5 over the limit 1"),
        (SignalEdit(quantity=Decimal("0.5")), "notional .* over the limit 10000.00"),
        (SignalEdit(risk_pct=Decimal(1)), "risk % needs a stop loss"),
        (SignalEdit(), "nothing to change"),
        (SignalEdit(quantity=Decimal("0.01")), "nothing to change"),
    ],
)
async def test_an_invalid_edit_changes_nothing(
    engine: Engine, change: SignalEdit, error: str
) -> None:
    signal = await engine.signals.propose(Proposal("test", BTC, Side.BUY, Decimal("0.01")))

    with pytest.raises(InvalidInputError, match=error):
        await engine.signals.edit(signal.id, 0, change, "ada")

    after = await engine.signals.get(signal.id)
    assert (after.quantity, after.stop_loss, after.card_version) == (Decimal("0.01"), None, 0)
    assert await updates(engine) == 0


async def test_an_edit_from_a_stale_card_or_of_a_decided_signal_is_refused(
    engine: Engine,
) -> None:
    signal = await engine.signals.propose(Proposal("test", BTC, Side.BUY, Decimal("0.01")))
    await engine.signals.edit(signal.id, 0, SignalEdit(quantity=Decimal("0.02")), "ada")

    with pytest.raises(CardChangedError):
        await engine.signals.edit(signal.id, 0, SignalEdit(quantity=Decimal("0.04")), "bob")
    await engine.signals.reject(signal.id, "ada")
    with pytest.raises(TransitionConflictError, match="is rejected"):
        await engine.signals.edit(signal.id, 1, SignalEdit(quantity=Decimal("0.04")), "bob")
    assert (await engine.signals.get(signal.id)).quantity == Decimal("0.02")
