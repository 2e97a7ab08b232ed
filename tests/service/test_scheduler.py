"""The scheduler's wiring, driven by moving APScheduler's clock with time-machine (it reads
``datetime.now``; asyncio's monotonic clock is left alone, so the loop runs normally) and
waking the scheduler up: heartbeats on schedule with their pings, job options, and job
errors alerted at most once per job per 10 minutes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from core.app import Engine
from core.db.models import OutboxRow
from core.errors import ConfigError
from core.notify import NoticeKind, Priority
from core.scheduler import SUMMARY_JOB, DutyScheduler, JobAlarm, build_scheduler
from core.services.reports import DailySummary
from tests.conftest import Clock
from tests.support.duties import Engines, alerts, eventually, outbox, ping_server

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
async def engines(make_settings: Callable[..., Any], clock: Clock) -> AsyncIterator[Engines]:
    factory = Engines(make_settings, clock)
    yield factory
    await factory.close_all()


@pytest.fixture
def traveller() -> Iterator[time_machine.Traveller]:
    """Wall time frozen at the test clock's start; ``shift()`` moves it."""
    with time_machine.travel(START, tick=False) as coordinates:
        yield coordinates


class Driver:
    """Moves the wall clock (APScheduler) and the services' clock together, once no job
    is running (a job still running when its next run is due is skipped, by design)."""

    def __init__(self, scheduler: DutyScheduler, traveller: Any, clock: Clock) -> None:
        self.scheduler, self._traveller, self._clock = scheduler, traveller, clock

    async def advance(self, seconds: float) -> None:
        await eventually(self._idle)
        self._traveller.shift(timedelta(seconds=seconds))
        self._clock.advance(seconds)
        self.scheduler.wakeup()

    async def _idle(self) -> bool:
        return not self.scheduler.busy


async def heartbeats(engine: Engine) -> list[datetime]:
    return [row.created_at for row in await outbox(engine) if row.text.startswith("💓")]


async def test_heartbeats_are_posted_on_schedule_and_ping_the_monitor(
    engines: Engines, database_url: str, clock: Clock, traveller: Any
) -> None:
    async with ping_server() as server:
        engine = await engines.start(database_url, heartbeat_ping_url=server.url)
        scheduler = build_scheduler(engine)
        scheduler.start()
        drive = Driver(scheduler, traveller, clock)
        try:
            await eventually(lambda: has(heartbeats(engine), 1))  # one at start-up
            await drive.advance(1800)  # half an interval: not due yet
            await drive.advance(1800)
            await eventually(lambda: has(heartbeats(engine), 2))
            await drive.advance(3600)
            await eventually(lambda: has(heartbeats(engine), 3))
            await drive.advance(3600)
            await eventually(lambda: has(heartbeats(engine), 4))
        finally:
            await scheduler.stop()

    times = await heartbeats(engine)
    assert times == [START + timedelta(hours=h) for h in range(4)]
    assert all(
        row.topic == "heartbeat" for row in await outbox(engine) if row.text.startswith("💓")
    )
    assert server.hits == ["/ping/token-5f1e"] * 4


async def has(rows: Awaitable[list[Any]], n: int) -> bool:
    return len(await rows) == n


async def test_a_failing_job_is_alerted_at_most_once_per_ten_minutes_and_recorded(
    engines: Engines, database_url: str, clock: Clock, traveller: Any, monkeypatch: Any
) -> None:
    engine = await engines.start(database_url, reconcile_interval=60)

    async def broken() -> None:
        raise RuntimeError("ledger unreadable")

    monkeypatch.setattr(engine.reconciler, "run", broken)
    scheduler = build_scheduler(engine)
    scheduler.start()
    drive = Driver(scheduler, traveller, clock)
    try:
        failed = "Scheduled job reconcile failed: RuntimeError: ledger unreadable"
        await eventually(lambda: has(alerts(engine, failed), 1))
        for _ in range(9):  # nine more failures within the next ten minutes: no new alert
            await drive.advance(60)
            await eventually(lambda: _health_at(engine, clock.now))
        assert len(await alerts(engine, failed)) == 1
        await drive.advance(60)
        await eventually(lambda: has(alerts(engine, failed), 2))
    finally:
        await scheduler.stop()

    assert engine.health.last_error is not None
    assert engine.health.last_error.source == "reconcile"
    rows = [r for r in await outbox(engine) if "reconcile failed" in r.text]
    assert {r.priority for r in rows} == {Priority.ALERT}


async def _health_at(engine: Engine, at: datetime) -> bool:
    return engine.health.last_error is not None and engine.health.last_error.at == at


