"""Results from the trade record and the equity snapshots: ``/pnl``, ``/daily``,
``/performance`` and the daily summary (docs/telegram.md).

The figures are plain data computed by pure functions (:func:`max_drawdown_pct`,
:func:`daily_rows`, :func:`performance_rows`), tested without I/O; :class:`ReportService`
reads the rows and the broker and hands them over. Wording is the Telegram face's.

Rules:

- A trade counts on the day (in ``DISPLAY_TIMEZONE``) it closed, with all its fees, entry
  fees included; its net PnL is realized PnL less those fees (docs/trades.md).
- Equity is what the drawdown guard recorded (table ``equity_snapshots``, about once a
  minute while it runs): the equity at a day's end is the last snapshot before the next
  local midnight (``None`` before the first snapshot).
- Max drawdown is the largest fall from a running peak of the equity curve within the
  period, in percent of that peak (0 when the curve never fell).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.db.engine import Database
from core.db.models import EquitySnapshotRow, OperatorStateRow, OutboxRow, SignalRow, TradeRow
from core.domain import ZERO, Trade, TradeStatus
from core.errors import BrokerError
from core.notify import NoticeKind, Notification, enqueue, from_json, to_json
from core.services.trades import TradeService, TradeStats, trade_from_row, trade_stats
from core.services.trading import TradingService

__all__ = [
    "MAX_CURVE_POINTS",
    "MAX_DAYS",
    "PERIODS",
    "DailyReport",
    "DailySummary",
    "DayRow",
    "EquityPoint",
    "Performance",
    "PerformanceRow",
    "PnlReport",
    "ReportService",
    "daily_rows",
    "max_drawdown_pct",
    "performance_rows",
    "period_start",
    "thin",
]

#: The periods of ``/pnl``: ``day`` starts at local midnight, the others count back.
PERIODS = ("day", "week", "month", "all")
#: The most days ``/daily`` shows.
MAX_DAYS = 90
#: An equity curve is thinned to at most this many points for plotting.
MAX_CURVE_POINTS = 500
_HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class EquityPoint:
    """Account equity (quote currency) at ``at`` (UTC)."""

    at: datetime
    equity: Decimal


@dataclass(frozen=True, slots=True)
class PnlReport:
    """``/pnl``: the closed trades of ``period`` (``stats``), the open positions'
    ``unrealized`` PnL now (quote currency ``currency``), the ``max_drawdown_pct`` of the
    period's equity curve (percent; ``None`` without snapshots) and the ``curve`` to plot
    (thinned to :data:`MAX_CURVE_POINTS`, oldest first; empty without snapshots)."""

    period: str
    stats: TradeStats
    unrealized: Decimal
    currency: str
    max_drawdown_pct: Decimal | None
    curve: tuple[EquityPoint, ...]


@dataclass(frozen=True, slots=True)
class DayRow:
    """One local day of ``/daily``: ``trades`` closed that day, their ``net_pnl`` and
    ``fees`` (quote currency), ``equity`` at the day's end (``None`` before the first
    snapshot)."""

    day: date
    trades: int
    net_pnl: Decimal
    fees: Decimal
    equity: Decimal | None


@dataclass(frozen=True, slots=True)
class DailyReport:
    """``/daily``: ``rows`` newest first, money in quote currency ``currency``."""

    rows: tuple[DayRow, ...]
    currency: str


@dataclass(frozen=True, slots=True)
class PerformanceRow:
    """The closed trades of one symbol or one source: how many, how many made money after
    fees, their net PnL (quote currency) and mean R multiple (``None`` when none had an
    initial stop)."""

    name: str
    trades: int
    wins: int
    net_pnl: Decimal
    average_r: Decimal | None

    @property
    def win_rate(self) -> Decimal:
        """Wins / trades as a fraction (0..1)."""
        return Decimal(self.wins) / self.trades if self.trades else ZERO


@dataclass(frozen=True, slots=True)
class Performance:
    """``/performance``: rows per symbol and per signal source, best net PnL first."""

    by_symbol: tuple[PerformanceRow, ...]
    by_source: tuple[PerformanceRow, ...]
    currency: str


@dataclass(frozen=True, slots=True)
class DailySummary:
    """The daily summary message: local ``day`` (``zone``), the closed trades' ``stats``
    that day, equity now and the open positions' unrealized PnL (quote currency
    ``currency``; ``None`` when the broker did not answer)."""

    day: date
    zone: str
    stats: TradeStats
    equity: Decimal | None
    unrealized: Decimal | None
    currency: str

    def to_payload(self) -> dict[str, Any]:
        """JSON-safe form for the outbox row (:func:`core.notify.to_json`)."""
        return {**to_json(self), "day": self.day.isoformat()}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> DailySummary:
        """The inverse of :meth:`to_payload`. Raises KeyError, TypeError, ValueError."""
        summary: DailySummary = from_json(cls, payload)
        return replace(summary, day=date.fromisoformat(str(payload["day"])))


# --- pure figures ----------------------------------------------------------------------------


def period_start(period: str, now: datetime, zone: ZoneInfo) -> datetime | None:
    """The UTC start of ``period`` (one of :data:`PERIODS`) at ``now``: today's local
    midnight in ``zone``, 7 or 30 days back, or None for ``all``."""
    if period == "day":
        return _midnight(now.astimezone(zone).date(), zone)
    if period == "week":
        return now - timedelta(days=7)
    if period == "month":
        return now - timedelta(days=30)
    return None


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    """The UTC instant of ``day``'s local midnight in ``zone``."""
    return datetime.combine(day, time(), zone).astimezone(ZoneInfo("UTC"))


