"""Authorization and the stale-command guard, as aiogram outer middlewares.

:class:`OwnerOnly` sits on the dispatcher's ``update`` observer, so every update type
(messages, button presses, and anything else Telegram may send) passes it before any
filter or handler runs: deny by default. Only users in ``TELEGRAM_OWNER_IDS`` get through;
in a group chat shared with others, only the owners' commands and presses count.

:class:`StaleCommands` sits on the ``message`` observer behind it: a command older than
``COMMAND_MAX_AGE_SECONDS`` (sent while the bot was down, delivered now by ``getUpdates``)
is not executed, and the owners get one message saying how many were skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import structlog
from aiogram import BaseMiddleware
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Message, TelegramObject, Update, User

from bot import render
from core.app import Engine
from core.domain import utcnow
from core.notify import NoticeKind, Notification, Priority

__all__ = ["OwnerOnly", "StaleCommands"]

log = structlog.get_logger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


def _is_command(message: Message) -> bool:
    return bool(message.text and message.text.startswith("/"))


class OwnerOnly(BaseMiddleware):
    """Lets an update through only when its sender (aiogram's ``event_from_user``) is an
    owner. Updates without a sender (channel posts) are dropped too.

    A stranger's button press is answered "Not allowed" (every callback query must be
    answered); a stranger's command in a private chat gets the same one-line reply, in a
    group nothing. Each attempt is logged, and the owners are alerted through the outbox,
    at most once per stranger every ``alert_every`` seconds. Group chatter (plain text) is
    ignored silently.

    Args:
        owner_ids: the owners' Telegram user ids.
        alert_every: seconds between two alerts about the same stranger.
    """

    def __init__(self, owner_ids: frozenset[int], *, alert_every: float = 600.0) -> None:
        self._owners = owner_ids
        self._alert_every = alert_every
        self._alerted: dict[int | None, float] = {}

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        if user is not None and user.id in self._owners:
            return await handler(event, data)
        assert isinstance(event, Update)
        attempt = await self._refuse(event)
        if attempt:
            chat = data.get("event_chat")
            chat_id = chat.id if chat is not None else None
            log.warning(
                "auth.refused",
                user_id=user.id if user else None,
                username=user.username if user else None,
                chat_id=chat_id,
                update_type=event.event_type,
                attempt=attempt,
            )
            await self._alert(data.get("engine"), user, chat_id, attempt)
        return None

    async def _refuse(self, update: Update) -> str:
        """Answer the stranger briefly; return what was attempted ("" for chatter)."""
        try:
            if update.callback_query is not None:
                await update.callback_query.answer(render.refusal())
                return f"pressed a button ({update.callback_query.data})"
            message = update.message
            if message is not None and _is_command(message):
                if message.chat.type == "private":
                    await message.answer(render.refusal())
                return f"sent {(message.text or '').split()[0]}"
        except TelegramAPIError as exc:
            log.info("auth.refusal_not_sent", error=exc.message)
        return ""

    async def _alert(
        self, engine: Engine | None, user: User | None, chat_id: int | None, attempt: str
    ) -> None:
        key = user.id if user else None
        now = time.monotonic()
        last = self._alerted.get(key)
        if engine is None or (last is not None and now - last < self._alert_every):
            return
        self._alerted[key] = now
        text = render.stranger_notice(user, chat_id, attempt)
        await engine.notifier.notify(Notification(NoticeKind.TEXT, text, priority=Priority.ALERT))


class StaleCommands(BaseMiddleware):
    """Skips commands older than ``max_age_seconds`` (by the message's Telegram ``date``).

    The skipped commands are collected for ``settle`` seconds (a restart delivers the
    backlog in one ``getUpdates`` answer), then the owners get one message through the
    outbox listing them.
    """

    def __init__(self, max_age_seconds: int, *, settle: float = 1.0) -> None:
        self._max_age = timedelta(seconds=max_age_seconds)
        self._max_age_seconds = max_age_seconds
        self._settle = settle
        self._skipped: list[str] = []
        self._report: asyncio.Task[None] | None = None

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Message)
        if not _is_command(event) or utcnow() - event.date <= self._max_age:
            return await handler(event, data)
        command = (event.text or "").split()[0]
        log.info("command.stale_skipped", command=command, sent_at=event.date.isoformat())
        self._skipped.append(command)
        if self._report is None or self._report.done():
            self._report = asyncio.create_task(self._send_report(data["engine"]))
        return None

    async def _send_report(self, engine: Engine) -> None:
        await asyncio.sleep(self._settle)
        skipped, self._skipped = self._skipped, []
        text = render.stale_notice(skipped, self._max_age_seconds)
        await engine.notifier.notify(Notification(NoticeKind.TEXT, text))
