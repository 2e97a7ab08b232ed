"""Webhook signals over real HTTP (aiohttp's test server on 127.0.0.1), on SQLite and
PostgreSQL: a good TradingView-style alert becomes a PROPOSED signal and a card in the
outbox; every bad request gets a 4xx with its reason and writes nothing. Also the headless
engine serving the webhook on $PORT until SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import func, select

from core.app import Engine
from core.db.models import AuditEventRow, OutboxRow, SignalRow
from core.runner import run_engine
from core.webhook import build_webhook_app
from tests.conftest import Clock
from tests.support.duties import BTC, Engines, eventually

SECRET = "tv-3f9a1c"
GOOD = {
    "secret": SECRET,
    "symbol": BTC,
    "side": "BUY",
    "quantity": "0.01",
    "stop_loss": 110000,
    "take_profit": 120000.5,
    "note": "breakout on the 1h",
}


@pytest.fixture
async def engines(make_settings: Callable[..., Any], clock: Clock) -> AsyncIterator[Engines]:
    factory = Engines(make_settings, clock)
    yield factory
    await factory.close_all()


@pytest.fixture
async def served(engines: Engines, database_url: str) -> AsyncIterator[tuple[Engine, TestClient]]:
    engine = await engines.start(database_url, webhook_secret=SECRET, webhook_max_body_bytes=1024)
    async with TestClient(TestServer(build_webhook_app(engine))) as client:
        yield engine, client


async def written(engine: Engine) -> list[int]:
    """Rows in signals, outbox and audit_events."""
    async with engine.db.session() as session:
        return [
            (await session.exec(select(func.count()).select_from(model))).one()
            for model in (SignalRow, OutboxRow, AuditEventRow)
        ]


async def test_a_good_alert_becomes_a_proposed_signal_and_a_card(
    served: tuple[Engine, TestClient],
) -> None:
    engine, client = served

    response = await client.post("/webhook", data=json.dumps(GOOD))

    assert response.status == 201
    body = await response.json()
    signal = await engine.signals.get(body["signal_id"])
    assert body == {
        "signal_id": signal.id,
        "status": "PROPOSED",
        "symbol": BTC,
        "side": "buy",
        "quantity": "0.01",
    }
    assert (signal.source, signal.status, signal.note) == ("webhook", "PROPOSED", GOOD["note"])
    assert (signal.stop_loss, signal.take_profit) == (Decimal(110000), Decimal("120000.5"))
    async with engine.db.session() as session:
        cards = (await session.exec(select(OutboxRow.kind, OutboxRow.signal_id))).all()
    assert cards == [("signal_card", signal.id)]


async def test_a_risk_percent_alert_is_sized_from_equity_and_the_stop(
    served: tuple[Engine, TestClient],
) -> None:
    _, client = served
    alert = {k: v for k, v in GOOD.items() if k != "quantity"} | {"risk_pct": 1}

    response = await client.post("/webhook", json=alert)

    assert response.status == 201
    # 1 % of 10,000 USDT over the stop distance from the replay's 113,666.68.
    expected = (Decimal(100) / (Decimal("113666.68") - 110000)).quantize(
        Decimal("1e-8"), "ROUND_DOWN"
    )
    assert (await response.json())["quantity"] == str(expected)


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != key}


def raw_quantity(number: str) -> str:
    """GOOD with ``quantity`` written as the raw JSON ``number`` (json.dumps cannot)."""
    return json.dumps(GOOD | {"quantity": "Q"}).replace('"Q"', number)


BAD: list[tuple[str, Any, int, str]] = [
    ("wrong secret", json.dumps(GOOD | {"secret": "guess"}), 403, "wrong secret"),
    ("no secret", json.dumps(without("secret")), 401, "missing secret"),
    ("malformed JSON", '{"secret": "tv-3f9a1c", "side": buy}', 400, "body is not valid JSON"),
    ("not an object", json.dumps([GOOD]), 400, "body must be a JSON object"),
    ("oversized body", json.dumps(GOOD | {"note": "x" * 2000}), 413, "body larger than 1024"),
    ("unknown symbol", json.dumps(GOOD | {"symbol": "DOGE/USDT"}), 422, "unknown symbol"),
    ("no side", json.dumps(without("side")), 422, "side: Field required"),
    ("typo field", json.dumps(GOOD | {"stoploss": 1}), 422, "stoploss: Extra inputs"),
    ("two sizes", json.dumps(GOOD | {"risk_pct": 1}), 422, "exactly one of quantity or risk"),
    ("negative size", json.dumps(GOOD | {"quantity": "-1"}), 422, "quantity: must be a positive"),
    ("stop above a buy", json.dumps(GOOD | {"stop_loss": 130000}), 422, "must be below"),
    # the gate's size rules, as at the tap
    ("oversize", json.dumps(GOOD | {"quantity": "2"}), 422, "quantity 2 over the limit 1"),
    ("over the notional", json.dumps(GOOD | {"quantity": "0.1"}), 422,
     "notional 11366.67 over the limit 10000.00"),
    # hostile inputs that used to answer 500 or store a rounded value
    ("1e309", raw_quantity("1e309"), 422, "quantity: must be below 10^18"),
    ("500 digits", raw_quantity("9" * 500), 422, "quantity: must be below 10^18"),
    ("NaN", raw_quantity("NaN"), 422, "quantity: must be a finite number"),
    ("rounds to 0", raw_quantity("1e-30"), 422, "quantity: must have at most 18 decimal"),
    ("19 decimals", raw_quantity('"0.0000000000000000001"'), 422, "at most 18 decimal places"),
    ("huge stop", json.dumps(GOOD | {"stop_loss": "1" + "0" * 18}), 422, "stop_loss: must be"),
    ("risk over 100", json.dumps(without("quantity") | {"risk_pct": 101}), 422, "risk_pct: must"),
    ("deep nesting", '{"secret": "tv-3f9a1c", "x": ' + "[" * 400 + "]" * 400 + "}", 400,
     "body nests deeper than 8 levels"),
    ("NUL in note", json.dumps(GOOD | {"note": "a\u0000b"}), 422, "note: must not contain control"),
    ("escape in symbol", json.dumps(GOOD | {"symbol": "BTC\u001b/USDT"}), 422, "symbol: must not"),
    ("number as symbol", json.dumps(GOOD | {"symbol": 5}), 422, "symbol: Input should be a valid"),
    ("not UTF-8", b'{"secret": "\xff"}', 400, "body is not valid JSON"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
async def test_a_bad_request_gets_a_4xx_with_its_reason_and_writes_nothing(
    served: tuple[Engine, TestClient], body: str | bytes, status: int, reason: str
) -> None:
    engine, client = served

    response = await client.post("/webhook", data=body)

    assert response.status == status
    assert reason in (await response.json())["error"]
    assert await written(engine) == [0, 0, 0]


BIG: list[tuple[str, str, int, str]] = [
    ("6,000 levels", json.dumps(GOOD | {"note": "N"}).replace('"N"', "[" * 6000 + "]" * 6000),
     400, "body nests deeper than 8 levels"),
    ("5,000 digits", raw_quantity("9" * 5000), 422, "quantity: must be below 10^18"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "reason"), [b[1:] for b in BIG], ids=[b[0] for b in BIG]
)
async def test_bodies_that_used_to_answer_500_get_a_4xx_within_the_default_body_limit(
    engines: Engines, sqlite_url: str, body: str, status: int, reason: str
) -> None:
    engine = await engines.start(sqlite_url, webhook_secret=SECRET)  # 16 KiB bodies
    async with TestClient(TestServer(build_webhook_app(engine))) as client:
        response = await client.post("/webhook", data=body)
        refusal = await response.json()

    assert (response.status, refusal) == (status, {"error": reason})
    assert await written(engine) == [0, 0, 0]


async def _oversized_chunks() -> AsyncIterator[bytes]:
    """1600 bytes without a Content-Length, over the 1024 of the tests' limit."""
    for _ in range(8):
        yield b" " * 200


