"""The in-process SQLite writer queue: a write waits for this process's other writer and
gives up with SQLite's own "database is locked" when the wait runs out; a free lock is
taken at once, whatever the wait allowed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from core.db import engine as engine_module
from core.db.engine import Database


@pytest.fixture
async def db(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Database]:
    """A SQLite database with a table ``t (x)`` whose writers may not wait at all."""
    database = Database(sqlite_url)
    async with database.session() as session:
        await session.exec(text("CREATE TABLE t (x INTEGER)"))  # type: ignore[call-overload]
    monkeypatch.setattr(engine_module, "WRITE_WAIT_SECONDS", 0)
    yield database
    await database.close()


async def _insert(db: Database, x: int) -> None:
    async with db.session() as session:
        await session.exec(text(f"INSERT INTO t VALUES ({x})"))  # type: ignore[call-overload]


async def _xs(db: Database) -> list[int]:
    async with db.reading() as session:
        rows = (await session.exec(text("SELECT x FROM t ORDER BY x"))).all()  # type: ignore[call-overload]
    return [row[0] for row in rows]


async def test_a_write_with_the_lock_free_needs_no_wait(db: Database) -> None:
    await _insert(db, 1)

    assert await _xs(db) == [1]


async def test_a_write_gives_up_as_locked_while_another_writes_then_goes_through(
    db: Database,
) -> None:
    async with db.session() as holder:
        await holder.exec(text("INSERT INTO t VALUES (1)"))  # type: ignore[call-overload]
        with pytest.raises(OperationalError, match="database is locked"):
            await _insert(db, 2)
    await _insert(db, 3)  # the holder committed: the lock is free again

    assert await _xs(db) == [1, 3]
