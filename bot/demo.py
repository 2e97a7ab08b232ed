"""``signaldesk demo``: the whole product on one machine, without a token or an account.

:func:`run_demo` starts the sandbox Telegram server (``SANDBOX_HOST``:``SANDBOX_PORT``, with
its web chat page), then the bot through :class:`~bot.app.BotApp`, the same code path as
production, pointed at the sandbox with a fixed fake token and the web page's user as the
owner. The engine is the paper broker on the real BTC/USDT replay, on a fresh
``signaldesk-demo.db`` each run (or on ``DATABASE_URL`` when that is set).

Signals come from :class:`DemoMomentum`, a deliberately tiny
:class:`~core.strategies.base.Strategy`, run by core's
:class:`~core.strategies.runner.StrategyRunner` on every new replay candle (one every 10 s
at the default ``FEED_SPEED``), so the first card arrives within about 20 seconds. To demo
another source, pass any ``Strategy`` (for example ``core.strategies.sma_cross.SmaCross``)
as ``strategy`` to :func:`run_demo`.

The interactive demo also shows the always-on duties within about three minutes. It uses
:data:`DEMO_DEFAULTS`, each where the user did not set it: the replay starts at 2025-10-10
12:00 UTC, hours before the crash of that day, a heartbeat goes out every minute, and the
drawdown guard warns at 3 % and at 6 % pauses and closes every position; the paper
account's leverage is 2 and the drift limit 5 %, so the source's cards fill when approved.
At start it buys :data:`DEMO_LONG` (0.075 BTC, about 91 % of the paper account's equity)
through the normal approval path, so the owner watches a warn alert (about 50 s in), then
the max breach, the flatten and its report (about 90 s in). docs/telegram.md has the
timeline. The banner prints the ``signaldesk propose`` line (with ``DATABASE_URL`` and
``FEED_START``, see :func:`cli_environment`) that reaches the running demo's chat.

With ``autopilot=N`` it runs headless, without the demo long and the guard's defaults: a
scripted owner presses Approve and Reject alternately on N cards through the sandbox (real
button presses, real getUpdates), waits for each card to be edited, then prints a summary
and returns 0.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from bot.app import BotApp
from bot.callbacks import CardAction, SignalCallback
from bot.sandbox import SandboxServer, SentMessage
from core.app import Engine
from core.config import DrawdownAction, Settings
from core.domain import Candle, Side, SignalStatus
from core.errors import ConfigError, SignalDeskError
from core.logging import configure_logging
from core.notify import NoticeKind, Notification
from core.services import Proposal
from core.strategies.base import Strategy
from core.strategies.runner import StrategyRunner

__all__ = [
    "DEMO_DEFAULTS",
    "DEMO_LONG",
    "DEMO_OWNER_ID",
    "DEMO_TOKEN",
    "DemoMomentum",
    "card_ttl",
    "cli_environment",
    "open_demo_long",
    "run_demo",
]

log = structlog.get_logger(__name__)

DEMO_TOKEN = "1000001:signaldesk-demo-token"  # noqa: S105 - the sandbox accepts any such token
"""The sandbox bot's token (the sandbox only checks its shape)."""
DEMO_OWNER_ID = 100001
"""The Telegram user id of the web page's user, who is the demo's owner."""
DEMO_DATABASE = Path("signaldesk-demo.db")
"""The demo's database file, recreated for every run, unless ``DATABASE_URL`` is set."""
AUTOPILOT_FEED_SPEED = 2.0
"""Candles per second in autopilot (a new card every half second), unless ``FEED_SPEED``
is set."""
CARD_TIMEOUT = 60.0
"""Seconds the autopilot waits for the next card before giving up."""
DEMO_DEFAULTS: dict[str, Any] = {
    "feed_start": datetime(2025, 10, 10, 12, tzinfo=UTC),
    "feed_speed": 0.1,
    "heartbeat_interval": 60,
    "drawdown_warn_pct": Decimal(3),
    "drawdown_max_pct": Decimal(6),
    "daily_loss_max_pct": Decimal(6),
    "drawdown_action": DrawdownAction.FLATTEN,
    "paper_leverage": Decimal(2),
    "max_price_drift_pct": Decimal(5),
}
"""Settings of the interactive demo, each used only where the user did not set it
(environment or ``.env``). Measured on the real candles with :data:`DEMO_LONG` bought at the
first one: drawdown 3.09 % at the 17:00 candle (50 s in at 0.1 candles/s), 6.22 % at 21:00
(90 s in). Leverage 2 leaves the long's margin at about 4,560 USDT, so about 5,400 USDT stay
free for the source's cards (0.01 BTC needs about 610); a replayed hour every 10 s moves
the price up to 4.0 % within a card's :data:`DEMO_CARD_CANDLES` candles, so the drift limit
is 5 % (1 % would block most approvals of the crash)."""
DEMO_LONG = Decimal("0.075")
"""BTC the interactive demo buys at start (about 9,100 USDT, 91 % of the 10,000 USDT paper
account's equity, on 4,560 USDT of margin at the demo's leverage 2)."""
DEMO_CARD_CANDLES = 5
"""The interactive demo's cards expire after this many replayed candles (50 s at 0.1
candles/s), so none is approved at a price more than 4.0 % away from its card."""
CLI_EXAMPLE = "signaldesk propose BTC/USDT buy 0.01"
"""The command the banner shows, with the variables that point it at the demo."""


