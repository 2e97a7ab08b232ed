"""The market-data port against the local exchange server (tests/support/market_fake.py,
real ccxt over real HTTP): cached quotes counted at the server, closed candles only,
instruments with the venue's increments, the replay behind the same port, paper trading on
live prices (BROKER=paper MARKET_DATA=ccxt) and the ccxt broker on the same candles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.delivery import Cards
from core.app import Engine, build_engine
from core.domain import OrderRequest, OrderState, OrderType, Side, SignalStatus
from core.errors import InvalidInputError, UnknownSymbolError
from core.marketdata.base import Instrument
from core.marketdata.search import normalize_symbol
from core.services.signals import Proposal
from tests.conftest import Clock
from tests.support import binance_fake, market_fake

D = Decimal

#: Two instances on two symbols, crossing up on their last closed hourly candle.
STRATEGIES = """
[[strategy]]
name = "eth-trend"
kind = "sma_cross"
symbols = ["ETH/USDT"]
timeframe = "1h"
cron = "0 * * * *"
risk_pct = 1
params = { fast = 3, slow = 6, atr_period = 5 }

[[strategy]]
name = "btc-trend"
kind = "sma_cross"
symbols = ["BTC/USDT"]
timeframe = "1h"
every = "15m"
risk_pct = 0.5
params = { fast = 3, slow = 6, atr_period = 5 }
"""


def crossing_up(start: int, step: int, jump: int) -> list[int]:
    """40 closes falling by ``step`` from ``start``, then one ``jump`` above the last."""
    falling = [start - step * i for i in range(40)]
    return [*falling, falling[-1] + jump]


@pytest.fixture
async def fake(clock: Clock) -> AsyncIterator[market_fake.MarketFake]:
    async with market_fake.running(clock=clock) as server:
        server.set_history("ETH/USDT", crossing_up(3400, 10, 100))  # ... 3020, 3010, 3110
        server.set_history("BTC/USDT", crossing_up(64000, 100, 1000))  # ... 60100, 61100
        yield server


@pytest.fixture
def strategies_file(tmp_path: Path) -> Path:
    path = tmp_path / "strategies.toml"
    path.write_text(STRATEGIES)
    return path


@pytest.fixture
async def live(
    database_url: str,
    make_settings: Callable[..., Any],
    clock: Clock,
    fake: market_fake.MarketFake,
    strategies_file: Path,
) -> AsyncIterator[Engine]:
    """BROKER=paper MARKET_DATA=ccxt on the fake exchange, no key, no cache (so a price
    set at the server is the next price read)."""
    settings = make_settings(
        database_url=database_url,
        broker="paper",
        market_data="ccxt",
        ccxt_exchange="binance",
        ccxt_config=fake.ccxt_config,
        market_data_cache_seconds=0,
        strategies_file=strategies_file,
    )
    engine = await build_engine(settings, clock=clock)
    yield engine
    await engine.close()


async def test_ten_callers_in_one_second_cost_one_ticker_request(
    fake: market_fake.MarketFake,
) -> None:
    market = fake.market_data(cache_seconds=60)

    quotes = await asyncio.gather(*[market.quote("ETH/USDT") for _ in range(10)])
    again = await market.quote("ETH/USDT")

    assert {q.last for q in [*quotes, again]} == {D(3110)}
    assert fake.counts["/api/v3/ticker/24hr"] == 1
    assert fake.counts["/api/v3/exchangeInfo"] == 1


async def test_candles_are_closed_only_with_utc_open_times(
    fake: market_fake.MarketFake, clock: Clock
) -> None:
    market = fake.market_data()
    fake.set_price("ETH/USDT", 2500)  # closes one more candle; a new one is forming

    candles = await market.candles("ETH/USDT", "1h", 3)

    assert [c.close for c in candles] == [D(3010), D(3110), D(2500)]
    assert candles[-1].at.tzinfo is not None
    # the forming candle (opened at the clock's hour) is not among them
    assert candles[-1].at == clock.now.replace(minute=0) - (candles[1].at - candles[0].at)


async def test_instruments_carry_the_venues_ticks_steps_and_minimums(
    fake: market_fake.MarketFake,
) -> None:
    listed = {item.symbol: item for item in await fake.market_data().symbols()}

    assert set(listed) == {"BTC/USDT", "ETH/USDT", "ETH/BTC", "SOL/USDT", "PEPE/USDT"}
    pepe, eth_btc = listed["PEPE/USDT"], listed["ETH/BTC"]
    assert (pepe.price_tick, pepe.quantity_step, pepe.kind) == (D("1e-8"), D(1), "spot")
    assert pepe.format_price(D("0.0000123")) == "0.00001230"
    assert (eth_btc.quote, eth_btc.price_tick, eth_btc.min_notional) == (
        "BTC",
        D("1e-5"),
        D("1e-4"),
    )
    assert listed["BTC/USDT"].round_price(D("60000.005")) == D("60000.01")


async def test_an_unlisted_symbol_is_an_unknown_symbol_error(fake: market_fake.MarketFake) -> None:
    with pytest.raises(UnknownSymbolError, match="DOGE/USDT"):
        await fake.market_data().quote("DOGE/USDT")


async def test_the_replay_serves_the_same_port_on_its_own_timeframe(engine: Engine) -> None:
    quote = await engine.market.quote("BTC/USDT")
    candles = await engine.market.candles("BTC/USDT", "1h", 5)

    assert quote.last == candles[-1].close == engine.feed.current().close
    assert [i.symbol for i in await engine.market.symbols()] == ["BTC/USDT"]
    with pytest.raises(InvalidInputError, match="the replay has 1h candles, not 5m"):
        await engine.market.candles("BTC/USDT", "5m", 5)


async def test_paper_on_live_prices_proposes_fills_and_marks_from_the_exchange(
    live: Engine, fake: market_fake.MarketFake, clock: Clock
) -> None:
    desk = live.strategies
    assert desk is not None

    [eth] = await desk.run_instance("eth-trend")
    [btc] = await desk.run_instance("btc-trend")

    assert (eth.symbol, eth.side, eth.reference_price) == ("ETH/USDT", Side.BUY, D(3110))
    assert (btc.symbol, btc.side, btc.reference_price) == ("BTC/USDT", Side.BUY, D(61100))
    assert eth.stop_loss is not None and eth.stop_loss == eth.stop_loss.quantize(D("0.01"))

    fake.set_price("ETH/USDT", 3100)
    decision = await live.signals.approve(eth.id, "owner:1")

    assert decision.signal.status is SignalStatus.FILLED
    assert decision.report is not None
    # the server's live price, plus half the 2 bps spread and 1 bps slippage, up to the tick
    assert decision.report.average_price == D("3100.62")  # 3100 x 1.0002
    [position] = await live.broker.positions()
    assert position.symbol == "ETH/USDT"
    before = position.unrealized_pnl

    fake.set_price("ETH/USDT", 3200)
    [moved] = await live.broker.positions()

    assert moved.unrealized_pnl - before == D(100) * position.quantity
    assert (await live.broker.account()).equity > D(10000) - 10


async def test_a_live_stop_triggers_on_the_candles_after_it_was_placed(
    live: Engine, fake: market_fake.MarketFake, clock: Clock
) -> None:
    broker = live.broker
    await broker.place_order(OrderRequest("sd-buy", "SOL/USDT", Side.BUY, D(1)))
    stop = OrderRequest(
        "sd-stop", "SOL/USDT", Side.SELL, D(1), OrderType.STOP, trigger_price=D(140)
    )
    assert (await broker.place_order(stop)).state is OrderState.OPEN

    fake.set_price("SOL/USDT", 139)  # within the minute the stop was placed: not matched
    assert [o.client_order_id for o in await broker.open_orders()] == ["sd-stop"]

    clock.advance(60)
    fake.set_price("SOL/USDT", 138)  # a later candle trades through the stop
    assert await broker.open_orders() == []
    found = await broker.get_order("sd-stop", "SOL/USDT")
    assert found is not None and found.state is OrderState.FILLED
    assert await broker.positions() == []


async def test_the_ccxt_broker_runs_the_same_strategies_on_the_same_live_candles(
    sqlite_url: str,
    make_settings: Callable[..., Any],
    clock: Clock,
    fake: market_fake.MarketFake,
    strategies_file: Path,
) -> None:
    async with binance_fake.running() as exchange:
        settings = make_settings(
            database_url=sqlite_url,
            broker="ccxt",
            market_data="ccxt",
            ccxt_config=fake.ccxt_config,
            strategies_file=strategies_file,
        )
        ccxt_broker: Any = exchange.broker()  # the Broker port's new methods: branch venues
        engine = await build_engine(settings, clock=clock, broker=ccxt_broker)
        try:
            desk = engine.strategies
            assert desk is not None
            signals = await desk.run()
        finally:
            await engine.close()

    assert {(s.symbol, s.reference_price) for s in signals} == {
        ("ETH/USDT", D(3110)),
        ("BTC/USDT", D(61100)),
    }


async def test_without_market_data_set_prices_come_from_the_venue_that_executes(
    sqlite_url: str, make_settings: Callable[..., Any], clock: Clock
) -> None:
    async with binance_fake.running() as exchange:
        exchange.set_price("BTC/USDT", 60000)
        settings = make_settings(database_url=sqlite_url, broker="ccxt")
        ccxt_broker: Any = exchange.broker()
        engine = await build_engine(settings, clock=clock, broker=ccxt_broker)
        try:
            quote = await engine.market.quote("BTC/USDT")
            signal = await engine.signals.propose(
                Proposal("cli", "BTC/USDT", Side.BUY, D("0.01"), stop_loss=D(59000))
            )
        finally:
            await engine.close()

    # the exchange's price, not the replay's 2025 candles (113,666 at its start)
    assert quote.last == signal.reference_price == D(60000)
    assert engine.market.name == "ccxt:binance"


async def test_the_symbol_search_reads_the_cache_and_a_second_search_costs_no_request(
    live: Engine, fake: market_fake.MarketFake
) -> None:
    before = fake.counts["/api/v3/exchangeInfo"]

    first = await live.symbols.search("eth")
    second = await live.symbols.search("ETH")

    assert [i.symbol for i in first] == [i.symbol for i in second] == ["ETH/BTC", "ETH/USDT"]
    assert fake.counts["/api/v3/exchangeInfo"] == before  # cached at start-up
    assert await live.symbols.resolve("btcusdt") == "BTC/USDT"
    assert await live.symbols.resolve("SOL-USDT") == "SOL/USDT"
    with pytest.raises(InvalidInputError, match="'eth' is ambiguous: ETH/BTC, ETH/USDT"):
        await live.symbols.resolve("eth")
    with pytest.raises(UnknownSymbolError):
        await live.symbols.resolve("nothing")


async def test_a_miss_refreshes_the_cache_once(live: Engine, fake: market_fake.MarketFake) -> None:
    before = fake.counts["/api/v3/exchangeInfo"]

    assert await live.symbols.search("doge") == []

    assert fake.counts["/api/v3/exchangeInfo"] == before + 1


def test_symbols_are_normalized_without_case_or_separators() -> None:
    assert normalize_symbol("btc-usdt") == normalize_symbol("BTC/USDT") == "BTCUSDT"
    item = Instrument("EURUSD", "EUR", "USD", "forex", D("0.00001"), D("0.01"))
    assert item.format_price(D("1.085134")) == "1.08513"
    assert item.price_decimals == 5


async def test_a_strategy_on_eth_btc_sizes_with_the_equity_converted_to_btc(
    sqlite_url: str,
    make_settings: Callable[..., Any],
    clock: Clock,
    fake: market_fake.MarketFake,
    tmp_path: Path,
) -> None:
    path = tmp_path / "eth_btc.toml"
    path.write_text(
        '[[strategy]]\nname = "eth-btc"\nkind = "sma_cross"\nsymbols = ["ETH/BTC"]\n'
        'timeframe = "1h"\nevery = 3600\nrisk_pct = 1\n'
        "params = { fast = 3, slow = 6, atr_period = 5 }\n"
    )
    falling = [D("0.0600") - D("0.0001") * i for i in range(40)]
    fake.set_history("ETH/BTC", [*falling, falling[-1] + D("0.0012")])
    settings = make_settings(
        database_url=sqlite_url,
        market_data="ccxt",
        ccxt_config=fake.ccxt_config,
        market_data_cache_seconds=0,
        strategies_file=path,
        max_order_quantity=100,  # no cap hiding the sizing
    )
    engine = await build_engine(settings, clock=clock)
    try:
        desk = engine.strategies
        assert desk is not None
        [signal] = await desk.run_instance("eth-btc")
    finally:
        await engine.close()

    assert signal.reference_price == D("0.0573")
    assert signal.stop_loss is not None
    assert signal.stop_loss == signal.stop_loss.quantize(D("0.00001"))  # the ETH/BTC tick
    # 1% of 10,000 USDT in BTC at the BTC/USDT price of 61,100, over the stop distance
    in_btc = D(10000) / D(61100)
    expected = (in_btc / 100 / (signal.reference_price - signal.stop_loss)).quantize(
        D("0.00000001"), ROUND_DOWN
    )
    assert signal.quantity == expected
    assert D(1) < signal.quantity < D(10)  # unconverted (10,000 "BTC") it would be ~250,000


async def test_paper_on_live_prices_fills_a_tiny_tick_symbol_at_its_own_tick(
    database_url: str,
    make_settings: Callable[..., Any],
    clock: Clock,
    fake: market_fake.MarketFake,
) -> None:
    """PEPE/USDT (tick 0.00000001): fills and quotes round to that tick against the
    taker, never to a 0.01 that would make them 0.00 or 0.01."""
    settings = make_settings(
        database_url=database_url,
        broker="paper",
        market_data="ccxt",
        ccxt_config=fake.ccxt_config,
        market_data_cache_seconds=0,
        max_order_quantity=10_000_000,
    )
    engine = await build_engine(settings, clock=clock)
    try:
        broker = engine.broker
        fake.set_price("PEPE/USDT", "0.0000123")
        bought = await broker.place_order(
            OrderRequest("sd-pepe", "PEPE/USDT", Side.BUY, D(1_000_000))
        )
        # 0.0000123 x (1 + 0.0003) = 0.00001230369, up to the tick
        assert bought.average_price == D("0.00001231")
        assert bought.fee == D("0.01231000")  # 12.31 USDT notional x 10 bps

        fake.set_price("PEPE/USDT", "0.000015")
        quote = await broker.quote("PEPE/USDT")
        # 0.000015 -/+ half the 2 bps spread (0.0000000015), outwards to the tick
        assert (quote.bid, quote.ask) == (D("0.00001499"), D("0.00001501"))
        sold = await broker.close_position("PEPE/USDT", "sd-pepe-x")
        assert sold is not None
        # 0.000015 x (1 - 0.0003) = 0.0000149955, down to the tick
        assert sold.average_price == D("0.00001499")
        assert sold.fee == D("0.01499000")
        account = await broker.account()
        # realized (0.00001499 - 0.00001231) x 1e6 = 2.68, minus both fees
        assert account.balance == D(10000) + D("2.68") - D("0.01231") - D("0.01499")
        assert await broker.positions() == []
    finally:
        await engine.close()


async def test_cards_print_each_symbols_prices_with_its_own_tick(
    live: Engine, fake: market_fake.MarketFake
) -> None:
    """The deliverer's cards look the instrument up in the cached listing: ETH/BTC (tick
    0.00001) shows five decimals, BTC/USDT (tick 0.01) two."""
    eth_btc = await live.signals.propose(
        Proposal("test", "ETH/BTC", Side.BUY, D("0.5"), stop_loss=D("0.0485"))
    )
    btc = await live.signals.propose(
        Proposal("test", "BTC/USDT", Side.BUY, D("0.01"), stop_loss=D(60000))
    )
    cards = Cards(live)
    requests = fake.counts["/api/v3/exchangeInfo"]

    five = (await cards.render(eth_btc)).text
    two = (await cards.render(btc)).text

    assert "Market ≈ 0.05000 · notional" in five
    assert "SL 0.04850 (-3.00%) · no TP" in five
    assert "Market ≈ 61,100.00 · notional" in two
    assert "SL 60,000.00 (" in two
    assert fake.counts["/api/v3/exchangeInfo"] == requests  # the cached listing served them
