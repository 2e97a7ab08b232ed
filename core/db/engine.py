"""Async engine and sessions for SQLite (WAL) and PostgreSQL, and schema migration."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from core.errors import ConfigError

__all__ = ["ALEMBIC_INI", "Database", "upgrade_schema"]

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Database:
    """Owns the async engine and hands out sessions.

    SQLite runs in WAL mode with a 30 s busy timeout so concurrent writers queue instead
    of failing; PostgreSQL uses asyncpg. ``session()`` is a context manager yielding an
    :class:`AsyncSession` that commits on success and rolls back on error.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"echo": echo}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commit on success, roll back on any exception."""
        async with self._sessions() as session, session.begin():
            yield session

    async def close(self) -> None:
        """Dispose of the connection pool."""
        await self.engine.dispose()


async def upgrade_schema(url: str) -> None:
    """Run ``alembic upgrade head`` on ``url`` (idempotent), in a worker thread because
    alembic's env.py runs its own event loop. Every entry point runs it at start-up, so it
    is also the check that the database answers.

    Raises:
        ConfigError: ``DATABASE_URL: cannot connect to host:port (reason)`` when the
            server does not answer, refuses the login or has no such database, or the
            SQLite file cannot be opened; the password is never shown.
    """
    from alembic import command
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI))
    config.attributes["embedded"] = True
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    _check_sqlite_file(url)
    try:
        await asyncio.to_thread(command.upgrade, config, "head")
    except (OSError, TimeoutError, DBAPIError) as exc:
        raise _unreachable(url, exc) from None
    except Exception as exc:
        if type(exc).__module__.startswith("asyncpg"):  # refused login, no such database
            raise _unreachable(url, exc) from None
        raise


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
