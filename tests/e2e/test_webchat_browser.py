"""The sandbox's web chat page in headless Chromium, driving the REAL SignalDesk bot: the
page loads, a card appears, a click on Approve is seen as the edited card."""

from __future__ import annotations

import asyncio
import os
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.conftest import StartDesk

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]


DOCS = Path(__file__).resolve().parents[2] / "docs"


def shot(name: str, tmp_path: Path) -> str:
    """Where a screenshot goes: ``docs/<name>`` when ``UPDATE_DOCS_SCREENSHOTS=1`` (how the
    docs' pictures are refreshed), else the test's temporary directory, so a test run
    leaves the checkout as it found it."""
    folder = DOCS if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1" else tmp_path
    return str(folder / name)


async def test_web_page_shows_card_and_click_on_approve_edits_it(start_desk: StartDesk) -> None:
    from playwright.async_api import async_playwright, expect

    desk = await start_desk()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 720, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(desk.sandbox.base_url + "/")
            await expect(page.locator("#bot-name")).to_have_text("SignalDesk")

            signal = await desk.propose()
            card = await desk.card(signal.id)
            row = page.locator(f'.message[data-message-id="{card.message_id}"]')
            await expect(row.locator(".text")).to_contain_text(f"signal #{signal.id}")
            await expect(row.locator(".text")).to_contain_text("Risk: 16.67 USDT")

            await row.get_by_role("button", name="✅ Approve").click()

            await expect(row.locator(".text")).to_contain_text(
                "Filled 0.01 BTC @ 113,689.42 (fee 1.14 USDT)"
            )
            await expect(row.locator(".keyboard button")).to_have_count(0)
            await expect(page.locator("#toast")).to_contain_text("Approved: order sent")
            assert errors == []
        finally:
            await browser.close()


async def test_web_page_shows_a_chart_card_and_approve_edits_its_caption(
    start_desk: StartDesk, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect

    from bot.chart import warm_up

    desk = await start_desk(card_charts=True)
    await asyncio.to_thread(warm_up)
    for _ in range(48):
        desk.engine.feed.step()  # two days of hourly candles on the chart
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 480, "height": 820})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(desk.sandbox.base_url + "/")
            signal = await desk.propose(stop_loss=Decimal(111000), take_profit=Decimal(117000))
            card = await desk.card(signal.id, within=30)
            assert card.photo is not None
            row = page.locator(f'.message[data-message-id="{card.message_id}"]')
            image = row.locator("img.photo")
            await expect(image).to_be_visible()
            width = await image.evaluate("img => img.complete ? img.naturalWidth : 0")
            assert width == 600  # the PNG loaded from the sandbox, not a broken image
            await expect(row.locator(".text")).to_contain_text(f"signal #{signal.id}")
            await row.scroll_into_view_if_needed()
            await page.screenshot(path=shot("card-chart.png", tmp_path))

            await row.get_by_role("button", name="✅ Approve").click()

            await expect(row.locator(".text")).to_contain_text("Filled 0.01 BTC @ ")
            await expect(row.locator(".keyboard button")).to_have_count(0)
            await expect(row.locator("img.photo")).to_be_visible()  # the chart stays
            assert errors == []
        finally:
            await browser.close()


async def test_web_page_shows_pnl_with_its_equity_curve(
    start_desk: StartDesk, tmp_path: Path
) -> None:
    """Also takes docs/pnl.png (see :func:`shot`): the two hand-computed trades of
    tests/e2e/test_results.py and three days of equity history."""
    from playwright.async_api import async_playwright, expect

    from bot.chart import warm_up
    from tests.e2e.test_results import two_trades, write_history

    desk = await start_desk()
    await asyncio.to_thread(warm_up)
    await two_trades(desk)
    await write_history(desk)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 480, "height": 820})
            await page.goto(desk.sandbox.base_url + "/")
            pnl = await desk.say("/pnl all")
            assert pnl.photo is not None
            row = page.locator(f'.message[data-message-id="{pnl.message_id}"]')
            image = row.locator("img.photo")
            await expect(image).to_be_visible()
            await expect(row.locator(".text")).to_contain_text("Max drawdown: 10.00%")
            width = await image.evaluate("img => img.complete ? img.naturalWidth : 0")
            assert width == 600  # the equity curve loaded, not a broken image
            await row.scroll_into_view_if_needed()
            await page.screenshot(path=shot("pnl.png", tmp_path))
        finally:
            await browser.close()
