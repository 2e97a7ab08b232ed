"""One leader for the duties: SQLite leads alone; on PostgreSQL the advisory lock elects one
process and another takes over when the leader's connection dies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC

import pytest
from sqlalchemy import text

from core.db.engine import Database, upgrade_schema
from core.leader import LOCK_KEY, Leadership
from core.scheduler import DutyScheduler


def _scheduler() -> DutyScheduler:
    return DutyScheduler(timezone=UTC)


async def _until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if condition():
                return
            await asyncio.sleep(0.05)


async def test_sqlite_is_one_process_and_leads_at_once(sqlite_url: str) -> None:
    await upgrade_schema(sqlite_url)
    db = Database(sqlite_url)
    leadership = Leadership(db, _scheduler)
    try:
        await leadership.start()
        assert leadership.single_process
        assert leadership.leader and leadership.scheduler is not None
        assert leadership.scheduler.running
    finally:
        await leadership.stop()
        await db.close()
    assert not leadership.leader and leadership.scheduler is None


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.postgres
async def test_one_postgres_leader_and_a_takeover_when_its_connection_dies(
    database_url: str,
) -> None:
    dbs = [Database(database_url) for _ in range(3)]
    first, second = (Leadership(db, _scheduler, retry_every=0.2) for db in dbs[:2])
    try:
        await first.start()
        await second.start()
        assert first.leader and first.scheduler is not None
        assert not second.leader and second.scheduler is None
        await asyncio.sleep(0.6)  # a few of the follower's attempts: the lock stays taken
        assert first.leader and not second.leader

        # the leader's session dies (as when its process is killed): the server drops its lock
        async with dbs[2].engine.connect() as conn:
            killed = await conn.scalar(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database()) "
                    "AND ((classid::bigint << 32) | objid::bigint) = :key"
                ),
                {"key": LOCK_KEY},
            )
        assert killed
        await _until(lambda: second.leader)
        await _until(lambda: not first.leader)  # the old leader stops its duties too
        assert second.scheduler is not None and first.scheduler is None
        assert second.elections == 1
    finally:
        for leadership in (first, second):
            await leadership.stop()
        for db in dbs:
            await db.close()
