"""The always-on duties on an APScheduler 3 ``AsyncIOScheduler`` (UTC).

==========  ============================  ==================================================
job id      every                         does
==========  ============================  ==================================================
heartbeat   ``HEARTBEAT_INTERVAL``        :meth:`HeartbeatService.beat` (silent message, ping)
drawdown    ``DRAWDOWN_CHECK_INTERVAL``   :meth:`RiskService.check` (the drawdown guard)
expiry      ``EXPIRY_CHECK_INTERVAL``     :meth:`SignalService.expire_due` (edits the cards)
reconcile   ``RECONCILE_INTERVAL``        :meth:`Reconciler.run` (orders left unresolved)
exits       ``EXIT_CHECK_INTERVAL``       :meth:`ExitService.check` (fills of resting exits,
                                          one-cancels-other, watched stops, trailing)
strategy:N  the instance's ``cron`` or     :meth:`StrategyDesk.run_instance` for instance N
            ``every`` (strategies file,   (skipped while the owner has it paused); only
            or ``STRATEGY_*``)            enabled instances get a job
symbols     ``SYMBOLS_TTL_SECONDS``       :meth:`SymbolSearch.listing` (refreshes a stale cache)
retention   an hour                       :meth:`RetentionService.run` (deletes delivered
                                          outbox rows, thins old equity snapshots)
summary     ``DAILY_SUMMARY_AT`` daily    :meth:`ReportService.send_daily_summary` (once per
            (local time; unset: no job)   local day, also across restarts and leaders)
==========  ============================  ==================================================

Every job but the strategy instances and the daily summary also runs once as soon as the
scheduler starts: start-up reconciliation, a first drawdown check, a heartbeat saying the
process is up, a symbol cache refresh, a retention pass; strategy instances and the
summary run at their own times only (a process that was down at the summary's time does
not send it late).
Jobs coalesce missed runs into one, never overlap themselves (``max_instances=1``), and
count as missed when they start later than their ``misfire_grace_time`` (the job's own
interval, at least 10 seconds; an hour for the summary). A job error or a missed run is
logged and alerted to the owner, at most once per job per ``alert_every`` seconds, and
shown as the last error in heartbeats.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from core.app import Engine
from core.notify import NoticeKind, Notification, Notifier, Priority, Topic
from core.services.heartbeat import Health

__all__ = [
    "ALERT_EVERY_SECONDS",
    "JOB_IDS",
    "STRATEGY_JOB",
    "SUMMARY_JOB",
    "DutyScheduler",
    "JobAlarm",
    "build_scheduler",
    "strategy_next_runs",
]

log = structlog.get_logger(__name__)

JOB_IDS = ("heartbeat", "drawdown", "expiry", "reconcile", "exits", "symbols", "retention")

#: The daily summary's job id (only when ``DAILY_SUMMARY_AT`` is set).
SUMMARY_JOB = "summary"

#: Seconds between two retention passes (each bounded; a backlog takes several).
RETENTION_INTERVAL_SECONDS = 3600

#: Seconds a daily summary may start late and still run.
SUMMARY_GRACE_SECONDS = 3600

#: Prefix of the strategy instances' job ids: ``strategy:btc-trend``.
STRATEGY_JOB = "strategy:"

#: Default minimum seconds between two alerts about the same job.
ALERT_EVERY_SECONDS = 600.0

#: The smallest misfire grace time, in seconds.
MIN_GRACE_SECONDS = 10


class DutyScheduler(AsyncIOScheduler):
    """An ``AsyncIOScheduler`` that knows which of its jobs are running, so :meth:`stop`
    can let them finish (a flatten half done is worse than a late shutdown)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._running: set[asyncio.Task[Any]] = set()

    @property
    def busy(self) -> bool:
        """True while one of the duties is running."""
        return bool(self._running)

    def add_duty(
        self,
        job_id: str,
        func: Callable[[], Awaitable[Any]],
        trigger: BaseTrigger,
        grace: int,
        *,
        at_start: bool = True,
    ) -> None:
        """Add one duty: coalesced, never overlapping itself, first run at once (unless
        ``at_start`` is False: then at the trigger's first time), missed when it starts
        more than ``grace`` seconds (at least 10) late."""

        async def run() -> Any:
            task = asyncio.current_task()
            assert task is not None
            self._running.add(task)
            try:
                return await func()
            finally:
                self._running.discard(task)

        self.add_job(
            run,
            trigger,
            id=job_id,
            name=job_id,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(grace, MIN_GRACE_SECONDS),
            **({"next_run_time": datetime.now(UTC)} if at_start else {}),
        )

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Start no more jobs, wait up to ``grace_seconds`` for running ones, cancel what
        is left, and shut down. Safe to call when not running."""
        if not self.running:
            return
        self.pause()
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace_seconds)
        left = set(self._running)
        self.shutdown(wait=False)  # runs on the next loop iteration and cancels the rest
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        await asyncio.sleep(0)


def build_scheduler(engine: Engine, *, alert_every: float = ALERT_EVERY_SECONDS) -> DutyScheduler:
    """A scheduler with the duties of ``engine`` (see the module docstring), not started.

    Call ``start()`` inside the running event loop (the bot's start-up hook, or
    :func:`core.runner.run_engine`) and ``await stop()`` before closing the engine.
    Run it in one process per database: two would send two heartbeats per interval.

    Args:
        engine: the wired engine whose services the jobs call.
        alert_every: minimum seconds between two alerts about the same job.

    Raises:
        ConfigError: an instance's crontab is not valid (checked at start-up already).
    """
    settings = engine.settings
    scheduler = DutyScheduler(timezone=UTC)
    alarm = JobAlarm(engine.notifier, engine.health, engine.clock, alert_every)
    scheduler.add_listener(alarm, EVENT_JOB_ERROR | EVENT_JOB_MISSED)

    intervals: dict[str, tuple[Callable[[], Awaitable[Any]], int]] = {
        "heartbeat": (engine.heartbeat.beat, settings.heartbeat_interval),
        "drawdown": (engine.risk.check, settings.drawdown_check_interval),
        "expiry": (engine.signals.expire_due, settings.expiry_check_interval),
        "reconcile": (engine.reconciler.run, settings.reconcile_interval),
        "exits": (engine.exits.check, settings.exit_check_interval),
        "retention": (engine.retention.run, RETENTION_INTERVAL_SECONDS),
    }
    for job_id, (func, seconds) in intervals.items():
        scheduler.add_duty(job_id, func, IntervalTrigger(seconds=seconds, timezone=UTC), seconds)
    symbols_every = settings.symbols_ttl_seconds
    scheduler.add_duty(
        "symbols",
        engine.symbols.listing,
        IntervalTrigger(seconds=symbols_every, timezone=UTC),
        symbols_every,
    )
    at = settings.daily_summary_time
    if at is not None:
        scheduler.add_duty(
            SUMMARY_JOB,
            engine.reports.send_daily_summary,
            CronTrigger(hour=at[0], minute=at[1], timezone=settings.display_zone),
            SUMMARY_GRACE_SECONDS,
            at_start=False,
        )
    desk = engine.strategies
    if desk is not None:
        for name, spec in desk.specs.items():
            if not spec.enabled:
                continue
            trigger, grace = spec.trigger()
            scheduler.add_duty(
                STRATEGY_JOB + name,
                partial(desk.run_instance, name),
                trigger,
                grace,
                at_start=False,
            )
    return scheduler


def strategy_next_runs(scheduler: AsyncIOScheduler) -> dict[str, datetime | None]:
    """Next run time (UTC) of each strategy instance's job, by instance name."""
    return {
        job.id.removeprefix(STRATEGY_JOB): job.next_run_time
        for job in scheduler.get_jobs()
        if job.id.startswith(STRATEGY_JOB)
    }


