"""Health and metrics of a running bot on ``HEALTH_HOST:HEALTH_PORT`` (127.0.0.1:9464).

==========  ===================================================================================
path        answers
==========  ===================================================================================
/healthz    liveness: 200 ``{"ok": true}`` while the process's event loop answers
/readyz     readiness: 200, or 503 when a part fails; JSON ``{"ok", "failing": [...],
            "checks": {part: {"ok", ...}}}`` with the parts below
/metrics    Prometheus text format (prometheus-client), the metrics of :class:`Metrics`
==========  ===================================================================================

Readiness parts (:func:`readiness`):

- ``database``: ``SELECT 1`` answers within :data:`CHECK_SECONDS`.
- ``broker``: the account is read within :data:`CHECK_SECONDS` (``equity``, ``currency``).
- ``telegram``: the bot's calls reach Telegram (:class:`bot.link.TelegramLink`); failing
  once Telegram has been unreachable for :data:`TELEGRAM_GRACE_SECONDS` (60: aiogram's
  polling retries a short outage by itself), or has never answered that long after start.
  ``mode`` says ``polling`` or ``webhook``. In webhook mode it also reports the
  registration (``url``, ``registered``, ``last_update``: UTC, ``refused``: pushes with a
  wrong or missing secret) and Telegram's side from ``getWebhookInfo`` (``pending_updates``,
  ``last_error``: its ``last_error_date`` and ``last_error_message``), and fails when the
  webhook is not Telegram's (not registered yet, or replaced by another URL) for the grace
  period, or when Telegram holds updates it has failed to push since this process last
  received one (or registered), for longer than the grace period.
- ``duties``: whether this process leads the scheduled duties (:mod:`core.leader`) and the
  last run of each (UTC, error); informative, never failing (a failing duty alerts the
  owner through the outbox already).
- ``outbox``: the backlog (undelivered rows) and the age of the oldest undelivered row in
  seconds; failing when that age passes :data:`OUTBOX_MAX_AGE_SECONDS`.

A port that cannot be bound is logged (``health.unavailable``) and the bot runs on: the
probe is not worth losing the duties over.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from aiogram import BaseMiddleware
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.types import CallbackQuery, TelegramObject
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import text
from sqlmodel import col, func, select

from bot.callbacks import CardAction, SignalCallback
from core.db.models import OrderRow, OutboxRow
from core.domain import utcnow
from core.leader import DutyRun

if TYPE_CHECKING:
    from aiogram import Bot

    from bot.app import BotApp

__all__ = [
    "CHECK_SECONDS",
    "OUTBOX_MAX_AGE_SECONDS",
    "TELEGRAM_GRACE_SECONDS",
    "Metrics",
    "readiness",
    "start_health",
]

log = structlog.get_logger(__name__)

#: Seconds a readiness check (database, broker) may take before it counts as failed.
CHECK_SECONDS = 5.0
#: Seconds Telegram may be unreachable before the bot is not ready.
TELEGRAM_GRACE_SECONDS = 60.0
#: Age in seconds of the oldest undelivered outbox row beyond which the bot is not ready.
OUTBOX_MAX_AGE_SECONDS = 600.0

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_DELIVERY_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class Metrics:
    """The bot's Prometheus metrics, in a registry of their own (one per :class:`BotApp`).

    Counted as things happen: ``signaldesk_tap_latency_seconds`` (histogram: from an
    update's callback query reaching the dispatcher to its handler's end, every button),
    ``signaldesk_approvals_total`` (Approve taps handled), ``signaldesk_telegram_retry_after_total``
    (Bot API 429 answers), ``signaldesk_duty_runs_total`` / ``signaldesk_duty_failures_total``
    (by ``job``), ``signaldesk_broker_call_seconds`` / ``signaldesk_broker_errors_total``
    (the account reads of the probe and the scrape, by ``method``).
    Read at scrape time (:meth:`refresh`): ``signaldesk_orders`` (by ``state``),
    ``signaldesk_outbox_backlog``, ``signaldesk_outbox_oldest_undelivered_seconds``,
    ``signaldesk_outbox_delivery_latency_seconds`` (histogram: created to delivered, rows
    delivered since the last scrape), ``signaldesk_equity`` (account currency),
    ``signaldesk_drawdown_percent`` and ``signaldesk_daily_loss_percent`` (percent).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.tap_seconds = Histogram(
            "signaldesk_tap_latency_seconds",
            "Seconds from a button tap reaching the bot to its handler's end",
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.approvals = Counter(
            "signaldesk_approvals", "Approve taps handled", registry=reg
        )  # fmt: skip
        self.retry_after = Counter(
            "signaldesk_telegram_retry_after", "Bot API 429 answers (retry_after)", registry=reg
        )
        self.duty_runs = Counter("signaldesk_duty_runs", "Duty runs", ["job"], registry=reg)
        self.duty_failures = Counter(
            "signaldesk_duty_failures", "Duty runs that raised", ["job"], registry=reg
        )
        self.broker_seconds = Histogram(
            "signaldesk_broker_call_seconds",
            "Seconds per broker call",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.broker_errors = Counter(
            "signaldesk_broker_errors", "Broker calls that failed", ["method"], registry=reg
        )
        self.orders = Gauge("signaldesk_orders", "Orders by state", ["state"], registry=reg)
        self.backlog = Gauge("signaldesk_outbox_backlog", "Undelivered outbox rows", registry=reg)
        self.oldest = Gauge(
            "signaldesk_outbox_oldest_undelivered_seconds",
            "Age of the oldest undelivered outbox row (0 when none)",
            registry=reg,
        )
        self.delivery_seconds = Histogram(
            "signaldesk_outbox_delivery_latency_seconds",
            "Seconds from an outbox row's creation to its delivery",
            buckets=_DELIVERY_BUCKETS,
            registry=reg,
        )
        self.equity = Gauge("signaldesk_equity", "Account equity (account currency)", registry=reg)
        self.drawdown = Gauge(
            "signaldesk_drawdown_percent", "Drawdown from peak equity (percent)", registry=reg
        )
        self.daily_loss = Gauge(
            "signaldesk_daily_loss_percent", "Loss since the day's start (percent)", registry=reg
        )
        self._delivered_after = 0  # the last outbox id whose delivery latency was observed

    def duty_ran(self, job_id: str, run: DutyRun) -> None:
        """:attr:`core.leader.Leadership.on_run`: count a duty's run (and its failure)."""
        job = job_id.split(":", 1)[0]  # strategy:<name> -> strategy (bounded labels)
        self.duty_runs.labels(job).inc()
        if run.error:
            self.duty_failures.labels(job).inc()

    async def timed_broker_call(self, method: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """``await call()`` timed as broker ``method``; an error is counted and re-raised."""
        started = time.perf_counter()
        try:
            return await call()
        except Exception:
            self.broker_errors.labels(method).inc()
            raise
        finally:
            self.broker_seconds.labels(method).observe(time.perf_counter() - started)

    async def refresh(self, app: BotApp) -> None:
        """Read the gauges that live in the database and the account (at scrape time)."""
        engine = app.engine
        now = utcnow()
        async with engine.db.session() as session:
            by_state = (
                await session.exec(
                    select(OrderRow.state, func.count()).group_by(col(OrderRow.state))
                )
            ).all()
            pending = col(OutboxRow.delivered_at).is_(None)
            backlog, oldest = (
                await session.exec(
                    select(func.count(), func.min(OutboxRow.created_at)).where(pending)
                )
            ).one()
            delivered = (
                await session.exec(
                    select(OutboxRow.id, OutboxRow.created_at, OutboxRow.delivered_at)
                    .where(col(OutboxRow.id) > self._delivered_after)
                    .where(col(OutboxRow.delivered_at).is_not(None))
                    .order_by(col(OutboxRow.id))
                )
            ).all()
        for state, count in by_state:
            self.orders.labels(state).set(count)
        self.backlog.set(backlog)
        self.oldest.set(_age(now, oldest))
        for row_id, created, done in delivered:
            assert row_id is not None and done is not None
            self.delivery_seconds.observe(max(0.0, _age(done, created)))
            self._delivered_after = max(self._delivered_after, row_id)
        try:
            figures = await self.timed_broker_call("account", engine.risk.figures)
        except Exception as exc:  # the broker is down: the gauges keep their last values
            log.info("metrics.account_unavailable", error=f"{type(exc).__name__}")
            return
        self.equity.set(float(figures.equity))
        self.drawdown.set(float(figures.drawdown_pct))
        self.daily_loss.set(float(figures.daily_loss_pct))

    # --- hooks into aiogram ---------------------------------------------------------------

    def tap_timer(self) -> TapTimer:
        """The dispatcher's ``callback_query`` outer middleware that times every tap."""
        return TapTimer(self)

    def request_counter(self) -> RetryAfterCounter:
        """The bot session's request middleware that counts 429 answers."""
        return RetryAfterCounter(self)


class TapTimer(BaseMiddleware):
    """Times each callback query (a button tap) through its handler; counts approvals."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        started = time.perf_counter()
        try:
            return await handler(event, data)
        finally:
            self._metrics.tap_seconds.observe(time.perf_counter() - started)
            if isinstance(event, CallbackQuery) and _is_approve(event.data):
                self._metrics.approvals.inc()


def _is_approve(data: str | None) -> bool:
    if not data or not data.startswith(SignalCallback.__prefix__ + ":"):
        return False
    try:
        return SignalCallback.unpack(data).action is CardAction.APPROVE
    except (TypeError, ValueError):
        return False


class RetryAfterCounter(BaseRequestMiddleware):
    """Counts the Bot API's 429 answers (``TelegramRetryAfter``) of every bot call."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        try:
            return await make_request(bot, method)
        except TelegramRetryAfter:
            self._metrics.retry_after.inc()
            raise


def _age(now: datetime, then: datetime | None) -> float:
    """Seconds from ``then`` to ``now`` (0 when ``then`` is None); naive times are UTC."""
    if then is None:
        return 0.0
    if then.tzinfo is None and now.tzinfo is not None:
        now = now.replace(tzinfo=None)
    return (now - then).total_seconds()


async def readiness(app: BotApp, started: datetime) -> dict[str, Any]:
    """The readiness report of ``app`` (see the module docstring): ``{"ok": bool,
    "failing": [part, ...], "checks": {part: {"ok": bool, ...}}}``. ``started`` is when
    (UTC) the bot started, for the Telegram grace period."""
    now = utcnow()
    checks: dict[str, dict[str, Any]] = {}
    engine = app.engine

    try:
        async with asyncio.timeout(CHECK_SECONDS), engine.db.session() as session:
            await session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        checks["database"] = {"ok": True, "dialect": engine.db.dialect}
    except Exception as exc:
        checks["database"] = {"ok": False, "error": type(exc).__name__}

    try:
        async with asyncio.timeout(CHECK_SECONDS):
            account = await app.metrics.timed_broker_call("account", engine.broker.account)
        checks["broker"] = {
            "ok": True,
            "name": engine.broker.name,
            "equity": str(account.equity),
            "currency": account.currency,
        }
    except Exception as exc:
        checks["broker"] = {"ok": False, "name": engine.broker.name, "error": type(exc).__name__}

    checks["telegram"] = await _telegram_check(app, now, started)

    leadership = app.leadership
    checks["duties"] = {
        "ok": True,
        "leader": bool(leadership and leadership.leader),
        "last_runs": {
            job: {"at": run.at.isoformat(), **({"error": run.error} if run.error else {})}
            for job, run in sorted((leadership.last_runs if leadership else {}).items())
        },
    }

    try:
        async with asyncio.timeout(CHECK_SECONDS), engine.db.session() as session:
            pending = col(OutboxRow.delivered_at).is_(None)
            backlog, oldest = (
                await session.exec(
                    select(func.count(), func.min(OutboxRow.created_at)).where(pending)
                )
            ).one()
        age = _age(now, oldest)
        checks["outbox"] = {
            "ok": age < OUTBOX_MAX_AGE_SECONDS,
            "backlog": backlog,
            "oldest_undelivered_seconds": round(age, 1),
        }
    except Exception as exc:
        checks["outbox"] = {"ok": False, "error": type(exc).__name__}

    failing = [part for part, check in checks.items() if not check["ok"]]
    return {"ok": not failing, "failing": failing, "checks": checks}


async def _telegram_check(app: BotApp, now: datetime, started: datetime) -> dict[str, Any]:
    """The ``telegram`` part of :func:`readiness` (see the module docstring)."""
    link = app.telegram
    since = link.since or started
    away = (now - since).total_seconds() if link.reachable is not True else 0.0
    check: dict[str, Any] = {
        "ok": away < TELEGRAM_GRACE_SECONDS,
        "mode": "polling" if app.webhook is None else "webhook",
        "reachable": link.reachable,
        "since": since.isoformat(),
        **({"error": link.last_error} if link.reachable is False else {}),
    }
    webhook = app.webhook
    if webhook is None:
        return check
    check.update(
        url=webhook.url,
        registered=_iso(webhook.registered_at),
        last_update=_iso(webhook.last_update_at),
        refused=webhook.refused,
    )
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            info = await app.bot.get_webhook_info()
    except Exception as exc:  # Telegram is down: the link's grace period covers it
        check["webhook_info"] = type(exc).__name__
        return check
    check["pending_updates"] = info.pending_update_count
    if info.last_error_date is not None:
        check["last_error"] = {
            "at": info.last_error_date.isoformat(),
            "message": info.last_error_message or "",
        }
    seen = [t for t in (webhook.registered_at, webhook.last_update_at) if t is not None]
    last_ok = max(seen) if seen else started
    late = (now - last_ok).total_seconds() >= TELEGRAM_GRACE_SECONDS
    error_at = info.last_error_date
    failing = bool(info.pending_update_count) and error_at is not None and error_at > last_ok
    if late and info.url != webhook.url:
        check.update(ok=False, error=f"Telegram's webhook is {info.url or 'not set'!r}")
    elif late and failing:
        check.update(ok=False, error="Telegram cannot push the updates it holds")
    return check


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


_APP_KEY: web.AppKey[BotApp] = web.AppKey("bot_app")
_STARTED_KEY: web.AppKey[datetime] = web.AppKey("started")


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _readyz(request: web.Request) -> web.Response:
    report = await readiness(request.app[_APP_KEY], request.app[_STARTED_KEY])
    return web.json_response(report, status=200 if report["ok"] else 503)


async def _metrics(request: web.Request) -> web.Response:
    app = request.app[_APP_KEY]
    try:
        await app.metrics.refresh(app)
    except Exception as exc:  # the database is down: serve the counters as they are
        log.info("metrics.refresh_failed", error=type(exc).__name__)
    body = generate_latest(app.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def start_health(app: BotApp) -> web.AppRunner | None:
    """Serve /healthz, /readyz and /metrics for ``app`` on ``HEALTH_HOST:HEALTH_PORT``
    (after the engine is built). Returns the runner (``await runner.cleanup()`` stops it),
    or None when ``HEALTH_PORT`` is unset or cannot be bound (logged). The bound port is
    :attr:`BotApp.health_port`."""
    settings = app.settings
    if settings.health_port is None:
        return None
    web_app = web.Application()
    web_app[_APP_KEY] = app
    web_app[_STARTED_KEY] = utcnow()
    web_app.router.add_get("/healthz", _healthz)
    web_app.router.add_get("/readyz", _readyz)
    web_app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.health_host, settings.health_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        reason = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        log.error(
            "health.unavailable",
            host=settings.health_host,
            port=settings.health_port,
            reason=reason,
        )
        return None
    server = site._server  # the bound socket: HEALTH_PORT=0 picks a free port
    sockets = getattr(server, "sockets", None) or []
    app.health_port = int(sockets[0].getsockname()[1]) if sockets else settings.health_port
    log.info("health.listening", host=settings.health_host, port=app.health_port)
    return runner