class DemoMomentum:
    """The demo's signal source: a :class:`~core.strategies.base.Strategy` that, on each
    candle, buys ``quantity`` when the close is at or above the mean of the previous closes
    and sells otherwise, with a stop loss ``stop_pct`` % and a take profit ``target_pct`` %
    away from the close. Not a trading idea: it exists to put cards in front of you.
    """

    name = "demo"
    lookback = 4

    def __init__(
        self,
        quantity: Decimal = Decimal("0.01"),
        stop_pct: Decimal = Decimal(1),
        target_pct: Decimal = Decimal(2),
        ttl_seconds: int = 300,
    ) -> None:
        self.quantity = quantity
        self.stop_pct = stop_pct
        self.target_pct = target_pct
        self.ttl_seconds = ttl_seconds

    def evaluate(self, symbol: str, candles: Sequence[Candle], equity: Decimal) -> list[Proposal]:
        """One proposal per call once there are two candles (``equity`` is not used)."""
        if len(candles) < 2:
            return []
        close = candles[-1].close
        previous = [c.close for c in candles[:-1]]
        mean = sum(previous, Decimal(0)) / len(previous)
        side = Side.BUY if close >= mean else Side.SELL
        away = Decimal(1) if side is Side.BUY else Decimal(-1)
        cent = Decimal("0.01")
        stop = (close * (1 - away * self.stop_pct / 100)).quantize(cent)
        target = (close * (1 + away * self.target_pct / 100)).quantize(cent)
        return [
            Proposal(
                source=self.name,
                symbol=symbol,
                side=side,
                quantity=self.quantity,
                stop_loss=stop,
                take_profit=target,
                note=f"close {close:,.2f} vs mean {mean:,.2f} of the {len(previous)} before",
                ttl_seconds=self.ttl_seconds,
            )
        ]


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _demo_settings(settings: Settings, base_url: str, autopilot: int | None) -> Settings:
    """``settings`` pointed at the sandbox, with the demo's owner and database."""
    given = settings.model_fields_set
    update: dict[str, Any] = {
        "telegram_bot_token": SecretStr(DEMO_TOKEN),
        "telegram_api_base": base_url,
        "telegram_owner_ids": [DEMO_OWNER_ID],
        "telegram_chat_id": None,
    }
    if "database_url" not in given:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{DEMO_DATABASE}{suffix}").unlink(missing_ok=True)
        update["database_url"] = f"sqlite+aiosqlite:///{DEMO_DATABASE}"
    if autopilot is not None:
        if "feed_speed" not in given:
            update["feed_speed"] = AUTOPILOT_FEED_SPEED
    else:
        update.update({k: v for k, v in DEMO_DEFAULTS.items() if k not in given})
    return settings.model_copy(update=update)


