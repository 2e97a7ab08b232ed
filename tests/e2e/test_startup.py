"""``python -m bot``'s start-up before its event loop runs: the imports' objects frozen out
of the collector's way, the schema checked once, and nothing imported that it does not use."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import core.db.engine
from bot import __main__ as bot_entry
from bot.app import BotApp
from core.config import Settings
from core.db.engine import _at_head, upgrade_schema
from tests.e2e.support import OWNER
from tests.support.tokens import fake_token

ROOT = Path(__file__).parents[2]

Start = Callable[[], dict[str, Any]]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}"


@pytest.fixture
def start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str) -> Start:
    """``main()`` on a fresh SQLite file up to its event loop: ``BotApp.run`` only records
    the collector's state and the app's ``migrate``, which the call returns."""
    for name in list(os.environ):
        if name.lower() in Settings.model_fields:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", fake_token("STARTUP"))
    monkeypatch.setenv("TELEGRAM_API_BASE", "http://127.0.0.1:9")  # never called
    monkeypatch.setenv("TELEGRAM_OWNER_IDS", str(OWNER))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setattr(bot_entry, "configure_logging", lambda *_, **__: None)  # this process's
    seen: dict[str, Any] = {}

    async def run(self: BotApp, *, handle_signals: bool = True) -> None:
        seen.update(frozen=gc.get_freeze_count(), collecting=gc.isenabled(), migrate=self.migrate)

    monkeypatch.setattr(BotApp, "run", run)

    def started() -> dict[str, Any]:
        gc.unfreeze()  # whatever an earlier test froze
        try:
            assert bot_entry.main() == 0
        finally:
            gc.unfreeze()
        return seen

    return started


def test_the_imports_objects_are_frozen_before_the_event_loop_runs(start: Start) -> None:
    seen = start()

    assert seen["frozen"] > 0  # no later collection scans them
    assert seen["collecting"]


def test_a_fresh_database_migrated_by_the_child_is_not_checked_again(
    start: Start, url: str
) -> None:
    seen = start()

    assert seen["migrate"] is False
    assert asyncio.run(_at_head(url))


def test_a_database_at_head_is_not_checked_again(start: Start, url: str) -> None:
    asyncio.run(upgrade_schema(url))

    assert start()["migrate"] is False


def test_after_a_failed_child_the_engine_upgrades_and_reports(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core.db.engine, "_UPGRADE_CHILD", "raise SystemExit(3)")

    assert start()["migrate"] is True


def _engine_probe(tmp_path: Path, url: str, report: str) -> list[str]:
    """The lines a fresh process prints after it built the engine on ``url`` (at head) and
    approved one market signal (``approved: <status>``), then ran ``report`` (Python code)."""
    probe = (
        "import asyncio, sys\n"
        "from decimal import Decimal\n"
        "from core.app import build_engine\n"
        "from core.config import load_settings\n"
        "from core.domain import Side\n"
        "from core.services.signals import Proposal\n"
        "async def start():\n"
        f"    engine = await build_engine(load_settings(database_url={url!r}))\n"
        "    symbol = engine.settings.feed_symbol\n"
        "    proposal = Proposal('probe', symbol, Side.BUY, Decimal('0.01'))\n"
        "    signal = await engine.signals.propose(proposal)\n"
        "    decision = await engine.signals.approve(signal.id, 'owner')\n"
        "    print('approved:', decision.signal.status)\n"
        "    await engine.close()\n"
        "asyncio.run(start())\n" + report
    )
    asyncio.run(upgrade_schema(url))  # as python -m bot's child does (alembic reads TOML)
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}

    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,  # no stray .env
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    return done.stdout.splitlines()


def test_an_engine_without_a_strategies_file_never_imports_the_toml_parser(
    tmp_path: Path, url: str
) -> None:
    report = "print('imported:', *sorted(m for m in ('tomllib',) if m in sys.modules))\n"

    assert _engine_probe(tmp_path, url, report)[-1] == "imported:"


def test_the_engine_never_builds_the_tables_pydantic_validators(tmp_path: Path, url: str) -> None:
    report = (
        "import core.db.models as models\n"
        "tables = [getattr(models, name) for name in models.__all__]\n"
        "built = [t.__name__ for t in tables if type(t.__dict__['__pydantic_validator__'])"
        ".__name__ != 'MockValSer']\n"
        "print('built:', *built)\n"
    )

    assert _engine_probe(tmp_path, url, report)[-2:] == ["approved: FILLED", "built:"]
