"""``signaldesk demo`` end to end, in-process: sandbox, bot, replay, source; the autopilot
and the interactive demo's show of the always-on duties."""

from __future__ import annotations

import asyncio
import os
import signal
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


def _heartbeats(sandbox: SandboxServer) -> list[SentMessage]:
    return [m for m in sandbox.messages(DEMO_OWNER_ID) if "💓 SignalDesk alive" in m.plain_text]


async def test_demo_shows_heartbeats_then_the_guard_warns_breaches_and_flattens_its_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make demo`` 20 times faster, then Ctrl-C: the demo's own guard settings (warn 3 %,
    max 6 %, flatten), its long bought at start, a heartbeat every 2 s. Alerts overtake the
    routine backlog that 1 message/s pacing builds at this speed."""
    monkeypatch.chdir(tmp_path)
    sandboxes: list[SandboxServer] = []
    created = asyncio.Event()

    class Recorded(SandboxServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            sandboxes.append(self)
            created.set()

    monkeypatch.setattr("bot.demo.SandboxServer", Recorded)
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
        await asyncio.wait_for(created.wait(), 5)
        sandbox = sandboxes[0]
        flat = await sandbox.wait_for_message(
            DEMO_OWNER_ID, contains="Flatten results:", timeout=20
        )
        await sandbox.wait_for(lambda s: len(_heartbeats(s)) >= 2, 15, description="2 beats")
    finally:
        if not demo.done():
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as aiogram handles it
    assert await asyncio.wait_for(demo, 15) == 0

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
    assert flat.plain_text.startswith("Flatten results:\nBTC/USDT: filled 0.075 at ")
    assert flat.plain_text.endswith("The account is flat.")
