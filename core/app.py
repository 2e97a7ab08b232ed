"""The engine's composition: settings -> database -> market data -> broker -> services.

Every entry point (the bot, the CLI, the headless engine, tests) builds the same
:class:`Engine` with :func:`build_engine`, so they all run the same code path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from core.brokers.base import Broker
from core.brokers.paper import PaperBroker
from core.config import BrokerName, MarketDataName, Settings
from core.db import repositories as repo
from core.db.engine import Database, upgrade_schema
from core.domain import utcnow
from core.errors import ConfigError
from core.marketdata.base import Instrument, MarketData, PriceFeed
from core.marketdata.replay import ReplayFeed, ReplayMarketData, load_candles
from core.marketdata.search import SymbolSearch
from core.notify import Notifier, OutboxNotifier
from core.services.exits import ExitService, PriceWatchBroker, PriceWatchMarket
from core.services.heartbeat import Health, HeartbeatService
from core.services.reconciler import Reconciler
from core.services.reports import ReportService
from core.services.retention import RetentionService
from core.services.risk import RiskService
from core.services.signals import SignalService
from core.services.trades import TradeService
from core.services.trading import TradingService
from core.strategies.desk import StrategyDesk
from core.strategies.instances import (
    StrategySpec,
    build_instance_strategy,
    check_symbols,
    load_strategies_file,
    shorthand,
)

__all__ = ["Engine", "build_broker", "build_engine", "build_market_data"]


@dataclass
class Engine:
    """The wired engine. ``close()`` releases the broker and the database pool.

    The always-on duties (``core.scheduler``) use ``risk`` (drawdown guard), ``heartbeat``,
    ``reconciler``, ``exits`` (protective exits) and ``strategies`` (the strategy
    instances; None when there are none); ``health`` holds this process's last error;
    ``clock`` is the services' clock. ``broker`` and ``market`` show every quote to
    ``exits`` (:class:`~core.services.exits.PriceWatchBroker`,
    :class:`~core.services.exits.PriceWatchMarket`); ``trades`` reads the trade record.
    ``market`` is the market data everything reads prices from (``MARKET_DATA``; the exit
    watcher too, unless an injected broker executes on prices of its own) and ``symbols``
    its cached symbol search; ``reports`` the result reports (``/pnl``, ``/daily``,
    ``/performance``, the daily summary); ``retention`` prunes the outbox and thins old
    equity snapshots; ``feed`` is the replay's primary feed (built
    whatever ``MARKET_DATA`` says; the paper broker executes on it only on the replay).
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
    strategies: StrategyDesk | None
    health: Health
    clock: Callable[[], datetime]
    exits: ExitService
    trades: TradeService
    market: MarketData
    symbols: SymbolSearch
    reports: ReportService
    retention: RetentionService

    async def close(self) -> None:
        """Stop background drawdown and exit checks, close the broker and the market data,
        then the database."""
        await self.risk.close()
        await self.exits.close()
        await self.broker.close()
        await self.market.close()
        await self.db.close()


