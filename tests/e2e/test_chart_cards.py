"""Cards as photos: a chart with the card as caption, edited by caption; a chart that
cannot be made still delivers the text card; the card says what the order does."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from functools import partial

from bot.chart import ChartSpec, chart_png, render_png, warm_up
from bot.delivery import CardKind, Cards
from core.db.models import SignalCardRow
from core.domain import Side, SignalStatus
from core.marketdata.base import MarketData
from tests.e2e.conftest import StartDesk

FILLED = "Filled 0.01 BTC @ 113,689.42 (fee 1.14 USDT)"
PNG = b"\x89PNG\r\n\x1a\n"


async def test_a_card_arrives_as_a_chart_photo_and_approve_edits_its_caption(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(card_charts=True)
    await asyncio.to_thread(warm_up)  # what the bot does after start-up: import matplotlib
    for _ in range(40):
        desk.engine.feed.step()  # 40 hourly candles to draw
    signal = await desk.propose()

    card = await desk.card(signal.id, within=30)
    assert card.photo is not None
    image = desk.sandbox.state.files[card.photo]
    assert image.startswith(PNG) and len(image) < 100_000
    assert card.plain_text.startswith(f"🟢 BUY 0.01 BTC/USDT · signal #{signal.id}")
    assert len(card.plain_text) <= 1024
    assert [text for text, _ in card.buttons[0]] == ["✅ Approve", "❌ Reject"]
    await desk.drained()  # the deliverer records the card after Telegram answered
    async with desk.engine.db.session() as session:
        row = await session.get(SignalCardRow, (signal.id, card.chat_id))
    assert row is not None and row.kind == CardKind.PHOTO.value

    answer = await desk.approve(card)

    assert answer.text == "Approved: order sent"
    text = await desk.edited(card, "Filled 0.01 BTC @ ")
    assert text.splitlines()[-1].startswith("✅ Filled 0.01 BTC @ ")
    stored = desk.sandbox.message(card.chat_id, card.message_id)
    assert stored.photo == card.photo and stored.buttons == []  # the chart stays
    await desk.drained()
    rows = [(r.kind, r.last_error) for r in await desk.outbox() if r.signal_id == signal.id]
    assert rows == [("signal_card", ""), ("signal_update", "")]  # caption edits, no drop


async def test_a_chart_that_cannot_be_made_still_delivers_the_text_card(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(card_charts=True)
    cards: Cards = desk.app.dispatcher["cards"]
    attempts: list[str] = []

    async def broken(market: MarketData, spec: ChartSpec) -> bytes | None:
        attempts.append(spec.symbol)
        raise RuntimeError("the plotting library fell over")

    cards.make_chart = broken
    signal = await desk.propose()

    card = await desk.card(signal.id)

    assert attempts == ["BTC/USDT"]
    assert card.photo is None and "signal #" in card.plain_text
    answer = await desk.approve(card)
    assert answer.text == "Approved: order sent"
    assert (await desk.edited(card, FILLED)).endswith(f"✅ {FILLED}")


async def test_a_sell_while_long_says_it_reduces_and_adds_no_risk(start_desk: StartDesk) -> None:
    desk = await start_desk()
    bought = await desk.propose()
    await desk.approve(await desk.card(bought.id))
    assert (await desk.engine.signals.get(bought.id)).status is SignalStatus.FILLED

    sell = await desk.propose(
        side=Side.SELL, quantity=Decimal("0.004"), stop_loss=None, take_profit=None
    )
    lines = (await desk.card(sell.id)).plain_text.splitlines()

    assert "Reduces long 0.01 BTC → long 0.006 BTC" in lines
    assert "Risk: none added, it reduces the position" in lines
    assert "no SL · no TP" in lines

    flip = await desk.propose(
        side=Side.SELL, quantity=Decimal("0.03"), stop_loss=None, take_profit=None
    )
    assert "Reverses long 0.01 BTC → short 0.02 BTC" in (await desk.card(flip.id)).plain_text


async def test_a_tap_during_a_slow_chart_render_is_answered_before_the_render_ends(
    start_desk: StartDesk,
) -> None:
    """The render runs in a worker thread: while one card's chart is held mid-render (the
    renderer waits on an Event the test sets only after the tap's answer arrived), a tap on
    another card is answered and its order filled. Were the render on the event loop, the
    answer could never arrive first and the render would give up (``held`` times out)."""
    desk = await start_desk(card_charts=True)
    await asyncio.to_thread(warm_up)
    for _ in range(40):
        desk.engine.feed.step()
    first = await desk.propose()
    card = await desk.card(first.id, within=30)
    assert card.photo is not None
    await desk.drained()
    started, release = threading.Event(), threading.Event()

    def slow(spec: ChartSpec) -> bytes:
        started.set()
        held = release.wait(timeout=60)
        assert held, "the tap was not answered while the chart rendered"
        return render_png(spec)

    cards: Cards = desk.app.dispatcher["cards"]
    cards.make_chart = partial(chart_png, render=slow)
    second = await desk.propose()
    await desk.sandbox.wait_for(lambda _: started.is_set(), 30, description="the slow render")

    try:
        answer = await desk.approve(card)
    finally:
        release.set()  # also when the answer never came: no thread left waiting

    assert answer.text == "Approved: order sent"
    assert (await desk.engine.signals.get(first.id)).status is SignalStatus.FILLED
    slow_card = await desk.card(second.id, within=30)
    assert slow_card.photo is not None  # the held render was not given up: it waited
    assert len(desk.sandbox.state.files[slow_card.photo]) < 100_000
