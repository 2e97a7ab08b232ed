"""The in-process SQLite writer queue: a write waits for this process's other writer and
gives up with SQLite's own "database is locked" when the wait runs out; a free lock is
taken at once, whatever the wait allowed."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from core.db import engine as engine_module
from core.db.engine import Database


async def _table(db: Database) -> None:
    async with db.session() as session:
        await session.exec(text("CREATE TABLE t (x INTEGER)"))  # type: ignore[call-overload]


async def test_a_write_with_the_lock_free_needs_no_wait(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(sqlite_url)
    try:
        await _table(db)
        monkeypatch.setattr(engine_module, "WRITE_WAIT_SECONDS", 0)
        async with db.session() as session:
            await session.exec(text("INSERT INTO t VALUES (1)"))  # type: ignore[call-overload]
        async with db.reading() as session:
            rows = (await session.exec(text("SELECT x FROM t"))).all()  # type: ignore[call-overload]
        assert [row[0] for row in rows] == [1]
    finally:
        await db.close()


async def test_a_write_gives_up_as_locked_while_another_writes_then_goes_through(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(sqlite_url)
    try:
        await _table(db)
        monkeypatch.setattr(engine_module, "WRITE_WAIT_SECONDS", 0)
        async with db.session() as holder:
            await holder.exec(text("INSERT INTO t VALUES (1)"))  # type: ignore[call-overload]
            with pytest.raises(OperationalError, match="database is locked"):
                async with db.session() as other:
                    await other.exec(text("INSERT INTO t VALUES (2)"))  # type: ignore[call-overload]
        async with db.session() as other:  # the holder committed: the lock is free again
            await other.exec(text("INSERT INTO t VALUES (3)"))  # type: ignore[call-overload]
        async with db.reading() as session:
            rows = (await session.exec(text("SELECT x FROM t ORDER BY x"))).all()  # type: ignore[call-overload]
        assert [row[0] for row in rows] == [1, 3]
    finally:
        await db.close()