def build_market_data(
    settings: Settings,
    replay: ReplayMarketData,
    clock: Callable[[], datetime] = utcnow,
    broker: Broker | None = None,
) -> MarketData:
    """The market data ``MARKET_DATA`` names; ccxt, MT5 and ib_async are imported only when
    chosen.
    ``CCXT_CONFIG`` applies to ccxt's market data too.

    Unset, it follows the broker that executes, so strategies and the drift check see the
    venue's own prices: the replay for the paper broker, the ccxt broker's exchange (its
    testnet in sandbox mode), the MT5 broker's terminal connection, the IBKR broker's
    TWS / IB Gateway connection.

    Raises:
        BrokerUnavailableError: the extra is not installed (the message names it).
    """
    source = settings.market_data
    if source is None and (broker is None or isinstance(broker, PaperBroker)):
        return replay  # without importing the adapters (aiohttp is slow to import)
    from core.brokers.ccxt_broker import CcxtBroker  # none imports its library yet
    from core.brokers.ibkr_broker import IbkrBroker
    from core.brokers.mt5_broker import Mt5Broker

    if source is None and isinstance(broker, CcxtBroker):
        from core.marketdata.ccxt_data import CcxtMarketData

        return CcxtMarketData(
            cache_seconds=settings.market_data_cache_seconds, clock=clock, exchange=broker.exchange
        )
    if source is None and isinstance(broker, Mt5Broker):
        from core.marketdata.mt5_data import Mt5MarketData

        return Mt5MarketData(broker)
    if (source is None and isinstance(broker, IbkrBroker)) or source is MarketDataName.IBKR:
        from core.marketdata.ibkr_data import IbkrMarketData

        return IbkrMarketData.from_settings(settings, broker)
    if source is None:
        return replay
    if source is MarketDataName.CCXT:
        from core.marketdata.ccxt_data import CcxtMarketData

        return CcxtMarketData(
            settings.ccxt_exchange,
            market_type=settings.ccxt_market_type,
            config=settings.ccxt_config,
            cache_seconds=settings.market_data_cache_seconds,
            clock=clock,
        )
    if source is MarketDataName.MT5:
        from core.marketdata.mt5_data import Mt5MarketData

        return Mt5MarketData.from_settings(settings, broker)
    return replay


