"""The benchmark scenarios. Everything runs through the sandbox on loopback, with a real
SQLite file and the paper broker on the replay (FEED_SPEED=0, so no approval is blocked by
price drift). Times come from one clock per measurement: the sandbox's and the broker's
UTC timestamps (same process), or ``time.monotonic()``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from pydantic import SecretStr
from sqlmodel import col, select

from bot.app import BotApp
from bot.callbacks import CardAction, SignalCallback
from bot.delivery import DeliveryPolicy
from bot.sandbox import SandboxServer
from core.app import Engine, build_engine
from core.config import BrokerName, Settings
from core.db.models import OrderRow, PaperOrderRow
from core.domain import Side
from core.notify import NoticeKind, Notification, Priority
from core.services import Proposal

TOKEN = "31337:bench-sandbox-token"
OWNER = 4242
ROOT = Path(__file__).resolve().parents[1]

#: Cards are posted as fast as the sandbox takes them, so 200 approvals do not wait 200 s
#: for Telegram's 1 msg/s; nothing on the tap path is paced either way.
UNPACED = DeliveryPolicy(chat_interval=0.001, global_per_second=1000, poll_interval=0.5)

#: Signals proposed at a time in the tap benchmark (a realistic number of pending cards).
BATCH = 10
#: Seconds between one tap's answer and the next tap.
SETTLE = 0.1


def percentile(values: list[float], pct: int) -> float:
    """The ``pct``-th percentile (inclusive method) of ``values``."""
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def _settings(tmp: Path, name: str, base_url: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=f"sqlite:///{tmp / name}",
        broker=BrokerName.PAPER,
        feed_speed=0,
        feed_start=None,
        strategy="none",
        telegram_bot_token=SecretStr(TOKEN),
        telegram_api_base=base_url,
        telegram_owner_ids=[OWNER],
        telegram_chat_id=None,
        log_level="WARNING",
    )


@asynccontextmanager
async def running_bot(
    tmp: Path, name: str, policy: DeliveryPolicy, *, rate_limits: bool
) -> AsyncIterator[tuple[SandboxServer, BotApp]]:
    """The sandbox and the real bot (``BotApp``) in this process on a fresh database, past
    its start-up heartbeat."""
    sandbox = SandboxServer(TOKEN, enforce_rate_limits=rate_limits)
    sandbox.add_user(OWNER, "Bench", "bench")
    await sandbox.start()
    app = BotApp.from_settings(_settings(tmp, name, sandbox.base_url), policy)
    task = asyncio.create_task(app.run(handle_signals=False))
    try:
        await sandbox.wait_for(lambda s: app.ready.is_set() or task.done(), 60)
        if task.done():
            task.result()
        await sandbox.wait_for_message(OWNER, contains="SignalDesk alive", timeout=30)
        yield sandbox, app
    finally:
        if not task.done():
            await app.stop()
        await task
        await sandbox.stop()


@dataclass(frozen=True)
class Spawned:
    """A bot process: the process, and seconds from spawn to its first ``getUpdates``."""

    process: asyncio.subprocess.Process
    startup_seconds: float


@asynccontextmanager
async def bot_process(
    tmp: Path, sandbox: SandboxServer, name: str, *, unpaced: bool = False
) -> AsyncIterator[Spawned]:
    """``python -m bot`` (``unpaced``: the same ``main`` with :data:`UNPACED` delivery) in
    its own process on a fresh database ``name``, against ``sandbox``; stopped with SIGTERM
    on exit. Its log goes to ``tmp/name.log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DATABASE_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE=sandbox.base_url,
        TELEGRAM_OWNER_IDS=str(OWNER),
        DATABASE_URL=f"sqlite:///{tmp / name}",
        FEED_SPEED="0",
        LOG_LEVEL="WARNING",
    )
    if unpaced:
        launch = "import sys; from bench.scenarios import UNPACED; from bot.__main__ import main; "
        command = ["-c", launch + "sys.exit(main(UNPACED))"]
    else:
        command = ["-m", "bot"]
    log_path = tmp / f"{name}.log"
    before = len(sandbox.requests("getUpdates"))
    with log_path.open("wb") as log:
        spawned = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command, cwd=tmp, env=env, stdout=log, stderr=log
        )
        try:
            await sandbox.wait_for(
                lambda s: len(s.requests("getUpdates")) > before or process.returncode is not None,
                60,
            )
            if process.returncode is not None:
                raise RuntimeError(f"the bot exited: {log_path.read_text()[-2000:]}")
            startup = sandbox.requests("getUpdates")[before].at - spawned
            await sandbox.wait_for_message(OWNER, contains="SignalDesk alive", timeout=30)
            yield Spawned(process, startup)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)


