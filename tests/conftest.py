"""Shared fixtures: settings, a database on SQLite and (where a server answers) PostgreSQL,
and a wired engine with a controllable clock.

PostgreSQL tests use ``SIGNALDESK_TEST_POSTGRES_URL`` (default: the local trust-auth
server, ``postgresql://postgres@127.0.0.1:5432/test``); each test gets a fresh database
created from it and dropped afterwards. Where no server answers, those tests are skipped
with the reason.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.app import Engine, build_engine
from core.config import Settings, load_settings

POSTGRES_URL = os.environ.get(
    "SIGNALDESK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
_postgres_state: dict[str, str | None] = {}


class Clock:
    """A settable UTC clock for services and the replay feed."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


async def _postgres_problem() -> str | None:
    """None when the test server answers, else why not."""
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (the postgres extra)"
    try:
        conn = await asyncpg.connect(_dsn(POSTGRES_URL), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"no PostgreSQL server answers at {POSTGRES_URL}: {exc}"
    await conn.close()
    return None


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _create_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_dsn(POSTGRES_URL), timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_dsn(POSTGRES_URL), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file in the test's temp dir, or a fresh PostgreSQL
    database (skipped with the reason when no server answers)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'signaldesk.db'}"
        return
    if "problem" not in _postgres_state:
        _postgres_state["problem"] = asyncio.run(_postgres_problem())
    if _postgres_state["problem"]:
        pytest.skip(_postgres_state["problem"])
    name = f"sd_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(name))
    base = POSTGRES_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
    asyncio.run(_drop_database(name))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file URL in the test's temp dir (for tests that need one backend)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'signaldesk.db'}"


@pytest.fixture
def clock() -> Clock:
    """A settable clock starting 2026-01-05 12:00 UTC."""
    return Clock()


@pytest.fixture
def make_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Build Settings isolated from the developer's environment and ``.env``; the replay
    is manual (FEED_SPEED=0) so prices only move on ``feed.step()``."""
    for name in list(os.environ):
        if name.lower() in Settings.model_fields:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"feed_speed": 0}
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
async def engine(database_url: str, make_settings: Any, clock: Clock) -> AsyncIterator[Engine]:
    """A migrated engine on ``database_url`` with the paper broker on the real replay."""
    built = await build_engine(make_settings(database_url=database_url), clock=clock)
    yield built
    await built.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """After a test that configured logging (at DEBUG, with secrets, onto the test's
    captured stderr, which closes after the test): forget the secrets and put structlog,
    the root logger and ``sys.excepthook`` back as they were before any configuration."""
    import logging
    import sys

    import structlog

    from core.logging import redactor

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    redactor.clear()
    structlog.reset_defaults()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    sys.excepthook = sys.__excepthook__
