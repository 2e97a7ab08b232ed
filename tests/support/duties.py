"""Helpers for the always-on duty tests: engines built with setting overrides on one
database (a "restart" is a second engine on the same URL), and outbox readers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlmodel import col, select

from core.app import Engine, build_engine
from core.db.models import OutboxRow
from core.notify import Priority

BTC = "BTC/USDT"
#: Open time of the candle whose close is the replay's all-time high (126,011.18).
PEAK = "2025-10-06T18:00:00Z"


class Engines:
    """Builds engines on the test's clock and closes them all at teardown."""

    def __init__(self, make_settings: Callable[..., Any], clock: Callable[[], Any]) -> None:
        self._make_settings = make_settings
        self._clock = clock
        self._open: list[Engine] = []

    async def start(self, database_url: str, **overrides: Any) -> Engine:
        """A migrated engine on ``database_url`` with ``overrides`` applied to settings."""
        settings = self._make_settings(database_url=database_url, **overrides)
        engine = await build_engine(settings, clock=self._clock)
        self._open.append(engine)
        return engine

    async def stop(self, engine: Engine) -> None:
        """Close ``engine`` (a process exit, for restart tests)."""
        self._open.remove(engine)
        await engine.close()

    async def close_all(self) -> None:
        for engine in self._open:
            await engine.close()
        self._open.clear()


async def outbox(engine: Engine) -> list[OutboxRow]:
    """Every outbox row, oldest first."""
    async with engine.db.session() as session:
        return list((await session.exec(select(OutboxRow).order_by(col(OutboxRow.id)))).all())


async def alerts(engine: Engine, containing: str = "") -> list[str]:
    """Texts of alert-priority rows containing ``containing``."""
    return [
        row.text
        for row in await outbox(engine)
        if row.priority == Priority.ALERT and containing in row.text
    ]
