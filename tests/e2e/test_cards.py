"""Signal cards end to end: propose -> card -> tap -> toast -> card edited in place."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiogram.methods import GetUpdates
from aiohttp.client_reqrep import ClientRequest
from sqlalchemy import event

from bot.callbacks import CardAction
from bot.delivery import Cards, DeliveryPolicy
from bot.sandbox import SentMessage
from core.domain import OrderRequest, Signal, SignalStatus
from core.notify import NoticeKind, Notification
from tests.e2e.conftest import StartDesk
from tests.e2e.support import OWNER, Desk, card_button
from tests.e2e.test_forged_input import forge

FILLED = "Filled 0.01 BTC @ 113,689.42 (fee 1.14 USDT)"  # 113,666.68 + 3 bps, fee 10 bps
SENT = "Approved: order sent"  # the toast of an approval, answered before the broker call


async def test_approve_fills_edits_card_and_positions_lists_it(start_desk: StartDesk) -> None:
    desk = await start_desk()
    signal = await desk.propose(note="breakout <retest>")
    card = await desk.card(signal.id)
    assert card.parse_mode == "HTML"
    for line in (
        f"🟢 BUY 0.01 BTC/USDT · signal #{signal.id}",
        "Market ≈ 113,666.68 · notional 1,136.67 USDT",
        # (112,000 - 113,666.68) / 113,666.68 = -1.47 %; (116,000 - ...) = +2.05 %;
        # reward 2,333.32 / risk 1,666.68 = 1.4
        "SL 112,000.00 (-1.47%) · TP 116,000.00 (+2.05%) · R:R 1.4",
        "Risk: 16.67 USDT (0.17% of equity)",
        "Opens long 0.01 BTC",
        "Source: e2e ★ no track record yet",
        "Note: breakout <retest>",
        f"Expires in 14 min ({signal.expires_at:%H:%M} UTC)",  # 900 s TTL, a moment ago
    ):
        assert line in card.plain_text.splitlines()
    assert [text for text, _ in card.buttons[0]] == ["✅ Approve", "❌ Reject"]

    answer = await desk.approve(card)

    assert answer.text == SENT  # answered before the broker is called
    text = await desk.edited(card, FILLED)
    assert text.endswith(f"✅ {FILLED}")
    assert "Exits: Stop 112,000.00 at paper · Take profit 116,000.00 at paper" in text
    assert desk.sandbox.message(card.chat_id, card.message_id).buttons == []
    assert (await desk.engine.signals.get(signal.id)).status is SignalStatus.FILLED
    positions = await desk.say("/positions")
    assert "BTC/USDT long 0.01 · entry 113,689.42 · mark 113,666.68" in positions.plain_text
    # the engine's own card update arrives after the tap's edit: "not modified" = delivered
    await desk.drained()
    rows = [(r.kind, r.last_error) for r in await desk.outbox() if r.signal_id == signal.id]
    assert rows == [("signal_card", ""), ("signal_update", "")]
    messages = desk.sandbox.messages(desk.chat_id)
    cards = [m for m in messages if m.had_buttons and "signal #" in m.plain_text]
    assert cards == [card]  # edited in place, never posted twice


async def test_reject_edits_card_with_owner_and_time(start_desk: StartDesk) -> None:
    desk = await start_desk()
    signal = await desk.propose()
    card = await desk.card(signal.id)

    answer = await desk.answer(desk.tap(card, CardAction.REJECT))

    assert answer.text == f"Rejected signal #{signal.id}"
    decided = await desk.engine.signals.get(signal.id)
    assert decided.status is SignalStatus.REJECTED
    assert decided.decided_at is not None
    text = await desk.edited(card, "Rejected by @ada")
    assert text.endswith(f"❌ Rejected by @ada at {decided.decided_at:%H:%M} UTC")
    assert desk.sandbox.message(card.chat_id, card.message_id).buttons == []
    assert await desk.orders_for(signal.id) == 0


async def test_unanswered_card_expires_and_loses_its_buttons(start_desk: StartDesk) -> None:
    desk = await start_desk(expiry_check_interval=1)
    signal = await desk.propose(ttl_seconds=1)
    card = await desk.card(signal.id)

    text = await desk.edited(card, "Expired", within=5)

    assert text.endswith("⌛ Expired")
    assert desk.sandbox.message(card.chat_id, card.message_id).buttons == []
    assert (await desk.engine.signals.get(signal.id)).status is SignalStatus.EXPIRED


async def test_two_concurrent_taps_place_one_order(start_desk: StartDesk) -> None:
    desk = await start_desk()
    signal = await desk.propose()
    card = await desk.card(signal.id)

    first = desk.tap(card, CardAction.APPROVE)
    second = desk.tap(card, CardAction.APPROVE)  # queued before the bot sees the first
    answers = sorted(
        [(await desk.answer(first)).text or "", (await desk.answer(second)).text or ""]
    )

    assert answers[1] == SENT
    assert answers[0].startswith("Already decided: ")
    assert await desk.orders_for(signal.id) == 1
    await desk.edited(card, FILLED)  # the tap is answered before the order goes out
    assert (await desk.engine.trading.positions())[0].quantity == signal.quantity


async def test_approve_while_paused_is_blocked(start_desk: StartDesk) -> None:
    desk = await start_desk()
    signal = await desk.propose()
    card = await desk.card(signal.id)
    approve = card_button(card, CardAction.APPROVE)
    reply = await desk.say("/pause news at 14:30")
    assert reply.plain_text.startswith("⏸ Paused: news at 14:30")
    # the card loses its Approve button; a phone that still shows the old card sends it
    await desk.edited(card, "approvals off until /resume")

    answer = await desk.answer(forge(desk, card.chat_id, card.message_id, approve))

    assert answer.text == "Blocked: paused (news at 14:30)"
    await desk.edited(card, "⛔ Blocked: paused (news at 14:30)")
    assert await desk.orders_for(signal.id) == 0


async def test_approve_after_price_drift_is_blocked(start_desk: StartDesk) -> None:
    desk = await start_desk()
    signal = await desk.propose(stop_loss=None, take_profit=None)
    card = await desk.card(signal.id)
    desk.engine.feed.step(32)  # 32 hourly candles later BTC is 1.3 % lower

    answer = await desk.approve(card)

    assert answer.text == "Blocked: price moved 1.3% (limit 1.0%)"
    await desk.edited(card, "⛔ Blocked: price moved 1.3% (limit 1.0%)")
    assert await desk.orders_for(signal.id) == 0


async def test_card_from_another_process_reaches_the_chat_by_polling(
    start_desk: StartDesk, tmp_path: Path
) -> None:
    desk = await start_desk(policy=DeliveryPolicy())  # production pacing and polling
    script = (
        "import asyncio, sys, time\n"
        "from decimal import Decimal\n"
        "from core.app import build_engine\n"
        "from core.config import Settings\n"
        "from core.domain import Side\n"
        "from core.services import Proposal\n"
        "async def main():\n"
        "    settings = Settings(_env_file=None, database_url=sys.argv[1], feed_speed=0)\n"
        "    engine = await build_engine(settings)\n"
        "    signal = await engine.signals.propose(Proposal(source='cli', symbol='BTC/USDT',\n"
        "        side=Side.SELL, quantity=Decimal('0.02')))\n"
        "    print(signal.id, time.time(), flush=True)\n"
        "    await engine.close()\n"
        "asyncio.run(main())\n"
    )
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, url, stdout=subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    signal_id, proposed_at = out.decode().split()

    # no wake-up crosses processes: the deliverer's outbox poll finds the row (latency is
    # measured by bench/, not asserted here: a loaded machine would make it flaky)
    card = await desk.card(int(signal_id), within=15)

    assert card.sent_at is not None and card.sent_at.timestamp() >= float(proposed_at)
    assert "🔴 SELL 0.02 BTC/USDT" in card.plain_text
    assert "Source: cli" in card.plain_text


def _hold(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str
) -> tuple[asyncio.Event, asyncio.Event]:
    """Make ``owner.name`` (an async method) wait until released: returns (reached: the
    call is waiting, release: let it go on)."""
    method = getattr(owner, name)
    reached, release = asyncio.Event(), asyncio.Event()

    async def held(*args: Any) -> Any:
        reached.set()
        await release.wait()
        return await method(*args)

    monkeypatch.setattr(owner, name, held)
    return reached, release


async def _deciding(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> tuple[Signal, SentMessage, str, asyncio.Event]:
    """A posted card tapped Approve, its tap being decided: the market data's quote is
    held. Returns the signal, its card, the callback query id and the event that releases
    the quote."""
    signal = await desk.propose()
    card = await desk.card(signal.id)
    await desk.drained()
    market = desk.engine.market.inner  # type: ignore[attr-defined]
    quoting, release_quote = _hold(monkeypatch, market, "quote")
    query = desk.tap(card, CardAction.APPROVE)
    await asyncio.wait_for(quoting.wait(), 10)
    return signal, card, query, release_quote


async def test_a_slow_broker_never_keeps_the_spinner_running_nor_the_buttons(
    start_desk: StartDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = await start_desk()
    signal = await desk.propose()
    card = await desk.card(signal.id)
    venue = desk.engine.trading.broker.inner  # type: ignore[attr-defined]
    # the broker answers only once the tap was answered
    reached, release = _hold(monkeypatch, venue, "place_order")

    query = desk.tap(card, CardAction.APPROVE)
    answer = await desk.answer(query)

    assert answer.text == SENT
    assert reached.is_set() and not release.is_set()  # the order is with the broker
    assert await desk.orders_for(signal.id) == 1
    text = await desk.edited(card, "Order sent, waiting for the broker")  # still held
    assert not release.is_set()
    assert desk.sandbox.message(card.chat_id, card.message_id).buttons == []
    release.set()
    text = await desk.edited(card, FILLED)
    assert text.endswith(f"✅ {FILLED}")
    assert "Order sent" not in text  # the final edit came after the decided one
    assert len(desk.sandbox.requests("answerCallbackQuery")) == 1


async def test_the_outbox_waits_while_a_tap_is_decided_not_while_its_order_is_out(
    start_desk: StartDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = await start_desk()
    venue = desk.engine.trading.broker.inner  # type: ignore[attr-defined]
    broker, release_broker = _hold(monkeypatch, venue, "place_order")
    taps = desk.app.taps

    _, card, query, release_quote = await _deciding(desk, monkeypatch)
    await desk.engine.notifier.notify(Notification(NoticeKind.TEXT, "while deciding"))
    await desk.sandbox.wait_for(lambda _: taps.waiting == 1)  # the deliverer

    assert taps.open == 1
    assert await desk.app.deliverer.pending() == 1  # queued, not sent
    release_quote.set()
    assert (await desk.answer(query)).text == SENT
    await asyncio.wait_for(broker.wait(), 10)
    await desk.sandbox.wait_for_message(OWNER, contains="while deciding")  # the order still out

    assert not release_broker.is_set() and taps.open == 0
    release_broker.set()
    await desk.edited(card, FILLED)


async def test_a_pause_sent_while_a_tap_waits_on_the_venue_is_read_at_once_and_blocks_it(
    start_desk: StartDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = await start_desk()
    desk.app.taps.patience = 3600.0  # whatever waits for this tap waits until it closes

    signal, _, query, release_quote = await _deciding(desk, monkeypatch)
    reply = await desk.say("/pause news")  # polling does not wait for the tap

    assert reply.plain_text.startswith("⏸ Paused: news")
    assert desk.app.taps.open == 1 and not release_quote.is_set()
    release_quote.set()
    assert (await desk.answer(query)).text == "Blocked: paused (news)"
    assert await desk.orders_for(signal.id) == 0


async def test_the_answer_and_the_decided_edit_are_sent_before_the_broker_is_called(
    start_desk: StartDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = await start_desk()
    warm = await desk.card((await desk.propose()).id)
    await desk.approve(warm)  # the Bot API connections of a tap are open now
    await desk.edited(warm, FILLED)
    signal = await desk.propose()
    card = await desk.card(signal.id)
    sent: list[str] = []
    write_bytes = ClientRequest.write_bytes

    async def written(request: ClientRequest, *args: Any, **kwargs: Any) -> None:
        await write_bytes(request, *args, **kwargs)  # aiohttp writes a request's body here
        sent.append(request.url.path.rsplit("/", 1)[-1])

    monkeypatch.setattr(ClientRequest, "write_bytes", written)
    trading = desk.engine.trading
    send = trading.send  # the broker call and the recording of its outcome
    before_broker: list[str] = []

    async def send_order(request: OrderRequest, *args: Any) -> Any:
        before_broker.extend(sent)
        return await send(request, *args)

    monkeypatch.setattr(trading, "send", send_order)

    assert (await desk.approve(card)).text == SENT
    await desk.edited(card, FILLED)

    # the replies to the tap are on their way before the broker call's work, not after it
    assert before_broker[-2:] == ["answerCallbackQuery", "editMessageText"]


async def test_a_tap_is_handled_before_the_next_updates_are_asked_for(
    start_desk: StartDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = await start_desk()
    card = await desk.card((await desk.propose()).id)
    seen: list[str] = []

    async def record(make_request: Any, bot: Any, method: Any) -> Any:
        if isinstance(method, GetUpdates):
            seen.append("getUpdates")
        return await make_request(bot, method)

    desk.app.bot.session.middleware(record)
    signals = desk.engine.signals
    approve = signals.approve

    async def approving(*args: Any, **kwargs: Any) -> Any:
        seen.append("approve")
        return await approve(*args, **kwargs)

    monkeypatch.setattr(signals, "approve", approving)
    await desk.sandbox.wait_for(lambda s: s.waiting_polls > 0)  # the poll the tap answers
    seen.clear()

    await desk.approve(card)

    # the poll's answer starts the handler before the next poll is built and sent
    assert seen[:2] == ["approve", "getUpdates"]


async def test_taps_draw_no_not_modified_edit(start_desk: StartDesk) -> None:
    desk = await start_desk()
    signals = [await desk.propose(stop_loss=None, take_profit=None) for _ in range(4)]
    cards = [await desk.card(signal.id) for signal in signals]

    for card in cards:
        await desk.approve(card)
        await desk.edited(card, "Filled")
    await desk.drained()

    refused = [r for r in desk.sandbox.requests() if "not modified" in (r.description or "")]
    assert refused == []
    for card in cards:  # edited to its final state (again only if its text changed since)
        assert "Filled" in desk.sandbox.message(card.chat_id, card.message_id).plain_text
    kinds = [(r.kind, r.delivered_at is not None) for r in await desk.outbox() if r.signal_id]
    assert kinds == [("signal_card", True)] * 4 + [("signal_update", True)] * 4


async def test_the_decided_card_is_the_tapped_card_with_its_outcome(start_desk: StartDesk) -> None:
    desk = await start_desk()
    signal = await desk.propose()  # a stop loss: the card shows the risk as % of equity
    await desk.card(signal.id)
    cards = Cards(desk.engine, charts=False)
    submitted = replace(signal, status=SignalStatus.SUBMITTED, decided_by="@ada")

    cold = await cards.decided(submitted)  # nothing drawn here yet: a full render
    tapped = await cards.render(signal)
    statements: list[str] = []
    sync_engine = desk.engine.db.engine.sync_engine
    listen = (sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    event.listen(*listen)
    try:
        warm = await cards.decided(submitted)  # from what was drawn for the tap
    finally:
        event.remove(*listen)
    assert statements == []  # no read while the order is on its way

    assert warm == cold == await cards.render(submitted)  # nothing changed meanwhile
    assert "of equity)" in tapped.text and "of equity)" in warm.text
    assert "📨 Order sent, waiting for the broker" in warm.text and warm.markup is None
