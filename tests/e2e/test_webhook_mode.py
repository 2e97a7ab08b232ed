"""Webhook mode end to end (``TELEGRAM_WEBHOOK_URL``): the bot registers its webhook with a
secret, the sandbox pushes the owner's Approve tap to ``/telegram`` and the order fills; a
push with a wrong or missing secret does nothing and is logged without the secret; the
webhook outlives a shutdown and long polling deletes it at start; /readyz reports the
webhook and fails when Telegram has been unable to push for a minute; setWebhook waits
for a Telegram that is down at start."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import aiohttp
import structlog

from bot.callbacks import CardAction
from bot.health import TELEGRAM_GRACE_SECONDS
from bot.sandbox import SandboxServer
from bot.sandbox.server import SECRET_HEADER
from core.domain import SignalStatus
from tests.e2e.conftest import StartDesk
from tests.e2e.support import OWNER, TOKEN, Desk, card_button
from tests.e2e.test_health import _get, _ready_becomes

FILLED = "Filled 0.01 BTC @ 113,689.42"


def _telegram_url(desk: Desk) -> str:
    return f"http://127.0.0.1:{desk.app.settings.port}/telegram"


async def test_the_bot_registers_its_webhook_with_a_secret_and_a_pushed_tap_fills(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(webhook=True)
    webhook = desk.sandbox.webhook
    assert webhook is not None and desk.app.webhook is not None
    assert webhook.url == _telegram_url(desk)
    assert webhook.secret_token == desk.app.webhook.secret
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", webhook.secret_token or "")
    assert desk.sandbox.requests("getUpdates") == []  # pushed, never polled
    assert desk.sandbox.requests("deleteWebhook") == []

    signal = await desk.propose()
    card = await desk.card(signal.id)
    answer = await desk.answer(desk.tap(card, CardAction.APPROVE))

    assert answer.text
    assert FILLED in await desk.edited(card, FILLED)
    assert await desk.orders_for(signal.id) == 1
    # the push is answered once the handler is done, which may be after the card edit
    await desk.sandbox.wait_for(
        lambda s: s.pending_updates == [], description="the pushed tap acknowledged"
    )
    assert webhook.last_error_date is None
    assert desk.app.webhook.last_update_at is not None


async def test_a_push_with_a_wrong_or_missing_secret_does_nothing_and_is_logged(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(webhook=True)
    signal = await desk.propose()
    card = await desk.card(signal.id)
    forged: dict[str, Any] = {
        "update_id": 10**6,
        "callback_query": {
            "id": "forged-tap",
            "from": desk.sandbox.users[OWNER].to_api(),
            "message": desk.sandbox.state.message_to_api(card),
            "chat_instance": "1",
            "data": card_button(card, CardAction.APPROVE),
        },
    }
    wrong = "Wr0ng_secret-guessed-by-a-stranger"
    with structlog.testing.capture_logs() as logs:
        async with aiohttp.ClientSession() as http:
            for headers in ({SECRET_HEADER: wrong}, {}):
                async with http.post(_telegram_url(desk), json=forged, headers=headers) as sent:
                    assert sent.status == (403 if headers else 401)

    refused = [line for line in logs if line["event"] == "telegram.update_refused"]
    assert [(line["status"], line["reason"]) for line in refused] == [
        (403, "wrong secret"),
        (401, "missing secret"),
    ]
    secret = desk.app.webhook.secret if desk.app.webhook else "?"
    for line in logs:
        assert wrong not in repr(line) and secret not in repr(line)
    assert await desk.orders_for(signal.id) == 0
    assert (await desk.engine.signals.get(signal.id)).status is SignalStatus.PROPOSED
    assert "forged-tap" not in desk.sandbox.callback_answers
    assert card_button(desk.sandbox.message(card.chat_id, card.message_id), CardAction.APPROVE)


async def test_the_webhook_outlives_a_shutdown_and_polling_deletes_it_at_start(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(webhook=True)
    await desk.stop()
    assert desk.sandbox.webhook is not None  # other processes may serve it: left set

    again = await start_desk(sandbox=desk.sandbox)  # long polling, as without the URL
    assert desk.sandbox.webhook is None
    assert again.sandbox.requests("deleteWebhook")


async def test_readyz_reports_the_webhook_and_fails_when_telegram_cannot_push_for_a_minute(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(webhook=True)
    telegram = (await _ready_becomes(desk, 200))["checks"]["telegram"]
    assert (telegram["mode"], telegram["url"]) == ("webhook", _telegram_url(desk))
    assert telegram["registered"] and telegram["pending_updates"] == 0
    mode, pushed = desk.app.webhook, desk.sandbox.webhook
    assert mode is not None and pushed is not None

    pushed.secret_token = "rotated-by-another-process"  # pushes now carry a wrong secret
    desk.sandbox.send_user_message(OWNER, OWNER, "/status")
    await desk.sandbox.wait_for(lambda _: pushed.last_error_date, description="a refused push")
    code, body = await _get(desk, "/readyz")
    assert code == 200  # Telegram retries: not a minute yet
    assert body["checks"]["telegram"]["last_error"]["message"] == (
        "Wrong response from the webhook: 403 Forbidden"
    )
    assert mode.registered_at is not None
    mode.registered_at -= timedelta(seconds=TELEGRAM_GRACE_SECONDS + 1)  # a minute has passed
    if mode.last_update_at is not None:
        mode.last_update_at -= timedelta(seconds=TELEGRAM_GRACE_SECONDS + 1)
    body = await _ready_becomes(desk, 503)
    assert body["failing"] == ["telegram"]
    assert body["checks"]["telegram"]["pending_updates"] == 1
    assert body["checks"]["telegram"]["refused"] >= 1

    pushed.secret_token = mode.secret  # the right secret again: the update is delivered
    await _ready_becomes(desk, 200)
    await desk.sandbox.wait_for(lambda s: not s.pending_updates, description="delivered")


async def test_set_webhook_is_retried_while_telegram_is_down_at_start(
    start_desk: StartDesk,
) -> None:
    sandbox = SandboxServer(TOKEN, web_user_id=OWNER)
    sandbox.add_user(OWNER, "Ada", "ada")
    await sandbox.start()
    await sandbox.set_unreachable(True)
    desk = await start_desk(sandbox=sandbox, telegram_up=False, webhook=True)
    link = desk.app.telegram
    await sandbox.wait_for(lambda _: link.failures >= 2, 15, description="getMe retried")
    assert desk.app.ready.is_set()  # the start-up did not wait for Telegram
    assert sandbox.webhook is None

    await sandbox.set_unreachable(False)
    await sandbox.wait_for(lambda s: s.webhook, 15, description="the webhook registered")
    await sandbox.wait_for_message(OWNER, contains="SignalDesk alive")  # the outbox flows
    assert (await desk.say("/status")).plain_text  # commands arrive by push


async def test_a_long_message_is_pushed_whole_past_the_alert_body_limit(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(webhook=True)
    text = "€" * 4096  # Telegram's longest message: ~25 kB of JSON, over WEBHOOK_MAX_BODY_BYTES
    desk.sandbox.send_user_message(OWNER, OWNER, text)

    await desk.sandbox.wait_for(lambda s: not s.pending_updates, description="delivered")
    assert desk.sandbox.webhook is not None and desk.sandbox.webhook.last_error_date is None
