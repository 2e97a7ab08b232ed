"""One leader for the scheduled duties, however many processes share the database.

Every SignalDesk process (``python -m bot``, ``signaldesk run``, ``signaldesk engine``)
serves updates and delivers the outbox, but only one runs the duties of
:mod:`core.scheduler` (heartbeat, drawdown guard, expiry, reconciliation, exits,
strategies): two would send two heartbeats and act twice on one drawdown breach.

- **PostgreSQL**: the leader is the process holding the session advisory lock
  :data:`LOCK_KEY` (``pg_try_advisory_lock``, PostgreSQL's "Advisory Locks", 13.3.5) on a
  connection of its own, kept open for as long as it leads. The others try again every
  ``retry_every`` seconds (default 3). When the leader dies its connection closes and the
  server releases the lock, so another process takes the duties over at its next try:
  within ``retry_every`` seconds of the server noticing the closed connection (at once for
  a killed process, whose socket the kernel closes). The leader checks its connection on
  the same period; if it is lost (a database restart, a network cut) it stops its duties
  at once and competes again, so two processes never run them together for longer than
  one period.
- **SQLite** is one process per database file (its file lock serializes writers, and
  nothing would release a dead process's claim): the lock is trivially held, and the
  start-up line says so.

A new leader builds a fresh scheduler, so its first runs are the start-up ones (a
reconciliation, a drawdown check, a heartbeat saying this process now leads).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime

import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db.engine import Database
from core.domain import utcnow
from core.scheduler import DutyScheduler

__all__ = ["LOCK_KEY", "DutyRun", "Leadership"]

log = structlog.get_logger(__name__)

#: The advisory lock's key (a bigint): "SIGNALDESK" folded into 63 bits, so it does not
#: collide with another application's small integers on a shared server.
LOCK_KEY = 0x5349_474E_414C_4453

#: Seconds between two attempts to take the lock (and between two checks by the leader).
RETRY_SECONDS = 3.0


@dataclass(frozen=True)
class DutyRun:
    """The last run of one duty in this process: when it ended (UTC) and the error
    (``ExcType: message``, "" when it succeeded)."""

    at: datetime
    error: str = ""


class Leadership:
    """Runs the duties while this process leads (see the module docstring).

    ``await start()`` makes a first attempt at once (on SQLite it always succeeds, so the
    scheduler runs when ``start`` returns), then keeps competing in a background task;
    ``await stop()`` stops the duties and releases the lock. :attr:`scheduler` is the
    running scheduler while leading, else None.

    Args:
        db: the engine's database; PostgreSQL elects, SQLite leads alone.
        build: makes a fresh, not yet started scheduler (``build_scheduler(engine)``).
        retry_every: seconds between two attempts (and between two checks while leading).

    Attributes:
        leader: whether this process runs the duties now.
        since: when (UTC) :attr:`leader` last changed (None before the first attempt).
        elections: how many times this process became the leader.
        last_runs: the last run of each duty (by job id) while this process led.
        on_run: called with ``(job_id, run)`` after each run (metrics hook this).
    """

    def __init__(
        self,
        db: Database,
        build: Callable[[], DutyScheduler],
        *,
        retry_every: float = RETRY_SECONDS,
    ) -> None:
        self._db = db
        self._build = build
        self._retry_every = retry_every
        self._conn: AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self.scheduler: DutyScheduler | None = None
        self.leader = False
        self.since: datetime | None = None
        self.elections = 0
        self.last_runs: dict[str, DutyRun] = {}
        self.on_run: Callable[[str, DutyRun], None] | None = None

    @property
    def single_process(self) -> bool:
        """True on SQLite: one process per database file, the lock is trivially held."""
        return self._db.dialect != "postgresql"

    async def start(self) -> None:
        """Try to lead now, then keep trying (or keep checking) in the background."""
        if self.single_process:
            log.info("duties.leader", mode="single process (SQLite: one process per file)")
            self._lead()
            return
        await self._attempt()
        if not self.leader:
            log.info("duties.follower", retry_seconds=self._retry_every)
        self._task = asyncio.create_task(self._compete(), name="duties-leadership")

    async def stop(self) -> None:
        """Stop competing, stop the duties (running ones may finish, see
        :meth:`DutyScheduler.stop`) and release the lock by closing its connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None
        await self._resign()

    def _lead(self) -> None:
        self.scheduler = self._build()
        self.scheduler.add_listener(self._ran, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        self.scheduler.start()
        self.leader, self.since = True, utcnow()
        self.elections += 1

    def _ran(self, event: JobExecutionEvent) -> None:
        error = "" if event.exception is None else f"{type(event.exception).__name__}"
        run = DutyRun(utcnow(), error)
        self.last_runs[event.job_id] = run
        log.debug("duties.ran", job=event.job_id, error=error)
        if self.on_run is not None:
            self.on_run(event.job_id, run)

    async def _resign(self) -> None:
        scheduler, self.scheduler = self.scheduler, None
        if self.leader:
            self.leader, self.since = False, utcnow()
        if scheduler is not None:
            await scheduler.stop()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with suppress(Exception):  # a dead connection: closing it is all that is left
                await conn.close()

    async def _compete(self) -> None:
        while True:
            await asyncio.sleep(self._retry_every)
            if self.leader:
                await self._check()
            else:
                await self._attempt()

    async def _attempt(self) -> None:
        """One ``pg_try_advisory_lock`` on a connection of our own; lead if granted."""
        try:
            if self._conn is None:
                self._conn = await self._db.engine.connect()
            granted = await self._conn.scalar(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}
            )
            await self._conn.commit()  # the lock is the session's, not the transaction's
        except Exception as exc:  # the database is down: try again next period
            log.warning("duties.election_failed", error=f"{type(exc).__name__}: {exc}"[:200])
            await self._resign()
            return
        if granted:
            log.info("duties.leader", mode="PostgreSQL advisory lock", key=LOCK_KEY)
            self._lead()

    async def _check(self) -> None:
        """The leader's connection still answers; if not, the lock is gone with it."""
        assert self._conn is not None
        try:
            await self._conn.scalar(text("SELECT 1"))
            await self._conn.commit()
        except Exception as exc:
            log.error("duties.leadership_lost", error=f"{type(exc).__name__}: {exc}"[:200])
            await self._resign()
