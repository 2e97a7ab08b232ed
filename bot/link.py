"""Whether Telegram answers: one state for the whole Telegram face.

:class:`TelegramLink` is an aiogram request middleware (``bot.session.middleware(link)``):
every Bot API call the bot makes (getMe, getUpdates, sends, edits) reports its outcome.
A network error or a 5xx (aiogram's ``TelegramNetworkError``, ``TelegramServerError``)
marks Telegram unreachable; any answer from Telegram, an error answer included (a 400 is
Telegram speaking), marks it reachable. Each change is logged once (``telegram.unreachable``
with the error, ``telegram.reachable`` with how long it was away), not each failed call.

The state is read by the deliverer (its backoff is cut short when Telegram comes back)
and is :attr:`bot.app.BotApp.telegram`, where a readiness probe can read it. Risk duties
never read it: they run whether or not Telegram answers.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramServerError
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response, TelegramType

from core.domain import utcnow

if TYPE_CHECKING:
    from aiogram import Bot

__all__ = ["TelegramLink"]

log = structlog.get_logger(__name__)


class TelegramLink(BaseRequestMiddleware):
    """The reachability of the Bot API, as the bot's own calls see it.

    Attributes:
        reachable: ``None`` until the first call answers or fails, then whether the last
            call reached Telegram.
        since: when (UTC) :attr:`reachable` last changed.
        last_error: the error of the last failed call ("" before any).
        failures: network/5xx failures since Telegram last answered.
    """

    def __init__(self) -> None:
        self.reachable: bool | None = None
        self.since: datetime | None = None
        self.last_error = ""
        self.failures = 0
        self._back = asyncio.Event()

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        try:
            response = await make_request(bot, method)
        except (TelegramNetworkError, TelegramServerError) as exc:
            self.mark_unreachable(f"{type(method).__name__}: {exc.message}")
            raise
        except TelegramAPIError:  # an error answer: Telegram is there
            self.mark_reachable()
            raise
        self.mark_reachable()
        return response

    def mark_reachable(self) -> None:
        """Telegram answered; log the return if it had been away."""
        self.failures = 0
        if self.reachable is True:
            return
        now = utcnow()
        if self.reachable is False and self.since is not None:
            log.info("telegram.reachable", away_seconds=round((now - self.since).total_seconds()))
        else:
            log.info("telegram.reachable")
        self.reachable, self.since = True, now
        self._back.set()

    def mark_unreachable(self, error: str) -> None:
        """A call did not reach Telegram (or Telegram failed); log the first of a run."""
        self.failures += 1
        self.last_error = error
        if self.reachable is False:
            return
        log.warning("telegram.unreachable", error=error)
        self.reachable, self.since = False, utcnow()
        self._back.clear()

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if Telegram comes back meanwhile (a caller backing
        off from an outage retries at once when polling sees Telegram again)."""
        if self.reachable is not False:
            await asyncio.sleep(seconds)
            return
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):  # unlike 3.11's wait_for, never eats a cancel
                await self._back.wait()
