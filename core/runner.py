"""The headless engine (``signaldesk engine``): the always-on duties without Telegram.

:func:`run_engine` builds the engine, competes for the duties (:class:`core.leader.Leadership`;
once leading, the scheduler's first runs are the start-up reconciliation, a drawdown check
and a heartbeat; see :mod:`core.scheduler`),
serves the webhook on ``$PORT`` when ``PORT`` is set, and runs until SIGINT or SIGTERM.
Messages it produces wait in the outbox until a bot process delivers them.
"""

from __future__ import annotations

import asyncio
import signal

import structlog
from aiohttp import web

from core.app import build_engine
from core.config import Settings
from core.leader import Leadership
from core.scheduler import build_scheduler
from core.webhook import start_webhook

__all__ = ["run_engine"]

log = structlog.get_logger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def run_engine(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run the duties (and the webhook when ``PORT`` is set) until SIGINT/SIGTERM or until
    ``stop`` is set, then shut down in order: webhook, scheduler, engine.

    Raises:
        ConfigError: a setting cannot be served (``PORT 8080 is in use``, ...).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    engine = await build_engine(settings)
    leadership = Leadership(engine.db, lambda: build_scheduler(engine))
    site: web.AppRunner | None = None
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        await leadership.start()
        if settings.port is not None:
            site = await start_webhook(engine, settings.port)
        log.info(
            "engine running",
            broker=engine.broker.name,
            leader=leadership.leader,
            webhook=settings.port is not None,
        )
        await stop.wait()
        log.info("engine stopping")
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        if site is not None:
            await site.cleanup()
        await leadership.stop()
        await engine.close()
