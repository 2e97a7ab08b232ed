"""Expiry: a proposal past its time to live becomes EXPIRED and its card update is queued,
when the scheduler's expiry job runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine

from core.domain import Side, SignalStatus
from core.scheduler import build_scheduler
from core.services import Proposal
from tests.conftest import Clock
from tests.support.duties import BTC, Engines, eventually, outbox


@pytest.fixture
async def engines(make_settings: Callable[..., Any], clock: Clock) -> AsyncIterator[Engines]:
    factory = Engines(make_settings, clock)
    yield factory
    await factory.close_all()


async def test_the_expiry_job_expires_a_stale_proposal_and_queues_its_card_update(
    engines: Engines, database_url: str, clock: Clock
) -> None:
    engine = await engines.start(database_url, signal_ttl_seconds=300, expiry_check_interval=15)
    stale = await engine.signals.propose(Proposal("test", BTC, Side.BUY, Decimal("0.01")))
    clock.advance(200)
    fresh = await engine.signals.propose(Proposal("test", BTC, Side.SELL, Decimal("0.01")))

    with time_machine.travel(clock.now, tick=False) as traveller:
        scheduler = build_scheduler(engine)
        scheduler.start()
        try:

            async def idle() -> bool:  # the start-up runs are over
                return not scheduler.busy

            await eventually(idle)
            clock.advance(101)  # the first proposal is now 301 s old
            traveller.shift(timedelta(seconds=101))
            scheduler.wakeup()

            async def expired() -> bool:
                return (await engine.signals.get(stale.id)).status is SignalStatus.EXPIRED

            await eventually(expired)
        finally:
            await scheduler.stop()

    assert (await engine.signals.get(fresh.id)).status is SignalStatus.PROPOSED
    updates = [(r.kind, r.signal_id) for r in await outbox(engine) if r.kind == "signal_update"]
    assert updates == [("signal_update", stale.id)]
    [event] = await engine.signals.history(1, stale.id)
    assert (event.actor, event.to_status, event.reason) == ("system", "EXPIRED", "ttl passed")
    assert event.at == datetime(2026, 1, 5, 12, 5, 1, tzinfo=UTC)
