"""Async engine and sessions for SQLite (WAL) and PostgreSQL, and schema migration."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import sqlite3
import ssl
import subprocess
import sys
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import BindParameter, Row, event, literal
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql.expression import Executable
from sqlalchemy.util import await_only
from sqlmodel.ext.asyncio.session import AsyncSession

from core.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "SSL_MODES",
    "Database",
    "alembic_config",
    "connect_options",
    "migrations_dir",
    "sql_literal",
    "start_upgrade",
    "upgrade_schema",
]

_T = TypeVar("_T")

#: libpq's ``sslmode`` values (PostgreSQL manual, "SSL Mode Descriptions"); asyncpg's
#: ``connect(ssl=...)`` accepts the same names.
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def connect_options(url: str) -> tuple[URL, dict[str, Any]]:
    """Split a database URL as users get it into SQLAlchemy's URL and the driver's
    ``connect_args``.

    PostgreSQL providers (Render, Neon, Supabase) hand out libpq URLs with ``sslmode`` and
    ``sslrootcert`` query parameters, which asyncpg does not take as keywords. They are
    translated into asyncpg's ``ssl`` argument: the mode name itself, or, with
    ``sslrootcert`` and a verifying mode (``verify-ca``, ``verify-full``, and ``require``,
    which libpq treats as ``verify-ca`` when a root certificate is given), an
    :class:`ssl.SSLContext` trusting that file (``verify-ca`` does not check the host name).

    Raises:
        ConfigError: the URL cannot be parsed, or ``sslmode`` is not one of
            :data:`SSL_MODES`; the message names ``DATABASE_URL`` and never echoes the
            password.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "DATABASE_URL: not a database URL (postgresql://... or sqlite:///...)"
        ) from None
    if parsed.get_backend_name() != "postgresql":
        return parsed, {}
    query = dict(parsed.query)
    mode = query.pop("sslmode", None)
    root = query.pop("sslrootcert", None)
    if isinstance(mode, tuple) or isinstance(root, tuple):
        raise ConfigError("DATABASE_URL: sslmode and sslrootcert may be given once each")
    parsed = parsed.set(query=query)
    if mode is None:
        return parsed, {}
    if mode not in SSL_MODES:
        raise ConfigError(f"DATABASE_URL: sslmode={mode!r} is not one of {', '.join(SSL_MODES)}")
    if root and mode in ("require", "verify-ca", "verify-full"):
        context = ssl.create_default_context(cafile=root)
        context.check_hostname = mode == "verify-full"
        return parsed, {"ssl": context}
    return parsed, {"ssl": mode}


def sql_literal(value: str) -> BindParameter[str]:
    """``value`` written into the SQL when the statement runs (escaped as a string literal),
    not bound as a parameter: for a filter on a value that history makes rare or absent (an
    order resting or unresolved, a symbol never traded). PostgreSQL may plan a prepared
    statement once for all values after its fifth execution (a generic plan), and such a
    plan cannot know a bound value: against a history of FILLED orders it expects a bound
    state to match most rows, so it reads the whole table (or walks a whole index), and an
    EXISTS expects its first row at once and scans everything when none matches. With the
    value in the SQL, every plan sees how rare it is and uses the column's index. The
    statement is still compiled once (the value goes in at execution)."""
    return literal(value, literal_execute=True)


def migrations_dir() -> Path:
    """The alembic scripts: ``core/db/migrations`` inside an installed wheel (the build
    copies the repository's top-level ``migrations/`` there), else ``migrations/`` of the
    checkout this package runs from."""
    here = Path(__file__).resolve().parent
    packaged = here / "migrations"
    return packaged if packaged.is_dir() else here.parents[1] / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _one_hop(
    connection: sqlite3.Connection, operation: str, parameters: Any
) -> tuple[Any, list[Any], Any, int]:
    """In aiosqlite's worker thread (or inline, see :class:`_OneHopCursor`): run one
    statement on a fresh cursor and return its description, its rows, lastrowid and
    rowcount (-1 and -1 for a query, as the DBAPI says), the cursor closed."""
    cursor = connection.cursor()
    try:
        if parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        if cursor.description:
            return cursor.description, cursor.fetchall(), -1, -1
        return None, [], cursor.lastrowid, cursor.rowcount
    finally:
        cursor.close()