def _ms(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() * 1000


async def _placed_at(engine: Engine, signal_id: int) -> datetime:
    """When the paper broker filled the signal's order (its ledger's UTC timestamp)."""
    async with engine.db.session() as session:
        query = (
            select(PaperOrderRow.filled_at)
            .join(OrderRow, col(OrderRow.client_order_id) == col(PaperOrderRow.client_order_id))
            .where(col(OrderRow.signal_id) == signal_id)
        )
        placed = (await session.exec(query)).one()
    if placed is None:
        raise RuntimeError(f"signal {signal_id} was not filled")
    return placed


def _proposal(number: int) -> Proposal:
    """Buys and sells alternate, so the position stays small over hundreds of fills."""
    side = Side.BUY if number % 2 == 0 else Side.SELL
    return Proposal("bench", "BTC/USDT", side, Decimal("0.001"))


@dataclass(frozen=True)
class TapLatency:
    """Milliseconds from the tap (the sandbox queues the callback query) to the paper fill
    (``order``) and to the card's first edit (``card``), one value per approval."""

    order: list[float]
    card: list[float]


async def tap_latency(tmp: Path, approvals: int, warmup: int) -> TapLatency:
    """The bot runs as its own process (as in production, where Telegram is elsewhere).
    Signals are proposed from this process (like the CLI) in batches of :data:`BATCH`; each
    card is then tapped in turn, :data:`SETTLE` seconds after the previous card's edit and
    callback answer (an owner does not tap 20 cards a second; back-to-back taps would
    measure the queue, not the latency). The first ``warmup`` taps are not counted."""
    sandbox = SandboxServer(TOKEN)
    sandbox.add_user(OWNER, "Bench", "bench")
    await sandbox.start()
    order: list[float] = []
    card_ms: list[float] = []
    try:
        async with bot_process(tmp, sandbox, "taps.db", unpaced=True):
            engine = await build_engine(_settings(tmp, "taps.db", sandbox.base_url))
            try:
                for number in range(warmup + approvals):
                    if number % BATCH == 0:
                        batch = [
                            await engine.signals.propose(_proposal(number + i))
                            for i in range(min(BATCH, warmup + approvals - number))
                        ]
                    signal = batch[number % BATCH]
                    card = await sandbox.wait_for_message(
                        OWNER, contains=f"signal #{signal.id}", timeout=30
                    )
                    await asyncio.sleep(SETTLE)
                    data = SignalCallback(
                        action=CardAction.APPROVE,
                        signal_id=signal.id,
                        version=signal.card_version,
                    ).pack()
                    query = sandbox.press_button(OWNER, card.message_id, data, OWNER)
                    await sandbox.wait_for(
                        lambda s, m=card.message_id, q=query: (  # type: ignore[misc]
                            not s.message(OWNER, m).buttons and s.callback_answers.get(q)
                        ),
                        10,
                    )
                    if number < warmup:
                        continue
                    pressed = sandbox.callback_queries[query].pressed_at
                    order.append(_ms(await _placed_at(engine, signal.id), pressed))
                    edited = sandbox.message(OWNER, card.message_id).history[1].at
                    card_ms.append(_ms(edited, pressed))
            finally:
                await engine.close()
    finally:
        await sandbox.stop()
    return TapLatency(order, card_ms)


async def approve_latency(tmp: Path, approvals: int, warmup: int) -> list[float]:
    """The engine alone, no Telegram: milliseconds from ``SignalService.approve`` being
    called to the paper fill, one value per approval (the floor under tap -> order)."""
    engine = await build_engine(_settings(tmp, "core.db", "http://unused"))
    values: list[float] = []
    try:
        for number in range(warmup + approvals):
            signal = await engine.signals.propose(_proposal(number))
            called = datetime.now(UTC)
            await engine.signals.approve(signal.id, "bench")
            if number >= warmup:
                values.append(_ms(await _placed_at(engine, signal.id), called))
    finally:
        await engine.close()
    return values


@dataclass(frozen=True)
class Burst:
    """An alert queued behind ``cards`` cards: seconds until it reached the chat, how many
    cards went out before it, and the 429s the sandbox's flood control sent."""

    cards: int
    alert_seconds: float
    cards_before_alert: int
    rate_limited: int
    drain_seconds: float


async def alert_behind_burst(tmp: Path, cards: int) -> Burst:
    """Queue ``cards`` proposals (each a card in the outbox), then one alert; the sandbox
    enforces Telegram's flood limits and the deliverer runs at its production pace. Waits
    for the whole burst to drain so every 429 would be counted."""
    async with running_bot(tmp, "burst.db", DeliveryPolicy(), rate_limits=True) as (sandbox, app):
        engine = app.engine
        started = time.monotonic()
        for number in range(cards):
            side = Side.BUY if number % 2 == 0 else Side.SELL
            await engine.signals.propose(Proposal("bench", "BTC/USDT", side, Decimal("0.001")))
        queued_at = datetime.now(UTC)
        await engine.notifier.notify(
            Notification(NoticeKind.TEXT, "bench alert", priority=Priority.ALERT)
        )
        alert = await sandbox.wait_for_message(OWNER, contains="bench alert", timeout=30)
        assert alert.sent_at is not None
        before = sum(
            1 for m in sandbox.messages(OWNER) if m.had_buttons and m.message_id < alert.message_id
        )
        await sandbox.wait_for(
            lambda s: sum(m.had_buttons for m in s.messages(OWNER)) >= cards, cards * 3 + 30
        )
        return Burst(
            cards=cards,
            alert_seconds=(alert.sent_at - queued_at).total_seconds(),
            cards_before_alert=before,
            rate_limited=sandbox.stats.rate_limited,
            drain_seconds=time.monotonic() - started,
        )


@dataclass(frozen=True)
class Idle:
    """``python -m bot`` on its own: seconds from spawn to its first ``getUpdates``, and
    resident memory (MiB) after ``idle`` seconds of idling."""

    startup_seconds: float
    idle_rss_mib: float
    idle: float


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc (Linux only)")


async def idle_bot(tmp: Path, idle: float) -> Idle:
    """Spawn ``python -m bot`` on a fresh database (migrations included), let it idle,
    read its RSS."""
    sandbox = SandboxServer(TOKEN)
    sandbox.add_user(OWNER, "Bench", "bench")
    await sandbox.start()
    try:
        async with bot_process(tmp, sandbox, "idle.db") as spawned:
            await asyncio.sleep(idle)
            rss = _rss_mib(spawned.process.pid)
    finally:
        await sandbox.stop()
    return Idle(spawned.startup_seconds, rss, idle)


@dataclass(frozen=True)
class ApprovalCost:
    """What one ``SignalService.approve`` costs the database, averaged over the approvals
    measured: SQL statements and transactions (commits) the engine issued, pool checkouts
    (sessions), aiosqlite thread hops (SQLite only: calls queued to its worker thread),
    and the same figures for the paper broker's own ledger (the venue, which shares the
    database: its ``account()`` and ``place_order()``), kept apart from the engine's."""

    database: str
    approvals: int
    statements: float
    transactions: float
    checkouts: float
    thread_hops: float
    venue_statements: float
    venue_transactions: float


@dataclass
class _Tally:
    statements: int = 0
    transactions: int = 0
    checkouts: int = 0
    thread_hops: int = 0


async def approval_cost(
    tmp: Path, approvals: int, warmup: int, database_url: str | None = None
) -> ApprovalCost:
    """Count the work of ``approvals`` approvals of market orders (after ``warmup``),
    each proposed first, then approved alone, on ``database_url`` (default a fresh SQLite
    file). Only work done by the approving task itself is counted (SQLAlchemy's
    ``before_cursor_execute``, ``commit`` and pool ``checkout`` events and
    ``aiosqlite.Connection._execute``, each attributed by ``asyncio.current_task()``); the
    drawdown check a fill schedules runs as its own task and is not, nor are the quote and
    the account the gate gathers in tasks of their own. Work done inside the paper
    broker's methods is the venue's. A PostgreSQL ping (none in steady use; formerly
    ``pool_pre_ping``'s three round trips per checkout) is seen by no event, hence
    ``checkouts``."""
    import aiosqlite
    from sqlalchemy import event

    settings = _settings(tmp, "cost.db", "http://unused")
    if database_url is not None:
        settings = settings.model_copy(update={"database_url": database_url})
    engine = await build_engine(settings)
    counting: asyncio.Task[object] | None = None
    in_venue = False
    own, venue = _Tally(), _Tally()

    def tally() -> _Tally | None:
        if counting is None or asyncio.current_task() is not counting:
            return None
        return venue if in_venue else own

    def on_statement(*_: object) -> None:
        if (t := tally()) is not None:
            t.statements += 1

    def on_commit(*_: object) -> None:
        if (t := tally()) is not None:
            t.transactions += 1

    def on_checkout(*_: object) -> None:
        if (t := tally()) is not None:
            t.checkouts += 1

    original_execute = aiosqlite.Connection._execute

    async def counted_execute(self: aiosqlite.Connection, fn: object, *a: object, **k: object):  # type: ignore[no-untyped-def]
        if (t := tally()) is not None:
            t.thread_hops += 1
        return await original_execute(self, fn, *a, **k)  # type: ignore[arg-type]

    paper = engine.broker.inner  # type: ignore[attr-defined]  # the venue inside the price watch

    def venue_call(name: str) -> None:
        method = getattr(paper, name)

        async def call(*a: object, **k: object) -> object:
            nonlocal in_venue
            in_venue = True
            try:
                return await method(*a, **k)
            finally:
                in_venue = False

        setattr(paper, name, call)

    for name in ("account", "positions", "place_order", "get_order", "open_orders"):
        venue_call(name)
    sync_engine = engine.db.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", on_statement)
    event.listen(sync_engine, "commit", on_commit)
    event.listen(sync_engine.pool, "checkout", on_checkout)
    aiosqlite.Connection._execute = counted_execute  # type: ignore[method-assign]
    try:
        for number in range(warmup + approvals):
            signal = await engine.signals.propose(_proposal(number))
            task = asyncio.ensure_future(engine.signals.approve(signal.id, "bench"))
            if number >= warmup:
                counting = task  # type: ignore[assignment]
            await task
            counting = None
            await engine.risk.idle()
    finally:
        aiosqlite.Connection._execute = original_execute  # type: ignore[method-assign]
        await engine.close()
    return ApprovalCost(
        database=engine.db.dialect,
        approvals=approvals,
        statements=own.statements / approvals,
        transactions=own.transactions / approvals,
        checkouts=own.checkouts / approvals,
        thread_hops=own.thread_hops / approvals,
        venue_statements=venue.statements / approvals,
        venue_transactions=venue.transactions / approvals,
    )