def max_drawdown_pct(points: Sequence[EquityPoint]) -> Decimal | None:
    """The largest fall from a running peak of ``points`` (oldest first), in percent of
    that peak: ``10_000 -> 10_500 -> 9_450`` is 10. 0 when it never fell; None when
    ``points`` is empty."""
    if not points:
        return None
    peak = points[0].equity
    worst = ZERO
    for point in points:
        peak = max(peak, point.equity)
        if peak > 0:
            worst = max(worst, (peak - point.equity) / peak * _HUNDRED)
    return worst


def thin(points: Sequence[EquityPoint], limit: int = MAX_CURVE_POINTS) -> tuple[EquityPoint, ...]:
    """At most ``limit`` of ``points``, evenly spaced, always keeping the last."""
    if len(points) <= limit:
        return tuple(points)
    step = -(-len(points) // limit)  # ceiling: never more than limit
    kept = list(points[::step])
    if kept[-1] is not points[-1]:
        kept[-1] = points[-1]
    return tuple(kept)


def daily_rows(
    trades: Sequence[Trade],
    points: Sequence[EquityPoint],
    today: date,
    days: int,
    zone: ZoneInfo,
) -> list[DayRow]:
    """The last ``days`` local days up to ``today`` (in ``zone``), newest first, from the
    closed ``trades`` and the equity ``points`` (oldest first; see the module docstring)."""
    rows = []
    for back in range(days):
        day = today - timedelta(days=back)
        closed = [t for t in trades if t.closed_at and t.closed_at.astimezone(zone).date() == day]
        end = _midnight(day + timedelta(days=1), zone)
        before = [p.equity for p in points if p.at < end]
        rows.append(
            DayRow(
                day=day,
                trades=len(closed),
                net_pnl=sum((t.net_pnl for t in closed), ZERO),
                fees=sum((t.fees for t in closed), ZERO),
                equity=before[-1] if before else None,
            )
        )
    return rows


def performance_rows(named: Sequence[tuple[str, Trade]]) -> tuple[PerformanceRow, ...]:
    """One row per name of ``named`` (``(symbol or source, closed trade)``), best net PnL
    first (ties by name)."""
    groups: dict[str, list[Trade]] = {}
    for name, trade in named:
        groups.setdefault(name, []).append(trade)
    rows = []
    for name, group in groups.items():
        stats = trade_stats(group)
        rows.append(PerformanceRow(name, stats.trades, stats.wins, stats.net_pnl, stats.average_r))
    return tuple(sorted(rows, key=lambda r: (-r.net_pnl, r.name)))


# --- the service ----------------------------------------------------------------------------


class ReportService:
    """Reads the trade record, the equity snapshots and the broker for the result
    commands and writes the daily summary (see the module docstring).

    Args:
        db: holds ``trades``, ``signals``, ``equity_snapshots`` and ``outbox``.
        trades: the trade record's reader.
        trading: the broker's positions (unrealized PnL) and account (currency, equity).
        zone: ``DISPLAY_TIMEZONE``: days start at its midnight.
        clock: current UTC time (injectable).
    """

    def __init__(
        self,
        db: Database,
        trades: TradeService,
        trading: TradingService,
        zone: ZoneInfo,
        clock: Callable[[], datetime],
    ) -> None:
        self._db = db
        self._trades = trades
        self._trading = trading
        self._zone = zone
        self._clock = clock

    async def equity_curve(self, since: datetime | None = None) -> list[EquityPoint]:
        """Equity snapshots at or after ``since`` (UTC; None: all), oldest first."""
        query = select(col(EquitySnapshotRow.at), col(EquitySnapshotRow.equity))
        if since is not None:
            query = query.where(col(EquitySnapshotRow.at) >= since)
        query = query.order_by(col(EquitySnapshotRow.at), col(EquitySnapshotRow.id))
        async with self._db.session() as session:
            rows = (await session.exec(query)).all()
        return [EquityPoint(at, equity) for at, equity in rows]

    async def pnl(self, period: str) -> PnlReport:
        """``/pnl period`` (one of :data:`PERIODS`). Raises BrokerError when the broker
        does not answer (the unrealized PnL is the broker's)."""
        since = period_start(period, self._clock(), self._zone)
        stats = trade_stats(await self._trades.closed_since(since))
        unrealized = sum((p.unrealized_pnl for p in await self._trading.positions()), ZERO)
        currency = (await self._trading.account()).currency
        curve = await self.equity_curve(since)
        return PnlReport(period, stats, unrealized, currency, max_drawdown_pct(curve), thin(curve))

    async def daily(self, days: int) -> DailyReport:
        """``/daily days``: the last ``days`` local days, newest first (see
        :func:`daily_rows`). Raises BrokerError when the broker does not answer (the
        account's currency)."""
        today = self._clock().astimezone(self._zone).date()
        since = _midnight(today - timedelta(days=days - 1), self._zone)
        trades = await self._trades.closed_since(since)
        rows = daily_rows(trades, await self.equity_curve(), today, days, self._zone)
        return DailyReport(tuple(rows), (await self._trading.account()).currency)

    async def performance(self) -> Performance:
        """``/performance``: every closed trade grouped by symbol and by its signal's
        source (``unknown`` for a trade without a signal)."""
        query = (
            select(TradeRow, col(SignalRow.source))
            .join(SignalRow, col(SignalRow.id) == col(TradeRow.signal_id), isouter=True)
            .where(col(TradeRow.status) == TradeStatus.CLOSED.value)
        )
        async with self._db.session() as session:
            rows = (await session.exec(query)).all()
        trades = [(trade_from_row(row), source or "unknown") for row, source in rows]
        currency = (await self._trading.account()).currency
        return Performance(
            by_symbol=performance_rows([(t.symbol, t) for t, _ in trades]),
            by_source=performance_rows([(source, t) for t, source in trades]),
            currency=currency,
        )

    async def summary(self) -> DailySummary:
        """Today's summary (local day): its closed trades, equity and unrealized PnL now
        (both ``None`` when the broker does not answer)."""
        now = self._clock()
        today = now.astimezone(self._zone).date()
        stats = trade_stats(await self._trades.closed_since(_midnight(today, self._zone)))
        try:
            account = await self._trading.account()
            positions = await self._trading.positions()
        except BrokerError:  # a summary without the broker's figures beats no summary
            equity = unrealized = None
            currency = ""
        else:
            equity, currency = account.equity, account.currency
            unrealized = sum((p.unrealized_pnl for p in positions), ZERO)
        return DailySummary(today, self._zone.key, stats, equity, unrealized, currency)

    async def send_daily_summary(self) -> bool:
        """Queue today's summary (a ``daily_summary`` notification) unless one for this
        local day is already in the outbox; True when it was queued.

        Exactly once per day across restarts and a hand-over between leaders: the check
        and the insert run in one transaction whose first statement writes the
        ``operator_state`` row, which takes SQLite's write lock and PostgreSQL's row lock,
        so a second writer waits and then sees the first one's row.
        """
        summary = await self.summary()
        day = summary.day.isoformat()
        async with self._db.session() as session:
            await _lock_operator_state(session)
            since = self._clock() - timedelta(days=3)
            delivered = col(OutboxRow.delivered_at)
            query = select(OutboxRow.payload).where(
                col(OutboxRow.kind) == NoticeKind.DAILY_SUMMARY.value,
                col(OutboxRow.created_at) >= since,
                # implied (a row is delivered after it is created); lets ix_outbox_pending
                # serve the query instead of a scan of the whole outbox
                or_(delivered.is_(None), delivered >= since),
            )
            if any(payload.get("day") == day for payload in (await session.exec(query)).all()):
                return False
            enqueue(session, Notification(NoticeKind.DAILY_SUMMARY, payload=summary.to_payload()))
        return True


async def _lock_operator_state(session: AsyncSession) -> None:
    """Write the ``operator_state`` row without changing it (see
    :meth:`ReportService.send_daily_summary`)."""
    statement = update(OperatorStateRow).where(col(OperatorStateRow.id) == 1)
    await session.exec(statement.values(id=col(OperatorStateRow.id)))
