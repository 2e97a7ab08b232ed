"""Retention on a real database (SQLite file and PostgreSQL), the clock driven: delivered
outbox rows past ``OUTBOX_RETENTION_DAYS`` go, undelivered and recent ones stay; equity
snapshots of hours past ``EQUITY_SNAPSHOT_DETAIL_DAYS`` are thinned to each hour's first,
last, lowest and highest; a second run deletes nothing; small batches leave work that the
next runs finish; the job is on the scheduler."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlmodel import col, select

from core.app import Engine
from core.db.models import EquitySnapshotRow, OutboxRow
from core.scheduler import RETENTION_INTERVAL_SECONDS, build_scheduler
from core.services.reports import max_drawdown_pct
from core.services.retention import RetentionCounts, RetentionService
from tests.conftest import Clock

DAY = timedelta(days=1)


async def add_outbox(engine: Engine, created: datetime, delivered: datetime | None) -> int:
    async with engine.db.session() as session:
        row = OutboxRow(kind="text", text="hello", created_at=created, delivered_at=delivered)
        session.add(row)
        await session.flush()
        assert row.id is not None
        return row.id


async def outbox_ids(engine: Engine) -> set[int | None]:
    async with engine.db.session() as session:
        return set((await session.exec(select(OutboxRow.id))).all())


async def add_hour(engine: Engine, start: datetime, equities: Sequence[int | str]) -> list[int]:
    """One snapshot a minute from ``start`` with ``equities``; their ids, oldest first."""
    rows = [
        EquitySnapshotRow(
            at=start + timedelta(minutes=minute),
            balance=Decimal(10000),
            equity=Decimal(equity),
            peak_equity=Decimal(20000) + minute,
            drawdown_pct=Decimal(minute) / 100,
        )
        for minute, equity in enumerate(equities)
    ]
    async with engine.db.session() as session:
        session.add_all(rows)
        await session.flush()
        return [row.id for row in rows if row.id is not None]


async def snapshots(engine: Engine) -> list[EquitySnapshotRow]:
    query = select(EquitySnapshotRow).order_by(col(EquitySnapshotRow.at))
    async with engine.db.session() as session:
        return list((await session.exec(query)).all())


def hour_of(clock: Clock, days_back: float, hour: int) -> datetime:
    day = (clock() - timedelta(days=days_back)).date()
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


async def test_delivered_messages_past_the_retention_go_and_undelivered_and_recent_ones_stay(
    engine: Engine, clock: Clock
) -> None:
    now = clock()
    before = await outbox_ids(engine)
    old = await add_outbox(engine, now - 40 * DAY, now - 31 * DAY)
    recent = await add_outbox(engine, now - 40 * DAY, now - 29 * DAY)
    undelivered = await add_outbox(engine, now - 400 * DAY, None)

    counts = await engine.retention.run()

    assert counts.outbox == 1
    assert old not in await outbox_ids(engine)
    assert await outbox_ids(engine) == before | {recent, undelivered}


async def test_old_hours_keep_their_first_last_lowest_and_highest_snapshot_recent_ones_all(
    engine: Engine, clock: Clock
) -> None:
    old = hour_of(clock, 40, 10)
    #            first   high                     low          last
    equities = [10_000, 10_300, 10_100, 10_200, 9_700, 9_900, 10_050, 9_700, 10_300, 10_010]
    old_ids = await add_hour(engine, old, equities)
    recent_ids = await add_hour(engine, hour_of(clock, 2, 10), equities)
    before = {row.id: row.model_dump() for row in await snapshots(engine)}

    with structlog.testing.capture_logs() as logs:
        counts = await engine.retention.run()

    kept = {row.id: row.model_dump() for row in await snapshots(engine)}
    expected = {old_ids[0], old_ids[1], old_ids[4], old_ids[-1]}  # earliest of equals
    assert set(kept) == expected | set(recent_ids)
    assert kept == {row_id: before[row_id] for row_id in kept}  # peak_equity etc. unchanged
    assert counts == RetentionCounts(outbox=0, snapshots=6, hours=1, more=False)
    assert [log for log in logs if log["event"] == "retention pass"] == [
        {
            "event": "retention pass",
            "log_level": "info",
            "outbox_deleted": 0,
            "snapshots_deleted": 6,
            "hours_thinned": 1,
            "more": False,
        }
    ]
    assert await engine.retention.run() == RetentionCounts()  # a second run deletes nothing
    assert len(await snapshots(engine)) == len(kept)


async def test_max_drawdown_across_old_hours_survives_thinning_and_the_newest_stays(
    engine: Engine, clock: Clock
) -> None:
    """The bot was down for the last 40 days: every snapshot is old, the newest too."""
    await add_hour(engine, hour_of(clock, 45, 9), [10_000 + i for i in range(60)])  # peak 10,059
    await add_hour(engine, hour_of(clock, 45, 10), [10_000 - 3 * i for i in range(60)])
    await add_hour(engine, hour_of(clock, 44, 3), [9_000 + i % 7 for i in range(60)])
    await add_hour(engine, hour_of(clock, 41, 0), [9_500, 9_400, 9_450, 9_420, 9_440, 9_430])
    curve = await engine.reports.equity_curve()
    newest = (await snapshots(engine))[-1]

    await engine.retention.run()

    thinned = await engine.reports.equity_curve()
    assert len(thinned) == 2 + 2 + 3 + 3  # first and last are also the low or high
    assert max_drawdown_pct(thinned) == max_drawdown_pct(curve)
    assert (thinned[0], thinned[-1]) == (curve[0], curve[-1])
    assert (await snapshots(engine))[-1] == newest


async def test_small_batches_leave_work_for_the_next_run_which_finishes_it(
    engine: Engine, clock: Clock
) -> None:
    now = clock()
    before = await outbox_ids(engine)
    for back in range(5):
        await add_outbox(engine, now - (40 + back) * DAY, now - (35 + back) * DAY)
    equities = [10_000, 10_020, 9_990, 10_005, 10_001, 10_002, 10_003, 10_004, 10_006, 10_010]
    for back in range(3):
        await add_hour(engine, hour_of(clock, 35 + back, 8), equities)  # 4 kept, 6 go
    small = RetentionService(
        engine.db, engine.settings, clock, batch_rows=2, batch_hours=1, max_batches=2
    )

    first = await small.run()

    assert first == RetentionCounts(outbox=4, snapshots=12, hours=2, more=True)
    assert len(await snapshots(engine)) == 4 + 4 + 10

    second = await small.run()

    assert second == RetentionCounts(outbox=1, snapshots=6, hours=1, more=False)
    assert await outbox_ids(engine) == before
    assert len(await snapshots(engine)) == 3 * 4
    assert await small.run() == RetentionCounts()


async def test_zero_days_keep_every_message_and_every_snapshot(
    engine: Engine, make_settings: Any, clock: Clock
) -> None:
    now = clock()
    await add_outbox(engine, now - 400 * DAY, now - 400 * DAY)
    await add_hour(engine, hour_of(clock, 400, 8), [10_000 + i for i in range(60)])
    rows = len(await outbox_ids(engine)), len(await snapshots(engine))
    settings = make_settings(
        database_url=engine.settings.database_url,
        outbox_retention_days=0,
        equity_snapshot_detail_days=0,
    )

    counts = await RetentionService(engine.db, settings, clock).run()

    assert counts == RetentionCounts()
    assert (len(await outbox_ids(engine)), len(await snapshots(engine))) == rows


async def test_the_retention_job_runs_hourly_on_the_scheduler(engine: Engine) -> None:
    job = build_scheduler(engine).get_job("retention")

    assert job is not None
    assert (
        job.trigger.interval == timedelta(seconds=RETENTION_INTERVAL_SECONDS) == timedelta(hours=1)
    )
    assert job.coalesce and job.max_instances == 1


async def test_a_delivered_daily_summary_still_stops_a_second_one_after_a_retention_pass(
    engine: Engine,
) -> None:
    assert await engine.reports.send_daily_summary()
    async with engine.db.session() as session:
        row = (await session.exec(select(OutboxRow).where(OutboxRow.kind == "daily_summary"))).one()
        row.delivered_at = row.created_at + timedelta(seconds=1)

    await engine.retention.run()

    assert not await engine.reports.send_daily_summary()


async def test_an_hour_between_two_crowded_ones_keeps_its_few_snapshots(
    engine: Engine, clock: Clock
) -> None:
    crowded = [10_000, 10_300, 10_100, 9_700, 10_010]  # one is thinned away (10_100)
    first = await add_hour(engine, hour_of(clock, 40, 12), crowded)
    between = await add_hour(engine, hour_of(clock, 40, 11), [10_000, 9_000, 11_000])
    last = await add_hour(engine, hour_of(clock, 40, 10), crowded)

    counts = await engine.retention.run()

    kept = {row.id for row in await snapshots(engine)}
    assert kept == (set(first) - {first[2]}) | set(between) | (set(last) - {last[2]})
    assert counts == RetentionCounts(outbox=0, snapshots=2, hours=2, more=False)
