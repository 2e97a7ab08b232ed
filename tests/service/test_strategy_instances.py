"""Strategy instances from the strategies file: refused at start-up with one line per
mistake, run on their own cron schedules by a driven scheduler (once per slot), skipped
while paused (the pause survives a restart), and each signal's lineage in the audit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine

from core.app import Engine
from core.errors import ConfigError
from core.scheduler import build_scheduler, strategy_next_runs
from core.strategies import load_strategies_file
from tests.conftest import Clock
from tests.support.duties import Engines, eventually

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[2] / "strategies.example.toml"

FIVE_MISTAKES = """
[[strategy]]
name = "one"
kind = "rsi_magic"
symbols = ["BTC/USDT"]
every = "1h"

[[strategy]]
name = "two"
kind = "sma_cross"
symbols = ["BTC/USDT"]
cron = "61 * * * *"

[[strategy]]
name = "three"
kind = "sma_cross"
symbols = ["DOGE/USDT"]
every = "1h"

[[strategy]]
name = "four"
kind = "donchian_breakout"
symbols = ["BTC/USDT"]
every = "1h"
risk_pct = -1

[[strategy]]
name = "five"
kind = "sma_cross"
symbols = ["BTC/USDT"]
every = "1h"
params = { fast = 30, slow = 10 }
"""

TWO_CRONS = """
[[strategy]]
name = "quarter"
kind = "sma_cross"
symbols = ["BTC/USDT"]
timeframe = "1h"
cron = "*/15 * * * *"

[[strategy]]
name = "hourly"
kind = "donchian_breakout"
symbols = ["BTC/USDT"]
timeframe = "1h"
cron = "0 * * * *"
params = { period = 20 }
"""


@pytest.fixture
async def engines(make_settings: Callable[..., Any], clock: Clock) -> AsyncIterator[Engines]:
    factory = Engines(make_settings, clock)
    yield factory
    await factory.close_all()


@pytest.fixture
def traveller() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(START, tick=False) as coordinates:
        yield coordinates


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "strategies.toml"
    path.write_text(text)
    return path


async def test_a_file_with_five_mistakes_is_refused_with_five_lines_and_nothing_starts(
    engines: Engines, sqlite_url: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as refused:
        await engines.start(sqlite_url, strategies_file=write(tmp_path, FIVE_MISTAKES))

    lines = str(refused.value).splitlines()
    assert len(lines) == 5, lines
    assert lines[0].startswith("STRATEGIES_FILE: strategy 'one' field kind: unknown kind")
    assert lines[1].startswith("STRATEGIES_FILE: strategy 'two' field cron: '61 * * * *'")
    assert "strategy 'four' field risk_pct: must be a percent above 0" in lines[2]
    assert "strategy 'five' field params: need 0 < fast < slow" in lines[3]
    assert lines[4] == (
        "STRATEGIES_FILE: strategy 'three' field symbols: DOGE/USDT not listed by the market data"
    )


async def test_the_old_strategy_settings_and_a_strategies_file_cannot_both_be_set(
    engines: Engines, sqlite_url: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="set STRATEGY=none when STRATEGIES_FILE"):
        await engines.start(
            sqlite_url, strategy="sma_cross", strategies_file=write(tmp_path, TWO_CRONS)
        )


async def run_log(engine: Engine) -> list[tuple[str, datetime]]:
    """Wrap the desk so each run (not skipped) is recorded with the clock's time."""
    desk = engine.strategies
    assert desk is not None
    runs: list[tuple[str, datetime]] = []
    original = desk.run_instance

    async def recording(name: str, *, forced: bool = False) -> Any:
        before = {s.spec.name: s.last_run_at for s in await desk.statuses()}
        result = await original(name, forced=forced)
        after = {s.spec.name: s.last_run_at for s in await desk.statuses()}
        if after[name] != before[name]:
            runs.append((name, engine.clock()))
        return result

    desk.run_instance = recording  # type: ignore[method-assign]
    return runs


