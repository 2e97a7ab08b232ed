"""The always-on duties seen from the chat: heartbeats on schedule and on /heartbeat,
/drawdown, the drawdown guard riding the real October 2025 crash (alerts once each, ahead of
routine messages; the pause; a restart; the owner-only, confirmed /resume) and a webhook
alert turned into a card.

The guard tests open a long of 0.075 BTC (about 91 % of the 10,000 USDT paper account) at
the 2025-10-10 12:00 UTC candle and replay the next hours, checking after each candle as
the scheduler does. With warn 3 %, max 6 % the drawdown reaches 3.09 % at the 17:00 candle
(5 candles later) and 6.22 % at 21:00 (9 candles later): the demo's settings.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
from datetime import UTC, datetime
from decimal import Decimal

import aiohttp
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent

from bot.callbacks import CardAction, ConfirmAction, SignalCallback
from bot.sandbox import SandboxServer, SentMessage
from core.domain import SignalStatus
from tests.e2e.conftest import StartDesk
from tests.e2e.support import GROUP, OWNER, STRANGER, Desk
from tests.e2e.test_forged_input import forge
from tests.support.duties import ping_server

#: The demo's guard settings on a replay that starts hours before the crash; checks every
#: second beside the test's own.
CRASH = {
    "feed_start": "2025-10-10T12:00:00Z",
    "drawdown_warn_pct": 3,
    "drawdown_max_pct": 6,
    "daily_loss_max_pct": 6,
    "drawdown_action": "pause",
    "drawdown_check_interval": 1,
}
WARN = "reached the warn level"
MAX = "🛑 Drawdown guard:"
ALIVE = "💓 SignalDesk alive"


def _heartbeats(sandbox: SandboxServer, chat: int) -> list[SentMessage]:
    return [m for m in sandbox.messages(chat) if m.plain_text.startswith(ALIVE)]


def _count(sandbox: SandboxServer, chat: int, text: str) -> int:
    return sum(text in m.plain_text for m in sandbox.messages(chat))


async def _buy_before_the_crash(desk: Desk) -> None:
    """The owner approves a long of 0.075 BTC at the 12:00 candle (close 121,597.21)."""
    signal = await desk.propose(quantity=Decimal("0.075"), stop_loss=None, take_profit=None)
    answer = await desk.approve(await desk.card(signal.id))
    assert answer.text == "Approved: order sent"
    await desk.edited(await desk.card(signal.id), "Filled 0.075 BTC @ 121,621.53 (fee 9.12 USDT)")


async def _ride_the_crash(desk: Desk, candles: int = 9) -> None:
    """Replay ``candles`` hourly candles, one drawdown check after each."""
    for _ in range(candles):
        desk.engine.feed.step()
        await desk.engine.risk.check()


async def test_heartbeats_are_posted_silently_every_interval_and_ping_the_monitor(
    start_desk: StartDesk,
) -> None:
    async with ping_server() as monitor:
        desk = await start_desk(heartbeat_interval=1, heartbeat_ping_url=monitor.url)
        scheduler = desk.app.scheduler
        assert scheduler is not None
        runs: list[datetime] = []  # the scheduler's own run times: the schedule, not the load

        def ran(event: JobExecutionEvent) -> None:
            if event.job_id == "heartbeat":
                runs.append(event.scheduled_run_time)

        scheduler.add_listener(ran, EVENT_JOB_EXECUTED)
        await desk.sandbox.wait_for(
            lambda s: len(runs) >= 3 and len(_heartbeats(s, OWNER)) >= 4,
            30,
            description="3 scheduled heartbeats after the start-up one, posted",
        )

    beats = _heartbeats(desk.sandbox, OWNER)
    assert all(m.disable_notification for m in beats)  # silent: no sound, no buzz
    lines = beats[-1].plain_text.splitlines()
    assert lines[0] == f"{ALIVE}, up 0m"
    assert re.fullmatch(r"Broker paper: ok, \d+ ms", lines[1])
    assert "Pending signals: 0" in lines
    # HEARTBEAT_INTERVAL=1: every run is due a whole number of seconds after the last (a
    # loaded machine may coalesce runs it missed into one, never run them closer)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(runs)]
    assert all(gap >= 1 and gap == int(gap) for gap in gaps), gaps
    assert len(monitor.hits) >= 3
    assert set(monitor.hits) == {"/ping/token-5f1e"}


async def test_heartbeat_command_posts_one_now_and_status_says_when(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk()  # HEARTBEAT_INTERVAL 3600: only the start-up one so far
    start_up = desk.engine.heartbeat.last_beat_at
    assert start_up is not None

    reply = await desk.say("/heartbeat")

    assert reply.plain_text.startswith(f"{ALIVE}, up 0m\nBroker paper: ok, ")
    assert reply.disable_notification
    assert len(_heartbeats(desk.sandbox, OWNER)) == 2  # the card chat: one message, no echo
    last = desk.engine.heartbeat.last_beat_at
    assert last is not None and last > start_up
    status = (await desk.say("/status")).plain_text
    expected = rf"Last heartbeat: {last:%Y-%m-%d %H:%M:%S} UTC \(\d+ s ago; every 1 h\)"
    assert re.search(expected, status), status


async def test_heartbeat_asked_in_private_while_cards_go_to_a_group_answers_in_both(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(group=True)

    reply = await desk.say("/heartbeat", chat=OWNER)

    assert reply.plain_text.startswith(f"{ALIVE}, up 0m")
    assert reply.disable_notification
    await desk.sandbox.wait_for(lambda s: len(_heartbeats(s, GROUP)) == 2, 5)


async def test_drawdown_shows_equity_peak_daily_loss_limits_and_action(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(**CRASH)
    await _buy_before_the_crash(desk)
    await _ride_the_crash(desk, 5)
    await desk.sandbox.wait_for_message(OWNER, contains=WARN)

    lines = (await desk.say("/drawdown")).plain_text.splitlines()

    today = datetime.now(UTC).date().isoformat()
    assert lines[:5] == [
        "Drawdown guard",
        "Equity: 9,691.05 USDT",
        "Drawdown: 3.09% from the peak 10,000.00 USDT (warn 3%, re-armed below 2%; max 6%)",
        f"Daily loss: 3.09% from 10,000.00 USDT at the start of {today} UTC (max 6%)",
        "At the max level: pause trading",
    ]
    assert lines[5].startswith(f"Guard: ⚠️ warn level reached since {today} ")
    assert lines[6:] == ["Trading: ▶️ active"]


async def test_a_long_through_the_october_crash_alerts_warn_then_max_once_each_ahead_of_routine_and_pauses(  # noqa: E501
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(**CRASH)
    await _buy_before_the_crash(desk)
    await desk.drained()
    earlier = len(desk.sandbox.messages(OWNER))
    await desk.sandbox.set_unreachable(True)  # Telegram is away while BTC falls
    await desk.engine.heartbeat.beat()  # routine, and in flight: retried until it goes
    await desk.sandbox.wait_for(lambda _: desk.app.deliverer.in_flight is not None)
    idea = await desk.propose(quantity=Decimal("0.01"), stop_loss=None, take_profit=None)

    await _ride_the_crash(desk)

    # the action did not wait for Telegram
    operator = await desk.engine.trading.operator_status()
    assert operator.paused and operator.breach_level == "max"
    assert operator.paused_by == "drawdown-guard"
    assert len(desk.sandbox.messages(OWNER)) == earlier
    await desk.sandbox.set_unreachable(False)
    await desk.drained(within=10)
    await _ride_the_crash(desk, 3)  # further candles and checks: the breach is not news
    ran: list[str] = []  # and the scheduler's own checks
    assert desk.app.scheduler is not None
    desk.app.scheduler.add_listener(lambda e: ran.append(e.job_id), EVENT_JOB_EXECUTED)
    await desk.sandbox.wait_for(lambda _: ran.count("drawdown") >= 2, 10)
    await desk.drained()

    new = desk.sandbox.messages(OWNER)[earlier:]
    kinds = [
        "heartbeat" if ALIVE in m.plain_text
        else "warn" if WARN in m.plain_text
        else "max" if MAX in m.plain_text
        else "card" if f"signal #{idea.id}" in m.plain_text
        else m.plain_text
        for m in new
    ]  # fmt: skip
    assert kinds == ["heartbeat", "warn", "max", "card"]
    warn, breach = new[1], new[2]
    assert warn.plain_text.startswith(
        "⚠️ Drawdown 3.09% reached the warn level 3%. Equity 9,691.05 USDT, peak 10,000.00 USDT"
    )
    assert breach.plain_text.startswith(
        f"{MAX} drawdown 6.22% reached the max 6%. Equity 9,378.15 USDT, peak 10,000.00 USDT"
    )
    assert "Action: pause trading. Approvals are blocked until an owner resumes" in (
        breach.plain_text
    )
    assert not warn.disable_notification and not breach.disable_notification  # they buzz
    assert [p.symbol for p in await desk.engine.trading.positions()] == ["BTC/USDT"]  # paused
    # the card is posted while the breach stands: it says so and takes no approval
    assert "🛑 Drawdown breach — approvals off until /resume" in new[3].plain_text
    assert [[text for text, _ in row] for row in new[3].buttons] == [["❌ Reject"]]
    stale = SignalCallback(action=CardAction.APPROVE, signal_id=idea.id, version=0).pack()
    answer = await desk.answer(forge(desk, OWNER, new[3].message_id, stale))
    assert answer.text is not None and answer.text.startswith("Blocked: ")
    assert await desk.orders_for(idea.id) == 0


async def test_after_a_restart_the_breach_and_pause_remain_and_only_an_owner_resumes_with_confirmation(  # noqa: E501
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(group=True, **CRASH)
    await _buy_before_the_crash(desk)
    await _ride_the_crash(desk)
    await desk.sandbox.wait_for_message(GROUP, contains=MAX)
    await desk.drained()
    await desk.stop()

    desk = await start_desk(group=True, sandbox=desk.sandbox, **CRASH)  # same database
    desk.engine.feed.step(9)  # this replay starts at 12:00 again: back to 21:00
    await desk.engine.risk.check()

    start_up = _heartbeats(desk.sandbox, GROUP)[-1].plain_text
    assert "guard MAX BREACHED, paused" in start_up
    status = (await desk.say("/status", chat=GROUP)).plain_text
    assert "· ⛔ max level breached" in status
    assert "Trading: ⏸ paused by drawdown-guard: drawdown guard: drawdown 6.22% reached" in status
    drawdown = (await desk.say("/drawdown", chat=GROUP)).plain_text
    assert "Guard: ⛔ max level breached since " in drawdown
    assert _count(desk.sandbox, GROUP, MAX) == 1 and _count(desk.sandbox, GROUP, WARN) == 1

    # a stranger in the group: /resume does nothing, and neither does the owner's button
    desk.sandbox.send_user_message(GROUP, STRANGER, "/resume")
    await desk.end_notice_period(1)
    notice = await desk.sandbox.wait_for_message(GROUP, contains="Refused Mallory")
    assert notice.plain_text.endswith(": sent /resume. Nothing was done.")
    prompt = await desk.say("/resume", chat=GROUP)
    assert prompt.plain_text.startswith("The max drawdown level was breached (drawdown guard:")
    assert [text for text, _ in prompt.buttons[0]] == ["✅ Resume", "✖️ Cancel"]
    assert (await desk.engine.trading.operator_status()).paused  # asking changes nothing
    refused = await desk.answer(desk.confirm(prompt, ConfirmAction.RESUME, user=STRANGER))
    assert refused.text == "Not allowed"
    assert (await desk.engine.trading.operator_status()).breach_level == "max"

    resumed = await desk.answer(desk.confirm(prompt, ConfirmAction.RESUME))

    assert resumed.text == "Resuming"
    report = await desk.sandbox.wait_for_message(GROUP, contains="Resumed")
    assert report.plain_text == "▶️ Resumed. Approved signals execute again."
    assert await desk.edited(prompt, "⏳ Resuming, confirmed by @ada")
    operator = await desk.engine.trading.operator_status()
    assert not operator.paused and operator.breach_level == ""
    after = (await desk.say("/drawdown", chat=GROUP)).plain_text.splitlines()
    assert after[1] == "Equity: 9,378.15 USDT"
    assert after[2].startswith("Drawdown: 0.00% from the peak 9,378.15 USDT")  # re-armed
    assert after[-2:] == ["Guard: ✅ within limits", "Trading: ▶️ active"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_tradingview_alert_on_the_webhook_becomes_a_card_in_the_chat(
    start_desk: StartDesk,
) -> None:
    port = _free_port()
    desk = await start_desk(port=port, webhook_secret="tv-5ecret")  # the bot serves $PORT
    alert = {
        "secret": "tv-5ecret",
        "symbol": "BTC/USDT",
        "side": "BUY",
        "quantity": "0.01",
        "stop_loss": 112000,
        "take_profit": "116000",
        "note": "TV: SMA cross on 1h",
    }

    async with aiohttp.ClientSession() as http:
        # TradingView posts the alert message as text/plain
        async with http.post(f"http://127.0.0.1:{port}/webhook", data=json.dumps(alert)) as r:
            assert r.status == 201, await r.text()
            created = await r.json()
        async with http.get(f"http://127.0.0.1:{port}/healthz") as health:
            assert health.status == 200

    card = await desk.card(created["signal_id"])
    lines = card.plain_text.splitlines()
    assert lines[0] == f"🟢 BUY 0.01 BTC/USDT · signal #{created['signal_id']}"
    assert lines[2].startswith("SL 112,000.00 (") and " · TP 116,000.00 (" in lines[2]
    assert "Source: webhook ★ no track record yet" in lines
    assert "Note: TV: SMA cross on 1h" in lines
    assert [text for text, _ in card.buttons[0]] == ["✅ Approve", "❌ Reject"]
    answer = await desk.approve(card)
    assert answer.text == "Approved: order sent"
    await desk.edited(card, "Filled 0.01 BTC @ ")
    signal = await desk.engine.signals.get(created["signal_id"])
    assert (signal.source, signal.status) == ("webhook", SignalStatus.FILLED)
