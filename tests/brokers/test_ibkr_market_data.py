"""IBKR market data on the fake TWS: closed bars from reqHistoricalDataAsync, symbol
search through reqMatchingSymbolsAsync, delayed quotes, and the port following the broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from core.app import build_market_data
from core.db.engine import Database, upgrade_schema
from core.errors import BrokerTemporaryError, InvalidInputError
from core.marketdata.ibkr_data import IbkrMarketData
from core.marketdata.replay import ReplayMarketData
from core.marketdata.search import SymbolSearch
from tests.support import ib_fake

D = Decimal
START = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)


@pytest.fixture
async def gateway() -> AsyncIterator[ib_fake.FakeGateway]:
    async with ib_fake.running() as fake:
        yield fake


async def test_candles_are_the_closed_bars_oldest_first_without_the_forming_one(
    gateway: ib_fake.FakeGateway,
) -> None:
    gateway.instrument("AAPL").bars = ib_fake.hourly_bars(START, ["230", "231", "229.5", "232"])
    market = IbkrMarketData(gateway.broker())

    candles = await market.candles("AAPL", "1h", 2)

    assert [(c.at.hour, c.open, c.close) for c in candles] == [
        (15, D(230), D(231)),
        (16, D(231), D("229.5")),
    ]
    with pytest.raises(InvalidInputError):
        await market.candles("AAPL", "2h", 2)


async def test_symbol_search_asks_ib_for_matching_symbols_and_lists_what_it_resolved(
    gateway: ib_fake.FakeGateway,
) -> None:
    broker = gateway.broker()
    market = IbkrMarketData(broker)

    assert [i.symbol for i in await market.match("aapl")] == ["AAPL.NASDAQ"]
    [pair] = await market.match("euro")
    assert (pair.symbol, pair.kind, pair.base, pair.quote) == ("EUR.USD", "forex", "EUR", "USD")
    assert await market.match("zzz") == []
    await broker.quote("ES.2026-12")
    listed = {i.symbol: i for i in await market.symbols()}
    assert set(listed) == {"AAPL.NASDAQ", "EUR.USD", "ES.2026-12"}
    future = listed["ES.2026-12"]
    assert (future.kind, future.price_tick, future.contract_size) == ("future", D("0.25"), D(50))


async def test_the_symbols_command_search_finds_ib_symbols_through_the_cache(
    gateway: ib_fake.FakeGateway, database_url: str, clock: Any
) -> None:
    await upgrade_schema(database_url)
    db = Database(database_url)
    market = IbkrMarketData(gateway.broker())
    search = SymbolSearch(db, market, ttl_seconds=3600, clock=clock)
    try:
        first = await search.search("aapl")
        calls = len(market._broker.ib.calls)
        again = await search.search("aapl")

        assert [i.symbol for i in first] == ["AAPL.NASDAQ"] == [i.symbol for i in again]
        assert len(market._broker.ib.calls) == calls  # the second search is the cache's
    finally:
        await db.close()


async def test_delayed_data_is_requested_once_and_each_quote_says_whether_it_is_delayed(
    gateway: ib_fake.FakeGateway,
) -> None:
    gateway.instrument("EUR.USD").subscribed = False
    broker = gateway.broker()
    market = IbkrMarketData(broker, delayed=True)

    live = await market.quote("AAPL")  # subscribed: IB sends live data anyway
    late = await market.quote("EUR.USD")  # no subscription: delayed data
    await market.quote("AAPL")

    assert (live.bid, live.delayed) == (D("229.9"), False)
    assert late.delayed and late.bid == D("1.08")
    assert broker.ib.calls.count("reqMarketDataType(3)") == 1


async def test_without_delayed_data_a_missing_subscription_is_said(
    gateway: ib_fake.FakeGateway,
) -> None:
    gateway.instrument("EUR.USD").subscribed = False
    market = IbkrMarketData(gateway.broker())

    assert not (await market.quote("AAPL")).delayed
    with pytest.raises(BrokerTemporaryError, match="subscription"):
        await market.quote("EUR.USD")


async def test_market_data_follows_the_ibkr_broker_when_unset(
    gateway: ib_fake.FakeGateway, make_settings: Any
) -> None:
    broker = gateway.broker()
    replay: ReplayMarketData = None  # type: ignore[assignment]  # not used on this path

    market = build_market_data(make_settings(), replay, broker=broker)

    assert isinstance(market, IbkrMarketData) and (await market.quote("AAPL")).ask == D("230.1")
