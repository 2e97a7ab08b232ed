"""/healthz, /readyz and /metrics of a running bot (``HEALTH_PORT``): readiness turns 503
with the failing part when Telegram's polling has failed for a minute and when the
database is unreachable; /metrics parses and counts the taps of the test."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.callbacks import CardAction
from bot.health import TELEGRAM_GRACE_SECONDS
from tests.conftest import _dsn
from tests.e2e.conftest import StartDesk
from tests.e2e.support import Desk


async def _get(desk: Desk, path: str) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{desk.app.health_port}{path}"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        if path == "/metrics":
            return response.status, await response.text()
        return response.status, await response.json()


async def _ready_becomes(desk: Desk, status: int) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            code, body = await _get(desk, "/readyz")
            if code == status:
                return dict(body)
            await asyncio.sleep(0.1)


async def test_readyz_fails_once_polling_has_failed_for_a_minute(start_desk: StartDesk) -> None:
    desk = await start_desk()
    assert (await _get(desk, "/healthz")) == (200, {"ok": True})
    ready = await _ready_becomes(desk, 200)
    assert ready["checks"]["telegram"]["reachable"] is True
    assert ready["checks"]["duties"]["leader"] is True  # SQLite: this one process leads
    assert "heartbeat" in ready["checks"]["duties"]["last_runs"]

    await desk.sandbox.set_unreachable(True)
    link = desk.app.telegram
    await desk.sandbox.wait_for(lambda _: link.reachable is False, 15, description="down")
    code, body = await _get(desk, "/readyz")
    assert code == 200  # a short outage: aiogram's polling retries it
    assert link.since is not None
    link.since -= timedelta(seconds=TELEGRAM_GRACE_SECONDS + 1)  # a minute has passed
    body = await _ready_becomes(desk, 503)
    assert body["failing"] == ["telegram"]
    assert body["checks"]["telegram"]["reachable"] is False

    await desk.sandbox.set_unreachable(False)
    await _ready_becomes(desk, 200)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.postgres
async def test_readyz_fails_while_the_database_is_unreachable(
    start_desk: StartDesk, database_url: str
) -> None:
    desk = await start_desk(database_url=database_url)
    await _ready_becomes(desk, 200)
    name = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(_dsn(database_url.rsplit("/", 1)[0] + "/postgres"))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        body = await _ready_becomes(desk, 503)
        assert "database" in body["failing"]
        assert body["checks"]["database"]["ok"] is False
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await _ready_becomes(desk, 200)
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_parse_and_count_the_taps_of_the_test(start_desk: StartDesk) -> None:
    desk = await start_desk()
    approved = await desk.propose()
    await desk.approve(await desk.card(approved.id))
    rejected = await desk.propose(note="no")
    await desk.answer(desk.tap(await desk.card(rejected.id), CardAction.REJECT))
    await desk.edited(await desk.card(rejected.id), "Rejected")

    async with asyncio.timeout(30):
        while True:
            status, text = await _get(desk, "/metrics")
            samples = _samples(text)
            if samples.get(("signaldesk_tap_latency_seconds_count", ())) == 2:
                break
            await asyncio.sleep(0.1)

    assert status == 200
    assert samples[("signaldesk_approvals_total", ())] == 1
    assert samples[("signaldesk_tap_latency_seconds_bucket", (("le", "+Inf"),))] == 2
    assert samples[("signaldesk_orders", (("state", "FILLED"),))] == 1
    assert ("signaldesk_outbox_backlog", ()) in samples
    assert samples[("signaldesk_duty_runs_total", (("job", "heartbeat"),))] >= 1
    assert samples[("signaldesk_equity", ())] > 0
    assert ("signaldesk_outbox_delivery_latency_seconds_count", ()) in samples