async def test_a_missed_run_is_alerted_and_recorded(
    engines: Engines, database_url: str, clock: Clock
) -> None:
    engine = await engines.start(database_url)
    alarm = JobAlarm(engine.notifier, engine.health, clock)
    due = datetime(2026, 1, 5, 11, 0, tzinfo=UTC)

    alarm(JobExecutionEvent(EVENT_JOB_MISSED, "heartbeat", "default", due))
    alarm(JobExecutionEvent(EVENT_JOB_MISSED, "heartbeat", "default", due))
    await eventually(lambda: has(alerts(engine, "heartbeat missed"), 1))

    assert await alerts(engine, "heartbeat") == [
        "⚠️ Scheduled job heartbeat missed its run at 11:00:00 UTC"
    ]
    assert engine.health.last_error is not None
    assert engine.health.last_error.source == "heartbeat"


async def test_jobs_have_ids_coalesce_never_overlap_and_a_grace_time(
    engines: Engines, sqlite_url: str
) -> None:
    engine = await engines.start(
        sqlite_url, strategy="sma_cross", drawdown_check_interval=5, heartbeat_interval=600
    )

    scheduler = build_scheduler(engine)

    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {
        "heartbeat",
        "drawdown",
        "expiry",
        "reconcile",
        "exits",
        "symbols",
        "retention",
        "strategy:sma_cross",
    }
    assert jobs["exits"].trigger.interval == timedelta(seconds=10)  # EXIT_CHECK_INTERVAL
    assert all(job.coalesce and job.max_instances == 1 for job in jobs.values())
    assert jobs["heartbeat"].misfire_grace_time == 600
    assert jobs["drawdown"].misfire_grace_time == 10  # at least 10 s
    assert isinstance(jobs["strategy:sma_cross"].trigger, IntervalTrigger)
    assert jobs["strategy:sma_cross"].trigger.interval == timedelta(seconds=60)
    assert str(scheduler.timezone) == "UTC"


async def test_the_strategy_runs_on_a_cron_schedule_when_one_is_set(
    engines: Engines, sqlite_url: str
) -> None:
    engine = await engines.start(sqlite_url, strategy="sma_cross", strategy_cron="5 * * * *")

    job = build_scheduler(engine).get_job("strategy:sma_cross")

    assert job is not None and isinstance(job.trigger, CronTrigger)
    assert str(job.trigger) == "cron[month='*', day='*', day_of_week='*', hour='*', minute='5']"


async def test_no_strategy_job_without_a_strategy_and_a_bad_cron_stops_the_start(
    engines: Engines, sqlite_url: str
) -> None:
    plain = await engines.start(sqlite_url)
    assert not [j for j in build_scheduler(plain).get_jobs() if j.id.startswith("strategy")]

    with pytest.raises(ConfigError, match="STRATEGY_CRON"):
        await engines.start(sqlite_url, strategy="sma_cross", strategy_cron="every hour")


async def summaries(engine: Engine) -> list[OutboxRow]:
    return [row for row in await outbox(engine) if row.kind == NoticeKind.DAILY_SUMMARY.value]


async def test_the_daily_summary_is_sent_once_a_local_day_also_by_a_second_leader(
    engines: Engines, database_url: str, clock: Clock, traveller: Any
) -> None:
    # START is 12:00 UTC = 13:00 in Berlin (winter); the summary is due at 13:30 local
    engine = await engines.start(
        database_url, daily_summary_at="13:30", display_timezone="Europe/Berlin"
    )
    scheduler = build_scheduler(engine)
    job = scheduler.get_job(SUMMARY_JOB)
    assert job is not None and isinstance(job.trigger, CronTrigger)
    assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 3600)
    assert str(job.trigger.timezone) == "Europe/Berlin"
    scheduler.start()
    drive = Driver(scheduler, traveller, clock)
    try:
        await eventually(lambda: has(heartbeats(engine), 1))
        assert await summaries(engine) == []  # not at start-up
        await drive.advance(1800)  # 13:30 Berlin
        await eventually(lambda: has(summaries(engine), 1))
    finally:
        await scheduler.stop()
    # a restarted process, or the next leader, runs it again the same day: nothing new
    assert await engine.reports.send_daily_summary() is False
    [row] = await summaries(engine)
    summary = DailySummary.from_payload(row.payload)
    assert summary.day.isoformat() == "2026-01-05"
    assert (summary.zone, summary.stats.trades, summary.equity) == (
        "Europe/Berlin",
        0,
        Decimal(10000),
    )
    clock.advance(86400)  # the next local day gets its own
    assert await engine.reports.send_daily_summary() is True


async def test_no_summary_job_without_daily_summary_at(engines: Engines, sqlite_url: str) -> None:
    engine = await engines.start(sqlite_url)
    assert build_scheduler(engine).get_job(SUMMARY_JOB) is None
