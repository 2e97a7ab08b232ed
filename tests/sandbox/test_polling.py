"""getUpdates is real long polling: timeout, offset, limit, allowed_updates, conflicts."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramConflictError
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.sandbox import SandboxServer
from tests.sandbox.support import OWNER


async def test_long_poll_waits_for_the_timeout(sandbox: SandboxServer, bot: Bot) -> None:
    started = time.monotonic()
    updates = await bot.get_updates(timeout=2)
    elapsed = time.monotonic() - started

    assert updates == []
    assert elapsed >= 1.9  # held for the timeout (how much longer is the machine's load)


async def test_long_poll_returns_as_soon_as_an_update_arrives(
    sandbox: SandboxServer, bot: Bot
) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=10))
    await sandbox.wait_for(lambda s: s.waiting_polls == 1)  # the request is held open
    await asyncio.sleep(0.2)
    assert not poll.done()
    sent_at = time.monotonic()
    sandbox.send_user_message(OWNER, OWNER, "hello")
    updates = await asyncio.wait_for(poll, 2)

    assert time.monotonic() - sent_at < 8  # well before the 10 s timeout: at once
    assert [u.message.text for u in updates if u.message] == ["hello"]


async def test_offset_confirms_and_negative_offset_keeps_the_tail(
    sandbox: SandboxServer, bot: Bot
) -> None:
    ids = [sandbox.send_user_message(OWNER, OWNER, f"m{i}")["update_id"] for i in range(4)]

    first = await bot.get_updates()
    again = await bot.get_updates()  # not confirmed yet: delivered again
    assert [u.update_id for u in first] == ids
    assert [u.update_id for u in again] == ids

    rest = await bot.get_updates(offset=ids[1] + 1)  # confirms m0, m1
    assert [u.update_id for u in rest] == ids[2:]
    assert await bot.get_updates(offset=ids[1] + 1) != []  # m2, m3 still pending
    assert await bot.get_updates(offset=ids[-1] + 1, timeout=0) == []
    assert sandbox.pending_updates == []

    more = [sandbox.send_user_message(OWNER, OWNER, f"n{i}")["update_id"] for i in range(3)]
    tail = await bot.get_updates(offset=-1)
    assert [u.update_id for u in tail] == more[-1:]
    assert [u["update_id"] for u in sandbox.pending_updates] == more[-1:]


async def test_limit(sandbox: SandboxServer, bot: Bot) -> None:
    for i in range(5):
        sandbox.send_user_message(OWNER, OWNER, f"m{i}")
    assert len(await bot.get_updates(limit=2)) == 2
    assert len(await bot.get_updates(limit=100)) == 5


async def test_allowed_updates_filter(sandbox: SandboxServer, bot: Bot) -> None:
    card = await bot.send_message(
        OWNER,
        "Card",
        reply_markup=InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(text="Go", callback_data="go")]]
        ),
    )
    assert await bot.get_updates(allowed_updates=["callback_query"], timeout=0) == []

    sandbox.send_user_message(OWNER, OWNER, "ignored")
    sandbox.press_button(OWNER, card.message_id, "go", OWNER)
    updates = await bot.get_updates()  # omitted: the previous setting still applies

    assert [u.event_type for u in updates] == ["callback_query"]
    assert sandbox.allowed_updates == frozenset({"callback_query"})

    last = updates[-1].update_id
    await bot.get_updates(offset=last + 1, allowed_updates=[], timeout=0)  # [] = default
    sandbox.send_user_message(OWNER, OWNER, "delivered")
    later = await bot.get_updates(offset=last + 1)
    assert [u.message.text for u in later if u.message] == ["delivered"]


async def test_delete_webhook_can_drop_pending_updates(sandbox: SandboxServer, bot: Bot) -> None:
    sandbox.send_user_message(OWNER, OWNER, "stale")
    assert await bot.delete_webhook(drop_pending_updates=False)
    assert len(sandbox.pending_updates) == 1
    assert await bot.delete_webhook(drop_pending_updates=True)
    assert await bot.get_updates() == []


async def test_a_second_concurrent_poll_ends_the_first_with_409(
    sandbox: SandboxServer, bot: Bot
) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await sandbox.wait_for(lambda s: s.waiting_polls == 1)
    second = asyncio.create_task(bot.get_updates(timeout=5))

    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates request"):
        await asyncio.wait_for(first, 2)
    sandbox.send_user_message(OWNER, OWNER, "for the survivor")
    updates = await asyncio.wait_for(second, 2)
    assert [u.message.text for u in updates if u.message] == ["for the survivor"]