async def test_two_cron_instances_run_at_their_times_once_per_slot_and_never_while_paused(
    engines: Engines, sqlite_url: str, tmp_path: Path, clock: Clock, traveller: Any
) -> None:
    path = write(tmp_path, TWO_CRONS)
    engine = await engines.start(sqlite_url, strategies_file=path)
    runs = await run_log(engine)
    scheduler = build_scheduler(engine)
    scheduler.start()

    async def advance(seconds: int) -> None:
        await eventually(lambda: _idle(scheduler))
        traveller.shift(timedelta(seconds=seconds))
        clock.advance(seconds)
        scheduler.wakeup()
        await eventually(lambda: _caught_up(scheduler, clock.now))

    def slots() -> list[tuple[str, int]]:
        return sorted((name, int((moment - START).total_seconds() // 60)) for name, moment in runs)

    try:
        # a crontab's slot at the current minute is due now (12:00 is on both)
        assert strategy_next_runs(scheduler) == {"quarter": START, "hourly": START}
        await eventually(lambda: _count(runs, 2))
        for _ in range(12):  # one hour in five-minute steps
            await advance(300)
        await eventually(lambda: _count(runs, 7))
        assert slots() == [
            ("hourly", 0),
            ("hourly", 60),
            ("quarter", 0),
            ("quarter", 15),
            ("quarter", 30),
            ("quarter", 45),
            ("quarter", 60),
        ]

        desk = engine.strategies
        assert desk is not None
        paused = await desk.set_paused("hourly", True, "owner:1")  # what /strategies does
        assert paused.paused and paused.paused_by == "owner:1"
        for _ in range(12):
            await advance(300)
        await eventually(lambda: _count(runs, 11))
        assert slots()[7:] == [("quarter", 75), ("quarter", 90), ("quarter", 105), ("quarter", 120)]
        assert len(runs) == 11
    finally:
        await scheduler.stop()

    await engines.stop(engine)
    restarted = await engines.start(sqlite_url, strategies_file=path)
    desk = restarted.strategies
    assert desk is not None
    [quarter, hourly] = await desk.statuses()
    assert (quarter.paused, hourly.paused) == (False, True)
    assert await desk.run_instance("hourly") == []  # the scheduled run is skipped
    [_, still] = await desk.statuses()
    assert still.last_run_at == hourly.last_run_at == START + timedelta(hours=1)
    events = await restarted.signals.history(limit=5)
    assert [(e.action, e.actor, e.reason) for e in events][:1] == [
        ("strategy_pause", "owner:1", "strategy hourly")
    ]


async def test_a_strategy_signal_records_what_it_saw_in_the_audit(
    engines: Engines, database_url: str
) -> None:
    engine = await engines.start(database_url, strategy="sma_cross", strategy_risk_pct=1)
    desk = engine.strategies
    assert desk is not None
    engine.feed.step(51)  # 2025-08-22 14:00, the crossover of the old runner test

    [signal] = await desk.run()

    lineage = [
        e for e in await engine.signals.history(signal_id=signal.id) if e.action == "lineage"
    ]
    assert [e.actor for e in lineage] == ["strategy:sma_cross"]
    assert lineage[0].reason.startswith(
        "strategy sma_cross (sma_cross) on 1h candles of BTC/USDT: last candle "
        "2025-08-22 14:00 UTC close 115,808.23; sma10 "
    )
    assert "atr14 781.29" in lineage[0].reason


async def _idle(scheduler: Any) -> bool:
    return not scheduler.busy


async def _caught_up(scheduler: Any, now: datetime) -> bool:
    """No job running and every job's next run in the future: the scheduler has handled
    this instant."""
    return not scheduler.busy and all(job.next_run_time > now for job in scheduler.get_jobs())


async def _count(runs: list[Any], n: int) -> bool:
    return len(runs) >= n


async def test_the_shipped_example_file_parses_and_starts_on_the_replay(
    engines: Engines, sqlite_url: str
) -> None:
    example = EXAMPLE

    specs, errors = load_strategies_file(example)
    engine = await engines.start(sqlite_url, strategies_file=example)

    assert errors == []
    assert [(s.name, s.kind, s.enabled) for s in specs] == [
        ("btc-trend", "sma_cross", True),
        ("eth-breakout", "donchian_breakout", False),
    ]
    assert engine.strategies is not None
    assert [s.next_run_at for s in await engine.strategies.statuses()] == [
        START + timedelta(minutes=1),
        None,
    ]


async def test_a_pause_is_persisted_audited_and_resumed(
    engines: Engines, database_url: str, tmp_path: Path
) -> None:
    path = write(tmp_path, TWO_CRONS)
    engine = await engines.start(database_url, strategies_file=path)
    assert engine.strategies is not None
    await engine.strategies.set_paused("quarter", True, "owner:1")
    await engines.stop(engine)

    again = await engines.start(database_url, strategies_file=path)
    desk = again.strategies
    assert desk is not None
    assert [(s.spec.name, s.paused) for s in await desk.statuses()] == [
        ("quarter", True),
        ("hourly", False),
    ]
    assert await desk.run_instance("quarter") == []
    resumed = await desk.set_paused("quarter", False, "owner:2")
    assert (resumed.paused, resumed.paused_by) == (False, "")
    actions = [(e.action, e.actor) for e in await again.signals.history(limit=2)]
    assert actions == [("strategy_resume", "owner:2"), ("strategy_pause", "owner:1")]
