"""``signaldesk demo --autopilot N`` end to end, in-process: sandbox, bot, replay, source."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.demo import run_demo
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
