"""The Telegram face's composition root: settings -> engine -> Bot and Dispatcher.

:class:`BotApp` is what ``python -m bot``, the demo, the e2e tests and the benchmarks all
run, so they share one code path. Its dispatcher's start-up hook builds the engine, wires
the outbox deliverer to the notifier, starts the deliverer, the always-on duties
(:mod:`core.scheduler`: heartbeat, drawdown guard, expiry, reconciliation, strategy) and,
when ``PORT`` is set, the webhook, all without a single call to Telegram (the duties run only
in the process that leads them, :class:`core.leader.Leadership`); its shutdown hook
stops them in reverse order and closes the engine; aiogram's ``start_polling`` closes the
bot's HTTP session after that.

Telegram may be unreachable at start-up and at any time after: polling's first call
(aiogram's ``bot.me()``) is retried with aiogram's backoff until ``getMe`` and
``deleteWebhook`` succeed (then the command menu is set), and failed ``getUpdates`` are
retried by aiogram; meanwhile the duties run and their messages wait in the outbox, which
is delivered once Telegram answers. :attr:`BotApp.telegram` (:class:`bot.link.TelegramLink`)
says whether Telegram answers, and the outage is logged once when it starts and once
when it ends (aiogram's per-attempt polling lines are filtered out). So one
``python -m bot`` process is a whole SignalDesk; on PostgreSQL more processes (bots and
``signaldesk engine``) may share the database: each delivers the outbox (rows claimed with
``FOR UPDATE SKIP LOCKED``) and one of them, elected, runs the duties. Services reach
handlers through the dispatcher's workflow data: ``engine``, ``cards``, ``settings``,
``started_at`` (the ``time.monotonic()`` of start-up).

Long polling goes to Telegram, or to ``TELEGRAM_API_BASE`` when set (a self-hosted Bot API
server, or the sandbox). The token is only ever handed to aiogram; nothing logs it.

With ``TELEGRAM_WEBHOOK_URL`` the bot runs in webhook mode instead (:mod:`bot.link`): the
start-up hook adds ``POST /telegram`` to the web server on ``PORT`` (beside ``/webhook``
and ``/healthz``), then ``getMe`` and ``setWebhook`` are retried with the same backoff
until Telegram answers, and Telegram pushes the updates. Shutdown leaves the webhook set:
other processes behind the same load balancer may be serving it, and Telegram keeps the
updates of a restart until the webhook answers again (long polling deletes it at start).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field

import structlog
from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.middlewares.base import NextRequestMiddlewareType
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
    SetWebhook,
)
from aiogram.methods.base import Response, TelegramMethod, TelegramType
from aiogram.types import ErrorEvent, Message, User
from aiogram.utils.backoff import Backoff, BackoffConfig
from aiohttp import web

from bot import render
from bot.chart import warm_up
from bot.delivery import Cards, DeliveryPolicy, OutboxDeliverer, resolve_chat
from bot.handlers import get_routers
from bot.health import Metrics, start_health
from bot.link import (
    MAX_UPDATE_BYTES,
    TELEGRAM_PATH,
    TelegramLink,
    TelegramUpdates,
    WebhookMode,
)
from bot.middlewares import OwnerOnly, StaleCommands
from bot.preflight import check_settings
from bot.priority import Taps
from core.app import Engine, build_engine
from core.config import Settings
from core.domain import utcnow
from core.errors import SignalDeskError
from core.leader import Leadership
from core.notify import OutboxNotifier
from core.scheduler import DutyScheduler, build_scheduler
from core.webhook import start_webhook

__all__ = ["BotApp", "check_settings"]

log = structlog.get_logger(__name__)


def _pin_response_models() -> tuple[type, ...]:
    """aiogram validates each Bot API answer as ``Response[T]``, and pydantic caches such
    parametrized models only weakly: once collected, the next call rebuilds the class and
    its validator (3-8 ms of CPU each, on every getUpdates and every send). Strong
    references to the answers of the methods this bot calls keep them built."""
    methods = (
        GetMe, GetUpdates, DeleteWebhook, SetWebhook, SetMyCommands, SendMessage,
        EditMessageText, AnswerCallbackQuery,
    )  # fmt: skip
    # a runtime parametrization, which mypy reads as a type expression
    return tuple(Response[method.__returning__] for method in methods)  # type: ignore[name-defined]


_RESPONSE_MODELS = _pin_response_models()


#: aiogram's polling backoff (its default): 1 s growing by 1.3 up to 5 s. ``getMe`` at
#: start-up is retried on the same schedule.
CONNECT_BACKOFF = BackoffConfig(min_delay=1.0, max_delay=5.0, factor=1.3, jitter=0.1)


class _PatientBot(Bot):
    """A ``Bot`` whose :meth:`me` (aiogram's polling calls it once before the first
    ``getUpdates``, and lets its error end polling; webhook mode calls it after start-up)
    waits for Telegram instead of failing: ``getMe`` and ``deleteWebhook`` (polling) or
    ``setWebhook`` (webhook mode) are retried with backoff until both succeed, then the
    command menu is set (a failure there is logged; the menu can wait)."""

    link: TelegramLink
    webhook: WebhookMode | None = None

    async def me(self) -> User:
        """The bot's ``User``, once Telegram has answered (cached)."""
        if self._me is None:
            self._me = await self._connect()
        return self._me

    async def _connect(self) -> User:
        backoff = Backoff(CONNECT_BACKOFF)
        refused = ""
        while True:
            try:
                user = await self.get_me()
                await self._take_updates()
                break
            except TelegramAPIError as exc:
                # an outage is logged once by the link; an answer (a revoked token) here
                if self.link.reachable and exc.message != refused:
                    log.error("bot.connect_refused", error=exc.message)
                refused = exc.message
                await self.link.pause(next(backoff))
        try:
            await self.set_my_commands(render.bot_commands())
        except TelegramAPIError as exc:
            log.warning("bot.setup_incomplete", error=exc.message)
        if self.webhook is None:
            log.info("bot.polling", username=user.username, attempts=backoff.counter + 1)
        else:
            log.info(
                "bot.webhook",
                username=user.username,
                url=self.webhook.url,
                attempts=backoff.counter + 1,
            )
        return user

    async def _take_updates(self) -> None:
        """Polling: delete any webhook (``getUpdates`` answers 409 while one is set).
        Webhook mode: ``setWebhook`` with the secret; pending updates are kept."""
        webhook = self.webhook
        if webhook is None:
            await self.delete_webhook()
            return
        await self.set_webhook(
            webhook.url,
            secret_token=webhook.secret,
            allowed_updates=webhook.allowed_updates,
            drop_pending_updates=False,
        )
        webhook.registered_at = utcnow()


