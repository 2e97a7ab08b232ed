"""The Telegram face's composition root: settings -> engine -> Bot and Dispatcher.

:class:`BotApp` is what ``python -m bot``, the demo, the e2e tests and the benchmarks all
run, so they share one code path. Its dispatcher's start-up hook builds the engine, wires
the outbox deliverer to the notifier, starts the deliverer, the always-on duties
(:mod:`core.scheduler`: heartbeat, drawdown guard, expiry, reconciliation, strategy) and,
when ``PORT`` is set, the webhook; its shutdown hook stops them in reverse order and closes
the engine; aiogram's ``start_polling`` closes the bot's HTTP session after that. So one
``python -m bot`` process is a whole SignalDesk; do not run ``signaldesk engine`` beside
it on the same database (two heartbeats, two guards). Services reach handlers through the
dispatcher's workflow data: ``engine``, ``cards``, ``settings``, ``started_at`` (the
``time.monotonic()`` of start-up).

Long polling goes to Telegram, or to ``TELEGRAM_API_BASE`` when set (a self-hosted Bot API
server, or the sandbox). The token is only ever handed to aiogram; nothing logs it.
"""

from __future__ import annotations

import asyncio
import gc
import time
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field

import structlog
from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramAPIError
from aiogram.methods import (
    AnswerCallbackQuery,
    DeleteWebhook,
    EditMessageText,
    GetMe,
    GetUpdates,
    SendMessage,
    SetMyCommands,
)
from aiogram.methods.base import Response
from aiogram.types import ErrorEvent, Message

from bot import render
from bot.delivery import Cards, DeliveryPolicy, OutboxDeliverer
from bot.handlers import get_routers
from bot.middlewares import OwnerOnly, StaleCommands
from core.app import Engine, build_engine
from core.config import Settings
from core.errors import ConfigError, SignalDeskError
from core.notify import OutboxNotifier
from core.scheduler import build_scheduler
from core.webhook import start_webhook

__all__ = ["BotApp", "check_settings"]

log = structlog.get_logger(__name__)

UNSET_BOT = (
    "TELEGRAM_BOT_TOKEN is not set: set it to your bot's token from @BotFather, "
    "or run `make demo` to try SignalDesk on the local sandbox"
)
UNSET_OWNERS = (
    "TELEGRAM_OWNER_IDS is not set: the bot refuses to start without owners "
    "(your Telegram user id, e.g. TELEGRAM_OWNER_IDS=123456789)"
)


def check_settings(settings: Settings) -> None:
    """Refuse settings the bot cannot run on: no token, or no owners (deny by default:
    a bot without owners would answer nobody, or worse, anybody).

    Raises:
        ConfigError: one line saying what to set.
    """
    if settings.telegram_bot_token is None:
        raise ConfigError(UNSET_BOT)
    if not settings.owner_ids:
        raise ConfigError(UNSET_OWNERS)


def _pin_response_models() -> tuple[type, ...]:
    """aiogram validates each Bot API answer as ``Response[T]``, and pydantic caches such
    parametrized models only weakly: once collected, the next call rebuilds the class and
    its validator (3-8 ms of CPU each, on every getUpdates and every send). Strong
    references to the answers of the methods this bot calls keep them built."""
    methods = (
        GetMe, GetUpdates, DeleteWebhook, SetMyCommands, SendMessage, EditMessageText,
        AnswerCallbackQuery,
    )  # fmt: skip
    # a runtime parametrization, which mypy reads as a type expression
    return tuple(Response[method.__returning__] for method in methods)  # type: ignore[name-defined]


_RESPONSE_MODELS = _pin_response_models()


def _create_bot(settings: Settings) -> Bot:
    assert settings.telegram_bot_token is not None
    base = settings.telegram_api_base
    session = AiohttpSession(api=TelegramAPIServer.from_base(base)) if base else AiohttpSession()
    return Bot(
        settings.telegram_bot_token.get_secret_value(),
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )


async def _on_error(event: ErrorEvent) -> None:
    """A handler failed: a SignalDeskError is answered with its one line, anything else
    with a generic line and logged with its traceback."""
    error = event.exception
    if isinstance(error, SignalDeskError):
        log.info("update.refused", error=str(error))
        text = render.error_line(error)
    else:
        log.error("update.failed", update_id=event.update.update_id, exc_info=error)
        text = render.internal_error()
    query = event.update.callback_query
    message = event.update.message or (query.message if query is not None else None)
    if isinstance(message, Message):
        with suppress(TelegramAPIError):
            await message.answer(text)


