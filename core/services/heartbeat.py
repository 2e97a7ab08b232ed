"""HeartbeatService: the silent "I am alive" message and the dead man's switch ping.

Every ``HEARTBEAT_INTERVAL`` seconds (the scheduler), and on ``/heartbeat``, :meth:`beat`
composes a :class:`Heartbeat` (uptime, broker reachability and the round trip of one
``account()`` call, equity, drawdown against the limits, open positions, pending signals,
the last error), queues it in the outbox as a silent message (Bot API
``disable_notification``) and, when ``HEARTBEAT_PING_URL`` is set, pings that URL with
httpx: an external monitor (healthchecks.io, Uptime Kuma, Better Stack) then alerts when the
pings stop. A failed ping is logged and recorded as the last error; it never raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from core.brokers.base import Broker
from core.config import Settings
from core.domain import Account, Position, TradingState, utcnow
from core.errors import BrokerError
from core.notify import NoticeKind, Notification, Notifier, Topic
from core.services.risk import BreachLevel, RiskFigures, RiskService
from core.services.signals import SignalService

__all__ = ["ErrorNote", "Health", "Heartbeat", "HeartbeatService", "format_duration"]

log = structlog.get_logger(__name__)

#: Seconds a dead man's switch ping may take before it counts as failed.
PING_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class ErrorNote:
    """One error worth showing in the heartbeat: where (a job id, ``ping``, ``broker``),
    what (a user-facing line, never a secret) and when (UTC)."""

    source: str
    message: str
    at: datetime


class Health:
    """This process's most recent error, shown in heartbeats. The scheduler's error
    listener and the heartbeat itself record into it."""

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self._clock = clock
        self.last_error: ErrorNote | None = None

    def record_error(self, source: str, message: str) -> None:
        """Remember ``message`` (truncated to 200 characters) as the last error."""
        self.last_error = ErrorNote(source, message[:200], self._clock())


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One heartbeat's figures. ``round_trip_ms`` is the wall time of one ``account()``
    call in milliseconds (None when the broker did not answer, with ``broker_error``);
    ``risk`` and ``positions`` are None when the broker did not answer."""

    at: datetime
    uptime_seconds: float
    broker: str
    round_trip_ms: float | None
    broker_error: str
    account: Account | None
    risk: RiskFigures | None
    positions: list[Position] | None
    pending_signals: int
    last_error: ErrorNote | None

    def text(self) -> str:
        """Plain-text lines for the chat."""
        lines = [f"💓 SignalDesk alive, up {format_duration(self.uptime_seconds)}"]
        if self.round_trip_ms is None:
            lines.append(f"Broker {self.broker}: UNREACHABLE ({self.broker_error})")
        else:
            lines.append(f"Broker {self.broker}: ok, {self.round_trip_ms:.0f} ms")
        if self.account is not None:
            lines.append(f"Equity {self.account.equity:,.2f} {self.account.currency}")
        if self.risk is not None:
            r, lim = self.risk, self.risk.limits
            guard = {
                BreachLevel.NONE: "ok",
                BreachLevel.WARN: "WARN",
                BreachLevel.MAX: "MAX BREACHED",
            }[r.level]
            trading = {
                TradingState.ACTIVE: "",
                TradingState.REDUCING: ", reducing only",
                TradingState.HALTED: ", paused",
            }[r.trading_state]
            lines.append(
                f"Drawdown {r.drawdown_pct:.2f}% (warn {lim.warn_pct}%, max {lim.max_pct}%), "
                f"daily loss {r.daily_loss_pct:.2f}% (max {lim.daily_loss_max_pct}%), "
                f"guard {guard}{trading}"
            )
        if self.positions is not None:
            held = ", ".join(f"{p.symbol} {p.quantity}" for p in self.positions) or "none"
            lines.append(f"Open positions: {held}")
        lines.append(f"Pending signals: {self.pending_signals}")
        if self.last_error is None:
            lines.append("Last error: none")
        else:
            e = self.last_error
            lines.append(f"Last error: {e.at:%Y-%m-%d %H:%M} UTC, {e.source}: {e.message}")
        return "\n".join(lines)


def format_duration(seconds: float) -> str:
    """``3d 4h 12m`` (minutes precision; ``0m`` under a minute)."""
    minutes = int(seconds // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    parts.append(f"{minutes}m")
    return " ".join(parts)


class HeartbeatService:
    """Composes, queues and pings heartbeats.

    Args:
        broker: probed with one ``account()`` call per beat (not retried: the point is to
            see whether it answers).
        signals: counts pending signals.
        risk: drawdown figures.
        notifier: queues the silent message.
        health: supplies the last error, and records failed pings.
        settings: ``HEARTBEAT_PING_URL``.
        clock: current UTC time (injectable); uptime counts from construction.
    """

    def __init__(
        self,
        broker: Broker,
        signals: SignalService,
        risk: RiskService,
        notifier: Notifier,
        health: Health,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._broker = broker
        self._signals = signals
        self._risk = risk
        self._notifier = notifier
        self._health = health
        self._ping_url = settings.heartbeat_ping_url
        self._clock = clock
        self.started_at = clock()
        self.last_beat_at: datetime | None = None
        """When this process last queued a heartbeat (UTC); None before the first."""

    async def compose(self) -> Heartbeat:
        """The current figures. A broker failure is reported in the heartbeat, not raised."""
        account: Account | None = None
        risk: RiskFigures | None = None
        positions: list[Position] | None = None
        round_trip: float | None = None
        error = ""
        started = time.perf_counter()
        try:
            account = await self._broker.account()
            round_trip = (time.perf_counter() - started) * 1000
            positions = await self._broker.positions()
            risk = await self._risk.figures(account)
        except BrokerError as exc:
            error = str(exc)
            self._health.record_error("broker", error)
        now = self._clock()
        return Heartbeat(
            at=now,
            uptime_seconds=(now - self.started_at).total_seconds(),
            broker=self._broker.name,
            round_trip_ms=round_trip,
            broker_error=error,
            account=account,
            risk=risk,
            positions=positions,
            pending_signals=len(await self._signals.pending()),
            last_error=self._health.last_error,
        )

    async def beat(self) -> Heartbeat:
        """Compose a heartbeat, queue it (outbox; topic HEARTBEAT: silent unless the owner
        chose otherwise in ``/notify``), then ping ``HEARTBEAT_PING_URL``
        if set. Returns the heartbeat (``/heartbeat`` may show ``.text()`` too)."""
        heartbeat = await self.compose()
        await self._notifier.notify(
            Notification(NoticeKind.TEXT, heartbeat.text(), topic=Topic.HEARTBEAT)
        )
        self.last_beat_at = heartbeat.at
        if self._ping_url:
            await self._ping(self._ping_url)
        return heartbeat

    async def _ping(self, url: str) -> None:
        """GET ``url``; any failure is logged (without the URL, which usually embeds a
        token) and recorded, never raised."""
        import httpx  # only a process that pings pays for its import

        try:
            async with httpx.AsyncClient(timeout=PING_TIMEOUT_SECONDS) as client:
                response = await client.get(url)
                response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            problem = f"ping answered HTTP {exc.response.status_code}"
        except httpx.HTTPError as exc:
            problem = f"ping failed: {type(exc).__name__}"
        else:
            return
        log.warning("heartbeat ping failed", problem=problem)
        self._health.record_error("ping", problem)
