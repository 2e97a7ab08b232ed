"""RetentionService: keeps the outbox and the equity snapshots from growing without end.

The scheduler runs :meth:`RetentionService.run` every hour (job ``retention``, in the
leader process only). Each run does bounded work in short transactions, so it never holds
SQLite's write lock for long: at most ``max_batches`` deletes per table, each of at most
``batch_rows`` outbox rows or ``batch_hours`` hours of snapshots. What a run leaves, the
next one finishes; nothing is remembered between runs, each derives its work from the rows.

- **Outbox** (``OUTBOX_RETENTION_DAYS``, 0 keeps every row): a message delivered longer
  ago than that is deleted. A row not yet delivered is never deleted, however old. The
  daily summary reads the last 3 days of its own rows to send once a day, hence the
  7-day minimum (``core.config``).
- **Equity snapshots** (``EQUITY_SNAPSHOT_DETAIL_DAYS``, 0 keeps every row): the drawdown
  guard writes about one a minute. Snapshots in whole UTC hours that ended longer ago than
  that are thinned to at most four per hour: the hour's first, last, lowest-equity and
  highest-equity snapshots (ties: the earliest), each kept unchanged (``peak_equity``
  and all). History is thinned, never deleted.

What thinning preserves, read by ``/pnl``, ``/daily`` and the equity chart
(:mod:`core.services.reports`):

- the equity curve's shape: every hour's opening, closing, low and high;
- max drawdown exactly for every fall from a peak in one hour to a trough in a later
  hour; a dip and recovery inside one old hour counts only as far as the kept points show
  (from the hour's first or high to its low when they come before it), so it may shrink;
- ``/daily``'s equity at a day's end (the last snapshot before local midnight) exactly
  wherever local midnight is a whole UTC hour;
- the newest snapshot (the last of its hour). The drawdown guard itself never reads
  snapshots: its high-water mark and day start live in ``operator_state``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import structlog
from sqlalchemy import delete, func
from sqlmodel import col, select

from core.config import Settings
from core.db.engine import Database
from core.db.models import EquitySnapshotRow, OutboxRow
from core.domain import utcnow

__all__ = [
    "KEPT_PER_HOUR",
    "RetentionCounts",
    "RetentionService",
    "kept_of_hour",
]

log = structlog.get_logger(__name__)

#: The most snapshots a thinned hour keeps (first, last, lowest, highest).
KEPT_PER_HOUR = 4
#: Outbox rows one delete removes at most.
OUTBOX_BATCH_ROWS = 1000
#: Hours of snapshots one delete thins at most (about 56 rows an hour at one a minute).
SNAPSHOT_BATCH_HOURS = 24
#: Deletes per table in one run at most.
MAX_BATCHES = 20

_HOUR = timedelta(hours=1)
_Id = TypeVar("_Id")


@dataclass(frozen=True, slots=True)
class RetentionCounts:
    """What one run deleted: ``outbox`` rows, ``snapshots`` (of ``hours`` thinned UTC
    hours); ``more`` is True when a run's budget ran out with work possibly left (the next
    run goes on)."""

    outbox: int = 0
    snapshots: int = 0
    hours: int = 0
    more: bool = False


def kept_of_hour(rows: Sequence[tuple[_Id, Decimal]]) -> set[_Id]:
    """The ids to keep of one hour's snapshots ``rows`` (``(id, equity)``, oldest first):
    the first, the last, the lowest and the highest equity (the earliest of equals); at
    most :data:`KEPT_PER_HOUR`, all of them when there are no more than that. Applied to
    its own result it keeps everything, so thinning twice deletes nothing more."""
    if len(rows) <= KEPT_PER_HOUR:
        return {row_id for row_id, _ in rows}
    low = min(rows, key=lambda row: row[1])  # min and max return the first of equals
    high = max(rows, key=lambda row: row[1])
    return {rows[0][0], rows[-1][0], low[0], high[0]}


class RetentionService:
    """Deletes delivered outbox rows and thins old equity snapshots (module docstring).

    Args:
        db: holds ``outbox`` and ``equity_snapshots``.
        settings: ``OUTBOX_RETENTION_DAYS`` and ``EQUITY_SNAPSHOT_DETAIL_DAYS`` (days;
            0: keep every row).
        clock: current UTC time (injectable); ages count back from it.
        batch_rows: outbox rows one delete removes at most.
        batch_hours: hours of snapshots one delete thins at most.
        max_batches: deletes per table in one run at most.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
        *,
        batch_rows: int = OUTBOX_BATCH_ROWS,
        batch_hours: int = SNAPSHOT_BATCH_HOURS,
        max_batches: int = MAX_BATCHES,
    ) -> None:
        self._db = db
        self._outbox_days = settings.outbox_retention_days
        self._detail_days = settings.equity_snapshot_detail_days
        self._clock = clock
        self._batch_rows = batch_rows
        self._batch_hours = batch_hours
        self._max_batches = max_batches

    async def run(self) -> RetentionCounts:
        """One bounded pass over both tables; logs one line with the counts.

        Raises:
            SQLAlchemyError: the database failed; what earlier batches deleted stays
                deleted (each batch commits on its own).
        """
        now = self._clock()
        outbox, outbox_more = await self._prune_outbox(now)
        snapshots, hours, snapshots_more = await self._thin_snapshots(now)
        counts = RetentionCounts(outbox, snapshots, hours, outbox_more or snapshots_more)
        log.info(
            "retention pass",
            outbox_deleted=counts.outbox,
            snapshots_deleted=counts.snapshots,
            hours_thinned=counts.hours,
            more=counts.more,
        )
        return counts

    async def _prune_outbox(self, now: datetime) -> tuple[int, bool]:
        """Delete rows delivered before the cutoff, oldest first, ``batch_rows`` per
        transaction; ``(deleted, more)``. ``delivered_at < cutoff`` is never true of an
        undelivered row (NULL), and the range is served by ``ix_outbox_pending``."""
        if not self._outbox_days:
            return 0, False
        cutoff = now - timedelta(days=self._outbox_days)
        oldest = (
            select(col(OutboxRow.id))
            .where(col(OutboxRow.delivered_at) < cutoff)
            .order_by(col(OutboxRow.delivered_at))
            .limit(self._batch_rows)
        )
        statement = delete(OutboxRow).where(col(OutboxRow.id).in_(oldest.scalar_subquery()))
        deleted = 0
        for _ in range(self._max_batches):
            async with self._db.session() as session:
                count = _rowcount(await session.exec(statement))
            deleted += count
            if count < self._batch_rows:
                return deleted, False
        return deleted, True

    async def _thin_snapshots(self, now: datetime) -> tuple[int, int, bool]:
        """Thin the oldest hours before the cutoff that still hold more than
        :data:`KEPT_PER_HOUR` snapshots, ``batch_hours`` per transaction;
        ``(deleted, hours, more)``."""
        if not self._detail_days:
            return 0, 0, False
        cutoff = _hour_of(now - timedelta(days=self._detail_days))
        budget = self._batch_hours * self._max_batches
        hours = await self._crowded_hours(cutoff, budget)
        deleted = 0
        for start in range(0, len(hours), self._batch_hours):
            chunk = hours[start : start + self._batch_hours]
            doomed = await self._doomed(chunk)
            statement = delete(EquitySnapshotRow).where(col(EquitySnapshotRow.id).in_(doomed))
            async with self._db.session() as session:
                deleted += _rowcount(await session.exec(statement))
        return deleted, len(hours), len(hours) == budget

    async def _crowded_hours(self, cutoff: datetime, limit: int) -> list[datetime]:
        """The starts (UTC) of the oldest ``limit`` hours before ``cutoff`` holding more
        than :data:`KEPT_PER_HOUR` snapshots. Reads the ``at`` index of the old range
        (at most four entries an hour once thinned)."""
        at = col(EquitySnapshotRow.at)
        if self._db.dialect == "postgresql":
            hour: Any = func.date_trunc("hour", func.timezone("UTC", at))
        else:  # SQLite stores naive UTC text
            hour = func.strftime("%Y-%m-%d %H", at)
        query = (
            select(func.min(at))
            .where(at < cutoff)
            .group_by(hour)
            .having(func.count() > KEPT_PER_HOUR)
            .order_by(hour)
            .limit(limit)
        )
        async with self._db.session() as session:
            firsts = (await session.exec(query)).all()
        return [_hour_of(first) for first in firsts if first is not None]

    async def _doomed(self, hours: Sequence[datetime]) -> list[int | None]:
        """The ids of the snapshots in ``hours`` (their starts, UTC, oldest first) that
        thinning deletes, read in one query over the range they span (an hour in between
        that holds no more than :data:`KEPT_PER_HOUR` keeps them all)."""
        at = col(EquitySnapshotRow.at)
        query = (
            select(at, col(EquitySnapshotRow.id), col(EquitySnapshotRow.equity))
            .where(at >= hours[0], at < hours[-1] + _HOUR)
            .order_by(at, col(EquitySnapshotRow.id))
        )
        async with self._db.session() as session:
            rows = (await session.exec(query)).all()
        by_hour: dict[datetime, list[tuple[int | None, Decimal]]] = {}
        for when, row_id, equity in rows:
            by_hour.setdefault(_hour_of(when), []).append((row_id, equity))
        doomed: list[int | None] = []
        for hour in by_hour.values():
            kept = kept_of_hour(hour)
            doomed += [row_id for row_id, _ in hour if row_id not in kept]
        return doomed


def _hour_of(when: datetime) -> datetime:
    """The start of ``when``'s UTC hour."""
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _rowcount(result: Any) -> int:
    """Rows a DELETE removed."""
    return int(result.rowcount)
