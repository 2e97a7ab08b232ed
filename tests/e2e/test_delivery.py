"""The outbox deliverer against Telegram's failure modes: 429, outages, flood limits."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event

from bot.delivery import DeliveryPolicy
from bot.sandbox import RateLimits, SandboxServer
from bot.sandbox.server import WAIT_SECONDS
from core.notify import NoticeKind, Notification, Priority, enqueue
from tests.e2e.conftest import StartDesk
from tests.e2e.support import FAST, GROUP, OWNER, TOKEN

#: Telegram's group limit (20 at once, then 20 a minute) scaled to a test's seconds: 5 at
#: once, then 10 a second. Chats and the whole bot are not limited, so only the group binds.
SCALED_GROUP_LIMITS = RateLimits(
    per_chat_per_second=1e6,
    per_chat_burst=10**6,
    group_per_minute=600,
    group_burst=5,
    global_per_second=1e6,
    global_burst=10**6,
)
#: The deliverer's group pace scaled alike, under the limit as in production: 2 at once
#: (3 under the sandbox's burst: one slow send followed by fast ones still fits), then 5 a
#: second (half the sandbox's refill).
GROUP_PACED = replace(FAST, chat_interval=1e-6, group_per_minute=300, group_burst=2)
#: The same without a group pace.
GROUP_UNPACED = replace(GROUP_PACED, group_per_minute=1e12, group_burst=10**6)


async def test_injected_429_message_arrives_after_retry_after(start_desk: StartDesk) -> None:
    desk = await start_desk()
    earlier = len(desk.sandbox.requests("sendMessage"))  # the start-up heartbeat
    desk.sandbox.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)

    await desk.engine.notifier.notify(Notification(NoticeKind.TEXT, "bought <0.01> BTC & more"))
    message = await desk.sandbox.wait_for_message(OWNER, contains="bought")

    assert message.plain_text == "bought <0.01> BTC & more"  # HTML-escaped on the way
    refused, delivered = desk.sandbox.requests("sendMessage")[earlier:]
    assert refused.error_code == 429 and refused.injected
    assert delivered.ok
    assert delivered.at - refused.at >= 1.0
    await desk.drained()
    row = (await desk.outbox())[-1]
    assert (row.attempts, row.last_error) == (2, "")


async def test_outage_then_outbox_delivers_everything_in_order_alerts_first(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()
    notify = desk.engine.notifier.notify
    earlier = len(desk.sandbox.messages(OWNER))  # the start-up heartbeat
    await desk.sandbox.set_unreachable(True)

    await notify(Notification(NoticeKind.TEXT, "routine 1"))
    await desk.sandbox.wait_for(lambda _: desk.app.deliverer.in_flight is not None)
    signal = await desk.propose()
    await notify(Notification(NoticeKind.TEXT, "routine 2"))
    await notify(Notification(NoticeKind.TEXT, "ALERT: drawdown 6%", priority=Priority.ALERT))
    assert await desk.app.deliverer.pending() == 4
    await desk.sandbox.set_unreachable(False)
    await desk.drained(within=10)

    firsts = [m.plain_text.splitlines()[0] for m in desk.sandbox.messages(OWNER)[earlier:]]
    assert firsts == [
        "routine 1",  # in flight when Telegram went away: retried, never skipped
        "ALERT: drawdown 6%",
        f"🟢 BUY 0.01 BTC/USDT · signal #{signal.id}",
        "routine 2",
    ]
    assert all(row.last_error == "" for row in await desk.outbox())


async def test_permanent_error_is_recorded_and_does_not_block_the_queue(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()
    earlier = len(await desk.outbox())  # the start-up heartbeat
    desk.sandbox.fail_next("sendMessage", 400, "Bad Request: can't parse entities")

    await desk.engine.notifier.notify(Notification(NoticeKind.TEXT, "poisoned"))
    await desk.engine.notifier.notify(Notification(NoticeKind.TEXT, "next one"))
    await desk.sandbox.wait_for_message(OWNER, contains="next one")

    await desk.drained()
    rows = (await desk.outbox())[earlier:]
    assert [(r.text, r.last_error) for r in rows] == [
        ("poisoned", "Bad Request: can't parse entities"),
        ("next one", ""),
    ]
    assert all(r.delivered_at is not None for r in rows)


async def test_production_pacing_meets_flood_control_without_429s(start_desk: StartDesk) -> None:
    """The production pace against a chat that takes a burst of two, then one message a
    second (the Bot API FAQ's pace): four messages queued at once draw no 429, so at least
    the last two waited their turn (the burst's second token absorbs a late send)."""
    sandbox = SandboxServer(
        TOKEN, enforce_rate_limits=True, rate_limits=RateLimits(per_chat_burst=2),
        web_user_id=OWNER,
    )  # fmt: skip
    sandbox.add_user(OWNER, "Ada", "ada")
    await sandbox.start()
    desk = await start_desk(sandbox=sandbox, policy=DeliveryPolicy())
    earlier = len(sandbox.requests("sendMessage"))  # the start-up heartbeat

    for number in range(4):
        await desk.engine.notifier.notify(Notification(NoticeKind.TEXT, f"message {number}"))
    await desk.drained()

    sends = sandbox.requests("sendMessage")[earlier:]
    assert [s.ok for s in sends] == [True] * 4
    assert sandbox.stats.rate_limited == 0


@pytest.mark.parametrize("group", [False, True], ids=["private", "group"])
async def test_each_row_is_looked_up_once(start_desk: StartDesk, group: bool) -> None:
    unpaced = DeliveryPolicy(chat_interval=1e-6, global_per_second=1e6, poll_interval=3600)
    desk = await start_desk(policy=unpaced, group=group)  # a group: its burst is free too
    chat = desk.chat_id
    sent_before: list[int] = []  # messages in the chat at each next-row lookup

    def lookup(_c: object, _cur: object, statement: str, *_: object) -> None:
        if "FROM outbox" in statement and "ORDER BY outbox.priority" in statement:
            sent_before.append(len(desk.sandbox.messages(chat)))

    earlier = len(desk.sandbox.messages(chat))
    event.listen(desk.engine.db.engine.sync_engine, "before_cursor_execute", lookup)
    try:
        async with desk.engine.db.session() as session:
            for n in range(3):
                enqueue(session, Notification(NoticeKind.TEXT, f"row {n}"))
        desk.engine.notifier.queued()
        await desk.sandbox.wait_for_message(chat, contains="row 2")
        await desk.drained()
    finally:
        event.remove(desk.engine.db.engine.sync_engine, "before_cursor_execute", lookup)

    # after the first row is sent, the second and the third are each found by one lookup
    assert [sent_before.count(earlier + n) for n in (1, 2)] == [1, 1]


async def _burst_to_group(start_desk: StartDesk, policy: DeliveryPolicy, rows: int = 20) -> int:
    """Queue ``rows`` texts to a group under :data:`SCALED_GROUP_LIMITS`, wait until all
    are delivered in order; return how many 429s the sandbox answered."""
    sandbox = SandboxServer(
        TOKEN, enforce_rate_limits=True, rate_limits=SCALED_GROUP_LIMITS, web_user_id=OWNER
    )
    sandbox.add_user(OWNER, "Ada", "ada")
    sandbox.add_group(GROUP, "Trading desk", [OWNER])
    await sandbox.start()
    desk = await start_desk(sandbox=sandbox, policy=policy, telegram_chat_id=GROUP)
    earlier = len(sandbox.messages(GROUP))  # the start-up heartbeat

    async with desk.engine.db.session() as session:
        for n in range(rows):
            enqueue(session, Notification(NoticeKind.TEXT, f"row {n}"))
    desk.engine.notifier.queued()
    await desk.drained()

    assert [m.plain_text for m in sandbox.messages(GROUP)[earlier:]] == [
        f"row {n}" for n in range(rows)
    ]
    return sandbox.stats.rate_limited


async def test_a_burst_to_a_group_is_paced_under_the_groups_limit(start_desk: StartDesk) -> None:
    assert await _burst_to_group(start_desk, GROUP_PACED) == 0


async def test_without_the_group_pace_the_same_burst_draws_429s(start_desk: StartDesk) -> None:
    assert await _burst_to_group(start_desk, GROUP_UNPACED) >= 1


async def test_a_stop_finishes_the_message_being_sent_so_a_restart_does_not_send_it_again(
    start_desk: StartDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Telegram has taken the message but the bot has not marked its row delivered yet
    when the bot is told to stop (SIGTERM): the stop lets that row finish, so the next
    start does not send it a second time."""
    desk = await start_desk()
    await desk.drained()
    deliverer = desk.app.deliverer
    send = desk.app.bot.send_message
    taken = asyncio.Event()

    async def send_then_wait_for_the_stop(*args: Any, **kwargs: Any) -> Any:
        message = await send(*args, **kwargs)
        if message.text == "last words":
            taken.set()
            await desk.sandbox.wait_for(lambda _: deliverer.stopping, description="the stop")
        return message

    monkeypatch.setattr(desk.app.bot, "send_message", send_then_wait_for_the_stop)
    await desk.engine.notifier.notify(Notification(NoticeKind.TEXT, "last words"))
    await asyncio.wait_for(taken.wait(), WAIT_SECONDS)
    await desk.stop()

    again = await start_desk(sandbox=desk.sandbox)
    await again.drained()
    assert [m.plain_text for m in desk.sandbox.messages(OWNER)].count("last words") == 1
