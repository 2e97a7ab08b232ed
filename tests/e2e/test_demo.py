"""``signaldesk demo`` end to end, in-process: sandbox, bot, replay, source; the autopilot
and the interactive demo's show of the always-on duties."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.demo import DEMO_OWNER_ID, run_demo
from bot.sandbox import SandboxServer, SentMessage
from core.config import Settings


async def test_demo_autopilot_decides_cards_and_prints_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the demo database lands here
    settings = Settings(_env_file=None, sandbox_port=0, log_level="WARNING")  # type: ignore[call-arg]

    assert await run_demo(settings, 2) == 0

    out = capsys.readouterr().out
    assert "SignalDesk demo autopilot: 2 cards decided in " in out
    assert "  fills:    " in out
    assert "rejected" in out
    assert ", 0 rate-limited (429)" in out
    assert (tmp_path / "signaldesk-demo.db").exists()


ROOT = str(Path(__file__).resolve().parents[2])


def _heartbeats(sandbox: SandboxServer) -> list[SentMessage]:
    return [m for m in sandbox.messages(DEMO_OWNER_ID) if "💓 SignalDesk alive" in m.plain_text]


class Sandboxes:
    """The sandbox servers ``run_demo`` creates, recorded; ``await first()`` waits for one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.created: list[SandboxServer] = []
        self._event = asyncio.Event()
        outer = self

        class Recorded(SandboxServer):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                outer.created.append(self)
                outer._event.set()

        monkeypatch.setattr("bot.demo.SandboxServer", Recorded)

    async def first(self) -> SandboxServer:
        await asyncio.wait_for(self._event.wait(), 5)
        return self.created[0]


@pytest.fixture
def sandboxes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandboxes:
    """Run in tmp_path (the demo database lands there), recording the demo's sandbox."""
    monkeypatch.chdir(tmp_path)
    return Sandboxes(monkeypatch)


async def _ctrl_c(demo: asyncio.Task[int]) -> None:
    """Stop the interactive demo as Ctrl-C does (aiogram handles SIGINT); it returns 0."""
    if not demo.done():
        os.kill(os.getpid(), signal.SIGINT)
    assert await asyncio.wait_for(demo, 15) == 0


def _source_card(sandbox: SandboxServer) -> SentMessage | None:
    """The demo source's first card that still has its buttons. The demo's own long (also
    from source ``demo``, approved by the demo itself) is skipped: its card may be posted
    with buttons before the edit of its approval arrives."""
    for message in sandbox.messages(DEMO_OWNER_ID):
        text = message.plain_text
        if "Source: demo" in text and "the demo's long" not in text and message.buttons:
            return message
    return None


async def test_demo_first_card_fills_when_approved_and_a_cli_proposal_reaches_the_chat(
    sandboxes: Sandboxes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The card a newcomer is first asked to approve (a BUY of the source, right after the
    demo's own long) fills; then ``signaldesk propose`` with the variables the banner
    prints posts a card in the running demo's chat, as the README says."""
    settings = Settings(_env_file=None, sandbox_port=0, log_level="WARNING", feed_speed=0.2)  # type: ignore[call-arg]
    demo = asyncio.create_task(run_demo(settings, None))
    try:
        sandbox = await sandboxes.first()
        card = await sandbox.wait_for(_source_card, 30, description="the source's first card")
        assert card is not None
        assert "BUY 0.01 BTC/USDT" in card.plain_text
        [(_, approve), _] = card.buttons[0]
        assert approve is not None and approve.startswith("sig:a:")

        sandbox.press_button(DEMO_OWNER_ID, card.message_id, approve, DEMO_OWNER_ID)

        await sandbox.wait_for(
            lambda s: (
                "✅ Filled 0.01 BTC @ " in s.message(DEMO_OWNER_ID, card.message_id).plain_text
            ),
            15,
            description="the first card filled",
        )
        banner = capsys.readouterr().out
        [cli] = [line.split("CLI:", 1)[1].split() for line in banner.splitlines() if "CLI:" in line]
        variables = dict(word.split("=", 1) for word in cli if "=" in word)
        assert variables["DATABASE_URL"] == f"sqlite:///{tmp_path / 'signaldesk-demo.db'}"
        assert cli[len(variables) :] == ["signaldesk", "propose", "BTC/USDT", "buy", "0.01"]
        env = {k: v for k, v in os.environ.items() if not k.isupper() or k in {"PATH", "HOME"}}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from bot.cli import main; main()",
            *cli[len(variables) + 1 :],
            cwd=tmp_path,
            env={**env, **variables, "PYTHONPATH": ROOT},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        signal_id = int(out.decode().split()[0].lstrip("#"))
        posted = await sandbox.wait_for_message(
            DEMO_OWNER_ID, contains=f"signal #{signal_id}", timeout=15
        )
        assert "Source: cli" in posted.plain_text
        assert posted.buttons  # approvable: its reference price is the demo's candle
    finally:
        await _ctrl_c(demo)


async def test_demo_shows_heartbeats_then_the_guard_warns_breaches_and_flattens_its_long(
    sandboxes: Sandboxes, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make demo`` 20 times faster, then Ctrl-C: the demo's own guard settings (warn 3 %,
    max 6 %, flatten), its long bought at start, a heartbeat every 2 s. Alerts overtake the
    routine backlog that 1 message/s pacing builds at this speed."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        sandbox_port=0,
        log_level="WARNING",
        feed_speed=2,  # the demo's 0.1, x20: the crash comes in seconds
        heartbeat_interval=2,
        drawdown_check_interval=1,
    )
    demo = asyncio.create_task(run_demo(settings, None))
    try:
        sandbox = await sandboxes.first()
        flat = await sandbox.wait_for_message(DEMO_OWNER_ID, contains="Flatten results", timeout=60)
        await sandbox.wait_for(lambda s: len(_heartbeats(s)) >= 2, 60, description="2 beats")
    finally:
        await _ctrl_c(demo)

    out = capsys.readouterr().out
    assert "from 2025-10-10 12:00 UTC, 2 candles/s" in out
    assert "the drawdown guard warns at 3%, at 6% it will pause trading and close" in out
    chat = sandbox.messages(DEMO_OWNER_ID)
    texts = [m.plain_text for m in chat]
    assert all(m.disable_notification for m in _heartbeats(sandbox))
    [long] = [m for m in chat if "BUY 0.075 BTC/USDT" in m.plain_text]
    assert "✅ Filled 0.075 BTC @ " in long.plain_text
    assert any(t.startswith("🎬 Demo: SignalDesk bought 0.075 BTC") for t in texts)
    assert any("Source: demo" in t for t in texts)  # the demo source's cards
    [warn] = [i for i, t in enumerate(texts) if "reached the warn level 3%" in t]
    [breach] = [i for i, t in enumerate(texts) if t.startswith("🛑 Drawdown guard:")]
    assert "Action: pause and close every position" in texts[breach]
    assert warn < breach < chat.index(flat)
    assert flat.plain_text.startswith(
        "Flatten results (drawdown limit)\n✅ BTC/USDT: sold 0.075 @ "
    )
    assert flat.plain_text.endswith("The account is flat.")
