"""Failure injection, outages on the same port and Telegram's flood control."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiogram import Bot, Dispatcher
from aiogram.exceptions import (
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.filters import Command
from aiogram.types import Message

from bot.sandbox import RateLimits, SandboxServer
from tests.sandbox.support import OTHER, OWNER, TOKEN, close_bot, make_bot, polling


async def test_injected_429_surfaces_as_retry_after(sandbox: SandboxServer, bot: Bot) -> None:
    sandbox.fail_next("sendMessage", 429, "Too Many Requests: retry after 2", retry_after=2)

    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(OWNER, "first try")

    assert caught.value.retry_after == 2
    assert "retry after 2" in caught.value.message
    assert sandbox.messages(OWNER) == []  # the failed call had no effect
    await bot.send_message(OWNER, "second try")  # armed once only
    assert [m.text for m in sandbox.messages(OWNER)] == ["second try"]
    assert sandbox.stats.injected == 1
    assert sandbox.stats.rate_limited == 0  # injected, not the flood control
    [failed, ok] = sandbox.requests("sendMessage", chat_id=OWNER)
    assert (failed.status, failed.injected, ok.status) == (429, True, 200)


async def test_injected_server_errors_repeat_times(sandbox: SandboxServer, bot: Bot) -> None:
    sandbox.fail_next("editMessageText", 502, "Bad Gateway", times=2)
    sent = await bot.send_message(OWNER, "v1")

    for _ in range(2):
        with pytest.raises(TelegramServerError, match="Bad Gateway"):
            await bot.edit_message_text("v2", chat_id=OWNER, message_id=sent.message_id)
    await bot.edit_message_text("v2", chat_id=OWNER, message_id=sent.message_id)

    assert sandbox.last_message(OWNER).text == "v2"
    assert sandbox.stats.errors[502] == 2


async def test_dropped_connection_after_processing(sandbox: SandboxServer, bot: Bot) -> None:
    sandbox.drop_next("sendMessage", after_processing=True)

    with pytest.raises(TelegramNetworkError):
        await bot.send_message(OWNER, "did it arrive?")

    # the message was delivered; only the answer was lost
    assert [m.text for m in sandbox.messages(OWNER)] == ["did it arrive?"]
    sandbox.drop_next("sendMessage")
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(OWNER, "lost")
    assert len(sandbox.messages(OWNER)) == 1
    assert sandbox.stats.dropped == 2
    await bot.send_message(OWNER, "fine again")


def _connect(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


async def test_unreachable_then_reachable_on_the_same_port(
    sandbox: SandboxServer, bot: Bot
) -> None:
    dp = Dispatcher()

    @dp.message(Command("status"))
    async def status(message: Message) -> None:
        await message.answer("alive")

    port = sandbox.port
    async with polling(dp, bot, sandbox):
        await sandbox.set_unreachable(True)
        assert sandbox.unreachable
        with pytest.raises(ConnectionRefusedError):
            await asyncio.to_thread(_connect, port)
        with pytest.raises(TelegramNetworkError):
            await bot.get_me()
        # a human writes during the outage; Telegram keeps the update
        sandbox.send_user_message(OWNER, OWNER, "/status")
        await asyncio.sleep(0.3)
        assert sandbox.messages(OWNER) == []

        await sandbox.set_unreachable(False)
        assert sandbox.port == port
        assert sandbox.base_url.endswith(f":{port}")
        reply = await sandbox.wait_for_message(OWNER, contains="alive")
    assert reply.plain_text == "alive"
    assert (await bot.get_me()).id == 123456789


async def test_rate_limits_are_off_by_default(sandbox: SandboxServer, bot: Bot) -> None:
    for i in range(10):
        await bot.send_message(OWNER, f"burst {i}")
    assert len(sandbox.messages(OWNER)) == 10
    assert sandbox.stats.rate_limited == 0


async def test_per_chat_flood_control_answers_429() -> None:
    async with SandboxServer(TOKEN, enforce_rate_limits=True) as sandbox:
        sandbox.add_user(OWNER, "Ada")
        sandbox.add_user(OTHER, "Bob")
        bot = make_bot(sandbox)
        try:
            for i in range(3):  # the burst allowance
                await bot.send_message(OWNER, f"ok {i}")
            with pytest.raises(TelegramRetryAfter) as caught:
                await bot.send_message(OWNER, "one too many")
            assert caught.value.retry_after >= 1
            with pytest.raises(TelegramRetryAfter):  # edits count too
                await bot.edit_message_text("edited", chat_id=OWNER, message_id=1)
            await bot.send_message(OTHER, "another chat has its own budget")

            assert sandbox.stats.rate_limited == 2
            assert [e.status for e in sandbox.requests(chat_id=OWNER)] == [200, 200, 200, 429, 429]
            assert len(sandbox.messages(OWNER)) == 3

            await asyncio.sleep(1.05)  # one message per second refills
            await bot.send_message(OWNER, "after waiting")
            assert len(sandbox.messages(OWNER)) == 4
        finally:
            await close_bot(bot)


async def test_global_flood_control_answers_429() -> None:
    limits = RateLimits(global_per_second=5, global_burst=5)
    async with SandboxServer(TOKEN, enforce_rate_limits=True, rate_limits=limits) as sandbox:
        for user_id in range(2001, 2008):
            sandbox.add_user(user_id, f"U{user_id}")
        bot = make_bot(sandbox)
        try:
            results = await asyncio.gather(
                *(bot.send_message(uid, "broadcast") for uid in range(2001, 2008)),
                return_exceptions=True,
            )
        finally:
            await close_bot(bot)
    refused = [r for r in results if isinstance(r, TelegramRetryAfter)]
    assert len(refused) == 2
    assert sandbox.stats.rate_limited == 2
    assert refused[0].retry_after == 1
    assert {e.description for e in sandbox.requests("sendMessage") if e.status == 429} == {
        "Too Many Requests: retry after 1"
    }


async def test_a_group_upgraded_to_a_supergroup_answers_with_migrate_to_chat_id(
    sandbox: SandboxServer, bot: Bot
) -> None:
    sandbox.add_group(-4242, "Desk", [OWNER])
    sent = await bot.send_message(-4242, "before")
    sandbox.migrate_group(-4242, -1004242424242)

    with pytest.raises(TelegramMigrateToChat) as caught:
        await bot.send_message(-4242, "after")
    with pytest.raises(TelegramMigrateToChat):
        await bot.edit_message_text("edited", chat_id=-4242, message_id=sent.message_id)
    await bot.send_message(-1004242424242, "in the supergroup")

    assert caught.value.migrate_to_chat_id == -1004242424242
    assert "group chat was upgraded to a supergroup chat" in caught.value.message
    assert sandbox.chats[-1004242424242].type == "supergroup"
    assert [m.text for m in sandbox.messages(-1004242424242)] == ["in the supergroup"]
    refused = sandbox.requests("sendMessage", chat_id=-4242)[-1]
    assert (refused.status, refused.description) == (
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
    )


async def test_injected_errors_carry_telegrams_exact_shapes(sandbox: SandboxServer) -> None:
    sandbox.fail_next(
        "sendMessage",
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
        migrate_to_chat_id=-1009999999999,
    )
    sandbox.set_blocked(OWNER)
    url = f"{sandbox.base_url}/bot{TOKEN}/sendMessage"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"chat_id": OWNER, "text": "x"}) as migrated:
            assert migrated.status == 400
            assert await migrated.json() == {
                "ok": False,
                "error_code": 400,
                "description": "Bad Request: group chat was upgraded to a supergroup chat",
                "parameters": {"migrate_to_chat_id": -1009999999999},
            }
        async with http.post(url, json={"chat_id": OWNER, "text": "x"}) as blocked:
            assert blocked.status == 403
            assert await blocked.json() == {
                "ok": False,
                "error_code": 403,
                "description": "Forbidden: bot was blocked by the user",
            }