def cli_environment(demo: Settings) -> dict[str, str]:
    """The variables that point ``signaldesk`` (another process) at the running demo: its
    database (absolute path), its replay (start and speed, so the CLI quotes the same
    candle the demo is at; the replay's clock anchor is in the database) and its paper
    leverage (so the CLI sees the free margin the demo sees: a proposal is checked
    against it)."""
    url = make_url(demo.database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        url = url.set(drivername="sqlite", database=str(Path(url.database).resolve()))
    env = {"DATABASE_URL": url.render_as_string(hide_password=False)}
    if demo.feed_start is not None:
        env["FEED_START"] = f"{demo.feed_start.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
    if demo.feed_speed != Settings.model_fields["feed_speed"].default:
        env["FEED_SPEED"] = f"{demo.feed_speed:g}"
    if demo.paper_leverage != Settings.model_fields["paper_leverage"].default:
        env["PAPER_LEVERAGE"] = f"{demo.paper_leverage:g}"
    return env


def _cli_line(demo: Settings) -> str:
    """``KEY=value ... signaldesk propose ...`` for the banner (the password masked)."""
    env = cli_environment(demo)
    env["DATABASE_URL"] = make_url(env["DATABASE_URL"]).render_as_string(hide_password=True)
    return " ".join(f"{k}={v}" for k, v in env.items()) + " " + CLI_EXAMPLE


def card_ttl(demo: Settings) -> int:
    """Seconds a demo card lives: :data:`DEMO_CARD_CANDLES` candles at the replay's speed
    (300 s when the replay is manual)."""
    if demo.feed_speed <= 0:
        return 300
    return max(5, round(DEMO_CARD_CANDLES / demo.feed_speed))


async def open_demo_long(engine: Engine, quantity: Decimal = DEMO_LONG) -> bool:
    """Buy ``quantity`` of the feed's symbol through the normal path (a proposal, its card,
    an approval by ``demo``) and tell the owner why, so the drawdown guard has something
    to guard. Does nothing when a position is already open (a kept ``DATABASE_URL``).
    Returns whether it bought.

    The guard is checked first, so the peak and the day's start are the equity before the
    purchase, whatever the scheduler's first check has done by then.
    """
    if await engine.trading.positions():
        return False
    await engine.risk.check()
    signals = engine.signals
    proposal = Proposal(
        source="demo",
        symbol=engine.settings.feed_symbol,
        side=Side.BUY,
        quantity=quantity,
        note="the demo's long, bought for you so the drawdown guard has work to do",
    )
    decision = await signals.approve((await signals.propose(proposal)).id, "demo")
    if decision.signal.status is not SignalStatus.FILLED:
        log.warning("demo.long_not_filled", status=decision.signal.status.value)
        return False
    lim = engine.risk.limits
    candle = engine.feed.current()
    price = decision.report.average_price if decision.report else candle.close
    base = proposal.symbol.partition("/")[0]
    await engine.notifier.notify(
        Notification(
            NoticeKind.TEXT,
            f"🎬 Demo: SignalDesk bought {quantity} {base} for you at {price:,.2f}, "
            f"on the replay's {candle.at:%Y-%m-%d %H:%M} UTC candle. Watch the drawdown "
            f"guard: it warns at {lim.warn_pct}% below the peak and at {lim.max_pct}% "
            f"(or a {lim.daily_loss_max_pct}% daily loss) it will "
            f"{_GUARD_ACTION[lim.action]}. /drawdown shows the figures, /heartbeat sends a "
            "heartbeat now.",
        )
    )
    return True


_GUARD_ACTION = {
    DrawdownAction.ALERT: "alert you",
    DrawdownAction.PAUSE: "pause trading",
    DrawdownAction.FLATTEN: "pause trading and close every position",
}


async def _propose(engine: Engine, strategy: Strategy, interval: float) -> None:
    """Run ``strategy`` every ``interval`` seconds; it proposes on each new candle, at most
    one pending signal per side (the runner's rule)."""
    runner = StrategyRunner(
        strategy, engine.feed, engine.broker, engine.signals, engine.settings.feed_symbol
    )
    while True:
        try:
            await runner.run()
        except SignalDeskError as exc:
            log.warning("demo.proposal_failed", error=str(exc))
        await asyncio.sleep(interval)


async def run_demo(
    settings: Settings, autopilot: int | None, *, strategy: Strategy | None = None
) -> int:
    """Run the demo until Ctrl-C (or, with ``autopilot``, until N cards are decided).

    Returns the exit status: 0, or 1 when the autopilot gave up waiting for a card.

    Raises:
        ConfigError: the sandbox port is taken, or a setting cannot be served.
    """
    if "log_level" not in settings.model_fields_set:
        # keep the console for the URL
        configure_logging("WARNING", json=settings.log_json, secrets=settings.secrets())
    sandbox = SandboxServer(
        DEMO_TOKEN,
        host=settings.sandbox_host,
        port=settings.sandbox_port,
        web_user_id=DEMO_OWNER_ID,
    )
    sandbox.add_user(DEMO_OWNER_ID, "You", "you")
    try:
        await sandbox.start()
    except OSError as exc:
        raise ConfigError(
            f"SANDBOX_PORT: cannot listen on {settings.sandbox_host}:{settings.sandbox_port} "
            f"({exc.strerror}); stop the other demo or set SANDBOX_PORT"
        ) from None
    demo = _demo_settings(settings, sandbox.base_url, autopilot)
    app = BotApp.from_settings(demo)
    polling = asyncio.create_task(app.run(handle_signals=autopilot is None))
    proposing: asyncio.Task[None] | None = None
    try:
        ready = asyncio.create_task(app.ready.wait())
        await asyncio.wait({ready, polling}, return_when=asyncio.FIRST_COMPLETED)
        if polling.done():
            ready.cancel()
            await polling  # start-up failed: raise its error
            return 1
        interval = 0.25 if autopilot is not None else 1.0
        if autopilot is None:
            try:
                await open_demo_long(app.engine)
            except SignalDeskError as exc:  # the demo goes on without the guard's show
                log.warning("demo.long_failed", error=str(exc))
        source = strategy or (
            DemoMomentum() if autopilot is not None else DemoMomentum(ttl_seconds=card_ttl(demo))
        )
        proposing = asyncio.create_task(_propose(app.engine, source, interval))
        if autopilot is not None:
            equity_before = (await app.engine.trading.account()).equity
            elapsed = await _autopilot(sandbox, autopilot)
            if elapsed is None:
                return 1
            proposing.cancel()
            await _summary(app, sandbox, autopilot, elapsed, equity_before)
            return 0
        _say(
            "SignalDesk demo is running.\n"
            f"  Web chat: {sandbox.base_url}/  (you are the owner, {DEMO_OWNER_ID})\n"
            f"  Database: {demo.database_url}\n"
            f"  Market:   paper broker (leverage {demo.paper_leverage:g}) on the real "
            f"{demo.feed_symbol} replay{_from(demo)}, {demo.feed_speed:g} candles/s\n"
            "  Signals:  a demo momentum source proposes a trade on new candles "
            f"(cards live {card_ttl(demo)} s; approval blocks past a "
            f"{demo.max_price_drift_pct:g}% price drift)\n"
            f"  Duties:   a heartbeat every {demo.heartbeat_interval} s; the drawdown guard "
            f"warns at {demo.drawdown_warn_pct}%, at {demo.drawdown_max_pct}% it will "
            f"{_GUARD_ACTION[demo.drawdown_action]}\n"
            f"  CLI:      {_cli_line(demo)}\n"
            "            (in another shell: the card reaches this chat)\n"
            "Press Ctrl-C to stop."
        )
        await polling
        return 0
    finally:
        if proposing is not None:
            proposing.cancel()
            with suppress(asyncio.CancelledError):
                await proposing
        if not polling.done():
            await app.stop()
        with suppress(asyncio.CancelledError):
            await polling
        await sandbox.stop()


def _from(settings: Settings) -> str:
    start = settings.feed_start
    return f" from {start.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if start is not None else ""


async def _autopilot(sandbox: SandboxServer, count: int) -> float | None:
    """Press Approve (1st, 3rd, ... card) and Reject (2nd, 4th, ...) on ``count`` cards and
    wait for each card's final state. Returns the seconds it took, or None (after saying
    why) when no card came within :data:`CARD_TIMEOUT`."""
    chat = DEMO_OWNER_ID
    started = time.monotonic()
    decided: set[int] = set()

    def next_card(server: SandboxServer) -> tuple[SentMessage, SignalCallback] | None:
        for message in server.messages(chat):
            for row in message.buttons:
                for _, data in row:
                    if message.message_id not in decided and data and data.startswith("sig:"):
                        return message, SignalCallback.unpack(data)
        return None

    for number in range(count):
        try:
            found = await sandbox.wait_for(next_card, CARD_TIMEOUT, description="the next card")
        except TimeoutError:
            _say(f"autopilot: no card within {CARD_TIMEOUT:g} s after {number} decided; giving up")
            return None
        assert found is not None
        card, shown = found
        action = CardAction.APPROVE if number % 2 == 0 else CardAction.REJECT
        data = shown.model_copy(update={"action": action, "arg": ""}).pack()
        sandbox.press_button(chat, card.message_id, data, DEMO_OWNER_ID)
        decided.add(card.message_id)
        await sandbox.wait_for(
            lambda s, m=card.message_id: not s.message(chat, m).buttons,  # type: ignore[misc]
            CARD_TIMEOUT,
            description=f"card {card.message_id} edited to its final state",
        )
    return time.monotonic() - started


async def _summary(
    app: BotApp, sandbox: SandboxServer, count: int, elapsed: float, equity_before: Decimal
) -> None:
    """Print signals by status, fills, PnL since the start and the messages delivered,
    once the outbox has drained (at most 10 s)."""
    for _ in range(100):
        if not await app.deliverer.pending():
            break
        await asyncio.sleep(0.1)
    engine = app.engine
    account = await engine.trading.account()
    positions = await engine.trading.positions()
    statuses = Counter(s.status for s in await engine.signals.recent(limit=1000))
    sent = sum(1 for e in sandbox.request_log if e.method == "sendMessage" and e.ok)
    edited = sum(1 for e in sandbox.request_log if e.method == "editMessageText" and e.ok)
    open_positions = f"{len(positions)} open position{'' if len(positions) == 1 else 's'}"
    _say(
        f"SignalDesk demo autopilot: {count} cards decided in {elapsed:.1f} s\n"
        f"  signals:  {sum(statuses.values())} proposed: "
        + ", ".join(f"{n} {status.lower()}" for status, n in sorted(statuses.items()))
        + "\n"
        f"  fills:    {statuses[SignalStatus.FILLED]}\n"
        f"  PnL:      {account.equity - equity_before:+,.2f} {account.currency} "
        f"(equity {account.equity:,.2f}, {open_positions})\n"
        f"  messages: {sent} delivered, {edited} edited in place, "
        f"{sandbox.stats.rate_limited} rate-limited (429)"
    )
