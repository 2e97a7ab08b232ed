"""The job-failure throttle during a database outage: an alert counts as sent only once
its outbox row is written, so failures while the outbox cannot be written are alerted once
the database is back (one alert per job), and the quiet period starts from that alert."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from apscheduler.events import EVENT_JOB_ERROR, JobExecutionEvent
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from core.app import Engine
from core.scheduler import JobAlarm
from tests.conftest import Clock
from tests.support.duties import alerts, eventually

DUE = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


async def _rename(engine: Engine, old: str, new: str) -> None:
    async with engine.db.session() as session:
        await session.exec(text(f"ALTER TABLE {old} RENAME TO {new}"))  # type: ignore[call-overload]


def _failure(job_id: str, number: int) -> JobExecutionEvent:
    error = OperationalError("SELECT 1", {}, Exception(f"connection refused #{number}"))
    return JobExecutionEvent(EVENT_JOB_ERROR, job_id, "default", DUE, exception=error)


async def test_failures_during_a_database_outage_are_alerted_once_the_database_is_back(
    engine: Engine, clock: Clock, logs: list[MutableMapping[str, Any]]
) -> None:
    alarm = JobAlarm(engine.notifier, engine.health, clock, retry_every=0.05)
    await _rename(engine, "outbox", "outbox_away")  # the outbox cannot be written

    for number in range(18):  # the drawdown check fails every second for 18 s
        alarm(_failure("drawdown", number))
        clock.advance(1)
    alarm(_failure("reconcile", 0))
    await eventually(
        lambda: _has(logs, "job alert could not be queued", 2)  # both tried, both failed
    )
    await _rename(engine, "outbox_away", "outbox")

    await eventually(lambda: _alerted(engine, "drawdown", 1))
    await eventually(lambda: _alerted(engine, "reconcile", 1))
    texts = await alerts(engine, "Scheduled job drawdown")
    assert texts == [
        "⚠️ Scheduled job drawdown failed: OperationalError: (builtins.Exception) "
        "connection refused #17\n[SQL: SELECT 1]\n(Background on this error at: "
        "https://sqlalche.me/e/20/e3q8)"
    ]  # one alert, with the latest failure
    assert _has_now(logs, "job alert could not be queued", 2)  # one line per job, no flood

    # the quiet period starts when the alert was written: more failures stay quiet...
    alarm(_failure("drawdown", 18))
    clock.advance(599)
    alarm(_failure("drawdown", 19))
    # ...until it has passed
    clock.advance(1)
    alarm(_failure("drawdown", 20))
    await eventually(lambda: _alerted(engine, "drawdown", 2))
    assert "#20" in (await alerts(engine, "Scheduled job drawdown"))[-1]


def _has_now(logs: list[MutableMapping[str, Any]], event: str, n: int) -> bool:
    return sum(entry["event"] == event for entry in logs) == n


async def _has(logs: list[MutableMapping[str, Any]], event: str, n: int) -> bool:
    return _has_now(logs, event, n)


async def _alerted(engine: Engine, job_id: str, n: int) -> bool:
    return len(await alerts(engine, f"Scheduled job {job_id} failed")) == n
