"""RiskService: the drawdown guard (docs/operations.md, "Drawdown guard").

- Equity is the broker's account equity, open positions included (quote currency).
- The high-water mark (``peak_equity``) and the day's starting equity
  (``day_start_equity``, taken at the first check of each UTC day) are persisted in
  ``operator_state``.
- Drawdown % = (1 - equity / peak) x 100; daily loss % = (1 - equity / day start) x 100,
  both floored at 0. Limits are settings in percent.
- Warn level (``DRAWDOWN_WARN_PCT``): one alert when the drawdown reaches it, one recovery
  alert when it falls below the warn level minus ``DRAWDOWN_HYSTERESIS_PCT`` (so a drawdown
  hovering at the line does not alert on every check).
- Max level (drawdown reaches ``DRAWDOWN_MAX_PCT`` or daily loss ``DAILY_LOSS_MAX_PCT``):
  the trading state becomes HALTED in the same transaction as the level change (the
  breach's pause, through the one owner of the state, :class:`~core.services.gate.Gate`),
  then one alert and the ``DRAWDOWN_ACTION``: ``alert`` or ``pause`` (nothing more: the
  account is already halted), or ``flatten`` (wait for opening orders committed before the
  halt to come back from the broker, close every position we own, report each result and
  anything left open). The breach stays until an owner resumes
  (:meth:`RiskService.resume`); while it stands, approvals are blocked.

Exactly once per crossing: the level change is a compare-and-set on ``operator_state``, so
of two concurrent checks (or two processes) exactly one halts, alerts and acts; the breach
and the halt are rows, so a restart neither forgets nor repeats them.

Checks run every ``DRAWDOWN_CHECK_INTERVAL`` seconds (the scheduler) and after every fill:
``TradingService.on_fill`` calls :meth:`RiskService.request_check` whenever it
records a broker report that carries fills, whatever recorded it (an approval, a close, the
reconciler). The request schedules a check in the background so the caller (an approval
tap, or the flatten itself) never waits for it or deadlocks on it.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import Row, select, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from core.brokers.base import Broker, retry_temporary
from core.config import DrawdownAction, Settings
from core.db import repositories as repo
from core.db.engine import Database
from core.db.models import EquitySnapshotRow, OperatorStateRow
from core.domain import ZERO, Account, ExitReason, Position, TradingState, utcnow
from core.errors import BrokerError
from core.notify import NoticeKind, Notification, Notifier, Priority, Topic, from_json, to_json
from core.services.reconciler import Reconciler
from core.services.trading import CloseReport, OperatorStatus, TradingService

__all__ = [
    "Baselines",
    "BreachLevel",
    "FlattenReport",
    "Limits",
    "RiskFigures",
    "RiskService",
    "daily_loss_pct",
    "drawdown_pct",
    "next_level",
    "roll_baselines",
]

log = structlog.get_logger(__name__)

ACTOR = "drawdown-guard"

#: Equity snapshots are written at most this often (plus on every level change).
SNAPSHOT_EVERY = timedelta(minutes=1)

HUNDRED = Decimal(100)

_STATE = OperatorStateRow.__table__  # type: ignore[attr-defined]
#: The operator state's columns a check judges by (:meth:`RiskService._assess`), as a
#: plain row.
_GUARD_STATE = select(
    _STATE.c.peak_equity,
    _STATE.c.day_start_equity,
    _STATE.c.day_start_date,
    _STATE.c.breach_level,
    _STATE.c.breach_at,
    _STATE.c.trading_state,
).where(_STATE.c.id == 1)


class BreachLevel(enum.StrEnum):
    """The guard's persisted level (``operator_state.breach_level``)."""

    NONE = ""
    WARN = "warn"
    MAX = "max"


@dataclass(frozen=True, slots=True)
class Limits:
    """The guard's limits, in percent, and the action at the max level."""

    warn_pct: Decimal
    max_pct: Decimal
    daily_loss_max_pct: Decimal
    hysteresis_pct: Decimal
    action: DrawdownAction

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """``DRAWDOWN_WARN_PCT``, ``DRAWDOWN_MAX_PCT``, ``DAILY_LOSS_MAX_PCT``,
        ``DRAWDOWN_HYSTERESIS_PCT`` and ``DRAWDOWN_ACTION``."""
        return cls(
            warn_pct=settings.drawdown_warn_pct,
            max_pct=settings.drawdown_max_pct,
            daily_loss_max_pct=settings.daily_loss_max_pct,
            hysteresis_pct=settings.drawdown_hysteresis_pct,
            action=settings.drawdown_action,
        )