def _many_hop(connection: sqlite3.Connection, operation: str, parameters: Any) -> tuple[Any, int]:
    """:func:`_one_hop` for ``executemany`` (a write: no rows): lastrowid and rowcount."""
    cursor = connection.cursor()
    try:
        cursor.executemany(operation, parameters)
        return cursor.lastrowid, cursor.rowcount
    finally:
        cursor.close()


async def _inline(call: Callable[..., _T], *args: Any) -> _T:
    """``call(*args)`` on the event loop's own thread, as an awaitable that never suspends
    (SQLAlchemy's async connection requires each statement to await something; this
    await lets no other task run)."""
    return call(*args)


#: The aiosqlite connections whose open transaction has written (so holds SQLite's write
#: lock): their statements run inline (see :class:`_OneHopCursor`) until the commit or
#: rollback.
_WRITTEN: weakref.WeakSet[Any] = weakref.WeakSet()


class _OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """SQLAlchemy's aiosqlite cursor with each statement (and each ``executemany``) done
    in ONE call to the connection's worker thread, not four (open a cursor, execute,
    fetch, close): every call is a round trip through a queue and a thread wake-up, which
    on a busy machine waits for the scheduler. Same statement, same connection, same
    thread, same results. Uses aiosqlite's ``Connection._execute`` (queue a function for
    its thread), as aiosqlite's own methods do.

    A statement on a connection whose open transaction has written (its first write went
    through the worker thread, so it holds SQLite's write lock and this process's
    :class:`_SQLiteWriter` lock; a transaction only opened, by a SAVEPOINT, does not
    count) runs on the event loop's thread instead, with no round trip at all: in WAL
    mode nothing a transaction does after its first write waits for another connection,
    so the statement takes only its own time (microseconds for a row). Each round trip
    was a turn of the event loop in which other tasks ran while the write lock stayed
    held; at 16 concurrent approvals that stretched every write transaction to about
    three times its own length, and every other writer waited for it. The first write of
    a transaction (which may wait for another process's write lock, up to the busy
    timeout) and the commit (which may checkpoint the WAL) still go to the worker thread.
    The sqlite3 connection is opened with ``check_same_thread=False`` for this; it is
    still used by one thread at a time (the worker only runs what this connection's
    holder queued and awaits)."""

    __slots__ = ()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        """Run ``operation`` (see :func:`_one_hop`): in the worker thread, or inline in a
        write transaction."""
        try:
            done = self._run(_one_hop, operation, parameters)
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        self.description, rows, self.lastrowid, self.rowcount = done
        self._rows = deque(rows)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        """Run ``operation`` once per parameter set (see :func:`_many_hop`), in one call
        to the worker thread (SQLAlchemy's own made three) or inline in a write
        transaction."""
        try:
            done = self._run(_many_hop, operation, seq_of_parameters)
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        self.description = None
        self.lastrowid, self.rowcount = done
        self._rows = deque()

    def _run(
        self, hop: Callable[[sqlite3.Connection, str, Any], _T], operation: str, parameters: Any
    ) -> _T:
        """``hop(sqlite3 connection, operation, parameters)``: inline when the connection's
        transaction has written, else in its worker thread (and a write that goes through
        there marks the transaction as written)."""
        connection = self._connection
        sqlite = connection._conn
        if not sqlite.in_transaction:
            _WRITTEN.discard(connection)  # ended without our commit or rollback
        elif connection in _WRITTEN:
            return self.await_(_inline(hop, sqlite, operation, parameters))
        done = self.await_(connection._execute(hop, sqlite, operation, parameters))
        if sqlite.in_transaction and operation.lstrip()[:7].upper().startswith(_WRITES):
            _WRITTEN.add(connection)
        return done


