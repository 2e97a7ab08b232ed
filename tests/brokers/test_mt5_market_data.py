"""MT5 market data on the fake terminal: closed bars from copy_rates_from_pos (the forming
bar left out), quotes from symbol_info_tick, symbols from symbols_get with the terminal's
increments, on the trading broker's own connection and worker thread."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core.brokers.mt5_broker import Mt5Broker
from core.errors import InvalidInputError, UnknownSymbolError
from core.marketdata.mt5_data import Mt5MarketData
from tests.support import mt5_fake

D = Decimal
HOUR = 3600
T0 = int(datetime(2026, 1, 5, 9, tzinfo=UTC).timestamp())


@pytest.fixture
def market(mt5: mt5_fake.FakeTerminal) -> Mt5MarketData:
    mt5_fake.add_market_data(
        mt5,
        {
            "EURUSD": [
                (T0, 1.08400, 1.08450, 1.08350, 1.08420),
                (T0 + HOUR, 1.08420, 1.08520, 1.08410, 1.08500),
                (T0 + 2 * HOUR, 1.08500, 1.08530, 1.08480, 1.08505),  # forming
            ]
        },
    )
    return Mt5MarketData(mt5.broker())


async def test_candles_are_the_closed_bars_oldest_first(market: Mt5MarketData) -> None:
    candles = await market.candles("EURUSD", "1h", 5)

    assert [(c.at.hour, c.close) for c in candles] == [(9, D("1.0842")), (10, D("1.085"))]
    with pytest.raises(UnknownSymbolError):
        await market.candles("NOPE", "1h", 5)
    with pytest.raises(InvalidInputError):
        await market.candles("EURUSD", "2h", 5)


async def test_symbols_carry_the_terminals_ticks_lots_and_kinds(
    market: Mt5MarketData, mt5: mt5_fake.FakeTerminal
) -> None:
    listed = {item.symbol: item for item in await market.symbols()}
    quote = await market.quote("EURUSD")

    eurusd = listed["EURUSD"]
    assert (eurusd.base, eurusd.quote, eurusd.kind) == ("EUR", "USD", "forex")
    assert (eurusd.price_tick, eurusd.quantity_step, eurusd.contract_size) == (
        D("0.00001"),
        D("0.01"),
        D("100000.0"),
    )
    assert eurusd.format_price(quote.bid) == "1.08500"
    assert set(listed) == set(mt5.symbols)
    # one terminal connection, one worker thread for the broker and its market data
    threads = {thread for name, thread in mt5.calls if name in ("symbols_get", "symbol_info_tick")}
    assert len(threads) == 1


async def test_it_shares_the_mt5_brokers_connection(mt5: mt5_fake.FakeTerminal) -> None:
    broker = mt5.broker()
    shared = Mt5MarketData.from_settings(None, broker)  # type: ignore[arg-type]

    await shared.close()  # not its connection: the broker still works

    assert isinstance(broker, Mt5Broker)
    assert (await broker.account()).currency == "USD"
