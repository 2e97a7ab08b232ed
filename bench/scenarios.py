"""The benchmark scenarios. Everything runs through the sandbox on loopback, with a real
SQLite file or a fresh PostgreSQL database, and the paper broker on the replay
(FEED_SPEED=0, so no approval is blocked by price drift). Times come from one clock per
measurement: the sandbox's (same process) or ``time.perf_counter()``.

Every scenario measures its own floor in the same run (the bare aiogram bot of
:mod:`bench.floor`, ``python -c pass``, one write transaction, one ``SELECT 1``), so the
table's ratios hold on a loaded machine. Waits are event-driven with a ceiling
(:data:`PATIENCE`) that only a broken run reaches.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import aiohttp
from pydantic import SecretStr
from sqlalchemy import func, insert, select, text

from bot.app import BotApp
from bot.callbacks import CardAction, SignalCallback
from bot.delivery import DeliveryPolicy, OutboxDeliverer
from bot.sandbox import SandboxServer
from bot.sandbox.server import WAIT_SECONDS
from core.app import Engine, build_engine
from core.config import DEFAULT_FEED_CSV, BrokerName, Settings
from core.db.models import (
    AuditEventRow,
    FillRow,
    OrderRow,
    OutboxRow,
    PaperOrderRow,
    SignalRow,
)
from core.domain import Side, SignalStatus
from core.notify import NoticeKind, Notification, Priority
from core.services import Proposal

TOKEN = "31337:bench-sandbox-token"
FLOOR_TOKEN = "31338:bench-floor-token"
OWNER = 4242
GROUP = -100424242
ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get(
    "SIGNALDESK_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

#: The ceiling of every event-driven wait: a loaded machine makes events late, never
#: lost, so only a broken run waits this long.
PATIENCE = WAIT_SECONDS * 10

#: Cards are posted as fast as the sandbox takes them, so 200 approvals do not wait 200 s
#: for Telegram's 1 msg/s; nothing on the tap path is paced either way.
UNPACED = DeliveryPolicy(chat_interval=0.001, global_per_second=1000, poll_interval=0.5)

#: Signals proposed at a time in the tap benchmark (a realistic number of pending cards).
BATCH = 10
#: Seconds between one tap's answer and the next tap (an owner does not tap 20 cards a
#: second; back-to-back taps would measure the queue, not the latency).
SETTLE = 0.05


def percentile(values: list[float], pct: int) -> float:
    """The ``pct``-th percentile (inclusive method) of ``values``."""
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


# --- databases ------------------------------------------------------------------------------


async def postgres_problem() -> str | None:
    """None when the PostgreSQL server answers, else why not."""
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (the postgres extra)"
    try:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"no PostgreSQL server answers at {POSTGRES_URL}: {exc}"
    await conn.close()
    return None


@asynccontextmanager
async def database(kind: str, tmp: Path, name: str) -> AsyncIterator[str]:
    """A fresh, empty database's URL: a SQLite file ``tmp/name.db`` (``kind`` "SQLite"),
    or a PostgreSQL database created for the block and dropped after it."""
    if kind == "SQLite":
        yield f"sqlite+aiosqlite:///{tmp / name}.db"
        return
    import asyncpg

    dbname = f"sd_bench_{name}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await conn.close()
    try:
        base = POSTGRES_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        yield f"{base}/{dbname}"
    finally:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        finally:
            await conn.close()


def _settings(url: str, base_url: str = "http://unused", **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "broker": BrokerName.PAPER,
        "feed_speed": 0,
        "feed_start": None,
        "strategy": "none",
        "telegram_bot_token": SecretStr(TOKEN),
        "telegram_api_base": base_url,
        "telegram_owner_ids": [OWNER],
        "telegram_chat_id": None,
        "log_level": "WARNING",
        "card_charts": False,
        "health_port": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _proposal(number: int, symbol: str = "BTC/USDT") -> Proposal:
    """Buys and sells alternate, so the position stays small over hundreds of fills."""
    side = Side.BUY if number % 2 == 0 else Side.SELL
    return Proposal("bench", symbol, side, Decimal("0.001"))


# --- processes ------------------------------------------------------------------------------


def _sandbox(token: str, **options: Any) -> SandboxServer:
    sandbox = SandboxServer(token, **options)
    sandbox.add_user(OWNER, "Bench", "bench")
    return sandbox


@dataclass(frozen=True)
class Spawned:
    """A bot process: the process, and seconds from spawn to its first ``getUpdates``."""

    process: asyncio.subprocess.Process
    startup_seconds: float


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DATABASE_"))}
    env.update(PYTHONPATH=str(ROOT), LOG_LEVEL="WARNING", **values)
    return env


def signaldesk_command(
    sandbox: SandboxServer, url: str, *, unpaced: bool
) -> tuple[list[str], dict]:
    """``python -m bot`` against ``sandbox`` on ``url`` (``unpaced``: the same ``main`` with
    :data:`UNPACED` delivery)."""
    env = _env(
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE=sandbox.base_url,
        TELEGRAM_OWNER_IDS=str(OWNER),
        DATABASE_URL=url,
        FEED_SPEED="0",
        CARD_CHARTS="false",
        HEALTH_PORT="0",
    )
    if unpaced:
        launch = "import sys; from bench.scenarios import UNPACED; from bot.__main__ import main; "
        return ["-c", launch + "sys.exit(main(UNPACED))"], env
    return ["-m", "bot"], env


def floor_command(sandbox: SandboxServer) -> tuple[list[str], dict]:
    """The floor bot (:mod:`bench.floor`) against ``sandbox``."""
    return ["-m", "bench.floor"], _env(FLOOR_TOKEN=FLOOR_TOKEN, FLOOR_API_BASE=sandbox.base_url)


@asynccontextmanager
async def spawned(
    tmp: Path, sandbox: SandboxServer, name: str, command: tuple[list[str], dict]
) -> AsyncIterator[Spawned]:
    """Run ``command`` (arguments to this Python, environment) as its own process until its
    first ``getUpdates`` on ``sandbox``; stopped with SIGTERM on exit. Its log goes to
    ``tmp/name.log``."""
    args, env = command
    log_path = tmp / f"{name}.log"
    before = len(sandbox.requests("getUpdates"))
    with log_path.open("wb") as log:
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=tmp, env=env, stdout=log, stderr=log
        )
        try:
            await sandbox.wait_for(
                lambda s: len(s.requests("getUpdates")) > before or process.returncode is not None,
                PATIENCE,
            )
            if process.returncode is not None:
                raise RuntimeError(f"{name} exited: {log_path.read_text()[-2000:]}")
            yield Spawned(process, sandbox.requests("getUpdates")[before].at - started)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), PATIENCE)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc (Linux only)")


# --- tap -> card edited, against the floor bot ----------------------------------------------


@dataclass
class Taps:
    """Milliseconds from the tap (the sandbox queues the callback query) to the card's first
    edit, one value per tap, for SignalDesk and for the floor bot tapped in turn with it."""

    signaldesk: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)


def _ms(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() * 1000


async def _tap(sandbox: SandboxServer, message_id: int, data: str) -> float:
    """Press the button, wait for the answer and the edit; milliseconds press -> edit."""
    query = sandbox.press_button(OWNER, message_id, data, OWNER)
    await sandbox.wait_for(
        lambda s: not s.message(OWNER, message_id).buttons and s.callback_answers.get(query),
        PATIENCE,
    )
    pressed = sandbox.callback_queries[query].pressed_at
    await asyncio.sleep(SETTLE)
    return _ms(sandbox.message(OWNER, message_id).history[1].at, pressed)


async def _floor_card(http: aiohttp.ClientSession, sandbox: SandboxServer, number: int) -> int:
    """Post a card with one button as the floor bot; its message id."""
    markup = {"inline_keyboard": [[{"text": "Approve", "callback_data": f"a:{number}"}]]}
    async with http.post(
        f"{sandbox.base_url}/bot{FLOOR_TOKEN}/sendMessage",
        json={"chat_id": OWNER, "text": f"card {number}", "reply_markup": markup},
    ) as response:
        body = await response.json()
    return int(body["result"]["message_id"])


async def tap_latency(tmp: Path, url: str, taps: int, warmup: int) -> Taps:
    """SignalDesk (``python -m bot`` with unpaced delivery, on ``url``) and the floor bot
    each run as their own process against their own sandbox. Signals are proposed from this
    process (like the CLI) in batches of :data:`BATCH`; SignalDesk's card and a floor card
    are then tapped in turn, so both see the same machine load. The first ``warmup`` taps of
    each are not counted."""
    desk, floor = _sandbox(TOKEN), _sandbox(FLOOR_TOKEN)
    await desk.start()
    await floor.start()
    out = Taps()
    try:
        async with (
            spawned(tmp, desk, "taps", signaldesk_command(desk, url, unpaced=True)),
            spawned(tmp, floor, "floor-taps", floor_command(floor)),
            aiohttp.ClientSession() as http,
        ):
            await desk.wait_for_message(OWNER, contains="SignalDesk alive", timeout=PATIENCE)
            engine = await build_engine(_settings(url, desk.base_url))
            try:
                for number in range(warmup + taps):
                    if number % BATCH == 0:
                        batch = [
                            await engine.signals.propose(_proposal(number + i))
                            for i in range(min(BATCH, warmup + taps - number))
                        ]
                    proposed = batch[number % BATCH]
                    card = await desk.wait_for_message(
                        OWNER, contains=f"signal #{proposed.id}", timeout=PATIENCE
                    )
                    data = SignalCallback(
                        action=CardAction.APPROVE,
                        signal_id=proposed.id,
                        version=proposed.card_version,
                    ).pack()
                    mine = await _tap(desk, card.message_id, data)
                    theirs = await _tap(
                        floor, await _floor_card(http, floor, number), f"a:{number}"
                    )
                    if number >= warmup:
                        out.signaldesk.append(mine)
                        out.floor.append(theirs)
            finally:
                await engine.close()
    finally:
        await desk.stop()
        await floor.stop()
    return out


# --- the engine alone -----------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    """Approvals per second (``SignalService.approve`` -> fill, no Telegram) at a
    concurrency, and the floor: write transactions per second (one audit row each) on the
    same database at the same concurrency; ``filled`` of ``count`` approvals filled."""

    concurrency: int
    per_second: float
    floor_per_second: float
    filled: int
    count: int


async def _concurrently(concurrency: int, jobs: list[Callable[[], Awaitable[Any]]]) -> float:
    """Run ``jobs`` with ``concurrency`` workers; wall seconds."""
    queue = list(reversed(jobs))

    async def worker() -> None:
        while queue:
            await queue.pop()()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def throughput(url: str, levels: list[int], count: int) -> list[Throughput]:
    """``count`` approvals at each concurrency in ``levels`` on one engine on ``url``."""
    engine = await build_engine(_settings(url))
    out = []
    try:
        for concurrency in levels:
            proposed = [await engine.signals.propose(_proposal(n)) for n in range(count)]
            results: list[Any] = []

            async def approve(signal_id: int, into: list[Any] = results) -> None:
                into.append(await engine.signals.approve(signal_id, "bench"))

            seconds = await _concurrently(
                concurrency, [lambda s=s.id: approve(s) for s in proposed]
            )
            filled = sum(1 for r in results if r.signal.status is SignalStatus.FILLED)

            async def write() -> None:
                async with engine.db.session() as session:
                    session.add(AuditEventRow(actor="bench", action="floor", at=datetime.now(UTC)))

            floor = await _concurrently(concurrency, [write] * count)
            out.append(Throughput(concurrency, count / seconds, count / floor, filled, count))
    finally:
        await engine.close()
    return out


@dataclass(frozen=True)
class CloseAll:
    """``close_all`` of ``positions`` positions (each with a resting stop when ``stops``)
    with ``latency`` seconds per broker call: wall seconds, closes that filled, the broker
    calls by method, and the floor (one injected broker call, measured)."""

    positions: int
    seconds: float
    closed: int
    calls: Counter[str]
    floor_seconds: float
    latency: float
    stops: bool = False


BROKER_CALLS = (
    "place_order",
    "close_position",
    "cancel_order",
    "get_order",
    "open_orders",
    "positions",
    "account",
)


def inject_latency(broker: Any, seconds: float, calls: Counter[str]) -> None:
    """Make every call of ``broker``'s order and account methods sleep ``seconds`` first (a
    venue ``seconds`` away), counting them in ``calls``. Patches the instance, so every
    service holding it sees the latency."""
    for name in BROKER_CALLS:
        method = getattr(broker, name)

        async def slow(*args: Any, _method: Any = method, _name: str = name, **kw: Any) -> Any:
            calls[_name] += 1
            await asyncio.sleep(seconds)
            return await _method(*args, **kw)

        setattr(broker, name, slow)


async def close_all(url: str, positions: int, latency: float, stops: bool = False) -> CloseAll:
    """Open ``positions`` positions (one per replayed symbol, all on the replay's BTC/USDT
    candles; with ``stops`` each has a stop resting at the paper venue, which the close
    cancels), then time ``TradingService.close_all`` with ``latency`` per venue call (the
    exit service's calls included)."""
    symbols = [f"B{n:02d}/USDT" for n in range(1, positions)]
    settings = _settings(
        url,
        replay_files=dict.fromkeys(symbols, DEFAULT_FEED_CSV),
        paper_starting_balance=Decimal(10_000_000),
    )
    engine = await build_engine(settings)
    try:
        stop = Decimal(50_000) if stops else None  # a long's, far below the replay's prices
        for number, symbol in enumerate(["BTC/USDT", *symbols]):
            proposed = await engine.signals.propose(replace(_proposal(0, symbol), stop_loss=stop))
            decided = await engine.signals.approve(proposed.id, "bench")
            if decided.signal.status is not SignalStatus.FILLED:
                raise RuntimeError(f"position {number} did not open: {decided.signal}")
        calls: Counter[str] = Counter()
        inject_latency(engine.broker.inner, latency, calls)
        started = time.perf_counter()
        await asyncio.sleep(latency)
        floor = time.perf_counter() - started
        started = time.perf_counter()
        report = await engine.trading.close_all("bench")
        seconds = time.perf_counter() - started
        closed = sum(1 for c in report.closes if c.ok and c.report is not None)
    finally:
        await engine.close()
    return CloseAll(positions, seconds, closed, calls, floor, latency, stops)


# --- the command line and start-up ----------------------------------------------------------


@dataclass(frozen=True)
class Cli:
    """Median wall seconds of ``signaldesk status``, ``signaldesk --help`` and the floor
    (``python -c pass``), and the heavy modules ``status`` imported."""

    status: float
    help: float
    floor: float
    heavy: list[str]


HEAVY = ("aiogram", "ccxt", "matplotlib", "ib_async", "MetaTrader5")


def _wall(args: list[str], env: dict[str, str], cwd: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(args, env=env, cwd=cwd, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cli_times(tmp: Path, runs: int) -> Cli:
    """Each command ``runs`` times on a migrated SQLite file (one run first migrates it)."""
    env = _env(DATABASE_URL=f"sqlite:///{tmp / 'cli.db'}")
    cli = [sys.executable, "-c", "from bot.cli import main; main()"]
    _wall([*cli, "status"], env, tmp, 1)
    probe = (
        "import sys; from bot.cli import main\n"
        "sys.argv = ['signaldesk', 'status']\n"
        "try: main()\nexcept SystemExit: pass\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    )
    imported = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=tmp, capture_output=True, check=True
    )
    return Cli(
        status=_wall([*cli, "status"], env, tmp, runs),
        help=_wall([*cli, "--help"], env, tmp, runs),
        floor=_wall([sys.executable, "-c", "pass"], env, tmp, runs),
        heavy=[m for m in imported.stderr.decode().strip().splitlines()[-1:] if m],
    )


@dataclass(frozen=True)
class Startup:
    """``python -m bot`` and the floor bot, each on its own: seconds from spawn to the first
    ``getUpdates`` (SignalDesk on a fresh SQLite file, migrations included), and resident
    memory (MiB) after ``idle`` seconds."""

    startup: float
    rss_mib: float
    floor_startup: float
    floor_rss_mib: float
    idle: float


async def startup(tmp: Path, idle: float) -> Startup:
    """Spawn each bot, let it idle, read its RSS."""
    figures: dict[str, tuple[float, float]] = {}
    for name, token in (("floor", FLOOR_TOKEN), ("signaldesk", TOKEN)):
        sandbox = _sandbox(token)
        await sandbox.start()
        if name == "floor":
            command = floor_command(sandbox)
        else:
            command = signaldesk_command(sandbox, f"sqlite:///{tmp / 'idle.db'}", unpaced=False)
        try:
            async with spawned(tmp, sandbox, f"{name}-idle", command) as bot:
                await asyncio.sleep(idle)
                figures[name] = (bot.startup_seconds, _rss_mib(bot.process.pid))
        finally:
            await sandbox.stop()
    return Startup(*figures["signaldesk"], *figures["floor"], idle)


# --- costs that must stay flat in the data --------------------------------------------------


#: The hot and periodic reads timed at each history size, by the name the table prints.
HOT_QUERIES: dict[str, Callable[[Engine, OutboxDeliverer], Awaitable[Any]]] = {
    "outbox next row": lambda e, d: d._next_row(),  # the deliverer's poll
    "reconciler pass": lambda e, d: e.reconciler.run(),
    "/history": lambda e, d: e.signals.history(limit=20),
    "paper account()": lambda e, d: e.broker.account(),
    "paper open orders": lambda e, d: e.broker.open_orders(),
}


SEEDED = (SignalRow, OrderRow, FillRow, AuditEventRow, PaperOrderRow, OutboxRow)


async def _seed(engine: Engine, count: int) -> None:
    """Add ``count`` past signals, each approved and filled: its audit trail, order, fill,
    paper ledger order and delivered card. Bulk inserts; ids given, after each table's
    highest (the rows link by id). On PostgreSQL the seeded tables are then analyzed, as
    autovacuum does once a table has grown by a tenth (a running desk's steady state)."""
    async with engine.db.session() as session:
        top = {
            model: (await session.execute(select(func.max(model.id)))).scalar() or 0
            for model in SEEDED
        }
    chunk = 5000
    for start in range(0, count, chunk):
        rows: dict[Any, list[dict[str, Any]]] = {model: [] for model in SEEDED}
        for n in range(start, min(start + chunk, count)):
            sid, oid = top[SignalRow] + 1 + n, top[OrderRow] + 1 + n
            at = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=sid)
            cid = f"sdpast-s{sid}"
            trade = {"symbol": "BTC/USDT", "side": "BUY", "quantity": Decimal("0.001")}
            rows[SignalRow].append(
                {
                    **trade,
                    "id": sid,
                    "source": "bench",
                    "order_type": "market",
                    "reference_price": Decimal(100000),
                    "status": "FILLED",
                    "decided_by": "bench",
                    "decided_at": at,
                    "created_at": at,
                    "expires_at": at,
                    "updated_at": at,
                }
            )
            rows[OrderRow].append(
                {
                    **trade,
                    "id": oid,
                    "client_order_id": cid,
                    "signal_id": sid,
                    "order_type": "market",
                    "state": "FILLED",
                    "filled_quantity": Decimal("0.001"),
                    "average_price": Decimal(100000),
                    "created_at": at,
                    "updated_at": at,
                }
            )
            rows[FillRow].append(
                {
                    **trade,
                    "id": top[FillRow] + 1 + n,
                    "order_id": oid,
                    "client_order_id": cid,
                    "price": Decimal(100000),
                    "broker_fill_id": f"paper-{cid}",
                    "at": at,
                }
            )
            for k, (action, old, new) in enumerate(
                [("propose", "", "PROPOSED"), ("approve", "PROPOSED", "APPROVED"),
                 ("fill", "SUBMITTED", "FILLED")]
            ):  # fmt: skip
                rows[AuditEventRow].append(
                    {
                        "id": top[AuditEventRow] + 1 + 3 * n + k,
                        "at": at,
                        "actor": "bench",
                        "action": action,
                        "signal_id": sid,
                        "from_status": old,
                        "to_status": new,
                    }
                )
            rows[PaperOrderRow].append(
                {
                    **trade,
                    "id": top[PaperOrderRow] + 1 + n,
                    "client_order_id": cid,
                    "order_type": "market",
                    "state": "FILLED",
                    "placed_candle_at": at,
                    "fill_price": Decimal(100000),
                    "created_at": at,
                    "filled_at": at,
                }
            )
            rows[OutboxRow].append(
                {
                    "id": top[OutboxRow] + 1 + n,
                    "kind": NoticeKind.SIGNAL_CARD.value,
                    "signal_id": sid,
                    "payload": {},
                    "created_at": at,
                    "delivered_at": at,
                }
            )
        async with engine.db.session() as session:
            for model, values in rows.items():
                await session.execute(insert(model), values)
    if engine.db.dialect == "postgresql":  # explicit ids leave the sequences behind
        async with engine.db.session() as session:
            for model in SEEDED:
                table = model.__tablename__
                await session.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
                # the statistics autovacuum gathers once a table has grown by a tenth; a
                # statement planned while the table was small (the 0-signal row) keeps its
                # plan until the table is analyzed: a bulk seed timed at once would read
                # all 100k orders in the reconciler pass (54 ms) with the plan made for one
                await session.execute(text(f"ANALYZE {table}"))


@dataclass(frozen=True)
class HotQueries:
    """Median milliseconds of each of :data:`HOT_QUERIES` at each history size (past
    signals), and the floor: a ``SELECT 1`` session on the same database."""

    sizes: list[int]
    millis: dict[str, list[float]]
    floor: list[float]


async def _median_ms(call: Callable[[], Awaitable[Any]], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def hot_queries(url: str, sizes: list[int], runs: int) -> HotQueries:
    """Grow one database through ``sizes`` past signals; time every hot read at each, with
    one live pending card and one open position on top (what a running desk has)."""
    engine = await build_engine(_settings(url))
    deliverer = OutboxDeliverer(cast(Any, None), engine, cast(Any, None), OWNER)
    out = HotQueries(sizes, {name: [] for name in HOT_QUERIES}, [])

    async def select_one() -> None:
        async with engine.db.session() as session:
            await session.execute(text("SELECT 1"))

    try:
        seeded = 0
        for size in sorted(sizes):
            await _seed(engine, size - seeded)
            seeded = size
            opened = await engine.signals.propose(_proposal(0))
            await engine.signals.approve(opened.id, "bench")
            await engine.signals.propose(_proposal(1))
            for name, query in HOT_QUERIES.items():
                await query(engine, deliverer)  # warm: plans, caches
                out.millis[name].append(
                    await _median_ms(lambda q=query: q(engine, deliverer), runs)
                )
            out.floor.append(await _median_ms(select_one, runs))
    finally:
        await engine.close()
    return out


# --- Telegram's limits ----------------------------------------------------------------------


@dataclass(frozen=True)
class Burst:
    """An alert queued behind ``cards`` cards to a private chat, or a burst to a group: seconds
    until the alert reached the chat (0 for a group burst), cards delivered before it, the
    429s the sandbox's flood control sent, and the seconds the burst took to drain."""

    cards: int
    alert_seconds: float
    cards_before_alert: int
    rate_limited: int
    drain_seconds: float


@asynccontextmanager
async def running_bot(
    tmp: Path, url: str, chat: int | None
) -> AsyncIterator[tuple[SandboxServer, BotApp]]:
    """The sandbox (Telegram's flood limits enforced) and the real bot (``BotApp``) at the
    production pace in this process on ``url``, delivering to ``chat`` (default: the owner),
    past its start-up heartbeat."""
    sandbox = _sandbox(TOKEN, enforce_rate_limits=True)
    if chat is not None:
        sandbox.add_group(chat, "Bench desk", [OWNER])
    await sandbox.start()
    app = BotApp.from_settings(
        _settings(url, sandbox.base_url, telegram_chat_id=chat), DeliveryPolicy()
    )
    task = asyncio.create_task(app.run(handle_signals=False))
    try:
        await sandbox.wait_for(lambda s: app.ready.is_set() or task.done(), PATIENCE)
        if task.done():
            task.result()
        await sandbox.wait_for_message(chat or OWNER, contains="SignalDesk alive", timeout=PATIENCE)
        yield sandbox, app
    finally:
        if not task.done():
            await app.stop()
        await task
        await sandbox.stop()


async def burst(tmp: Path, url: str, cards: int, chat: int | None) -> Burst:
    """Queue ``cards`` proposals (each a card in the outbox) then, for a private chat, one
    alert; wait for the whole burst to drain so every 429 is counted."""
    async with running_bot(tmp, url, chat) as (sandbox, app):
        where = chat or OWNER
        started = time.monotonic()
        for number in range(cards):
            await app.engine.signals.propose(_proposal(number))
        alert_seconds, before = 0.0, 0
        if chat is None:
            queued_at = datetime.now(UTC)
            await app.engine.notifier.notify(
                Notification(NoticeKind.TEXT, "bench alert", priority=Priority.ALERT)
            )
            alert = await sandbox.wait_for_message(where, contains="bench alert", timeout=PATIENCE)
            assert alert.sent_at is not None
            alert_seconds = (alert.sent_at - queued_at).total_seconds()
            before = sum(
                1
                for m in sandbox.messages(where)
                if m.had_buttons and m.message_id < alert.message_id
            )
        await sandbox.wait_for(
            lambda s: sum(m.had_buttons for m in s.messages(where)) >= cards,
            PATIENCE + cards * 5,
        )
        return Burst(
            cards=cards,
            alert_seconds=alert_seconds,
            cards_before_alert=before,
            rate_limited=sandbox.stats.rate_limited,
            drain_seconds=time.monotonic() - started,
        )


# --- the cost of one approval ---------------------------------------------------------------


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


async def approval_cost(url: str, approvals: int = 50, warmup: int = 5) -> ApprovalCost:
    """Count the work of ``approvals`` approvals of market orders (after ``warmup``),
    each proposed first, then approved alone, on the empty database at ``url``. Only work
    done by the approving task itself is counted (SQLAlchemy's ``before_cursor_execute``,
    ``commit`` and pool ``checkout`` events and ``aiosqlite.Connection._execute``, each
    attributed by ``asyncio.current_task()``); the drawdown check a fill schedules runs as
    its own task and is not, nor are the quote and the account the gate gathers in tasks
    of their own. Work done inside the paper broker's methods is the venue's. A PostgreSQL
    ping (none in steady use; formerly ``pool_pre_ping``'s three round trips per checkout)
    is seen by no event, hence ``checkouts``."""
    import aiosqlite
    from sqlalchemy import event

    engine = await build_engine(_settings(url))
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
