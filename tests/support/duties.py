"""Helpers for the always-on duty tests: engines built with setting overrides on one
database (a "restart" is a second engine on the same URL), and outbox readers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlmodel import col, select

from core.app import Engine, build_engine
from core.config import DrawdownAction
from core.db.models import OutboxRow
from core.notify import NoticeKind, Priority
from core.services.risk import FlattenReport

BTC = "BTC/USDT"
#: Open time of the candle whose close is the replay's all-time high (126,011.18).
PEAK = "2025-10-06T18:00:00Z"
#: Settings of a guard that flattens on the crash after the peak (the daily loss limit out
#: of the way): ``engines.start(url, **FLATTEN_AT_PEAK)``.
FLATTEN_AT_PEAK: dict[str, Any] = {
    "feed_start": PEAK,
    "daily_loss_max_pct": 50,
    "drawdown_action": DrawdownAction.FLATTEN,
}


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
    """Texts of alert-priority rows containing ``containing``; typed rows worded as the
    deliverer words them (a flatten report by :func:`bot.render.flatten_text`)."""
    from bot.render import flatten_text  # the face words typed notifications

    texts = [
        flatten_text(FlattenReport.from_payload(row.payload))
        if row.kind == NoticeKind.FLATTEN_REPORT.value
        else row.text
        for row in await outbox(engine)
        if row.priority == Priority.ALERT
    ]
    return [text for text in texts if containing in text]


async def eventually(condition: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    """Poll ``condition`` every 20 ms until it holds; fail after ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {seconds}s")
        await asyncio.sleep(0.02)


@dataclass
class PingServer:
    """A local dead man's switch endpoint: records each request's path and answers
    ``status``."""

    url: str = ""
    hits: list[str] = field(default_factory=list)
    status: int = 200


@asynccontextmanager
async def ping_server() -> AsyncIterator[PingServer]:
    """An aiohttp server on 127.0.0.1 (a free port) whose URL carries a token, as
    healthchecks.io's do."""
    server = PingServer()

    async def handle(request: web.Request) -> web.Response:
        server.hits.append(request.path)
        return web.Response(status=server.status, text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}/ping/token-5f1e"
    try:
        yield server
    finally:
        await runner.cleanup()
