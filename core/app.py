"""The engine's composition: settings -> database -> feed -> broker -> services.

Every entry point (the bot, the CLI, the headless engine, tests) builds the same
:class:`Engine` with :func:`build_engine`, so they all run the same code path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from core.brokers.base import Broker
from core.brokers.paper import PaperBroker
from core.config import BrokerName, Settings
from core.db import repositories as repo
from core.db.engine import Database, upgrade_schema
from core.domain import utcnow
from core.marketdata.replay import ReplayFeed, load_candles
from core.notify import Notifier, OutboxNotifier
from core.services.exits import ExitService, PriceWatchBroker
from core.services.heartbeat import Health, HeartbeatService
from core.services.reconciler import Reconciler
from core.services.risk import RiskService
from core.services.signals import SignalService
from core.services.trades import TradeService
from core.services.trading import TradingService
from core.strategies.runner import StrategyRunner, build_strategy

__all__ = ["Engine", "build_broker", "build_engine"]


@dataclass
class Engine:
    """The wired engine. ``close()`` releases the broker and the database pool.

    The always-on duties (``core.scheduler``) use ``risk`` (drawdown guard), ``heartbeat``,
    ``reconciler``, ``exits`` (protective exits) and ``strategies`` (None when
    ``STRATEGY=none``); ``health`` holds this process's last error; ``clock`` is the
    services' clock. ``broker`` shows every quote to ``exits``
    (:class:`~core.services.exits.PriceWatchBroker`); ``trades`` reads the trade record.
    """

    settings: Settings
    db: Database
    feed: ReplayFeed
    broker: Broker
    notifier: Notifier
    trading: TradingService
    signals: SignalService
    risk: RiskService
    heartbeat: HeartbeatService
    reconciler: Reconciler
    strategies: StrategyRunner | None
    health: Health
    clock: Callable[[], datetime]
    exits: ExitService
    trades: TradeService

    async def close(self) -> None:
        """Stop background drawdown and exit checks, close the broker, then the database."""
        await self.risk.close()
        await self.exits.close()
        await self.broker.close()
        await self.db.close()


def build_broker(settings: Settings, db: Database, feed: ReplayFeed) -> Broker:
    """The broker named by ``BROKER``; ccxt and MT5 are imported only when chosen.

    Raises:
        BrokerUnavailableError: the broker's extra is not installed (the message names it).
    """
    if settings.broker is BrokerName.CCXT:
        from core.brokers.ccxt_broker import CcxtBroker

        return CcxtBroker.from_settings(settings)
    if settings.broker is BrokerName.MT5:
        from core.brokers.mt5_broker import Mt5Broker

        return Mt5Broker.from_settings(settings)
    return PaperBroker.from_settings(settings, db, feed)


async def build_engine(
    settings: Settings,
    *,
    notifier: Notifier | None = None,
    broker: Broker | None = None,
    migrate: bool = True,
    clock: Callable[[], datetime] = utcnow,
) -> Engine:
    """Wire the engine from ``settings``.

    Args:
        notifier: defaults to an :class:`OutboxNotifier` on the same database.
        broker: an already-built broker (the engine closes it); default: the one ``BROKER``
            names, built by :func:`build_broker`.
        migrate: run ``alembic upgrade head`` first (idempotent).
        clock: current UTC time for services and the replay (injectable for tests).

    Raises:
        ConfigError: a setting cannot be served (bad feed file, missing broker extra,
            unknown ``STRATEGY``).
    """
    strategy = build_strategy(settings)
    if migrate:
        await upgrade_schema(settings.database_url)
    db = Database(settings.database_url)
    try:
        candles = load_candles(settings.feed_csv)
        start = ReplayFeed.index_of(candles, settings.feed_start) if settings.feed_start else 0
        async with db.session() as session:
            state = await repo.load_operator_state(session)
            if state.replay_anchor_at is None:
                state.replay_anchor_at = clock()
            anchor = state.replay_anchor_at
        feed = ReplayFeed(
            settings.feed_symbol,
            candles,
            speed=settings.feed_speed,
            start_index=start,
            anchor=anchor,
            clock=clock,
        )
        venue = broker or build_broker(settings, db, feed)
    except BaseException:
        await db.close()
        raise
    notifier = notifier or OutboxNotifier(db)
    trades = TradeService(
        db,
        hedging=bool(getattr(venue, "hedging", False)),  # a per-ticket venue says so
        currency=getattr(venue, "currency", ""),
        clock=clock,
    )
    broker = PriceWatchBroker(venue)
    trading = TradingService(db, broker, notifier, settings, clock, trades)
    exits = ExitService(db, venue, trading, notifier, clock)
    broker.on_quote = exits.observe  # every quote the engine takes checks the exits
    trading.on_trades = exits.on_trades  # place, resize and cancel protective exits
    signals = SignalService(db, broker, trading, notifier, settings, clock)
    reconciler = Reconciler(db, broker, trading, notifier, settings, clock)
    risk = RiskService(db, broker, trading, reconciler, notifier, settings, clock)
    trading.on_fill = risk.request_check  # the drawdown guard checks after every fill
    health = Health(clock)
    heartbeat = HeartbeatService(broker, signals, risk, notifier, health, settings, clock)
    strategies = (
        None
        if strategy is None
        else StrategyRunner(strategy, feed, broker, signals, settings.feed_symbol)
    )
    return Engine(
        settings,
        db,
        feed,
        broker,
        notifier,
        trading,
        signals,
        risk,
        heartbeat,
        reconciler,
        strategies,
        health,
        clock,
        exits,
        trades,
    )
