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

With ``autopilot=N`` it runs headless: a scripted owner presses Approve and Reject
alternately on N cards through the sandbox (real button presses, real getUpdates), waits
for each card to be edited, then prints a summary and returns 0.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog
from pydantic import SecretStr

from bot.app import BotApp
from bot.callbacks import CardAction, SignalCallback
from bot.sandbox import SandboxServer, SentMessage
from core.app import Engine
from core.config import Settings
from core.domain import Candle, Side, SignalStatus
from core.errors import ConfigError, SignalDeskError
from core.logging import configure_logging
from core.services import Proposal
from core.strategies.base import Strategy
from core.strategies.runner import StrategyRunner

__all__ = ["DEMO_OWNER_ID", "DEMO_TOKEN", "DemoMomentum", "run_demo"]

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
    if autopilot is not None and "feed_speed" not in given:
        update["feed_speed"] = AUTOPILOT_FEED_SPEED
    return settings.model_copy(update=update)


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
        configure_logging("WARNING", json=settings.log_json)  # keep the console for the URL
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
        proposing = asyncio.create_task(_propose(app.engine, strategy or DemoMomentum(), interval))
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
            f"  Market:   paper broker on the real {demo.feed_symbol} replay, "
            f"{demo.feed_speed:g} candles/s\n"
            "  Signals:  a demo momentum source proposes a trade on new candles\n"
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


async def _autopilot(sandbox: SandboxServer, count: int) -> float | None:
    """Press Approve (1st, 3rd, ... card) and Reject (2nd, 4th, ...) on ``count`` cards and
    wait for each card's final state. Returns the seconds it took, or None (after saying
    why) when no card came within :data:`CARD_TIMEOUT`."""
    chat = DEMO_OWNER_ID
    started = time.monotonic()
    decided: set[int] = set()

    def next_card(server: SandboxServer) -> tuple[SentMessage, int] | None:
        for message in server.messages(chat):
            for row in message.buttons:
                for _, data in row:
                    if message.message_id not in decided and data and data.startswith("sig:"):
                        return message, SignalCallback.unpack(data).signal_id
        return None

    for number in range(count):
        try:
            found = await sandbox.wait_for(next_card, CARD_TIMEOUT, description="the next card")
        except TimeoutError:
            _say(f"autopilot: no card within {CARD_TIMEOUT:g} s after {number} decided; giving up")
            return None
        assert found is not None
        card, signal_id = found
        action = CardAction.APPROVE if number % 2 == 0 else CardAction.REJECT
        data = SignalCallback(action=action, signal_id=signal_id).pack()
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