@dataclass
class BotApp:
    """The bot, its dispatcher and their lifecycle.

    Use :meth:`from_settings`, then ``await app.run()`` (returns when polling stops: SIGINT,
    SIGTERM or :meth:`stop`). ``ready`` is set once the start-up hook has run; from then on
    :attr:`engine` and :attr:`deliverer` are available.
    """

    settings: Settings
    bot: Bot
    dispatcher: Dispatcher
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    @classmethod
    def from_settings(cls, settings: Settings, policy: DeliveryPolicy | None = None) -> BotApp:
        """Wire the bot for ``settings`` (nothing is started yet).

        Raises:
            ConfigError: see :func:`check_settings`.
        """
        check_settings(settings)
        dispatcher = Dispatcher(disable_fsm=True, settings=settings)  # no conversations here
        dispatcher.update.outer_middleware(OwnerOnly(settings.owner_ids))
        dispatcher.message.outer_middleware(StaleCommands(settings.command_max_age_seconds))
        dispatcher.include_routers(*get_routers())
        dispatcher.errors.register(_on_error)
        app = cls(settings, _create_bot(settings), dispatcher, policy or DeliveryPolicy())
        dispatcher.startup.register(app._startup)
        dispatcher.shutdown.register(app._shutdown)
        return app

    @property
    def engine(self) -> Engine:
        """The running engine (after start-up)."""
        engine: Engine = self.dispatcher["engine"]
        return engine

    @property
    def deliverer(self) -> OutboxDeliverer:
        """The running outbox deliverer (after start-up)."""
        deliverer: OutboxDeliverer = self.dispatcher["deliverer"]
        return deliverer

    async def run(self, *, handle_signals: bool = True) -> None:
        """Long-poll until stopped; start-up and shutdown hooks run around it."""
        await self.dispatcher.start_polling(self.bot, handle_signals=handle_signals)

    async def stop(self) -> None:
        """Stop polling; :meth:`run` returns after the shutdown hook."""
        await self.dispatcher.stop_polling()

    async def _startup(self, dispatcher: Dispatcher, bot: Bot) -> None:
        """Build and start everything; on failure, undo what was started and re-raise."""
        settings = self.settings
        chat_id = settings.card_chat_id
        assert chat_id is not None  # check_settings: there are owners
        async with AsyncExitStack() as stack:
            engine = await build_engine(settings)
            stack.push_async_callback(engine.close)
            cards = Cards(engine)
            deliverer = OutboxDeliverer(bot, engine, cards, chat_id, self.policy)
            if isinstance(engine.notifier, OutboxNotifier):
                engine.notifier.on_enqueue = deliverer.wake
            dispatcher.workflow_data.update(
                engine=engine, cards=cards, deliverer=deliverer, started_at=time.monotonic()
            )
            try:
                await bot.delete_webhook()  # getUpdates answers 409 while a webhook is set
                await bot.set_my_commands(render.bot_commands())
            except TelegramAPIError as exc:  # polling retries the connection; the menu can wait
                log.warning("bot.setup_incomplete", error=exc.message)
            delivering = asyncio.create_task(deliverer.run(), name="outbox-deliverer")
            stack.push_async_callback(_cancel, delivering)
            scheduler = build_scheduler(engine)
            scheduler.start()
            stack.push_async_callback(scheduler.stop)
            if settings.port is not None:
                webhook = await start_webhook(engine, settings.port)
                stack.push_async_callback(webhook.cleanup)
            self._stack = stack.pop_all()
        log.info(
            "bot.started",
            api=settings.telegram_api_base or "https://api.telegram.org",
            card_chat=chat_id,
            owners=len(settings.owner_ids),
            database=engine.db.dialect,
            broker=engine.broker.name,
            jobs=[job.id for job in scheduler.get_jobs()],
            webhook=settings.port,
        )
        # aiogram's models and the engine are ~240k long-lived objects: a full collection
        # scanning them takes ~140 ms (a tap that meets one waits); frozen, it takes ~0
        gc.collect()
        gc.freeze()
        self.ready.set()

    async def _shutdown(self, dispatcher: Dispatcher) -> None:
        """Webhook, duties and deliverer stop, then the engine closes."""
        self.ready.clear()
        await self._stack.aclose()
        dispatcher.workflow_data.pop("engine", None)
        log.info("bot.stopped")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