class _OneHopConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection whose cursors are :class:`_OneHopCursor`, and
    whose ``commit`` and ``rollback`` make no call to the worker thread when no
    transaction is open. Python's sqlite3 does nothing then either (it sends COMMIT or
    ROLLBACK only while ``in_transaction``), but each call was still a round trip to the
    thread: a read-only session ended with two (the session's rollback, then the pool's
    reset on return) and a write with one after its commit."""

    __slots__ = ()

    def commit(self) -> None:
        """Commit, if a transaction is open."""
        _WRITTEN.discard(self._connection)
        if self._open():
            super().commit()

    def rollback(self) -> None:
        """Roll back, if a transaction is open."""
        _WRITTEN.discard(self._connection)
        if self._open():
            super().rollback()

    def _open(self) -> bool:
        """Whether sqlite3 holds a transaction open (a closed connection: True, so the
        call goes through and fails as it would have)."""
        try:
            return bool(self._connection.in_transaction)
        except sqlite3.Error:
            return True

    def cursor(self, server_side: bool = False) -> AsyncAdapt_aiosqlite_cursor:
        """A one-hop cursor (server-side cursors as SQLAlchemy makes them)."""
        if server_side:
            return super().cursor(server_side)
        return _OneHopCursor(self)


class _OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """SQLAlchemy's aiosqlite DBAPI whose connections are :class:`_OneHopConnection`."""

    def __init__(self) -> None:
        import aiosqlite

        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        """SQLAlchemy's connection, as a :class:`_OneHopConnection` (same slots)."""
        connection = super().connect(*arg, **kw)
        if type(connection) is AsyncAdapt_aiosqlite_connection:
            connection.__class__ = _OneHopConnection
        return connection


#: A pooled PostgreSQL connection idle for longer than this (seconds) is pinged before it
#: is used again; one used more recently is trusted unless asyncpg saw it close.
PING_AFTER_IDLE_SECONDS = 30.0


