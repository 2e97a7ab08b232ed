"""PostgreSQL connections: no round trip to check a pooled connection in steady use, and a
connection the server closed is replaced without an error reaching the caller."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection

from core.db import engine as engine_module
from core.db.engine import Database
from tests.support.duties import eventually

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgres"], indirect=True),
]


async def _pid(db: Database) -> int:
    async with db.session() as session:
        result = await session.exec(text("SELECT pg_backend_pid()"))  # type: ignore[call-overload]
        return int(result.scalar_one())


def _count_pings(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    pings: list[object] = []
    ping = AsyncAdapt_asyncpg_connection.ping
    monkeypatch.setattr(
        AsyncAdapt_asyncpg_connection, "ping", lambda self: pings.append(ping(self))
    )
    return pings


async def test_a_pooled_connection_in_use_costs_no_ping(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _count_pings(monkeypatch)
    db = Database(database_url)
    try:
        pids = {await _pid(db) for _ in range(5)}
    finally:
        await db.close()
    assert len(pids) == 1  # one connection, reused
    assert pings == []  # pool_pre_ping would have pinged it five times (3 round trips each)


async def test_a_connection_idle_too_long_is_pinged_first(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _count_pings(monkeypatch)
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", -1.0)  # always "too long"
    db = Database(database_url)
    try:
        pids = {await _pid(db) for _ in range(3)}
    finally:
        await db.close()
    assert len(pids) == 1
    assert len(pings) == 2  # not when it was new, then at each reuse


async def test_a_connection_the_server_terminated_is_replaced(database_url: str) -> None:
    db = Database(database_url)
    returned: list[Any] = []
    event.listen(db.engine.sync_engine.pool, "checkin", lambda dbapi, _: returned.append(dbapi))
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql", 1))
    try:
        victim = await _pid(db)
        await admin.execute("SELECT pg_terminate_backend($1)", victim)

        async def closed() -> bool:
            return bool(returned[-1].driver_connection.is_closed())

        await eventually(closed)
        assert await _pid(db) != victim  # no error: the pool connected anew
    finally:
        await admin.close()
        await db.close()


async def test_reads_reuse_a_kept_connection_without_checking_it_out_again(
    database_url: str,
) -> None:
    db = Database(database_url)
    checkouts: list[object] = []
    event.listen(db.engine.sync_engine.pool, "checkout", lambda *a: checkouts.append(a))
    try:
        rows = [await db.read_row(text("SELECT pg_backend_pid()")) for _ in range(5)]
    finally:
        await db.close()
    assert len({row[0] for row in rows if row is not None}) == 1
    assert len(checkouts) == 1  # was one checkout and one checkin per read


async def test_a_kept_read_connection_the_server_terminated_is_replaced(
    database_url: str,
) -> None:
    db = Database(database_url)
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql", 1))
    try:
        first = await db.read_row(text("SELECT pg_backend_pid()"))
        assert first is not None
        await admin.execute("SELECT pg_terminate_backend($1)", first[0])

        second = await db.read_row(text("SELECT pg_backend_pid()"))  # no error reaches us

        assert second is not None and second[0] != first[0]
    finally:
        await admin.close()
        await db.close()