class JobAlarm:
    """The scheduler's listener for job errors and missed runs: logs each, records it as
    the last error, and alerts the owner at most once per job per ``alert_every`` seconds.

    APScheduler calls listeners synchronously on the event loop, so the alert is written
    by a task. An alert counts as sent (and starts the ``alert_every`` quiet period) only
    once its outbox row is committed: while the outbox cannot be written (a database
    outage) the task retries every ``retry_every`` seconds, and further problems of that
    job update the pending alert instead of starting another task, so the owner hears of
    the outage's failures once the database is back, in one alert per job.

    Args:
        notifier: where alerts go (the outbox).
        health: records the last error (heartbeats show it).
        clock: the services' clock (UTC), for the quiet period.
        alert_every: minimum seconds between two alerts about the same job.
        retry_every: seconds between two attempts to write a pending alert.
    """

    def __init__(
        self,
        notifier: Notifier,
        health: Health,
        clock: Callable[[], datetime],
        alert_every: float = ALERT_EVERY_SECONDS,
        retry_every: float = 5.0,
    ) -> None:
        self._notifier = notifier
        self._health = health
        self._clock = clock
        self._every = timedelta(seconds=alert_every)
        self._retry_every = retry_every
        self._last_alert: dict[str, datetime] = {}
        self._pending: dict[str, str] = {}  # job id -> the text of its unwritten alert
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_ERROR:
            exc = event.exception
            problem = f"failed: {type(exc).__name__}: {exc}"[:300]
            log.error("job failed", job=event.job_id, exc_info=exc)
        else:
            late = datetime.now(UTC) - event.scheduled_run_time
            problem = f"missed its run at {event.scheduled_run_time:%H:%M:%S} UTC"
            log.warning("job missed", job=event.job_id, late_seconds=late.total_seconds())
        self._health.record_error(event.job_id, problem)
        text = f"⚠️ Scheduled job {event.job_id} {problem}"
        if event.job_id in self._pending:  # its task is still trying: send the latest
            self._pending[event.job_id] = text
            return
        last = self._last_alert.get(event.job_id)
        if last is not None and self._clock() - last < self._every:
            return
        self._pending[event.job_id] = text
        task = asyncio.get_running_loop().create_task(self._send(event.job_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, job_id: str) -> None:
        failed = False
        while True:
            text = self._pending[job_id]
            try:
                await self._notifier.notify(
                    Notification(
                        NoticeKind.TEXT, text, priority=Priority.ALERT, topic=Topic.WARNING
                    )
                )
            except Exception as exc:  # the outbox itself is down: retry until it is back
                if not failed:
                    log.error("job alert could not be queued", job=job_id, error=str(exc))
                failed = True
                await asyncio.sleep(self._retry_every)
                continue
            if failed:
                log.info("job alert queued after the outbox came back", job=job_id)
            self._last_alert[job_id] = self._clock()
            del self._pending[job_id]
            return
