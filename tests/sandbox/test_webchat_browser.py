"""The web chat page in a real headless Chromium, against a real aiogram bot on the sandbox."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from aiogram import Bot, Dispatcher, F
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.sandbox import SandboxServer
from tests.sandbox.support import OWNER, polling

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path("/tmp/webchat.png")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def build_dispatcher() -> Dispatcher:
    dp = Dispatcher()

    @dp.callback_query(F.data.startswith("approve:"))
    async def approve(query: CallbackQuery) -> None:
        assert isinstance(query.message, Message)
        await query.answer("Order filled")
        await query.message.edit_text(
            "✅ <b>Filled</b> BUY 0.5 BTC at <code>64 010</code>", parse_mode="HTML"
        )

    @dp.callback_query(F.data.startswith("reject:"))
    async def reject(query: CallbackQuery) -> None:
        assert isinstance(query.message, Message)
        await query.answer("Rejected")
        await query.message.edit_text("❌ Rejected")

    @dp.message(Command("ping"))
    async def ping(message: Message) -> None:
        await message.answer("pong — <i>the bot is alive</i>", parse_mode="HTML")

    return dp


async def test_card_is_approved_from_the_web_page(sandbox: SandboxServer, bot: Bot) -> None:
    from playwright.async_api import async_playwright, expect

    card = await bot.send_message(
        OWNER,
        "📈 <b>BUY 0.5 BTC</b> @ <code>64 000</code>\n"
        "Strategy: <i>breakout</i> · expires in 10 min\n"
        '<a href="https://example.com/signal/7">details</a> &lt;paper&gt;',
        parse_mode="HTML",
        reply_markup=InlineKeyboardMarkup(
            inline_keyboard=[
                [
                    InlineKeyboardButton(text="Approve", callback_data="approve:7"),
                    InlineKeyboardButton(text="Reject", callback_data="reject:7"),
                ]
            ]
        ),
    )
    dp = build_dispatcher()
    async with polling(dp, bot, sandbox), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 720, "height": 640})
            problems: list[str] = []
            page.on(
                "console",
                lambda msg: problems.append(msg.text) if msg.type == "error" else None,
            )
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            await page.goto(sandbox.base_url + "/")

            row = page.locator(f'.message[data-message-id="{card.message_id}"]')
            approve = row.get_by_role("button", name="Approve")
            await expect(approve).to_be_visible(timeout=5000)
            await expect(row.get_by_role("button", name="Reject")).to_be_visible()
            # the HTML subset is rendered as elements, and text stays text
            await expect(row.locator("strong")).to_have_text("BUY 0.5 BTC")
            await expect(row.locator("code")).to_have_text("64 000")
            await expect(row.locator("a")).to_have_attribute("href", "https://example.com/signal/7")
            await expect(row.locator(".text")).to_contain_text("<paper>")
            await expect(page.locator("#bot-name")).to_have_text("SignalDesk")

            await approve.click()

            await expect(row.locator(".text")).to_contain_text("Filled BUY 0.5 BTC at 64 010")
            await expect(row.locator(".keyboard button")).to_have_count(0)
            await expect(row.locator(".edited")).to_be_visible()
            await expect(row).to_have_class("message in settled")
            await expect(page.locator("#toast")).to_have_text("Order filled")

            # the input box talks to the bot as the web user
            await page.locator("#input").fill("/ping")
            await page.locator("#input").press("Enter")
            await expect(page.locator(".message.out").last).to_contain_text("/ping")
            await expect(page.locator(".message.in").last).to_contain_text("pong")

            await page.screenshot(path=str(SCREENSHOT))

            # untrusted text stays text: no markup from a message reaches the DOM
            hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
            await bot.send_message(OWNER, html.escape(hostile), parse_mode="HTML")
            await page.locator("#input").fill('<b onclick="window.pwned=3">typed</b>')
            await page.locator("#input").press("Enter")
            await expect(page.locator(".message.in").last).to_have_text(
                re.compile(re.escape(hostile))
            )
            await expect(page.locator(".message.out").last).to_contain_text('<b onclick="')
            assert await page.locator(".messages img, .messages script").count() == 0
            assert await page.evaluate("window.pwned") is None
            assert problems == []
        finally:
            await browser.close()

    message = sandbox.message(OWNER, card.message_id)
    assert message.plain_text.startswith("✅ Filled BUY 0.5 BTC")
    assert message.buttons == []
    [answer] = sandbox.callback_answers.values()
    assert answer.text == "Order filled"
    assert "pong — the bot is alive" in [m.plain_text for m in sandbox.messages(OWNER)]