@dataclass(frozen=True, slots=True)
class Baselines:
    """The high-water mark and the day's starting equity (quote currency) for the UTC
    date ``day_start_date`` (``YYYY-MM-DD``)."""

    peak_equity: Decimal
    day_start_equity: Decimal
    day_start_date: str


def roll_baselines(
    equity: Decimal,
    now: datetime,
    peak_equity: Decimal | None,
    day_start_equity: Decimal | None,
    day_start_date: str,
) -> Baselines:
    """The baselines after observing ``equity`` at ``now``: the peak rises to a new high;
    the day start is reset to ``equity`` on the first observation of a new UTC day."""
    today = now.astimezone(UTC).date().isoformat()
    new_day = day_start_equity is None or day_start_date != today
    return Baselines(
        peak_equity=equity if peak_equity is None else max(peak_equity, equity),
        day_start_equity=equity if new_day or day_start_equity is None else day_start_equity,
        day_start_date=today,
    )


def drawdown_pct(equity: Decimal, peak: Decimal) -> Decimal:
    """(1 - equity / peak) x 100, at least 0; 0 for a non-positive peak."""
    if peak <= 0:
        return ZERO
    return max((1 - equity / peak) * HUNDRED, ZERO)


def daily_loss_pct(equity: Decimal, day_start: Decimal) -> Decimal:
    """(1 - equity / day start) x 100, at least 0 (a gain is no loss)."""
    return drawdown_pct(equity, day_start)


def next_level(
    level: BreachLevel, drawdown: Decimal, daily_loss: Decimal, limits: Limits
) -> BreachLevel:
    """The guard's level after a check (percent inputs).

    MAX is sticky: only an owner's resume clears it. Otherwise the max level is reached
    when the drawdown reaches ``max_pct`` or the daily loss ``daily_loss_max_pct``; WARN
    is entered at ``warn_pct`` and left only below ``warn_pct - hysteresis_pct``.
    """
    if level is BreachLevel.MAX:
        return BreachLevel.MAX
    if drawdown >= limits.max_pct or daily_loss >= limits.daily_loss_max_pct:
        return BreachLevel.MAX
    if level is BreachLevel.WARN:
        rearm = limits.warn_pct - limits.hysteresis_pct
        return BreachLevel.WARN if drawdown >= rearm else BreachLevel.NONE
    return BreachLevel.WARN if drawdown >= limits.warn_pct else BreachLevel.NONE


@dataclass(frozen=True, slots=True)
class RiskFigures:
    """What ``/drawdown`` shows: equity and baselines in ``currency``, drawdown and daily
    loss in percent, the limits, the level (and since when, UTC) and the trading state."""

    at: datetime
    equity: Decimal
    currency: str
    peak_equity: Decimal
    drawdown_pct: Decimal
    day_start_equity: Decimal
    day_start_date: str
    daily_loss_pct: Decimal
    limits: Limits
    level: BreachLevel
    breach_at: datetime | None
    trading_state: TradingState

    @property
    def paused(self) -> bool:
        """True unless trading is ACTIVE."""
        return self.trading_state is not TradingState.ACTIVE

    def text(self) -> str:
        """Plain-text lines for a chat message or the CLI."""
        cur, lim = self.currency, self.limits
        state = {
            BreachLevel.NONE: "within limits",
            BreachLevel.WARN: "warn level reached",
            BreachLevel.MAX: "MAX LIMIT BREACHED, approvals blocked until an owner resumes",
        }[self.level]
        if self.breach_at is not None and self.level is not BreachLevel.NONE:
            state += f" (since {self.breach_at:%Y-%m-%d %H:%M} UTC)"
        return "\n".join(
            [
                f"Equity {self.equity:,.2f} {cur}",
                f"Drawdown {self.drawdown_pct:.2f}% from peak {self.peak_equity:,.2f} {cur} "
                f"(warn {lim.warn_pct}%, max {lim.max_pct}%)",
                f"Daily loss {self.daily_loss_pct:.2f}% from {self.day_start_equity:,.2f} {cur} "
                f"at the start of {self.day_start_date} UTC (max {lim.daily_loss_max_pct}%)",
                f"At the max level: {_ACTION_WORDS[lim.action]}",
                f"Guard: {state}" + _STATE_WORDS[self.trading_state],
            ]
        )


_STATE_WORDS = {
    TradingState.ACTIVE: "",
    TradingState.REDUCING: "; trading reducing only",
    TradingState.HALTED: "; trading paused",
}

_ACTION_WORDS = {
    DrawdownAction.ALERT: "alert only",
    DrawdownAction.PAUSE: "pause trading",
    DrawdownAction.FLATTEN: "pause and close every position",
}


