"""The in-process SQLite writer queue: a write waits for this process's other writer and
gives up with SQLite's own "database is locked" when the wait runs out; a free lock is
taken at once, whatever the wait allowed. And the calls to aiosqlite's worker thread: one
per statement outside a write transaction (inside one, after its first write, none), plus a
commit or rollback only while a transaction is open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiosqlite
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


@pytest.fixture
def thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions queued to aiosqlite's worker threads from now on."""
    calls: list[str] = []
    queue = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kw: Any) -> Any:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await queue(self, fn, *args, **kw)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return calls


async def test_a_read_is_one_call_to_the_thread_and_a_write_adds_only_its_commit(
    db: Database, thread_calls: list[str]
) -> None:
    await _xs(db)
    read = list(thread_calls)
    thread_calls.clear()
    await _insert(db, 1)

    assert read == ["_one_hop"]  # no rollback of a transaction that never opened
    assert thread_calls == ["_one_hop", "commit"]  # no reset-on-return rollback after it


async def test_a_write_that_fails_is_rolled_back(db: Database, thread_calls: list[str]) -> None:
    with pytest.raises(RuntimeError):
        async with db.session() as session:
            await session.exec(text("INSERT INTO t VALUES (1)"))  # type: ignore[call-overload]
            raise RuntimeError("after the write")

    assert "rollback" in thread_calls
    assert await _xs(db) == []
    await _insert(db, 2)  # the write lock was given back
    assert await _xs(db) == [2]


async def test_statements_after_a_transactions_first_write_make_no_call_to_the_thread(
    db: Database, thread_calls: list[str]
) -> None:
    async with db.session() as session:
        await session.exec(text("INSERT INTO t VALUES (1)"))  # type: ignore[call-overload]
        await session.exec(text("INSERT INTO t VALUES (2)"))  # type: ignore[call-overload]
        seen = (await session.exec(text("SELECT count(*) FROM t"))).one()  # type: ignore[call-overload]
        await session.exec(text("UPDATE t SET x = x + 10 WHERE x = 2"))  # type: ignore[call-overload]

    assert seen[0] == 2  # the transaction reads its own writes
    assert thread_calls == ["_one_hop", "commit"]  # the first write and the commit only
    assert await _xs(db) == [1, 12]


async def test_a_failed_statement_inside_a_write_rolls_the_whole_transaction_back(
    db: Database, thread_calls: list[str]
) -> None:
    with pytest.raises(OperationalError, match="no such table"):
        async with db.session() as session:
            await session.exec(text("INSERT INTO t VALUES (1)"))  # type: ignore[call-overload]
            await session.exec(text("INSERT INTO missing VALUES (2)"))  # type: ignore[call-overload]

    assert thread_calls == ["_one_hop", "rollback"]
    assert await _xs(db) == []
    await _insert(db, 3)  # the write lock was given back
    assert await _xs(db) == [3]


async def test_a_multi_row_write_is_one_call_to_the_thread_and_none_inside_a_write(
    db: Database, thread_calls: list[str]
) -> None:
    insert = text("INSERT INTO t VALUES (:x)")
    async with db.session() as session:
        await session.exec(insert, params=[{"x": 1}, {"x": 2}])  # type: ignore[call-overload]
        await session.exec(insert, params=[{"x": 3}, {"x": 4}])  # type: ignore[call-overload]

    assert thread_calls == ["_many_hop", "commit"]
    assert await _xs(db) == [1, 2, 3, 4]


async def test_a_queued_writer_starts_only_after_the_holders_commit_went_through(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's busy handler is off (a write meeting its lock fails at once) and every
    commit takes 50 ms in the worker thread: the writer queued behind a commit must not
    start while that commit is still in flight."""
    pragmas = engine_module._sqlite_pragmas

    def no_busy_wait(dbapi_connection: Any, record: Any) -> None:
        pragmas(dbapi_connection, record)
        dbapi_connection.cursor().execute("PRAGMA busy_timeout=0")

    monkeypatch.setattr(engine_module, "_sqlite_pragmas", no_busy_wait)
    commit = aiosqlite.Connection.commit

    async def slow_commit(self: aiosqlite.Connection) -> None:
        await asyncio.sleep(0.05)
        await commit(self)

    monkeypatch.setattr(aiosqlite.Connection, "commit", slow_commit)
    db = Database(sqlite_url)
    try:
        async with db.session() as session:
            await session.exec(text("CREATE TABLE t (x INTEGER)"))  # type: ignore[call-overload]

        await asyncio.gather(*(_insert(db, x) for x in range(4)))

        assert await _xs(db) == [0, 1, 2, 3]
    finally:
        await db.close()


async def test_a_transaction_opened_by_a_savepoint_sends_its_first_write_to_the_thread(
    db: Database, thread_calls: list[str]
) -> None:
    """A SAVEPOINT opens a transaction without SQLite's write lock: the first write after it
    may still wait for another process, so it is not run on the event loop's thread."""
    async with db.session() as session, session.begin_nested():
        await session.exec(text("INSERT INTO t VALUES (1)"))  # type: ignore[call-overload]
        await session.exec(text("INSERT INTO t VALUES (2)"))  # type: ignore[call-overload]

    # SAVEPOINT, the first INSERT; then the second INSERT and the RELEASE inline (which
    # commits: the session's commit finds nothing open)
    assert thread_calls == ["_one_hop", "_one_hop"]
    assert await _xs(db) == [1, 2]
