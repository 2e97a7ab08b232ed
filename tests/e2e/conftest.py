"""Fixtures: ``start_desk(**settings)`` runs the sandbox and the real bot on a temp SQLite
file, and stops both after the test. Every desk of a test uses the same database file, so
``await desk.stop()`` then ``start_desk(sandbox=desk.sandbox)`` is a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import BotApp
from bot.delivery import DeliveryPolicy
from bot.sandbox import SandboxServer
from tests.e2e.support import (
    FAST,
    GROUP,
    OWNER,
    STRANGER,
    TOKEN,
    Desk,
    free_port,
    test_settings,
)

StartDesk = Callable[..., Awaitable[Desk]]


@pytest.fixture
async def start_desk(tmp_path: Path) -> AsyncIterator[StartDesk]:
    """``await start_desk(group=False, policy=FAST, rate_limits=False, sandbox=None,
    **settings)``.

    ``group=True`` makes the card chat a group shared by the owner and a stranger.
    ``sandbox`` runs the new bot on that (running) sandbox, as a restarted bot meets the
    same Telegram; stop the previous bot first. ``telegram_up=False``: the sandbox is
    unreachable, so only wait until the bot's start-up hook has run (its duties run).
    ``webhook=True``: webhook mode on a free ``PORT`` (``TELEGRAM_WEBHOOK_URL`` is
    ``http://127.0.0.1:PORT``); ready once the sandbox holds the bot's webhook.
    """
    running: list[Desk] = []

    async def start(
        *,
        group: bool = False,
        policy: DeliveryPolicy = FAST,
        rate_limits: bool = False,
        sandbox: SandboxServer | None = None,
        telegram_up: bool = True,
        webhook: bool = False,
        **overrides: Any,
    ) -> Desk:
        if sandbox is None:
            sandbox = SandboxServer(TOKEN, enforce_rate_limits=rate_limits, web_user_id=OWNER)
            sandbox.add_user(OWNER, "Ada", "ada")
            sandbox.add_user(STRANGER, "Mallory", "mallory")
            if group:
                sandbox.add_group(GROUP, "Trading desk", [OWNER, STRANGER])
            await sandbox.start()
        if group:
            overrides.setdefault("telegram_chat_id", GROUP)
        if webhook:
            overrides.setdefault("port", free_port())
            overrides.setdefault("telegram_webhook_url", f"http://127.0.0.1:{overrides['port']}")
        app = BotApp.from_settings(test_settings(tmp_path, sandbox.base_url, **overrides), policy)
        chat = app.settings.card_chat_id
        assert chat is not None
        moved = sandbox.chats[chat].migrated_to_chat_id if chat in sandbox.chats else None
        chat = moved or chat  # the bot knows its group became a supergroup
        earlier = sandbox.messages(chat) if chat in sandbox.chats else []
        after = earlier[-1].message_id if earlier else 0  # a restart: its own heartbeat
        task = asyncio.create_task(app.run(handle_signals=False))
        desk = Desk(sandbox, app, task)
        running.append(desk)
        if not telegram_up:
            await sandbox.wait_for(
                lambda _: app.ready.is_set() or task.done(), description="the start-up"
            )
            if task.done():
                task.result()
            return desk
        await sandbox.wait_for(
            lambda s: (
                (app.ready.is_set() and (s.webhook if webhook else s.waiting_polls > 0))
                or task.done()
            ),
            10,
            description="the bot's webhook" if webhook else "the bot's long poll",
        )
        if task.done():
            task.result()
        # the duties start with a heartbeat: let it pass so replies are not confused with it
        await sandbox.wait_for_message(chat, contains="SignalDesk alive", after_message_id=after)
        return desk

    yield start
    for desk in running:
        if not desk.task.done():
            await desk.app.stop()
        await asyncio.wait_for(desk.task, 10)
        await desk.sandbox.stop()
