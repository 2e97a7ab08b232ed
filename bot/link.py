"""How the bot is linked to Telegram: whether Telegram answers, and webhook mode.

:class:`TelegramLink` is an aiogram request middleware (``bot.session.middleware(link)``):
every Bot API call the bot makes (getMe, getUpdates, sends, edits) reports its outcome.
A network error or a 5xx (aiogram's ``TelegramNetworkError``, ``TelegramServerError``)
marks Telegram unreachable; any answer from Telegram, an error answer included (a 400 is
Telegram speaking), marks it reachable. Each change is logged once (``telegram.unreachable``
with the error, ``telegram.reachable`` with how long it was away), not each failed call.

The state is read by the deliverer (its backoff is cut short when Telegram comes back)
and is :attr:`bot.app.BotApp.telegram`, where a readiness probe can read it. Risk duties
never read it: they run whether or not Telegram answers.

Webhook mode (``TELEGRAM_WEBHOOK_URL``, see docs/operations.md): instead of long polling,
the bot registers ``<TELEGRAM_WEBHOOK_URL>/telegram`` with the Bot API's ``setWebhook`` and
a ``secret_token`` (:class:`WebhookMode`), and Telegram POSTs each update there, to the web
server on ``PORT``. :class:`TelegramUpdates` (aiogram's ``SimpleRequestHandler``) checks the
``X-Telegram-Bot-Api-Secret-Token`` header before anything else: a missing one is refused
with 401, a wrong one with 403, each logged (``telegram.update_refused``, without the
secret); an accepted update is handled before the answer, so an update whose handling
fails or is cut by a shutdown is sent again by Telegram.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from aiogram import Dispatcher
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramServerError
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from core.config import Settings
from core.domain import utcnow
from core.logging import redactor

if TYPE_CHECKING:
    from aiogram import Bot

__all__ = [
    "MAX_UPDATE_BYTES",
    "SECRET_HEADER",
    "TELEGRAM_PATH",
    "TelegramLink",
    "TelegramUpdates",
    "WebhookMode",
]

#: The path on ``PORT`` where Telegram POSTs updates in webhook mode.
TELEGRAM_PATH = "/telegram"
#: The largest update body ``/telegram`` reads, in bytes. The Bot API documents none; its
#: longest message, or a tap carrying a card of 4096 characters, is about 50 kB of JSON.
MAX_UPDATE_BYTES = 1 << 20
#: The header carrying ``setWebhook``'s ``secret_token`` on every webhook request (Bot API).
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name

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


@dataclass
class WebhookMode:
    """Webhook mode's registration and what it has seen (for the readiness probe).

    Attributes:
        url: the URL given to ``setWebhook``: ``TELEGRAM_WEBHOOK_URL`` + :data:`TELEGRAM_PATH`.
        secret: the ``secret_token`` (``TELEGRAM_WEBHOOK_SECRET``, else random per start);
            never logged, and registered with the log redaction.
        allowed_updates: the update types the dispatcher handles (as polling asks for).
        registered_at: when (UTC) ``setWebhook`` last succeeded; None before.
        last_update_at: when (UTC) the last update with the right secret arrived.
        refused: how many requests with a missing or wrong secret were refused.
    """

    url: str
    secret: str = field(repr=False)
    allowed_updates: list[str] = field(default_factory=list)
    registered_at: datetime | None = None
    last_update_at: datetime | None = None
    refused: int = 0

    @classmethod
    def from_settings(cls, settings: Settings, dispatcher: Dispatcher) -> WebhookMode | None:
        """Webhook mode for ``settings``, or None (long polling) without
        ``TELEGRAM_WEBHOOK_URL``. Without ``TELEGRAM_WEBHOOK_SECRET`` the secret is
        ``secrets.token_urlsafe(32)`` (43 characters of the Bot API's A-Z a-z 0-9 _ -)."""
        if settings.telegram_webhook_url is None:
            return None
        shared = settings.telegram_webhook_secret
        secret = shared.get_secret_value() if shared is not None else secrets.token_urlsafe(32)
        redactor.add([secret])
        return cls(
            url=settings.telegram_webhook_url + TELEGRAM_PATH,
            secret=secret,
            allowed_updates=dispatcher.resolve_used_update_types(),
        )


class TelegramUpdates(SimpleRequestHandler):
    """``POST /telegram``: aiogram's webhook handler behind a logged secret check (see the
    module docstring). Add it with ``app.router.add_post(TELEGRAM_PATH, handler.handle)``
    (not ``register``, whose shutdown hook would close the bot's session under the
    outbox deliverer)."""

    def __init__(self, dispatcher: Dispatcher, bot: Bot, mode: WebhookMode) -> None:
        super().__init__(dispatcher, bot, handle_in_background=False, secret_token=mode.secret)
        self.mode = mode

    async def handle(self, request: web.Request) -> web.Response:
        """Refuse a missing (401) or wrong (403) secret, else feed the update to the
        dispatcher and answer once it is handled."""
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.mode.secret.encode()):
            status, reason = (403, "wrong secret") if given else (401, "missing secret")
            self.mode.refused += 1
            log.warning(
                "telegram.update_refused", status=status, reason=reason, remote=request.remote
            )
            return web.json_response({"error": reason}, status=status)
        self.mode.last_update_at = utcnow()
        return await super().handle(request)