def build_broker(
    settings: Settings,
    db: Database,
    feed: PriceFeed,
    market: MarketData | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> Broker:
    """The broker named by ``BROKER``; ccxt, MT5 and ib_async are imported only when chosen.
    ``BROKER=paper`` executes on ``feed`` (the replay), or on ``market`` when that is live
    market data (a dry run on live prices, :class:`LivePaperBroker`).

    Raises:
        BrokerUnavailableError: the broker's extra is not installed (the message names it).
    """
    if settings.broker is BrokerName.CCXT:
        from core.brokers.ccxt_broker import CcxtBroker

        return CcxtBroker.from_settings(settings)
    if settings.broker is BrokerName.MT5:
        from core.brokers.mt5_broker import Mt5Broker

        return Mt5Broker.from_settings(settings)
    if settings.broker is BrokerName.IBKR:
        from core.brokers.ibkr_broker import IbkrBroker

        return IbkrBroker.from_settings(settings)
    if market is not None and not isinstance(market, ReplayMarketData):
        from core.brokers.paper_live import LivePaperBroker
        from core.marketdata.live import CandleHistory, LiveFeed

        if not hasattr(market, "ohlcv"):
            raise ConfigError(f"BROKER=paper cannot execute on {market.name} market data")
        history: CandleHistory = market  # type: ignore[assignment]
        return LivePaperBroker.from_settings(settings, db, LiveFeed(history, clock))
    return PaperBroker.from_settings(settings, db, feed)


async def build_engine(
    settings: Settings,
    *,
    notifier: Notifier | None = None,
    broker: Broker | None = None,
    market: MarketData | None = None,
    migrate: bool = True,
    clock: Callable[[], datetime] = utcnow,
) -> Engine:
    """Wire the engine from ``settings``.

    Args:
        notifier: defaults to an :class:`OutboxNotifier` on the same database.
        broker: an already-built broker (the engine closes it); default: the one ``BROKER``
            names, built by :func:`build_broker`.
        market: already-built market data (the engine closes it), used as an explicit
            ``MARKET_DATA`` would be; default: the one :func:`build_market_data` builds.
        migrate: run ``alembic upgrade head`` first (idempotent).
        clock: current UTC time for services and the replay (injectable for tests).

    Raises:
        ConfigError: a setting cannot be served (bad feed file, missing broker extra,
            unknown ``STRATEGY``, a strategies file with mistakes: one line each).
    """
    file_specs, file_errors = (
        load_strategies_file(settings.strategies_file) if settings.strategies_file else (None, [])
    )
    if migrate:
        await upgrade_schema(settings.database_url)
    db = Database(settings.database_url)
    broker_given, market_given = broker is not None, market is not None
    try:
        async with db.session() as session:
            state = await repo.load_operator_state(session)
            if state.replay_anchor_at is None:
                state.replay_anchor_at = clock()
            anchor = state.replay_anchor_at
        feeds = []
        for symbol, path in {
            settings.feed_symbol: settings.feed_csv,
            **settings.replay_files,
        }.items():
            candles = load_candles(path)
            start = ReplayFeed.index_of(candles, settings.feed_start) if settings.feed_start else 0
            feeds.append(
                ReplayFeed(
                    symbol,
                    candles,
                    speed=settings.feed_speed,
                    start_index=start,
                    anchor=anchor,
                    clock=clock,
                )
            )
        replay = ReplayMarketData(feeds)
        feed = feeds[0]
        if broker is None and settings.broker is not BrokerName.PAPER:
            broker = build_broker(settings, db, replay, None, clock)  # MT5 data shares it
        market = market or build_market_data(settings, replay, clock, broker)
        short = shorthand(settings, replay.timeframe)  # refuses STRATEGY with a file
        specs = file_specs if file_specs is not None else short
        symbols = SymbolSearch(db, market, settings.symbols_ttl_seconds, clock)
        instruments = await _check_instances(specs, file_errors, symbols, market, replay)
        broker = broker or build_broker(settings, db, replay, market, clock)
    except BaseException:
        if market is not None:
            await market.close()
        if broker is not None:
            await broker.close()
        await db.close()
        raise
    notifier = notifier or OutboxNotifier(db)
    venue = broker
    trades = TradeService(
        db,
        # a per-ticket venue says so, once it knows (MT5 learns it when it connects)
        hedging=lambda: bool(getattr(venue, "hedging", False)),
        currency=getattr(venue, "currency", ""),
        clock=clock,
    )
    # The exits read the market data when it gives the venue's own prices (it follows the
    # broker, or MARKET_DATA / ``market`` names it); an injected broker executing on a
    # feed of its own with the default replay keeps reading its quotes.
    own_prices = market_given or not (
        broker_given
        and settings.market_data is None
        and market is replay
        and getattr(venue, "feed", None) is not replay
    )
    broker = PriceWatchBroker(venue)
    prices = PriceWatchMarket(market)
    trading = TradingService(db, broker, notifier, settings, clock, trades)
    exits = ExitService(db, venue, trading, notifier, clock, market if own_prices else None)
    # every quote the engine takes checks the exits, at its price when the exits read it
    broker.on_quote = exits.observe_elsewhere if own_prices else exits.observe
    prices.on_quote = exits.observe if own_prices else exits.observe_elsewhere
    trading.on_trades = exits.on_trades  # place, resize and cancel protective exits
    signals = SignalService(db, broker, trading, notifier, settings, clock, market=prices)
    trading.gate.on_change = signals.follow_state  # pending cards follow pause and resume
    reconciler = Reconciler(db, broker, trading, notifier, settings, clock)
    risk = RiskService(db, broker, trading, reconciler, notifier, settings, clock)
    trading.on_fill = risk.request_check  # the drawdown guard checks after every fill
    health = Health(clock)
    heartbeat = HeartbeatService(broker, signals, risk, notifier, health, settings, clock)
    strategies = (
        StrategyDesk.build(
            specs,
            lambda spec, item: build_instance_strategy(spec, settings, item.price_tick),
            instruments,
            db,
            prices,
            broker,
            signals,
            clock,
        )
        if specs
        else None
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
        prices,
        symbols,
        ReportService(db, trades, trading, settings.display_zone, clock),
        RetentionService(db, settings, clock),
    )


async def _check_instances(
    specs: list[StrategySpec],
    errors: list[str],
    symbols: SymbolSearch,
    market: MarketData,
    replay: ReplayMarketData,
) -> dict[str, Instrument]:
    """The instruments of the instances' symbols, after checking that the market data
    lists every one (and, on the replay, has the timeframe). ``errors`` are the file's
    own mistakes. Raises ConfigError with one line per mistake."""
    if not specs and not errors:
        return {}
    listed = {item.symbol: item for item in await symbols.listing()}
    timeframes = {replay.timeframe} if market is replay else None
    errors = errors + check_symbols(specs, set(listed), timeframes)
    if errors:
        raise ConfigError("\n".join(errors))
    return {symbol: listed[symbol] for spec in specs if spec.enabled for symbol in spec.symbols}
