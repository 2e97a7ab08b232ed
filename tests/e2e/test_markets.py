"""Markets and strategies in the chat, over real getUpdates: ``/symbols`` from the cache
(requests counted at the local exchange server), ``/strategies`` with Pause / Resume
buttons that persist across a restart, and ``/run``."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.callbacks import StrategyAction, StrategyCallback
from tests.e2e.conftest import StartDesk
from tests.e2e.support import OWNER
from tests.support import market_fake

# imported here, at collection, so the bot's start-up does not pay ccxt's long first import
pytest.importorskip("ccxt.async_support", reason="the ccxt extra")

STRATEGIES = """
[[strategy]]
name = "btc-trend"
kind = "sma_cross"
symbols = ["BTC/USDT"]
timeframe = "1h"
cron = "0 * * * *"

[[strategy]]
name = "btc-breakout"
kind = "donchian_breakout"
symbols = ["BTC/USDT"]
timeframe = "1h"
every = "15m"
risk_pct = 0.5
"""


async def test_symbols_lists_eth_markets_from_the_cache_without_asking_the_exchange_again(
    start_desk: StartDesk,
) -> None:
    async with market_fake.running() as fake:
        desk = await start_desk(market_data="ccxt", ccxt_config=fake.ccxt_config)
        listed = fake.counts["/api/v3/exchangeInfo"]

        first = (await desk.say("/symbols eth")).plain_text
        second = (await desk.say("/symbols ETH")).plain_text

        assert first.splitlines()[1:] == second.splitlines()[1:]
        assert first.splitlines() == [
            "Markets like eth at ccxt:binance",
            "ETH/BTC · spot · ETH/BTC · min 0.0001 · tick 0.00001",
            "ETH/USDT · spot · ETH/USDT · min 0.0001 · tick 0.01",
        ]
        assert fake.counts["/api/v3/exchangeInfo"] == listed <= 1
        assert (await desk.say("/symbols")).plain_text.startswith("Usage: /symbols QUERY")
        await desk.stop()


async def test_strategies_pause_from_the_chat_survives_a_restart_and_run_runs_one_now(
    start_desk: StartDesk, tmp_path: Path
) -> None:
    path = tmp_path / "strategies.toml"
    path.write_text(STRATEGIES)
    desk = await start_desk(strategies_file=path)

    listing = await desk.say("/strategies")
    assert "btc-trend · sma_cross · BTC/USDT · 1h · cron 0 * * * * · risk 1%" in (
        listing.plain_text
    )
    assert "btc-breakout · donchian_breakout · BTC/USDT · 1h · every 900 s · risk 0.5%" in (
        listing.plain_text
    )
    assert [row[0][0] for row in listing.buttons] == ["⏸ Pause btc-trend", "⏸ Pause btc-breakout"]

    data = StrategyCallback(action=StrategyAction.PAUSE, name="btc-trend").pack()
    press = desk.sandbox.press_button(listing.chat_id, listing.message_id, data, OWNER)
    assert (await desk.answer(press)).text == "btc-trend paused"
    edited = await desk.edited(listing, "paused by @ada")
    assert "next run —" in edited

    ran = await desk.say("/run btc-breakout")
    assert ran.plain_text.startswith("Ran btc-breakout:")
    unknown = await desk.say("/run nope")
    assert "no strategy instance 'nope'; known: btc-trend, btc-breakout" in unknown.plain_text

    await desk.stop()
    again = await start_desk(sandbox=desk.sandbox, strategies_file=path)
    after = await again.say("/strategies")
    assert "⏸ paused by @ada" in after.plain_text
    assert [row[0][0] for row in after.buttons] == ["▶️ Resume btc-trend", "⏸ Pause btc-breakout"]
    history = (await again.say("/history 3")).plain_text
    assert "strategy_pause · @ada · strategy btc-trend" in history
