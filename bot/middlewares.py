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
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import timedelta
from typing import Any

import structlog
from aiogram import BaseMiddleware
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Message, TelegramObject, Update, User

from bot import render
from core.app import Engine
from core.domain import utcnow
from core.notify import NoticeKind, Notification, Priority, Topic

__all__ = ["MAX_TALLIED", "OwnerOnly", "StaleCommands"]

log = structlog.get_logger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


def _is_command(message: Message) -> bool:
    return bool(message.text and message.text.startswith("/"))


#: Strangers tallied one by one per notice period; beyond that only counted.
MAX_TALLIED = 100


class OwnerOnly(BaseMiddleware):
    """Lets an update through only when its sender (aiogram's ``event_from_user``) is an
    owner. Updates without a sender (channel posts) are dropped too.

    A stranger's button press is answered "Not allowed" (every callback query must be
    answered); a stranger's command in a private chat gets the same one-line reply, in a
    group nothing. Each attempt is logged and tallied; the owners get one notice per
    ``notice_every`` seconds (counted from the first attempt of the period) through the
    outbox, at :attr:`~core.notify.Priority.NOTICE` priority: a flood of strangers is one
    message, delivered after every card and alert. Group chatter (plain text) is ignored
    silently.

    Args:
        owner_ids: the owners' Telegram user ids.
        notice_every: seconds over which attempts are collected into one notice.
    """

    def __init__(self, owner_ids: frozenset[int], *, notice_every: float = 60.0) -> None:
        self._owners = owner_ids
        self.notice_every = notice_every
        self._tallies: dict[int | None, render.StrangerTally] = {}
        self._untallied: set[int | None] = set()
        self._engine: Engine | None = None
        self._timer: asyncio.Task[None] | None = None

    @property
    def attempts(self) -> int:
        """Attempts tallied since the last notice (strangers beyond :data:`MAX_TALLIED`
        not included)."""
        return sum(t.attempts for t in self._tallies.values())

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
            self._tally(data.get("engine"), user, chat_id, attempt)
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

    def _tally(
        self, engine: Engine | None, user: User | None, chat_id: int | None, attempt: str
    ) -> None:
        if engine is None:
            return
        self._engine = engine
        key = user.id if user else None
        known = self._tallies.get(key)
        if known is not None:
            self._tallies[key] = render.StrangerTally(user, chat_id, known.attempts + 1, attempt)
        elif len(self._tallies) < MAX_TALLIED:
            self._tallies[key] = render.StrangerTally(user, chat_id, 1, attempt)
        else:
            self._untallied.add(key)
        if self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(self._notice_later(), name="stranger-notice")

    async def _notice_later(self) -> None:
        await asyncio.sleep(self.notice_every)
        try:
            await self.flush()
        except Exception:  # the outbox is down: the attempts stay tallied for the next one
            log.exception("auth.notice_not_queued")

    async def flush(self) -> None:
        """Queue the notice about the strangers tallied so far (nothing if none); the
        period's timer calls it, and so does the bot's shutdown.

        Raises:
            Exception: whatever the outbox raises; the tallies are then kept.
        """
        if not self._tallies or self._engine is None:
            return
        tallies = list(self._tallies.values())
        text = render.strangers_notice(tallies, len(self._untallied))
        await self._engine.notifier.notify(
            Notification(NoticeKind.TEXT, text, priority=Priority.NOTICE, topic=Topic.WARNING)
        )
        self._tallies.clear()
        self._untallied.clear()

    async def close(self) -> None:
        """Stop the period's timer and queue what was tallied (the bot is shutting down;
        the engine is still open)."""
        if self._timer is not None and not self._timer.done():
            self._timer.cancel()
            with suppress(asyncio.CancelledError):
                await self._timer
        with suppress(Exception):  # shutting down: the log line of the refusal remains
            await self.flush()


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
        await engine.notifier.notify(Notification(NoticeKind.TEXT, text, topic=Topic.WARNING))
