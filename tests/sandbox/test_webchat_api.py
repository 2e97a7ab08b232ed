"""The web chat page's JSON API and assets (the browser test drives the page itself)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiogram import Bot
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.sandbox import SandboxServer
from tests.sandbox.support import OTHER, OWNER, TOKEN


async def test_page_and_assets_are_served(sandbox: SandboxServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sandbox.base_url}/") as resp:
            assert resp.status == 200
            page = await resp.text()
        assert "Content-Security-Policy" in page
        assert "/sandbox/static/chat.js" in page
        for asset in ("chat.js", "chat.css"):
            async with http.get(f"{sandbox.base_url}/sandbox/static/{asset}") as resp:
                assert resp.status == 200
                body = await resp.text()
                assert "innerHTML" not in body.replace("Nothing here uses innerHTML", "")
        async with http.get(f"{sandbox.base_url}/sandbox/static/../server.py") as resp:
            assert resp.status in (403, 404)


async def test_updates_snapshot_and_long_poll(sandbox: SandboxServer, bot: Bot) -> None:
    await bot.send_message(
        OWNER,
        "<b>BUY</b> BTC",
        parse_mode="HTML",
        reply_markup=InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(text="Approve", callback_data="ok")]]
        ),
    )
    await bot.send_message(OTHER, "not for the web user")
    url = f"{sandbox.base_url}/sandbox/api/updates"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, params={"since": "0"}) as resp:
            first = await resp.json()
        assert first["user"]["id"] == OWNER and first["chat"]["id"] == OWNER
        [card] = first["messages"]
        assert card["text"] == "BUY BTC"
        assert card["entities"] == [{"type": "bold", "offset": 0, "length": 3}]
        assert card["keyboard"] == [[{"text": "Approve", "callback_data": "ok", "url": None}]]

        # nothing new: the request is held until something changes
        started = time.monotonic()
        poll = asyncio.create_task(
            http.get(url, params={"since": str(first["revision"]), "timeout": "5"})
        )
        await asyncio.sleep(0.3)
        assert not poll.done()
        await bot.edit_message_text("Filled", chat_id=OWNER, message_id=card["message_id"])
        async with await poll as resp:
            later = await resp.json()
        assert time.monotonic() - started < 4.5  # answered by the edit, not the 5 s timeout
    [edited] = later["messages"]
    assert (edited["text"], edited["keyboard"], edited["had_buttons"]) == ("Filled", [], True)
    assert edited["edit_date"] is not None


async def test_send_and_press_act_as_the_web_user(sandbox: SandboxServer, bot: Bot) -> None:
    card = await bot.send_message(
        OWNER,
        "Card",
        reply_markup=InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(text="Approve", callback_data="ok")]]
        ),
    )
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sandbox.base_url}/sandbox/api/send", json={"text": "/positions"}
        ) as resp:
            assert (await resp.json())["ok"] is True
        async with http.post(
            f"{sandbox.base_url}/sandbox/api/press",
            json={"message_id": card.message_id, "callback_data": "ok"},
        ) as resp:
            pressed = await resp.json()
        async with http.post(
            f"{sandbox.base_url}/sandbox/api/press",
            json={"message_id": card.message_id, "callback_data": "missing"},
        ) as resp:
            assert resp.status == 409
    updates = await bot.get_updates()
    assert [u.event_type for u in updates] == ["message", "callback_query"]
    assert updates[0].message is not None and updates[0].message.text == "/positions"
    assert updates[1].callback_query is not None
    assert updates[1].callback_query.id == pressed["callback_id"]
    assert updates[1].callback_query.from_user.id == OWNER

    await bot.answer_callback_query(pressed["callback_id"], text="Approved")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sandbox.base_url}/sandbox/api/updates", params={"since": "0"}) as resp,
    ):
        notices = (await resp.json())["notices"]
    assert notices == [
        {
            "callback_id": pressed["callback_id"],
            "message_id": card.message_id,
            "text": "Approved",
            "show_alert": False,
        }
    ]


async def test_cross_site_and_rebinding_requests_are_refused(sandbox: SandboxServer) -> None:
    send = f"{sandbox.base_url}/sandbox/api/send"
    async with aiohttp.ClientSession() as http:
        # a form post (no CORS preflight) from another site
        async with http.post(
            send, data="text=/closeall", headers={"Origin": "http://evil.test"}
        ) as r:
            assert r.status == 415
        async with http.post(
            send, json={"text": "/closeall"}, headers={"Origin": "http://evil.test"}
        ) as r:
            assert r.status == 403
        async with http.get(f"{sandbox.base_url}/", headers={"Host": "evil.test"}) as r:
            assert r.status == 403
    assert sandbox.transcript(OWNER) == []


async def test_web_user_and_chat_can_be_chosen() -> None:
    async with SandboxServer(TOKEN, web_user_id=OTHER, web_chat_id=-5001) as sandbox:
        sandbox.add_user(OWNER, "Ada")
        sandbox.add_user(OTHER, "Bob")
        sandbox.add_group(-5001, "Desk", [OWNER, OTHER])
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{sandbox.base_url}/sandbox/api/send", json={"text": "hi all"}) as resp,
        ):
            assert resp.status == 200
        [message] = sandbox.transcript(-5001)
        assert (message.from_bot, getattr(message, "user_id", None)) == (False, OTHER)