@pytest.mark.parametrize("server_limit", [0, 1 << 20], ids=["alone", "beside-telegram"])
async def test_an_oversized_chunked_body_is_refused_while_reading(
    engines: Engines, database_url: str, server_limit: int
) -> None:
    engine = await engines.start(database_url, webhook_secret=SECRET, webhook_max_body_bytes=1024)
    app = build_webhook_app(engine, client_max_size=server_limit)  # 1 MiB: the bot's /telegram
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/webhook", data=_oversized_chunks())

    assert response.status == 413
    assert await written(engine) == [0, 0, 0]


async def test_the_webhook_refuses_everything_without_a_configured_secret(
    engines: Engines, sqlite_url: str
) -> None:
    engine = await engines.start(sqlite_url)
    async with TestClient(TestServer(build_webhook_app(engine))) as client:
        response = await client.post("/webhook", json=GOOD)
        refusal = await response.json()
        health = await client.get("/healthz")
        healthy = await health.json()

    assert response.status == 403
    assert "WEBHOOK_SECRET is not set" in refusal["error"]
    assert (health.status, healthy) == (200, {"status": "ok"})


async def test_the_headless_engine_serves_the_webhook_on_port_until_sigterm(
    make_settings: Callable[..., Any], sqlite_url: str
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = make_settings(database_url=sqlite_url, port=port, webhook_secret=SECRET)
    engine_task = asyncio.create_task(run_engine(settings))
    base = f"http://127.0.0.1:{port}"

    async with httpx.AsyncClient(base_url=base, timeout=5) as client:

        async def healthy() -> bool:
            try:
                return (await client.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(healthy)
        posted = await client.post("/webhook", json=GOOD)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(engine_task, timeout=15)

    assert posted.status_code == 201
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"{base}/healthz")
