"""A real ``kill -9`` around a protective exit, then a restart that reconciles it.

A child process (``sys.executable -c``, the repository on PYTHONPATH) runs an engine on a
SQLite file over the paper broker on the real replay, answering WATCHED as a spot
exchange would: it enters 0.01 BTC with a stop at 113000, steps the replay to candle 2
(close 112693.15, through the stop) and checks the exits. Its broker wrapper sends
SIGKILL to its own process either right after the exit order executed at the (paper)
venue, before the engine could record it ("after"), or right after the exit row was
committed, before the broker was called ("before"). The test process then starts a new
engine on the same file, past the in-flight grace, and reconciles: one exit order at the
venue (the paper ledger's rows), the trade closed once at 112670.61 (112693.15 x 0.9998),
one exit message.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col

from core.app import Engine, build_engine
from core.db.engine import Database
from core.db.models import OrderRow, PaperOrderRow
from core.domain import ExitReason, TradeStatus
from core.marketdata.replay import ReplayFeed, load_candles
from tests.conftest import Clock
from tests.service.test_exits import WatchedPaper, count, feed_of
from tests.service.test_trades import exit_messages

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import asyncio, os, signal, sys
from datetime import UTC, datetime
from decimal import Decimal

from core.app import build_engine
from core.brokers.paper import PaperBroker
from core.config import load_settings
from core.db.engine import Database
from core.domain import ExitStyle, Side, SignalStatus
from core.marketdata.replay import ReplayFeed, load_candles
from core.services import Proposal

URL, WHEN = sys.argv[1], sys.argv[2]
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # the tests' Clock start


def die():
    os.kill(os.getpid(), signal.SIGKILL)


class DyingPaper(PaperBroker):
    async def exit_style(self, symbol):
        self.feed.price(symbol)
        return ExitStyle.WATCHED

    async def close_position(self, symbol, client_order_id, quantity=None, position_ref=""):
        if WHEN == "before":
            die()  # the exit row is committed; the broker never hears of it
        report = await super().close_position(symbol, client_order_id, quantity, position_ref)
        die()  # the exit executed at the venue; the engine never records it
        return report


async def main():
    settings = load_settings(database_url=URL, feed_speed=0)
    clock = lambda: NOW
    feed = ReplayFeed("BTC/USDT", load_candles(settings.feed_csv), speed=0, clock=clock)
    broker = DyingPaper(Database(URL), feed, clock=clock)
    engine = await build_engine(settings, broker=broker, clock=clock)
    proposal = Proposal("kill", "BTC/USDT", Side.BUY, Decimal("0.01"), stop_loss=Decimal(113000))
    signal_ = await engine.signals.propose(proposal)
    decision = await engine.signals.approve(signal_.id, "owner:1")
    assert decision.signal.status is SignalStatus.FILLED, decision.signal.status_reason
    await engine.exits.check()
    print("entered", flush=True)
    feed.step(2)  # candle 2 closes 112693.15, through the stop
    await engine.exits.check()
    await asyncio.sleep(5)  # a background check may be the one that triggers
    print("survived", flush=True)


asyncio.run(main())
"""


async def _run_child(database_url: str, when: str, cwd: Path) -> tuple[int, str]:
    """Run the child to its death; (return code, its stdout and stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        database_url,
        when,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


@pytest.mark.parametrize("when", ["after", "before"])
async def test_a_process_killed_around_the_exit_restarts_into_exactly_one_exit(
    sqlite_url: str,
    make_settings: Callable[..., Any],
    clock: Clock,
    tmp_path: Path,
    when: str,
) -> None:
    settings = make_settings(database_url=sqlite_url)  # the child inherits this clean env
    code, output = await _run_child(sqlite_url, when, tmp_path)

    assert code == -signal.SIGKILL, output
    assert "entered" in output and "survived" not in output, output

    clock.advance(60)  # the restart comes after the in-flight grace
    feed = ReplayFeed("BTC/USDT", load_candles(settings.feed_csv), speed=0, clock=clock)
    broker = WatchedPaper(Database(sqlite_url), feed, clock=clock)
    restarted = await build_engine(settings, broker=broker, clock=clock)
    try:
        await _reconciles_into_one_exit(restarted, when)
    finally:
        await restarted.close()


async def _reconciles_into_one_exit(restarted: Engine, when: str) -> None:
    [trade] = await restarted.trades.open_trades()
    placed = 2 if when == "after" else 1  # the entry, and the exit when it went out
    assert await count(restarted, PaperOrderRow) == placed
    submitted = col(OrderRow.purpose) == "stop_loss", col(OrderRow.state) == "SUBMITTED"
    assert await count(restarted, OrderRow, *submitted) == 1  # committed before the call

    feed_of(restarted).step(2)
    assert (await restarted.exits.check()).triggered == []  # the exit is in flight
    summary = await restarted.reconciler.run()
    await restarted.exits.check()

    [cid] = summary.adopted if when == "after" else summary.resubmitted
    assert "-w" in cid
    closed = await restarted.trades.trade(trade.id)
    assert (closed.status, closed.exit_reason) == (TradeStatus.CLOSED, ExitReason.STOP_LOSS)
    assert closed.average_exit == Decimal("112670.61")
    assert await count(restarted, PaperOrderRow) == 2  # one exit at the venue, not two
    assert len(await exit_messages(restarted)) == 1
    assert await restarted.trading.positions() == []
