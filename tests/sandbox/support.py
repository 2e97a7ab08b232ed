"""Helpers shared by the sandbox tests: constants, a Bot factory and a polling runner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.utils.backoff import BackoffConfig

from bot.sandbox import SandboxServer

TOKEN = "123456789:sandbox-test-token"  # fake: the sandbox accepts any well-formed token
OWNER = 1001
OTHER = 1002
GROUP = -4001

# retry quickly after network errors so outage tests stay short
FAST_BACKOFF = BackoffConfig(min_delay=0.1, max_delay=0.3, factor=1.5, jitter=0.05)


def make_bot(sandbox: SandboxServer, token: str = TOKEN) -> Bot:
    """A real aiogram Bot wired to the sandbox exactly as the application does it."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(sandbox.base_url))
    return Bot(token, session=session)


async def close_bot(bot: Bot) -> None:
    """Close the bot's HTTP session without aiogram's fixed 250 ms TLS grace sleep.

    ``AiohttpSession.close()`` sleeps 0.25 s for TLS connections to wind down; the sandbox is
    plain HTTP, and that sleep would dominate the runtime of this test directory.
    """
    session = bot.session
    client = getattr(session, "_session", None)
    if client is not None and not client.closed:
        await client.close()


@contextlib.asynccontextmanager
async def polling(
    dp: Dispatcher, bot: Bot, sandbox: SandboxServer, **kwargs: object
) -> AsyncIterator[None]:
    """Run ``dp.start_polling`` (real getUpdates over HTTP) for the duration of the block."""
    task = asyncio.create_task(
        dp.start_polling(
            bot,
            handle_signals=False,
            close_bot_session=False,
            backoff_config=FAST_BACKOFF,
            **kwargs,  # type: ignore[arg-type]
        )
    )
    try:
        # the dispatcher is up once its getUpdates is held open by the sandbox
        await sandbox.wait_for(
            lambda s: s.waiting_polls > 0 or task.done(),
            description="the dispatcher's long poll",
        )
        if task.done():
            task.result()
        yield
    finally:
        if not task.done():
            await dp.stop_polling()
        await asyncio.wait_for(task, 5)