class _QuietPolling(logging.Filter):
    """Drops aiogram's per-attempt polling lines while Telegram is unreachable ("Failed to
    fetch updates - TelegramNetworkError/TelegramServerError: ...", "Sleep for ... and try
    again", "Connection established"): :class:`TelegramLink` logs the outage once when it
    starts and once when it ends. Other failures (a revoked token: 401) stay visible."""

    _OUTAGE = frozenset({"TelegramNetworkError", "TelegramServerError", "RestartingTelegram"})

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        if message.startswith(("Sleep for", "Connection established")):
            return False
        if message.startswith("Failed to fetch updates") and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            return args[0] not in self._OUTAGE
        return True


_QUIET_POLLING = _QuietPolling()


#: Turns of the event loop a poll gives the updates it received before it asks for more.
POLL_YIELD_TURNS = 2


async def _handlers_first(
    make_request: NextRequestMiddlewareType[TelegramType],
    bot: Bot,
    method: TelegramMethod[TelegramType],
) -> Response[TelegramType]:
    """Request middleware: ``getUpdates`` lets the handlers of the updates just received
    start first. aiogram's polling starts each update's handler as a task and asks for
    the next updates at once, so building that request (about half a millisecond of CPU)
    would delay every tap; a long poll loses nothing by waiting :data:`POLL_YIELD_TURNS`
    turns (a tap's first turns: the authorization, the handler, the approval's first
    database call). It does not wait for the taps to be answered (:mod:`bot.priority`):
    a ``/pause`` sent while a tap waits on a slow venue is read at once."""
    if isinstance(method, GetUpdates):
        for _ in range(POLL_YIELD_TURNS):
            await asyncio.sleep(0)
    return await make_request(bot, method)


