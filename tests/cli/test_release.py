"""Release hygiene of the command line: ``--version`` and ``signaldesk run`` (the bot)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIGNALDESK = [sys.executable, "-c", "from bot.cli import main; main()"]


def _signaldesk(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in {"PATH", "HOME"}}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [*SIGNALDESK, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version_prints_the_installed_distributions_version(tmp_path: Path) -> None:
    result = _signaldesk(tmp_path, "--version")

    assert result.returncode == 0
    assert result.stdout == f"signaldesk {importlib.metadata.version('signaldesk')}\n"


def test_run_is_the_bot_and_refuses_without_a_token_in_one_line(tmp_path: Path) -> None:
    result = _signaldesk(tmp_path, "run")

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("signaldesk bot: TELEGRAM_BOT_TOKEN is not set")
    assert not (tmp_path / "x.db").exists()  # refused before touching the database
