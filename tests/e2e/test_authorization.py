"""Deny by default: strangers change nothing, stale commands do not run, the bot does not
start without a token or owners."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.__main__ import main as bot_main
from bot.callbacks import CardAction
from core.domain import SignalStatus
from tests.e2e.conftest import StartDesk
from tests.e2e.support import GROUP, OWNER, STRANGER

ROOT = Path(__file__).parents[2]


async def test_strangers_approve_in_shared_group_changes_nothing_and_owners_are_told(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(group=True)
    signal = await desk.propose()
    card = await desk.card(signal.id)
    assert card.chat_id == GROUP

    answer = await desk.answer(desk.tap(card, CardAction.APPROVE, user=STRANGER))

    assert answer.text == "Not allowed"
    await desk.end_notice_period(1)
    notice = await desk.sandbox.wait_for_message(GROUP, contains="Refused Mallory @mallory")
    assert f"(id {STRANGER})" in notice.plain_text
    assert "pressed a button (sig:a:" in notice.plain_text
    assert (await desk.engine.signals.get(signal.id)).status is SignalStatus.PROPOSED
    assert await desk.orders_for(signal.id) == 0
    assert desk.sandbox.message(GROUP, card.message_id).buttons == card.buttons
    # the owner's tap on the same card still works
    owner_answer = await desk.answer(desk.tap(card, CardAction.APPROVE, user=OWNER))
    assert owner_answer.text == "Approved: order sent"
    await desk.edited(card, "Filled")


async def test_strangers_closeall_in_group_does_nothing_and_alerts_owners_once(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(group=True)
    signal = await desk.propose()
    await desk.approve(await desk.card(signal.id))
    await desk.drained()
    before = len(desk.sandbox.messages(GROUP))

    desk.sandbox.send_user_message(GROUP, STRANGER, "/closeall")
    desk.sandbox.send_user_message(GROUP, STRANGER, "/resume")
    desk.sandbox.send_user_message(GROUP, STRANGER, "just chatting")
    await desk.say("/help", chat=GROUP)  # processed after the stranger's messages
    await desk.end_notice_period(2)
    await desk.drained()

    new = desk.sandbox.messages(GROUP)[before:]
    assert [m.plain_text for m in new if m.plain_text.startswith("🚫")] == [
        "🚫 1 stranger tried 2 times; nothing was done:\n"
        f"Mallory @mallory (id {STRANGER}) in chat {GROUP}: 2×, last sent /resume"
    ]  # one notice per period; chatter is not an attempt
    assert not any(m.buttons for m in new)  # no confirmation was offered
    assert len(await desk.engine.trading.positions()) == 1


async def test_strangers_private_command_gets_a_short_refusal(start_desk: StartDesk) -> None:
    desk = await start_desk()

    reply = await desk.say("/positions", user=STRANGER)

    assert reply.plain_text == "Not allowed"
    await desk.end_notice_period(1)
    await desk.sandbox.wait_for_message(OWNER, contains="Refused Mallory")


async def test_commands_sent_while_down_are_skipped_and_owner_told_once(
    start_desk: StartDesk,
) -> None:
    desk = await start_desk(command_max_age_seconds=60)
    old = datetime.now(UTC) - timedelta(minutes=5)

    desk.sandbox.send_user_message(OWNER, OWNER, "/pause stale", date=old)
    desk.sandbox.send_user_message(OWNER, OWNER, "/closeall", date=old)
    fresh = await desk.say("/status")

    assert "Trading: ▶️ active" in fresh.plain_text
    notice = await desk.sandbox.wait_for_message(OWNER, contains="Skipped 2 commands")
    assert notice.plain_text == (
        "Skipped 2 commands sent while the bot was offline (older than 60 s): /pause, "
        "/closeall. Send again what you still want."
    )
    await desk.drained()
    assert not (await desk.engine.trading.operator_status()).paused
    assert sum("Skipped" in m.plain_text for m in desk.sandbox.messages(OWNER)) == 1


def _run_bot(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TELEGRAM_")}
    return subprocess.run(
        [sys.executable, "-m", "bot"],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_python_m_bot_without_token_refuses_and_points_to_make_demo(tmp_path: Path) -> None:
    result = _run_bot({"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "TELEGRAM_BOT_TOKEN is not set" in lines[0]
    assert "make demo" in lines[0]


def test_bot_main_with_token_but_no_owners_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("TELEGRAM_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "1:real-looking-" + "x" * 22)  # the real shape

    assert bot_main() == 2

    out = capsys.readouterr()
    assert out.err.startswith("signaldesk bot: TELEGRAM_OWNER_IDS is not set")
    assert out.err.count("\n") == 1
    assert "real-looking" not in out.err + out.out
