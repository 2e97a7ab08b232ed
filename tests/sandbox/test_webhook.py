"""setWebhook, deleteWebhook and getWebhookInfo: the sandbox pushes each update to the
webhook with the secret header, in order, retries a refused push and records its error;
getUpdates answers 409 while a webhook is set."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramConflictError
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.sandbox import SandboxServer
from bot.sandbox.state import TERMINATED_BY_WEBHOOK_DESCRIPTION, WEBHOOK_ACTIVE_DESCRIPTION
from tests.sandbox.support import OWNER

SECRET = "s3cr3t_token-for-the-webhook"


@dataclass
class Receiver:
    """A webhook endpoint that records each push and answers ``refuse`` first, if any."""

    url: str = ""
    pushes: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)
    refuse: list[int] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.pushes.append(
            (request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json())
        )
        if self.refuse:
            return web.Response(status=self.refuse.pop(0))
        return web.json_response({})

    def texts(self) -> list[str]:
        return [body["message"]["text"] for _, body in self.pushes if "message" in body]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    async with TestServer(app) as server:
        found.url = str(server.make_url("/hook"))
        yield found


async def test_updates_are_pushed_in_order_with_the_secret_header(
    sandbox: SandboxServer, bot: Bot, receiver: Receiver
) -> None:
    assert await bot.set_webhook(receiver.url, secret_token=SECRET)
    for text in ("one", "two", "three"):
        sandbox.send_user_message(OWNER, OWNER, text)

    await sandbox.wait_for(lambda _: len(receiver.pushes) == 3, description="three pushes")
    assert receiver.texts() == ["one", "two", "three"]
    assert {secret for secret, _ in receiver.pushes} == {SECRET}
    info = await bot.get_webhook_info()
    assert (info.url, info.pending_update_count, info.last_error_date) == (receiver.url, 0, None)
    assert sandbox.webhook is not None and sandbox.webhook.delivered == 3


async def test_a_refused_push_is_retried_before_later_updates_and_its_error_recorded(
    sandbox: SandboxServer, bot: Bot, receiver: Receiver
) -> None:
    receiver.refuse = [401, 500]
    await bot.set_webhook(receiver.url, secret_token=SECRET)
    sandbox.send_user_message(OWNER, OWNER, "first")
    sandbox.send_user_message(OWNER, OWNER, "second")

    await sandbox.wait_for(lambda _: len(receiver.pushes) == 4, description="four pushes")
    assert receiver.texts() == ["first", "first", "first", "second"]
    info = await bot.get_webhook_info()
    assert info.pending_update_count == 0
    assert info.last_error_date is not None
    assert info.last_error_message == "Wrong response from the webhook: 500 Internal Server Error"


async def test_an_unreachable_webhook_keeps_the_update_pending(
    sandbox: SandboxServer, bot: Bot, receiver: Receiver
) -> None:
    await bot.set_webhook(receiver.url.replace("/hook", "/nowhere"))  # 404
    sandbox.send_user_message(OWNER, OWNER, "waiting")
    await sandbox.wait_for(
        lambda s: s.webhook is not None and s.webhook.last_error_date, description="an error"
    )
    info = await bot.get_webhook_info()
    assert info.pending_update_count == 1
    assert info.last_error_message == "Wrong response from the webhook: 404 Not Found"

    await bot.set_webhook(receiver.url)  # fixed: the pending update is delivered
    await sandbox.wait_for(lambda _: receiver.texts() == ["waiting"], description="delivered")
    assert receiver.pushes[0][0] is None  # no secret given, no header


async def test_get_updates_conflicts_while_a_webhook_is_set(
    sandbox: SandboxServer, bot: Bot, receiver: Receiver
) -> None:
    held = asyncio.create_task(bot.get_updates(timeout=10))
    await sandbox.wait_for(lambda s: s.waiting_polls == 1, description="a held long poll")
    await bot.set_webhook(receiver.url, secret_token=SECRET)
    with pytest.raises(TelegramConflictError) as ended:
        await held
    assert TERMINATED_BY_WEBHOOK_DESCRIPTION in ended.value.message
    with pytest.raises(TelegramConflictError) as refused:
        await bot.get_updates(timeout=0)
    assert WEBHOOK_ACTIVE_DESCRIPTION in refused.value.message

    await bot.set_webhook(receiver.url.replace("/hook", "/nowhere"))  # every push fails
    sandbox.send_user_message(OWNER, OWNER, "kept")
    await sandbox.wait_for(
        lambda s: s.webhook is not None and s.webhook.last_error_date, description="a failure"
    )
    assert await bot.delete_webhook()  # back to polling: the update waits for getUpdates
    updates = await bot.get_updates(timeout=0)
    assert [u.message.text for u in updates if u.message] == ["kept"]
    assert (await bot.get_webhook_info()).url == ""


async def test_set_webhook_drops_pending_updates_and_filters_update_types(
    sandbox: SandboxServer, bot: Bot, receiver: Receiver
) -> None:
    sandbox.send_user_message(OWNER, OWNER, "stale")
    await bot.set_webhook(
        receiver.url, drop_pending_updates=True, allowed_updates=["callback_query"]
    )
    sandbox.send_user_message(OWNER, OWNER, "filtered out")
    card = await bot.send_message(OWNER, "card", reply_markup=_one_button())
    sandbox.press_button(OWNER, card.message_id, "go", OWNER)

    await sandbox.wait_for(lambda _: receiver.pushes, description="the tap")
    assert [body["callback_query"]["data"] for _, body in receiver.pushes] == ["go"]
    assert (await bot.get_webhook_info()).allowed_updates == ["callback_query"]


@pytest.mark.parametrize(
    ("url", "secret", "description"),
    [
        ("ftp://127.0.0.1/hook", None, "bad webhook: An HTTPS URL must be provided for webhook"),
        ("https:///hook", None, "bad webhook: Failed to resolve host"),
        ("https://bot.example.com/hook", "x" * 257, "secret token is too long"),
        ("https://bot.example.com/hook", "has spaces!", "secret token contains unallowed"),
    ],
)
async def test_set_webhook_refuses_what_telegram_refuses(
    sandbox: SandboxServer, bot: Bot, url: str, secret: str | None, description: str
) -> None:
    with pytest.raises(TelegramBadRequest) as refused:
        await bot.set_webhook(url, secret_token=secret)
    assert refused.value.message.startswith(f"Bad Request: {description}")
    assert sandbox.webhook is None


def _one_button() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Go", callback_data="go")]]
    )