def _checked_in(_dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in"] = time.monotonic()


def _check_live(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Pool checkout (SQLAlchemy's "pessimistic disconnect handling, custom"): a
    connection asyncpg has seen closed (the server restarted, an admin terminated it) is
    replaced for free, and one idle for :data:`PING_AFTER_IDLE_SECONDS` is pinged first;
    ``pool_pre_ping`` would cost three round trips (BEGIN, ping, ROLLBACK) on every
    checkout. Raising DisconnectionError makes the pool discard it and connect anew."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed the connection")
    returned = record.info.get("checked_in")  # None: connected just now
    if returned is not None and time.monotonic() - returned > PING_AFTER_IDLE_SECONDS:
        try:
            dbapi_connection.ping()
        except Exception as exc:
            raise DisconnectionError(f"the idle connection is gone: {exc}") from exc


#: Idle read connections :meth:`Database.read_row` and :meth:`Database.read_rows` keep
#: open between reads (two per approval at the least: the gate's account, the drawdown
#: check's account and state).
READERS_KEPT = 2


#: How long (seconds) a SQLite write waits for this process's other writer, like the
#: busy timeout it replaces within the process.
WRITE_WAIT_SECONDS = 30.0

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class _SQLiteWriter:
    """One SQLite write transaction at a time in this process, queued on an asyncio lock.

    SQLite has one writer; Python's sqlite3 opens a transaction at its first write, and
    that write takes the database's write lock until the commit or rollback. Without this
    queue, the other connections of the pool that write meanwhile spin in SQLite's busy
    handler, which sleeps 1, 2, 5 ... 100 ms between retries in a worker thread: at 16
    concurrent approvals most of the time went to those sleeps. The lock is taken exactly
    where SQLite takes its own (before a connection's first write of a transaction, from
    inside SQLAlchemy's greenlet) and released when that transaction ends, so it orders
    the same writers in the same places, only without the sleeps; other processes on the
    same file still meet SQLite's busy timeout. Raises
    :class:`sqlalchemy.exc.OperationalError` ``database is locked`` after
    :data:`WRITE_WAIT_SECONDS`, as SQLite's busy timeout would."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    def install(self, engine: AsyncEngine) -> None:
        """Listen on ``engine``'s statements, and release after each commit or rollback
        has gone through (wrapping the engine's own dialect's ``do_commit`` and
        ``do_rollback``; SQLAlchemy's ``commit`` and ``rollback`` events come before the
        database's, so a writer woken there met SQLite's write lock still held by the
        commit in flight and slept in the busy handler, 1 ms or more, holding this lock:
        about once per approval at 16 concurrent approvals). Also released when a pooled
        connection is reset, closed or invalidated."""
        sync = engine.sync_engine
        event.listen(sync, "before_cursor_execute", self._before_execute)
        dialect = sync.dialect
        commit, rollback = dialect.do_commit, dialect.do_rollback

        def do_commit(dbapi_connection: Any) -> None:
            try:
                commit(dbapi_connection)
            finally:
                self._ended(dbapi_connection)

        def do_rollback(dbapi_connection: Any) -> None:
            try:
                rollback(dbapi_connection)
            finally:
                self._ended(dbapi_connection)

        dialect.do_commit = do_commit  # type: ignore[method-assign]
        dialect.do_rollback = do_rollback  # type: ignore[method-assign]
        event.listen(sync.pool, "reset", self._reset)
        event.listen(sync.pool, "close", self._closed)
        event.listen(sync.pool, "invalidate", self._invalidated)

    def _before_execute(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        info = conn.connection.info
        if info.get(_HOLDS) or not statement.lstrip()[:7].upper().startswith(_WRITES):
            return
        try:
            await_only(self._acquire())
        except TimeoutError:
            raise OperationalError(statement, None, Exception("database is locked")) from None
        info[_HOLDS] = True

    async def _acquire(self) -> None:
        """Take the lock, waiting at most :data:`WRITE_WAIT_SECONDS` (TimeoutError). A free
        lock is taken without a task or a turn of the event loop (``asyncio.wait_for``
        would wrap every acquisition in a task of its own)."""
        async with asyncio.timeout(WRITE_WAIT_SECONDS):
            await self._lock.acquire()

    def _ended(self, dbapi_connection: Any) -> None:
        """Release after the transaction of a pooled connection ended (the connection
        SQLAlchemy made for its first-connect checks has no ``info``, and never holds the
        lock)."""
        try:
            info = dbapi_connection.info
        except NotImplementedError:
            return
        self._release(info)

    def _reset(self, dbapi_connection: Any, connection_record: Any, reset_state: Any) -> None:
        self._release(connection_record.info)

    def _closed(self, dbapi_connection: Any, connection_record: Any) -> None:
        self._release(connection_record.info)

    def _invalidated(self, dbapi_connection: Any, connection_record: Any, exception: Any) -> None:
        self._release(connection_record.info)

    def _release(self, info: dict[str, Any]) -> None:
        if info.pop(_HOLDS, False):
            self._lock.release()


_HOLDS = "sqlite_write_lock"


class Database:
    """Owns the async engine and hands out sessions.

    SQLite runs in WAL mode with a 30 s busy timeout so concurrent writers queue instead
    of failing, and this process's own writers queue on an asyncio lock first
    (:class:`_SQLiteWriter`); PostgreSQL uses asyncpg, its pooled connections checked as
    :func:`_check_live` says (no round trip for a connection in steady use).
    ``session()`` is a context manager yielding an :class:`AsyncSession` that commits on
    success and rolls back on error.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        parsed, connect_args = connect_options(url)
        kwargs: dict[str, Any] = {"echo": echo}
        if parsed.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": 30}
            if parsed.get_driver_name() == "aiosqlite":
                kwargs["module"] = _OneHopDBAPI()  # statements in a write: on the loop thread
                kwargs["connect_args"]["check_same_thread"] = False
        else:
            kwargs["connect_args"] = connect_args
        self.engine: AsyncEngine = create_async_engine(parsed, **kwargs)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            _SQLiteWriter().install(self.engine)
        else:
            event.listen(self.engine.sync_engine.pool, "checkin", _checked_in)
            event.listen(self.engine.sync_engine.pool, "checkout", _check_live)
        self._sessions = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False
        )
        reads = self.engine
        if self.engine.dialect.name == "postgresql":
            reads = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read_engine = reads
        self._reads = async_sessionmaker(reads, class_=AsyncSession, expire_on_commit=False)
        #: idle read connections kept open (:meth:`_read`), with when each was last used
        self._readers: list[tuple[AsyncConnection, float]] = []
        self._closes: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commit on success, roll back on any exception."""
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for reads that need no common snapshot and no lock (each statement
        sees what is committed when it runs): on PostgreSQL in autocommit, which saves
        the BEGIN and COMMIT round trips; on SQLite an ordinary session (a read there
        opens no transaction). Never write in it."""
        async with self._reads() as session:
            yield session

    async def read_row(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Row[Any] | None:
        """The first row of one read ``statement`` (a Core query; None when it finds
        nothing), run on a kept read connection (:meth:`_read`) with no session around
        it: what :meth:`reading` does for one statement, without building a session (the
        drawdown check after every fill reads one row this way). Never write with it."""
        rows = await self._read(statement, params)
        return rows[0] if rows else None

    async def read_rows(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """Every row of one read ``statement``, as :meth:`read_row` reads one (the paper
        venue's account and positions, twice per approval). Never write with it."""
        return await self._read(statement, params)

    async def _read(
        self, statement: Executable, params: Mapping[str, Any] | None
    ) -> Sequence[Row[Any]]:
        """The rows of one read ``statement``, run on a read connection that stays open
        between reads: checking a connection out of the pool and back in costs more than
        the statement (about 370 of 550 Python calls on PostgreSQL). At most
        :data:`READERS_KEPT` idle ones are kept, each for at most
        :data:`PING_AFTER_IDLE_SECONDS` (an older one is closed, and the pool pings the
        next one as usual); a kept connection the server has dropped meanwhile fails with
        a disconnect, and the read is run again once on a connection from the pool. A
        connection whose read failed or was cancelled is closed, never kept."""
        kept = self._kept_reader()
        if kept is not None:
            try:
                return await self._read_on(kept, statement, params)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
        return await self._read_on(await self._read_engine.connect(), statement, params)

    def _kept_reader(self) -> AsyncConnection | None:
        """An idle kept read connection last used within :data:`PING_AFTER_IDLE_SECONDS`
        (older ones are closed, back to the pool), or None."""
        now = time.monotonic()
        while self._readers:
            connection, used = self._readers.pop()
            if now - used <= PING_AFTER_IDLE_SECONDS and not connection.invalidated:
                return connection
            self._closing(connection)
        return None

    async def _read_on(
        self,
        connection: AsyncConnection,
        statement: Executable,
        params: Mapping[str, Any] | None,
    ) -> Sequence[Row[Any]]:
        """``statement``'s rows on ``connection``, which is then kept (up to
        :data:`READERS_KEPT`) or closed: at once, so a caller waiting for the pool gets it
        now (many reads at a time: ``close_all``); in a task of its own after a failure or
        a cancellation."""
        try:
            rows = (await connection.execute(statement, params)).all()
        except BaseException:
            self._closing(connection)
            raise
        if len(self._readers) < READERS_KEPT and not self._closed:
            self._readers.append((connection, time.monotonic()))
        else:
            await connection.close()
        return rows

    def _closing(self, connection: AsyncConnection) -> None:
        """Close ``connection`` (back to the pool) in a task of its own, so a cancelled
        caller cannot leave it half closed."""
        task = asyncio.get_running_loop().create_task(connection.close())
        self._closes.add(task)
        task.add_done_callback(self._closes.discard)

    async def close(self) -> None:
        """Close the kept read connections and dispose of the connection pool."""
        self._closed = True
        while self._readers:
            self._closing(self._readers.pop()[0])
        await asyncio.gather(*self._closes, return_exceptions=True)
        await self.engine.dispose()


def alembic_config(url: str) -> Config:
    """An alembic configuration for ``url`` that needs no ``alembic.ini``, so migrations run
    from any directory and from an installed wheel. The caller's logging is left alone."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("path_separator", "os")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["embedded"] = True
    return config


async def upgrade_schema(url: str) -> None:
    """Run ``alembic upgrade head`` on ``url`` (idempotent), in a worker thread because
    alembic's env.py runs its own event loop. Every entry point runs it at start-up, so it
    is also the check that the database answers.

    Raises:
        ConfigError: ``DATABASE_URL: cannot connect to host:port (reason)`` when the
            server does not answer, refuses the login or has no such database, or the
            SQLite file cannot be opened; the password is never shown.
    """
    _check_sqlite_file(url)
    if await _at_head(url):
        return  # alembic (slow to import) has nothing to do
    from alembic import command

    try:
        await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
    except (OSError, TimeoutError, DBAPIError) as exc:
        raise _unreachable(url, exc) from None
    except Exception as exc:
        if type(exc).__module__.startswith("asyncpg"):  # refused login, no such database
            raise _unreachable(url, exc) from None
        raise


def start_upgrade(url: str) -> subprocess.Popen[bytes] | None:
    """Start :func:`upgrade_schema` of ``url`` in a child Python process and return it
    (None when the schema is at head already: nothing to start). Call it outside an event
    loop, before slow imports: the migrations then run on another core while the caller
    imports, and alembic (about 13 MiB and half a second of imports) stays out of the
    caller's memory. The URL goes to the child on its stdin, never on its command line.

    The child is only a head start: its output is discarded. The caller waits for it
    (``.wait()``): exit status 0 means the schema is at head; any other, the caller
    upgrades as usual (``build_engine`` does), which runs alembic itself and raises what
    :func:`upgrade_schema` raises (a database that does not answer, a failed migration).
    """
    if asyncio.run(_at_head(url)):
        return None
    child = subprocess.Popen(  # noqa: S603 - this Python, a fixed program, the URL on stdin
        [sys.executable, "-c", _UPGRADE_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert child.stdin is not None
    with child.stdin:
        child.stdin.write(url.encode())
    return child


#: What :func:`start_upgrade`'s child runs: ``upgrade_schema`` of the URL on its stdin.
_UPGRADE_CHILD = (
    "import asyncio, sys\n"
    "from core.db.engine import upgrade_schema\n"
    "asyncio.run(upgrade_schema(sys.stdin.read()))\n"
)


_REVISION_LINE = re.compile(r"^(revision|down_revision)\b[^=\n]*=\s*(.+)$", re.MULTILINE)


def _script_head() -> str | None:
    """The one head revision of the migration scripts, read from their ``revision`` and
    ``down_revision`` lines without importing alembic; None unless exactly one head is
    found (then alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (migrations_dir() / "versions").glob("*.py"):
        found = dict(_REVISION_LINE.findall(script.read_text(encoding="utf-8")))
        try:
            revision = ast.literal_eval(found["revision"])
            parent = ast.literal_eval(found["down_revision"])
        except (KeyError, ValueError, SyntaxError):
            return None
        revisions.add(revision)
        parents.update(parent if isinstance(parent, (tuple, list)) else [parent])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


async def _at_head(url: str) -> bool:
    """True when ``url``'s ``alembic_version`` holds exactly the scripts' head; any doubt
    (no such table, an error, several heads) is False and alembic runs."""
    head = _script_head()
    if head is None:
        return False
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            rows = (await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).all()
    except Exception:  # alembic reports what is wrong
        return False
    finally:
        await db.close()
    return [row[0] for row in rows] == [head]


def _check_sqlite_file(url: str) -> None:
    """A SQLite file's folder must exist and be writable (checked up front: aiosqlite's
    worker thread prints a traceback of its own when the open fails inside alembic)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    folder = Path(parsed.database).resolve().parent
    if not folder.is_dir():
        raise _unreachable(url, FileNotFoundError(0, f"no folder {folder}"))
    if not os.access(folder, os.W_OK):
        raise _unreachable(url, PermissionError(0, f"folder {folder} is not writable"))


def _unreachable(url: str, exc: BaseException) -> ConfigError:
    """``DATABASE_URL: cannot connect to host:port (reason)``, the password masked."""
    from core.config import database_location
    from core.logging import redactor

    cause = getattr(exc, "orig", None) or exc
    reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
    return ConfigError(
        f"DATABASE_URL: cannot connect to {database_location(url)} ({redactor(str(reason))})"
    )