@dataclass(frozen=True, slots=True)
class FlattenReport:
    """What the drawdown flatten did: the figures of a ``flatten_report`` notification
    (an alert), worded by ``bot/render.py``.

    ``report`` is the close all's steps (cancelled entry orders, each close with its
    realized PnL net of fees in quote currency, exits cancelled, positions left
    untouched); ``still_open`` the positions the flatten meant to close that the broker
    still shows afterwards; ``unconfirmed`` why the positions could not be re-read
    afterwards (empty when they were).
    """

    report: CloseReport
    still_open: tuple[Position, ...] = ()
    unconfirmed: str = ""

    def to_payload(self) -> dict[str, Any]:
        """JSON-safe form for the outbox row (:func:`core.notify.to_json`)."""
        payload: dict[str, Any] = to_json(self)
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> FlattenReport:
        """The inverse of :meth:`to_payload`.

        Raises:
            KeyError, TypeError, ValueError, ArithmeticError: a malformed payload.
        """
        report: FlattenReport = from_json(cls, payload)
        return report

    def notification(self) -> Notification:
        """The ``flatten_report`` alert carrying these figures."""
        return Notification(
            NoticeKind.FLATTEN_REPORT, priority=Priority.ALERT, payload=self.to_payload()
        )


class RiskService:
    """The drawdown guard.

    Args:
        db: holds ``operator_state`` and ``equity_snapshots``.
        broker: the source of equity.
        trading: pauses, resumes and closes positions.
        reconciler: settles closes whose outcome was unknown during a flatten.
        notifier: alerts (``Priority.ALERT``, ahead of routine messages).
        settings: the limits and the action.
        clock: current UTC time (injectable); its date decides the daily reset.
    """

    def __init__(
        self,
        db: Database,
        broker: Broker,
        trading: TradingService,
        reconciler: Reconciler,
        notifier: Notifier,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._broker = broker
        self._trading = trading
        self._reconciler = reconciler
        self._notifier = notifier
        self.limits = Limits.from_settings(settings)
        self._flatten_external = settings.flatten_external
        self._clock = clock
        self._lock = asyncio.Lock()
        self._queued: asyncio.Task[RiskFigures] | None = None
        self._background: set[asyncio.Task[RiskFigures]] = set()
        self._last_snapshot: datetime | None = None

    # --- the check ------------------------------------------------------------------------

    async def check(self) -> RiskFigures:
        """Read equity, move the baselines, persist the level, alert and act on a crossing.

        Checks are serialized in this process; across processes the level change is a
        compare-and-set, so each crossing alerts and acts exactly once.

        Raises:
            BrokerError: equity could not be read (temporary errors are retried first).
        """
        async with self._lock:
            if self._queued is asyncio.current_task():
                self._queued = None
            account = await retry_temporary(self._broker.account)
            return await self._evaluate(account)

    def request_check(self) -> None:
        """Schedule a check in the background and return at once (the after-fill hook).

        Requests made while one is still waiting to start are served by that one. A failed
        background check is logged; the periodic check runs anyway.
        """
        if self._queued is not None:
            return
        task = asyncio.get_running_loop().create_task(self.check())
        self._queued = task
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[RiskFigures]) -> None:
        self._background.discard(task)
        if self._queued is task:
            self._queued = None
        if not task.cancelled() and task.exception() is not None:
            log.error("after-fill drawdown check failed", error=str(task.exception()))

    async def idle(self) -> None:
        """Wait until the background checks requested so far have finished (their
        failures are logged, not raised), so that a caller stepping prices afterwards knows
        which prices they saw."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def close(self) -> None:
        """Cancel background checks that have not finished (engine shutdown)."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _evaluate(self, account: Account) -> RiskFigures:
        """Judge ``account`` against the persisted baselines and level. A check that would
        write nothing (baselines and level as stored, no snapshot due: most checks after a
        fill) reads the guard's columns of the state in one statement outside a session
        and transaction and returns; any change is decided afresh in the write
        transaction below."""
        now = self._clock()
        if not self._snapshot_due(now):
            seen = await self._db.read_row(_GUARD_STATE)
            if seen is not None:
                base, figures, new = self._assess(account, seen, now)
                if new is BreachLevel(seen.breach_level) and _as_stored(base, seen):
                    return figures
        async with self._db.session() as session:
            state = await repo.load_operator_state(session)
            base, figures, new = self._assess(account, state, now)
            state.peak_equity = base.peak_equity
            state.day_start_equity = base.day_start_equity
            state.day_start_date = base.day_start_date
            old = BreachLevel(state.breach_level)
            won = new is not old and await _move_level(session, old, new, now)
            if won and new is BreachLevel.MAX:  # the breach's pause, in the same transaction
                await self._trading.gate.halt_in(
                    session, f"drawdown guard: {_cause(figures)}", ACTOR
                )
                figures = replace(figures, trading_state=TradingState.HALTED)
            if won:
                figures = _with_level(figures, new, now)
            if won or self._snapshot_due(now):
                session.add(
                    EquitySnapshotRow(
                        at=now,
                        balance=account.balance,
                        equity=account.equity,
                        peak_equity=base.peak_equity,
                        drawdown_pct=figures.drawdown_pct,
                    )
                )
                self._last_snapshot = now
        if won:
            log.warning(
                "drawdown level changed",
                old=old.value or "none",
                new=new.value or "none",
                drawdown_pct=str(figures.drawdown_pct),
                daily_loss_pct=str(figures.daily_loss_pct),
            )
            await self._on_crossing(old, new, figures)
        return figures

    def _assess(
        self, account: Account, state: OperatorStateRow | Row[Any], now: datetime
    ) -> tuple[Baselines, RiskFigures, BreachLevel]:
        """The baselines after ``account``, the figures, and the level they call for."""
        base = roll_baselines(
            account.equity, now, state.peak_equity, state.day_start_equity, state.day_start_date
        )
        figures = self._figures(account, base, state, now)
        old = BreachLevel(state.breach_level)
        return (
            base,
            figures,
            next_level(old, figures.drawdown_pct, figures.daily_loss_pct, self.limits),
        )

    def _snapshot_due(self, now: datetime) -> bool:
        return self._last_snapshot is None or now - self._last_snapshot >= SNAPSHOT_EVERY

    def _figures(
        self, account: Account, base: Baselines, state: OperatorStateRow | Row[Any], now: datetime
    ) -> RiskFigures:
        return RiskFigures(
            at=now,
            equity=account.equity,
            currency=account.currency,
            peak_equity=base.peak_equity,
            drawdown_pct=drawdown_pct(account.equity, base.peak_equity),
            day_start_equity=base.day_start_equity,
            day_start_date=base.day_start_date,
            daily_loss_pct=daily_loss_pct(account.equity, base.day_start_equity),
            limits=self.limits,
            level=BreachLevel(state.breach_level),
            breach_at=state.breach_at,
            trading_state=TradingState(state.trading_state),
        )

    # --- crossings ------------------------------------------------------------------------

    async def _on_crossing(self, old: BreachLevel, new: BreachLevel, f: RiskFigures) -> None:
        cur, lim = f.currency, self.limits
        where = (
            f"Equity {f.equity:,.2f} {cur}, peak {f.peak_equity:,.2f} {cur}, "
            f"day start {f.day_start_equity:,.2f} {cur}."
        )
        if new is BreachLevel.WARN:
            await self._alert(
                f"⚠️ Drawdown {f.drawdown_pct:.2f}% reached the warn level {lim.warn_pct}%. "
                f"{where} At {lim.max_pct}% (or a {lim.daily_loss_max_pct}% daily loss) the "
                f"guard will {_ACTION_WORDS[lim.action]}."
            )
        elif new is BreachLevel.NONE:
            await self._alert(
                f"✅ Drawdown recovered to {f.drawdown_pct:.2f}%, below the warn level "
                f"{lim.warn_pct}% less {lim.hysteresis_pct}% hysteresis. {where}"
            )
        else:
            await self._on_max(f, where)

    async def _on_max(self, f: RiskFigures, where: str) -> None:
        lim = self.limits
        await self._alert(
            f"🛑 Drawdown guard: {_cause(f)}. {where} Action: {_ACTION_WORDS[lim.action]}. "
            "Approvals are blocked until an owner resumes (/resume)."
        )
        # Trading is already HALTED (committed with the breach), so a crash during the
        # flatten still leaves the account halted. The pending cards say so first.
        await self._trading.gate.announce()
        if lim.action is DrawdownAction.FLATTEN:
            await self._flatten()  # cancels the resting entry orders first
        else:
            await self._trading.after_pause(ACTOR)

    async def _flatten(self) -> None:
        """Cancel resting entry orders, close every position SignalDesk opened (every
        position with ``FLATTEN_EXTERNAL``) with bounded concurrency, cancel the closed
        positions' exits (all in TradingService.close_all), settle closes whose outcome was
        unknown through the reconciler (lookup by client order id, one re-send of a lost
        close under a new id, temporary errors retried), then report each cancel and each
        close with its realized PnL, what was left untouched, and alert on anything still
        open. Opening orders committed before the halt are waited for first, so a late
        entry fill cannot follow "flat"."""
        still_in_flight = await self._trading.gate.settle_in_flight()
        if still_in_flight:
            log.error("flatten proceeds with opening orders in flight", count=still_in_flight)
        report = await self._trading.close_all(
            ACTOR, include_external=self._flatten_external, reason=ExitReason.DRAWDOWN_FLATTEN
        )
        if not report.ok:
            await self._reconciler.run()
        untouched = {(p.symbol, p.position_ref) for p in report.left_open}
        try:
            left = await retry_temporary(self._broker.positions)
        except (BrokerError, OSError, TimeoutError) as exc:  # report what is known
            log.error("flatten could not re-read positions", error=str(exc))
            await self._notifier.notify(FlattenReport(report, unconfirmed=str(exc)).notification())
            return
        still = tuple(p for p in left if (p.symbol, p.position_ref) not in untouched)
        await self._notifier.notify(FlattenReport(report, still_open=still).notification())

    async def _alert(self, text: str) -> None:
        await self._notifier.notify(
            Notification(NoticeKind.TEXT, text, priority=Priority.ALERT, topic=Topic.ALERT)
        )

    # --- reads and the owner's resume -----------------------------------------------------

    async def figures(self, account: Account | None = None) -> RiskFigures:
        """The guard's current figures without changing anything (``/drawdown``).

        ``account`` avoids a second broker call when the caller has just read it.

        Raises:
            BrokerError: equity could not be read.
        """
        if account is None:
            account = await retry_temporary(self._broker.account)
        async with self._db.session() as session:
            state = await repo.load_operator_state(session)
        base = roll_baselines(
            account.equity,
            self._clock(),
            state.peak_equity,
            state.day_start_equity,
            state.day_start_date,
        )
        return self._figures(account, base, state, self._clock())

    async def resume(self, actor: str) -> OperatorStatus:
        """Lift a pause and a max breach for ``actor``, an owner who has confirmed (the
        caller checks both: only an owner resumes after a breach).

        After a max breach the guard is re-armed from the current equity: peak and day
        start are set to it, so the loss the owner has acknowledged does not trip the
        guard again at once; a further ``DRAWDOWN_MAX_PCT`` fall from here does. The
        baselines move before the breach is cleared, so no check can see the cleared
        breach with the old baselines.

        Raises:
            BrokerError: after a max breach, equity could not be read; nothing changed.
        """
        async with self._lock:
            if (await self._trading.operator_status()).breach_level == BreachLevel.MAX:
                account = await retry_temporary(self._broker.account)
                now = self._clock()
                async with self._db.session() as session:
                    state = await repo.load_operator_state(session)
                    state.peak_equity = state.day_start_equity = account.equity
                    state.day_start_date = now.astimezone(UTC).date().isoformat()
                    await repo.add_audit(
                        session,
                        actor=actor,
                        action="guard_rearm",
                        at=now,
                        reason=f"baselines reset to equity {account.equity} {account.currency}",
                    )
                log.warning("drawdown guard re-armed", equity=str(account.equity))
            return await self._trading.resume(actor)


