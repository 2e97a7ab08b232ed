"""Heartbeats: the silent message's figures, the dead man's switch ping against a local
HTTP server, and failures that are reported but never raised."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, MutableMapping
from decimal import Decimal
from typing import Any

import pytest
import structlog

from core.app import Engine
from core.domain import Side
from core.errors import BrokerTemporaryError
from core.notify import Priority
from core.services import Proposal
from core.services.heartbeat import format_duration
from tests.conftest import Clock
from tests.support.duties import BTC, Engines, outbox, ping_server


@pytest.fixture
async def engines(make_settings: Callable[..., Any], clock: Clock) -> AsyncIterator[Engines]:
    factory = Engines(make_settings, clock)
    yield factory
    await factory.close_all()


async def test_a_beat_queues_one_silent_message_with_the_account_figures(
    engines: Engines, database_url: str, clock: Clock
) -> None:
    engine = await engines.start(database_url)
    signal = await engine.signals.propose(Proposal("test", BTC, Side.BUY, Decimal("0.01")))
    await engine.signals.approve(signal.id, "owner:1")
    await engine.signals.propose(Proposal("test", BTC, Side.SELL, Decimal("0.01")))
    engine.health.record_error("reconcile", "BrokerTemporaryError: exchange busy")
    clock.advance(2 * 86400 + 3 * 3600 + 7 * 60)
    before = len(await outbox(engine))
    assert engine.heartbeat.last_beat_at is None

    heartbeat = await engine.heartbeat.beat()

    rows = await outbox(engine)
    assert len(rows) == before + 1
    row = rows[-1]
    assert (row.kind, row.topic, row.priority) == ("text", "heartbeat", Priority.ROUTINE)
    assert row.text == heartbeat.text()
    lines = row.text.splitlines()
    assert lines[0] == "💓 SignalDesk alive, up 2d 3h 7m"
    assert lines[1].startswith("Broker paper: ok, ") and lines[1].endswith(" ms")
    assert lines[2].startswith("Equity 9,99")
    assert lines[3].startswith("Drawdown 0.0") and "(warn 5%, max 10%)" in lines[3]
    assert lines[4] == "Open positions: BTC/USDT 0.01"
    assert lines[5] == "Pending signals: 1"
    assert lines[6] == (
        "Last error: 2026-01-05 12:00 UTC, reconcile: BrokerTemporaryError: exchange busy"
    )
    assert heartbeat.round_trip_ms is not None and heartbeat.round_trip_ms >= 0
    assert engine.heartbeat.last_beat_at == heartbeat.at == clock.now  # /status shows it


async def test_each_beat_pings_the_dead_mans_switch_url(
    engines: Engines, database_url: str
) -> None:
    async with ping_server() as server:
        engine = await engines.start(database_url, heartbeat_ping_url=server.url)

        await engine.heartbeat.beat()
        await engine.heartbeat.beat()

    assert server.hits == ["/ping/token-5f1e", "/ping/token-5f1e"]


async def test_a_ping_answered_with_an_error_is_logged_without_the_url_and_never_raises(
    engines: Engines, database_url: str
) -> None:
    async with ping_server() as server:
        server.status = 500
        engine = await engines.start(database_url, heartbeat_ping_url=server.url)
        with structlog.testing.capture_logs() as logs:
            await engine.heartbeat.beat()

    await assert_ping_failure_reported(engine, logs, "ping answered HTTP 500")


async def test_a_ping_to_a_closed_port_is_logged_without_the_url_and_never_raises(
    engines: Engines, database_url: str
) -> None:
    async with ping_server() as server:
        closed = server.url  # the port closes when the server stops
    engine = await engines.start(database_url, heartbeat_ping_url=closed)

    with structlog.testing.capture_logs() as logs:
        await engine.heartbeat.beat()

    await assert_ping_failure_reported(engine, logs, "ping failed: ConnectError")


async def assert_ping_failure_reported(
    engine: Engine, logs: list[MutableMapping[str, Any]], problem: str
) -> None:
    assert [entry["problem"] for entry in logs] == [problem]
    assert "token-5f1e" not in repr(logs)
    assert engine.health.last_error is not None
    assert engine.health.last_error.message == problem
    assert (await outbox(engine))[-1].topic == "heartbeat"  # the beat itself was queued
    assert problem in (await engine.heartbeat.compose()).text()


async def test_an_unreachable_broker_is_reported_in_the_heartbeat_not_raised(
    engines: Engines, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await engines.start(database_url)

    async def down() -> None:
        raise BrokerTemporaryError("connection reset")

    monkeypatch.setattr(engine.broker, "account", down)

    heartbeat = await engine.heartbeat.beat()

    lines = heartbeat.text().splitlines()
    assert lines[1] == "Broker paper: UNREACHABLE (connection reset)"
    assert "Equity" not in heartbeat.text()
    assert lines[-1].endswith("broker: connection reset")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(59, "0m"), (61, "1m"), (3600, "1h 0m"), (90061, "1d 1h 1m")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
