"""The gate's size rules at proposal time, again when a card is posted or trading resumes,
and the pending cards following the trading state; on SQLite and PostgreSQL. The replay's
first close is 113,666.68 USDT; the paper account starts with 10,000 USDT; the limits are
the defaults (1 BTC, 10,000 USDT per order)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from sqlmodel import col, select
from structlog.testing import capture_logs

from bot.delivery import Cards
from core.app import Engine
from core.db.models import AuditEventRow, OutboxRow, PaperAccountRow, SignalRow
from core.domain import Side, SignalStatus
from core.errors import InvalidInputError
from core.services import Proposal
from core.services.signals import SignalEdit
from tests.conftest import Clock
from tests.service.test_risk import MAX_STEP, open_long, replay
from tests.support.duties import BTC, FLATTEN_AT_PEAK, Engines


def buy(quantity: str = "0.01") -> Proposal:
    return Proposal("test", BTC, Side.BUY, Decimal(quantity))


async def set_balance(engine: Engine, balance: Decimal) -> None:
    """The account changes behind the desk's back (a withdrawal): the paper balance is set
    to ``balance``."""
    await engine.broker.account()  # the paper ledger opens its account on first use
    async with engine.db.session() as session:
        account = await session.get(PaperAccountRow, 1)
        assert account is not None
        account.balance = balance


async def withdraw_everything(engine: Engine) -> None:
    """The paper balance goes to 0, so the free margin the broker reports is 0."""
    await set_balance(engine, Decimal(0))


async def card_rows(engine: Engine) -> list[tuple[str, int | None]]:
    async with engine.db.session() as session:
        rows = await session.exec(select(OutboxRow).order_by(col(OutboxRow.id)))
        return [(r.kind, r.signal_id) for r in rows.all() if r.signal_id is not None]


@pytest.mark.parametrize(
    ("quantity", "reason"),
    [
        ("1000", "quantity 1000 over the limit 1"),
        ("0.1", "notional 11366.67 over the limit 10000.00"),  # 0.1 x 113,666.68
    ],
)
async def test_a_proposal_over_the_size_limits_is_refused_and_stores_nothing(
    engine: Engine, quantity: str, reason: str
) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        await engine.signals.propose(buy(quantity))

    async with engine.db.session() as session:
        assert (await session.exec(select(SignalRow))).all() == []
    assert await card_rows(engine) == []


async def test_a_proposal_without_free_margin_is_refused(engine: Engine) -> None:
    await withdraw_everything(engine)

    with pytest.raises(InvalidInputError, match=r"no free margin \(0.00\)"):
        await engine.signals.propose(buy())


async def test_a_recheck_after_the_account_changed_blocks_the_signal_with_the_reason(
    engine: Engine,
) -> None:
    signal = await engine.signals.propose(buy())
    assert (await engine.signals.recheck(signal.id)).status is SignalStatus.PROPOSED
    await withdraw_everything(engine)

    blocked = await engine.signals.recheck(signal.id)

    assert (blocked.status, blocked.status_reason) == (
        SignalStatus.BLOCKED,
        "no free margin (0.00)",
    )
    assert await card_rows(engine) == [("signal_card", signal.id), ("signal_update", signal.id)]
    async with engine.db.session() as session:
        event = (
            await session.exec(select(AuditEventRow).where(col(AuditEventRow.action) == "blocked"))
        ).one()
    assert (event.signal_id, event.from_status, event.reason) == (
        signal.id,
        "PROPOSED",
        "no free margin (0.00)",
    )
    # a decided signal is left alone
    assert (await engine.signals.recheck(signal.id)).status is SignalStatus.BLOCKED


async def test_an_edit_runs_the_same_checks(engine: Engine) -> None:
    signal = await engine.signals.propose(buy("0.05"))
    await withdraw_everything(engine)

    with pytest.raises(InvalidInputError, match="no free margin"):
        await engine.signals.edit(signal.id, 0, SignalEdit(quantity=Decimal("0.04")), "owner:1")

    assert (await engine.signals.get(signal.id)).quantity == Decimal("0.05")


async def test_pause_and_resume_update_every_pending_card_and_resume_rechecks(
    engine: Engine, clock: Clock
) -> None:
    small = await engine.signals.propose(buy("0.01"))
    big = await engine.signals.propose(buy("0.08"))
    stale = await engine.signals.propose(replace(buy(), ttl_seconds=60))
    start = len(await card_rows(engine))

    await engine.trading.pause("news", "owner:1")

    assert (await card_rows(engine))[start:] == [
        ("signal_update", s.id) for s in (small, big, stale)
    ]

    # while paused: the TTL of one passes, and the limit falls under the other (as after a
    # restart with a lower MAX_ORDER_QUANTITY)
    clock.advance(61)
    gate = engine.trading.gate
    gate.limits = replace(gate.limits, max_quantity=Decimal("0.05"))
    start = len(await card_rows(engine))

    await engine.trading.resume("owner:1")

    assert (await engine.signals.get(stale.id)).status is SignalStatus.EXPIRED
    blocked = await engine.signals.get(big.id)
    assert (blocked.status, blocked.status_reason) == (
        SignalStatus.BLOCKED,
        "quantity 0.08 over the limit 0.05",
    )
    assert (await engine.signals.get(small.id)).status is SignalStatus.PROPOSED
    assert sorted((await card_rows(engine))[start:]) == sorted(
        [("signal_update", stale.id), ("signal_update", big.id), ("signal_update", small.id)]
    )


async def test_a_strategy_proposal_the_checks_refuse_is_logged_and_not_posted(
    engines: Engines, database_url: str
) -> None:
    engine = await engines.start(database_url, strategy="sma_cross", strategy_risk_pct=1)
    runner = engine.strategies
    assert runner is not None
    engine.feed.step(51)  # 2025-08-22 14:00: SMA10 crosses above SMA30 (a buy)
    held = await engine.signals.propose(buy("0.08"))
    assert (await engine.signals.approve(held.id, "owner:1")).signal.status == "FILLED"
    # the account changes: equity stays positive (the strategy sizes from it), the free
    # margin goes 1 USDT below zero
    account = await engine.broker.account()
    await set_balance(engine, account.margin - (account.equity - account.balance) - 1)
    before = await card_rows(engine)

    with capture_logs() as logs:
        assert await runner.run() == []

    assert await card_rows(engine) == before
    [refused] = [e for e in logs if e["event"] == "proposal refused"]
    assert (refused["strategy"], refused["side"]) == ("sma_cross", "buy")
    assert refused["reason"].startswith("no free margin (-1.00")


async def test_a_drawdown_flatten_marks_the_pending_cards_and_takes_approvals_off(
    engines: Engines, database_url: str, clock: Clock
) -> None:
    engine = await engines.start(
        database_url,
        **FLATTEN_AT_PEAK,
    )
    await open_long(engine)
    pending = await engine.signals.propose(replace(buy("0.001"), ttl_seconds=3600))
    cards = Cards(engine, charts=False)
    assert (await cards.render(pending)).markup is not None
    before = len(await card_rows(engine))

    await replay(engine, clock, MAX_STEP + 10)

    assert await engine.trading.positions() == []  # flattened
    assert ("signal_update", pending.id) in (await card_rows(engine))[before:]
    card = await cards.render(await engine.signals.get(pending.id))
    assert "🛑 Drawdown breach — approvals off until /resume" in card.text
    assert card.markup is not None
    assert [[b.text for b in row] for row in card.markup.inline_keyboard] == [["❌ Reject"]]