async def _move_level(
    session: AsyncSession, old: BreachLevel, new: BreachLevel, now: datetime
) -> bool:
    """Compare-and-set ``breach_level`` from ``old`` to ``new``; True when this call won."""
    result = await session.exec(
        update(OperatorStateRow)
        .where(col(OperatorStateRow.id) == 1, col(OperatorStateRow.breach_level) == old.value)
        .values(breach_level=new.value, breach_at=now if new is not BreachLevel.NONE else None)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _as_stored(base: Baselines, state: OperatorStateRow | Row[Any]) -> bool:
    """True when ``base`` is what ``state`` holds already (nothing to write)."""
    return (base.peak_equity, base.day_start_equity, base.day_start_date) == (
        state.peak_equity,
        state.day_start_equity,
        state.day_start_date,
    )


def _cause(f: RiskFigures) -> str:
    """Which limit the max breach crossed, in words."""
    if f.drawdown_pct >= f.limits.max_pct:
        return f"drawdown {f.drawdown_pct:.2f}% reached the max {f.limits.max_pct}%"
    return f"daily loss {f.daily_loss_pct:.2f}% reached the max {f.limits.daily_loss_max_pct}%"


def _with_level(figures: RiskFigures, level: BreachLevel, now: datetime) -> RiskFigures:
    return replace(figures, level=level, breach_at=now if level is not BreachLevel.NONE else None)
