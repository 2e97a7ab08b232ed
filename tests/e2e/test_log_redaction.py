"""No secret in any log line: a real bot run at DEBUG (structlog and the standard library,
aiogram, aiohttp, httpx, APScheduler, alembic) with a realistic token, a Bot API base that
answers with a redirect loop, then one with a typo, a dead man's switch ping URL carrying
its key, and a database URL with a password; every line written to stderr is searched."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.app import BotApp
from core.config import Settings
from core.errors import ConfigError
from core.logging import MASK, configure_logging
from tests.e2e.support import OWNER
from tests.support.tokens import fake_token

TOKEN = fake_token("LOGS")  # the shape @BotFather gives
PING_KEY = "5f1e2d3c-9a8b-4c7d-b6e5-f4a3b2c1d0e9"
PING_QUERY = "rid=ping-query-secret"
DB_PASSWORD = "pg-pass-7Hq2"


class Telegramish:
    """A tiny HTTP server: ``/loop/...`` redirects to itself forever, ``/typo/...`` is a
    404 page (a mistyped API base), ``/ping/...`` records dead man's switch pings."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {"loop": 0, "typo": 0, "ping": 0}
        app = web.Application()
        app.router.add_route("*", "/{kind}/{tail:.*}", self._any)
        self.server = TestServer(app, host="127.0.0.1")

    async def _any(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        self.hits[kind] = self.hits.get(kind, 0) + 1
        if kind == "loop":
            raise web.HTTPFound(str(request.url))
        if kind == "ping":
            return web.Response(text="OK")
        return web.Response(status=404, text="<html>Not Found</html>", content_type="text/html")

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def telegramish() -> AsyncIterator[Telegramish]:
    server = Telegramish()
    await server.server.start_server()
    yield server
    await server.server.close()


def _settings(tmp_path: Path, api_base: str, ping_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'desk.db'}",
        "feed_speed": 0,
        "telegram_bot_token": TOKEN,
        "telegram_api_base": api_base,
        "telegram_owner_ids": [OWNER],
        "heartbeat_ping_url": ping_url,
        "webhook_secret": "wh-secret-value-91",
        "log_level": "DEBUG",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def _run_until(app: BotApp, condition: Any, within: float = 20) -> None:
    """Run the bot until ``condition()`` holds (or the run ends by itself), then stop it."""
    run = asyncio.create_task(app.run(handle_signals=False))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition() and not run.done():
        assert loop.time() < deadline, "the condition never held"
        await asyncio.sleep(0.05)
    if not run.done():
        await app.stop()
    try:
        await asyncio.wait_for(run, 15)
    except Exception:  # the run may end with aiogram's error: logged, as __main__ would
        logging.getLogger("signaldesk").exception("bot run failed")
    finally:
        await app.bot.session.close()


async def test_no_secret_reaches_any_log_line_of_a_run_at_debug(
    tmp_path: Path,
    telegramish: Telegramish,
    capfd: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    ping_url = telegramish.url(f"/ping/{PING_KEY}?{PING_QUERY}")
    looping = _settings(tmp_path, telegramish.url("/loop"), ping_url)
    configure_logging("DEBUG", secrets=looping.secrets())
    log = structlog.get_logger("test")

    # 1. a redirect loop at the Bot API base: start-up, getMe and getUpdates all fail
    app = BotApp.from_settings(looping)
    await _run_until(app, lambda: telegramish.hits["loop"] >= 20)
    # 2. the dead man's switch pinged (httpx), with its key in the path and the query
    ready = BotApp.from_settings(_settings(tmp_path, telegramish.url("/typo"), ping_url))

    async def beat_then_poll() -> None:
        await ready.ready.wait()
        await ready.engine.heartbeat.beat()

    beating = asyncio.create_task(beat_then_poll())
    # 3. a typo in the base: a 404 page instead of the Bot API
    await _run_until(ready, lambda: telegramish.hits["typo"] >= 3 and beating.done())
    beating.cancel()
    # 4. a database URL with a password that does not answer, logged with its traceback
    broken = _settings(
        tmp_path,
        telegramish.url("/typo"),
        ping_url,
        database_url=f"postgresql://signaldesk:{DB_PASSWORD}@127.0.0.1:1/sd",
    )
    configure_logging("DEBUG", secrets=broken.secrets())
    from core.app import build_engine

    with pytest.raises(ConfigError) as refused:
        await build_engine(broken)
    log.error("start-up failed", error=str(refused.value), url=broken.database_url)
    logging.getLogger("stdlib").error("settings were %r", broken.database_url)
    log.debug("token", token=TOKEN, url=f"https://api.telegram.org/bot{TOKEN}/getMe")

    err = capfd.readouterr().err
    assert telegramish.hits["ping"] >= 1
    assert "TooManyRedirects" in err  # aiogram's errors with their URLs were logged
    assert "Content: <html>Not Found</html>" in err
    assert "DATABASE_URL: cannot connect to 127.0.0.1:1" in err
    assert err.count(MASK) >= 5
    secrets = [TOKEN, TOKEN.partition(":")[2], PING_KEY, PING_QUERY, DB_PASSWORD]
    secrets.append("wh-secret-value-91")
    leaked = [s for s in secrets if s in err]
    assert not leaked, [line for line in err.splitlines() if any(s in line for s in leaked)]
    assert "bot7212345678" not in err.replace(f"bot7212345678:{MASK}", "")
