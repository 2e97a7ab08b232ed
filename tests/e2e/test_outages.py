"""Telegram misbehaving, seen from the chat: the bot started while the Bot API is down, a
429/500 between a confirmation and the closes, a group upgraded to a supergroup, a bot
blocked for a while, and a flood of strangers ahead of a drawdown alert.

The outage at start-up is short (until getMe has failed twice and the guard has acted,
a few seconds) rather than 60 s: what it proves (the process stays up, the duties run,
the outbox catches up in order) does not depend on its length, and aiogram's backoff
tops out at 5 s, so a longer outage only repeats the same retries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import structlog
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent

from bot.callbacks import ConfirmAction
from bot.delivery import resolve_chat
from bot.sandbox import SandboxServer, SentMessage
from core.notify import NoticeKind, Notification, Priority
from tests.e2e.conftest import StartDesk
from tests.e2e.support import GROUP, OWNER, STRANGER, Desk

#: The crash replay of test_duties with the flatten action: warn at 17:00, max at 21:00.
CRASH = {
    "feed_start": "2025-10-10T12:00:00Z",
    "drawdown_warn_pct": 3,
    "drawdown_max_pct": 6,
    "daily_loss_max_pct": 6,
    "drawdown_action": "flatten",
    "drawdown_check_interval": 1,
}
WARN = "reached the warn level"
MAX = "🛑 Drawdown guard:"
FLAT = "Flatten results (drawdown limit)"
ALIVE = "💓 SignalDesk alive"
EXIT = "🚨 Drawdown flatten ·"  # the closed trade's exit message
SUPERGROUP = -1001234567890


def _kind(message: SentMessage) -> str:
    text = message.plain_text
    markers = ((ALIVE, "heartbeat"), (WARN, "warn"), (MAX, "max"), (FLAT, "flat"), (EXIT, "exit"))
    for marker, kind in markers:
        if marker in text:
            return kind
    return text.splitlines()[0]


async def _buy(desk: Desk, quantity: str = "0.075") -> None:
    signal = await desk.propose(quantity=Decimal(quantity), stop_loss=None, take_profit=None)
    card = await desk.card(signal.id)
    answer = await desk.approve(card)
    assert answer.text == "Approved: order sent"
    await desk.edited(card, "Filled")


async def test_a_bot_started_while_telegram_is_down_guards_flattens_and_catches_up_in_order(
    start_desk: StartDesk, caplog: pytest.LogCaptureFixture
) -> None:
    desk = await start_desk(**CRASH)
    await _buy(desk)
    await desk.drained()
    await desk.stop()
    sandbox = desk.sandbox
    earlier = len(sandbox.messages(OWNER))
    await sandbox.set_unreachable(True)  # Telegram is down when the bot (re)starts

    with structlog.testing.capture_logs() as logs, caplog.at_level("INFO", "aiogram"):
        desk = await _outage_at_start_up(start_desk, sandbox)
    events = [entry["event"] for entry in logs]
    assert events.count("telegram.unreachable") == 1  # one line per change, not a flood
    assert events.count("telegram.reachable") == 1
    assert not [r for r in caplog.records if "Failed to fetch updates" in r.getMessage()]

    kinds = [_kind(m) for m in sandbox.messages(OWNER)[earlier:]]
    # the heartbeat was in flight; then the alerts in order, the flatten's report and the
    # closed trade's exit message
    assert kinds[:3] == ["heartbeat", "warn", "max"]
    assert sorted(kinds[3:]) == ["exit", "flat"]
    [flat] = [m.plain_text for m in sandbox.messages(OWNER)[earlier:] if FLAT in m.plain_text]
    assert "BTC/USDT" in flat and flat.endswith("The account is flat.")
    status = (await desk.say("/status")).plain_text  # commands work again
    assert "Trading: ⏸ paused by drawdown-guard" in status


async def _outage_at_start_up(start_desk: StartDesk, sandbox: SandboxServer) -> Desk:
    earlier = len(sandbox.messages(OWNER))
    desk = await start_desk(sandbox=sandbox, telegram_up=False, **CRASH)
    link = desk.app.telegram
    await sandbox.wait_for(lambda _: link.failures >= 2, 15, description="getMe retried")
    scheduler = desk.app.scheduler
    assert scheduler is not None
    checks: list[JobExecutionEvent] = []

    def checked(event: JobExecutionEvent) -> None:
        if event.job_id == "drawdown":
            checks.append(event)

    scheduler.add_listener(checked, EVENT_JOB_EXECUTED)
    for _ in range(9):  # 12:00 -> 21:00, each candle seen by a run of the guard's own job
        desk.engine.feed.step()
        stepped = datetime.now(UTC)

        def checked_since(_: object, since: datetime = stepped) -> bool:
            return any(event.scheduled_run_time >= since for event in checks)

        await sandbox.wait_for(checked_since, 15, description="a check after the step")

    # the scheduled guard acted without Telegram, and the process is still up
    operator = await desk.engine.trading.operator_status()
    assert operator.paused and operator.breach_level == "max"
    assert await desk.engine.trading.positions() == []  # flattened
    assert not desk.task.done()
    assert link.reachable is False and link.last_error
    assert len(sandbox.messages(OWNER)) == earlier
    assert await desk.app.deliverer.pending() >= 4

    await sandbox.set_unreachable(False)
    await sandbox.wait_for(lambda s: s.waiting_polls > 0, 15, description="polling")
    await desk.drained(within=15)
    assert link.reachable is True
    return desk


@pytest.mark.parametrize(
    ("code", "description", "retry_after"),
    [(429, "Too Many Requests: retry after 5", 5), (500, "Internal Server Error", None)],
)
async def test_a_telegram_error_on_the_closing_edit_does_not_stop_a_confirmed_closeall(
    start_desk: StartDesk, code: int, description: str, retry_after: int | None
) -> None:
    desk = await start_desk()
    await _buy(desk, "0.01")
    await desk.drained()  # nothing queued, so the bot's next message is the question
    prompt = await desk.say("/closeall")
    desk.sandbox.fail_next("editMessageText", code, description, retry_after=retry_after)

    first = desk.confirm(prompt, ConfirmAction.CLOSE_ALL)

    report = await desk.sandbox.wait_for_message(OWNER, contains="Close results")
    assert "✅ BTC/USDT: sold 0.01 @ " in report.plain_text
    assert await desk.engine.trading.positions() == []
    assert (await desk.answer(first)).text == "Closing…"
    [edit] = [r for r in desk.sandbox.requests("editMessageText") if r.injected]
    assert edit.error_code == code  # the cosmetic edit failed
    again = await desk.answer(desk.confirm(prompt, ConfirmAction.CLOSE_ALL))
    assert again.text == "Already confirmed"
    await desk.drained()
    assert sum("Close results" in m.plain_text for m in desk.sandbox.messages(OWNER)) == 1


async def test_a_group_upgraded_to_a_supergroup_loses_no_message_also_after_a_restart(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(group=True)
    desk.sandbox.migrate_group(GROUP, SUPERGROUP)
    notify = desk.engine.notifier.notify

    for number in range(4):
        await notify(Notification(NoticeKind.TEXT, f"routine {number}"))
    signal = await desk.propose()
    await notify(Notification(NoticeKind.TEXT, "alert", priority=Priority.ALERT))
    for number in range(4, 7):
        await notify(Notification(NoticeKind.TEXT, f"routine {number}"))
    await desk.drained()

    firsts = [m.plain_text.splitlines()[0] for m in desk.sandbox.messages(SUPERGROUP)]
    assert len(firsts) == 9
    assert set(firsts) == {f"routine {n}" for n in range(7)} | {
        "alert",
        f"🟢 BUY 0.01 BTC/USDT · signal #{signal.id}",
    }
    assert [f for f in firsts if f.startswith("routine")] == [f"routine {n}" for n in range(7)]
    assert all(row.last_error == "" for row in await desk.outbox())
    assert desk.app.deliverer.chat_id == SUPERGROUP
    assert await resolve_chat(desk.engine.db, GROUP) == SUPERGROUP
    card = await desk.card(signal.id)  # the card works in its new home
    answer = await desk.approve(card)
    assert answer.text == "Approved: order sent"
    await desk.edited(card, "Filled")
    await desk.drained()
    beat = await desk.say("/heartbeat", chat=SUPERGROUP)  # the card chat: the outbox's only
    await desk.drained()
    assert [m.plain_text for m in desk.sandbox.messages(SUPERGROUP)].count(beat.plain_text) == 1

    await desk.stop()
    refused = len(_migrate_errors(desk))
    desk = await start_desk(group=True, sandbox=desk.sandbox)  # settings still say GROUP
    assert desk.app.deliverer.chat_id == SUPERGROUP
    await notify_and_see(desk, "after the restart")
    assert len(_migrate_errors(desk)) == refused  # the alias was used from the start


def _migrate_errors(desk: Desk) -> list[object]:
    return [r for r in desk.sandbox.requests() if "upgraded" in (r.description or "")]


async def notify_and_see(desk: Desk, text: str) -> None:
    await desk.engine.notifier.notify(Notification(NoticeKind.TEXT, text))
    await desk.sandbox.wait_for_message(SUPERGROUP, contains=text)


async def test_a_blocked_then_unblocked_bot_delivers_every_message_in_order(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()
    earlier = len(desk.sandbox.messages(OWNER))
    desk.sandbox.set_blocked(OWNER)
    notify = desk.engine.notifier.notify

    await notify(Notification(NoticeKind.TEXT, "routine 0"))
    await desk.sandbox.wait_for(
        lambda _: desk.app.deliverer.in_flight is not None, description="a send in flight"
    )
    for number in range(1, 7):
        await notify(Notification(NoticeKind.TEXT, f"routine {number}"))
    await notify(Notification(NoticeKind.TEXT, "alert", priority=Priority.ALERT))
    await desk.sandbox.wait_for(
        lambda s: len([r for r in s.requests("sendMessage") if r.error_code == 403]) >= 3,
        description="the blocked chat refused three times",
    )
    rows = await desk.outbox()
    assert sum(row.delivered_at is None for row in rows) == 8  # kept, none dropped
    assert rows[-8].last_error == "Forbidden: bot was blocked by the user"
    desk.sandbox.set_blocked(OWNER, blocked=False)
    await desk.drained(within=10)

    firsts = [m.plain_text for m in desk.sandbox.messages(OWNER)[earlier:]]
    assert firsts == ["routine 0", "alert", *(f"routine {n}" for n in range(1, 7))]
    assert all(row.last_error == "" for row in await desk.outbox())


async def test_sixty_strangers_then_a_drawdown_alert_the_alert_goes_first_and_one_notice_last(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(**{**CRASH, "drawdown_action": "pause"})
    await _buy(desk)
    await desk.drained()
    earlier = len(desk.sandbox.messages(OWNER))
    strangers = range(3000, 3060)
    for user in strangers:
        desk.sandbox.add_user(user, f"Stranger{user}", f"s{user}")
        desk.sandbox.send_user_message(user, user, "/closeall")
    await desk.sandbox.wait_for(
        lambda s: all(s.messages(u) for u in strangers), 15, description="60 refusals"
    )
    assert {m.plain_text for u in strangers for m in desk.sandbox.messages(u)} == {"Not allowed"}

    # the deliverer is busy (a message in flight while Telegram is away) when the period
    # ends, and a card and the drawdown alerts are queued after the notice
    await desk.sandbox.set_unreachable(True)
    await desk.engine.notifier.notify(Notification(NoticeKind.TEXT, "in flight"))
    await desk.sandbox.wait_for(
        lambda _: desk.app.deliverer.in_flight is not None, description="a send in flight"
    )
    await desk.end_notice_period(60)
    idea = await desk.propose(quantity=Decimal("0.01"), stop_loss=None, take_profit=None)
    for _ in range(9):
        desk.engine.feed.step()
        await desk.engine.risk.check()
    await desk.sandbox.set_unreachable(False)
    await desk.drained(within=15)

    new = desk.sandbox.messages(OWNER)[earlier:]
    kinds = [
        "card" if f"signal #{idea.id}" in m.plain_text
        else "notice" if m.plain_text.startswith("🚫")
        else _kind(m)
        for m in new
    ]  # fmt: skip
    assert kinds == ["in flight", "warn", "max", "card", "notice"]
    lines = new[-1].plain_text.splitlines()
    assert lines[0] == "🚫 60 strangers tried 60 times; nothing was done:"
    assert len(lines) == 12 and lines[-1] == "… and 50 more"
    assert lines[1] == "Stranger3000 @s3000 (id 3000) in chat 3000: 1×, last sent /closeall"
    assert len(await desk.engine.trading.positions()) == 1  # strangers closed nothing


async def test_when_the_notice_period_ends_its_timer_queues_the_notice(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()
    desk.app.owner_only.notice_every = 0.2

    assert (await desk.say("/positions", user=STRANGER)).plain_text == "Not allowed"

    notice = await desk.sandbox.wait_for_message(OWNER, contains="🚫")
    assert notice.plain_text == (
        f"🚫 Refused Mallory @mallory (id {STRANGER}) in chat {STRANGER}: sent /positions. "
        "Nothing was done."
    )