def _create_bot(settings: Settings, link: TelegramLink, webhook: WebhookMode | None) -> Bot:
    assert settings.telegram_bot_token is not None
    base = settings.telegram_api_base
    session = AiohttpSession(api=TelegramAPIServer.from_base(base)) if base else AiohttpSession()
    session.middleware(link)
    bot = _PatientBot(
        settings.telegram_bot_token.get_secret_value(),
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )
    bot.link, bot.webhook = link, webhook
    logging.getLogger("aiogram.dispatcher").addFilter(_QUIET_POLLING)  # once: same object
    return bot


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

    Use :meth:`from_settings`, then ``await app.run()`` (returns when polling, or the
    webhook's server, stops: SIGINT, SIGTERM or :meth:`stop`). ``ready`` is set once the
    start-up hook has run, whether or not Telegram answers; from then on :attr:`engine`,
    :attr:`deliverer` and :attr:`scheduler` are available. :attr:`telegram` says whether
    Telegram answers (for a readiness probe); :attr:`owner_only` is the authorization
    middleware (its ``flush()`` queues the strangers' notice now); :attr:`webhook` is
    webhook mode's registration (None: long polling). :attr:`migrate` False skips the
    start-up hook's schema check (``python -m bot`` has brought the schema to head).
    """

    settings: Settings
    bot: Bot
    dispatcher: Dispatcher
    telegram: TelegramLink
    owner_only: OwnerOnly
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    taps: Taps = field(default_factory=Taps)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    leadership: Leadership | None = None
    metrics: Metrics = field(default_factory=Metrics)
    health_port: int | None = None
    webhook: WebhookMode | None = None
    migrate: bool = True
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def from_settings(cls, settings: Settings, policy: DeliveryPolicy | None = None) -> BotApp:
        """Wire the bot for ``settings`` (nothing is started yet).

        Raises:
            ConfigError: see :func:`check_settings`.
        """
        check_settings(settings)
        dispatcher = Dispatcher(disable_fsm=True, settings=settings)  # no conversations here
        owner_only = OwnerOnly(settings.owner_ids)
        dispatcher.update.outer_middleware(owner_only)
        dispatcher.message.outer_middleware(StaleCommands(settings.command_max_age_seconds))
        dispatcher.include_routers(*get_routers())
        dispatcher.errors.register(_on_error)
        metrics = Metrics()
        dispatcher.callback_query.outer_middleware(metrics.tap_timer())
        link = TelegramLink()
        webhook = WebhookMode.from_settings(settings, dispatcher)
        bot = _create_bot(settings, link, webhook)
        bot.session.middleware(metrics.request_counter())
        bot.session.middleware(_handlers_first)
        app = cls(settings, bot, dispatcher, link, owner_only, policy or DeliveryPolicy())
        app.metrics, app.webhook = metrics, webhook
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

    @property
    def scheduler(self) -> DutyScheduler | None:
        """The duties' scheduler while this process leads them, else None."""
        return self.leadership.scheduler if self.leadership is not None else None

    async def run(self, *, handle_signals: bool = True) -> None:
        """Long-poll (or serve the webhook) until stopped; start-up and shutdown hooks run
        around it. Telegram being unreachable does not end it (see the module docstring)."""
        if self.webhook is None:
            await self.dispatcher.start_polling(
                self.bot, handle_signals=handle_signals, backoff_config=CONNECT_BACKOFF
            )
        else:
            await self._serve_webhook(handle_signals)

    async def stop(self) -> None:
        """Stop polling or serving; :meth:`run` returns after the shutdown hook."""
        if self.webhook is None:
            await self.dispatcher.stop_polling()
            return
        self._stopping.set()
        await self._stopped.wait()

    async def _serve_webhook(self, handle_signals: bool) -> None:
        """Webhook mode's run: the start-up hook (which serves ``/telegram`` on ``PORT``),
        then ``getMe`` and ``setWebhook`` with backoff in the background, until SIGINT,
        SIGTERM or :meth:`stop`; then the shutdown hook. An unexpected failure of the
        registration ends the run with it, as one of ``getMe`` ends polling."""
        dispatcher, bot = self.dispatcher, self.bot
        self._stopping.clear()
        self._stopped.clear()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self._stopping.set)
        workflow = {"dispatcher": dispatcher, "bots": (bot,), **dispatcher.workflow_data}
        try:
            await dispatcher.emit_startup(bot=bot, **workflow)
            registering = asyncio.create_task(bot.me(), name="telegram-webhook")
            stopping = asyncio.create_task(self._stopping.wait(), name="webhook-stop")
            try:
                done, _ = await asyncio.wait(
                    {registering, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                if registering in done:
                    registering.result()  # raises what ended it
                    await stopping
            finally:
                for task in (registering, stopping):
                    task.cancel()
                await asyncio.wait({registering, stopping})
                await dispatcher.emit_shutdown(bot=bot, **workflow)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            await bot.session.close()
            self._stopped.set()

    async def _startup(self, dispatcher: Dispatcher, bot: Bot) -> None:
        """Build and start everything (no Telegram call: the duties must not wait for it);
        on failure, undo what was started and re-raise."""
        settings = self.settings
        configured = settings.card_chat_id
        assert configured is not None  # check_settings: there are owners
        async with AsyncExitStack() as stack:
            engine = await build_engine(settings, migrate=self.migrate)
            stack.push_async_callback(engine.close)
            chat_id = await resolve_chat(engine.db, configured)  # a group that migrated
            cards = Cards(engine, charts=settings.card_charts, taps=self.taps)
            if settings.card_charts:  # matplotlib's first import is slow: not on a card
                warming = asyncio.create_task(asyncio.to_thread(warm_up), name="chart-warm-up")
                stack.push_async_callback(_settle, warming)
            deliverer = OutboxDeliverer(
                bot,
                engine,
                cards,
                chat_id,
                self.policy,
                self.telegram,
                owner_chats=settings.telegram_owner_ids,  # a private chat's id is the user's
            )
            if isinstance(engine.notifier, OutboxNotifier):
                engine.notifier.on_enqueue = deliverer.wake
            dispatcher.workflow_data.update(
                engine=engine, cards=cards, deliverer=deliverer, started_at=time.monotonic()
            )
            delivering = asyncio.create_task(deliverer.run(), name="outbox-deliverer")
            stack.push_async_callback(deliverer.stop, delivering)
            leadership = Leadership(engine.db, lambda: build_scheduler(engine))
            leadership.on_run = self.metrics.duty_ran
            await leadership.start()
            stack.push_async_callback(leadership.stop)
            self.leadership = leadership
            health = await start_health(self)
            if health is not None:
                stack.push_async_callback(health.cleanup)
            if settings.port is not None:
                web_server = await start_webhook(
                    engine,
                    settings.port,
                    add_routes=self._telegram_route(dispatcher, bot),
                    client_max_size=MAX_UPDATE_BYTES if self.webhook is not None else 0,
                )
                stack.push_async_callback(web_server.cleanup)
            shared = settings.telegram_webhook_secret is not None
            if self.webhook is not None and not shared and engine.db.dialect == "postgresql":
                log.warning(
                    "webhook.secret_per_process",
                    hint="set TELEGRAM_WEBHOOK_SECRET when several processes serve this "
                    "bot: each start registers a secret of its own",
                )
            self._stack = stack.pop_all()
        log.info(
            "bot.started",
            api=settings.telegram_api_base or "https://api.telegram.org",
            card_chat=chat_id,
            owners=len(settings.owner_ids),
            database=engine.db.dialect,
            broker=engine.broker.name,
            leader=leadership.leader,
            jobs=[job.id for job in self.scheduler.get_jobs()] if self.scheduler else [],
            mode="polling" if self.webhook is None else "webhook",
            web=settings.port,
            health=self.health_port,
        )
        # aiogram's models and the engine are ~240k long-lived objects: a full collection
        # scanning them takes ~140 ms (a tap that meets one waits); frozen, it takes ~0
        gc.collect()
        gc.freeze()
        self.ready.set()

    def _telegram_route(
        self, dispatcher: Dispatcher, bot: Bot
    ) -> Callable[[web.Application], None] | None:
        """Webhook mode: what adds ``POST /telegram`` to the web server; else None."""
        webhook = self.webhook
        if webhook is None:
            return None
        handler = TelegramUpdates(dispatcher, bot, webhook)

        def add(app: web.Application) -> None:
            app.router.add_post(TELEGRAM_PATH, handler.handle)

        return add

    async def _shutdown(self, dispatcher: Dispatcher) -> None:
        """The strangers' notice is queued; webhook, duties and deliverer stop, then the
        engine closes."""
        self.ready.clear()
        await self.owner_only.close()
        await self._stack.aclose()
        dispatcher.workflow_data.pop("engine", None)
        log.info("bot.stopped")


async def _settle(task: asyncio.Task[None]) -> None:
    """Wait for a worker-thread task (a thread cannot be cancelled); its failure is logged."""
    await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        log.warning("task.failed", task=task.get_name(), error=repr(task.exception()))
