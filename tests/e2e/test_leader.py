"""Several processes on one PostgreSQL database: two bots (``python -m bot``) and one
``signaldesk engine``. Exactly one runs the duties (heartbeat, drawdown guard, ...), each
outbox row is sent once, and when the leader is killed (SIGKILL) another process takes the
duties over."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from bot.sandbox import SandboxServer
from core.db.engine import Database, upgrade_schema
from core.db.models import OutboxRow
from tests.e2e.support import OWNER, TOKEN

pytestmark = [pytest.mark.postgres]

HEARTBEAT = "💓 SignalDesk alive"


@dataclass
class Proc:
    """One SignalDesk process and the JSON lines it logged so far."""

    name: str
    process: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    def events(self, event: str, **where: Any) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines
            if line.get("event") == event and all(line.get(k) == v for k, v in where.items())
        ]


async def _spawn(name: str, args: list[str], env: dict[str, str], cwd: Path) -> Proc:
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    proc = Proc(name, process)

    async def read() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            text = raw.decode(errors="replace").strip()
            if text.startswith("{"):
                line = json.loads(text)
                line["seen"] = time.monotonic()
                proc.lines.append(line)

    proc.reader = asyncio.create_task(read())
    return proc


async def _until(sandbox: SandboxServer, condition: Any, seconds: float, what: str) -> None:
    await sandbox.wait_for(lambda _: condition(), seconds, description=what)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_bots_and_an_engine_run_each_duty_once_and_take_over_from_a_killed_leader(
    database_url: str, tmp_path: Path
) -> None:
    await upgrade_schema(database_url)  # the release phase (`signaldesk migrate`)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TELEGRAM_", "DATABASE_", "LOG_", "HEARTBEAT_", "PORT"))
    }
    sandbox = SandboxServer(TOKEN, web_user_id=OWNER)
    sandbox.add_user(OWNER, "Ada", "ada")
    await sandbox.start()
    env.update(
        DATABASE_URL=database_url,
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE=sandbox.base_url,
        TELEGRAM_OWNER_IDS=str(OWNER),
        HEARTBEAT_INTERVAL="2",
        HEALTH_PORT="0",
        FEED_SPEED="0",
        LOG_JSON="true",
        LOG_LEVEL="DEBUG",
    )
    procs: list[Proc] = []
    try:
        first = await _spawn("bot-1", ["-m", "bot"], env, tmp_path)
        procs.append(first)
        await _until(sandbox, lambda: first.events("duties.leader"), 60, "bot-1 leads")
        for name, args in (
            ("bot-2", ["-m", "bot"]),
            ("engine", ["-c", "from bot.cli import main; main()", "engine"]),
        ):
            procs.append(await _spawn(name, args, env, tmp_path))
        others = procs[1:]
        await _until(
            sandbox,
            lambda: all(p.events("duties.follower") for p in others),
            60,
            "the others follow",
        )

        def heartbeats() -> int:
            return sum(HEARTBEAT in m.plain_text for m in sandbox.messages(OWNER))

        await _until(sandbox, lambda: heartbeats() >= 4, 60, "several heartbeat periods")
        first.process.send_signal(signal.SIGKILL)
        await first.process.wait()
        killed_at = time.monotonic()
        await _until(
            sandbox,
            lambda: any(p.events("duties.leader") for p in others),
            10,
            "another process takes the duties within 10 s",
        )
        (second,) = [p for p in others if p.events("duties.leader")]
        (idle,) = [p for p in others if p is not second]
        assert second.events("duties.leader")[0]["seen"] > killed_at  # after the kill, not before
        after = heartbeats()
        await _until(sandbox, lambda: heartbeats() >= after + 2, 60, "heartbeats go on")
        for proc in others:
            proc.process.send_signal(signal.SIGTERM)
        for proc in others:
            assert await asyncio.wait_for(proc.process.wait(), 30) == 0
        for proc in procs:
            assert proc.reader is not None
            await asyncio.wait_for(proc.reader, 10)
    finally:
        for proc in procs:
            if proc.process.returncode is None:
                proc.process.kill()
                await proc.process.wait()
        await sandbox.stop()

    # the duties ran in one process at a time: bot-1 until it died, then the new leader
    for job in ("heartbeat", "drawdown"):
        assert first.events("duties.ran", job=job)
        assert all(line["seen"] < killed_at for line in first.events("duties.ran", job=job))
        assert second.events("duties.ran", job=job)
        assert not idle.events("duties.ran")
        assert not second.events("duties.ran", job=job)[0]["seen"] < killed_at
    ran = sum(len(p.events("duties.ran", job="heartbeat")) for p in procs)

    db = Database(database_url)
    try:
        async with db.session() as session:
            rows = (await session.exec(select(OutboxRow))).all()
    finally:
        await db.close()
    beats = [row for row in rows if row.text.startswith(HEARTBEAT)]
    assert ran - 1 <= len(beats) <= ran  # one row per run (bot-1 may die before logging one)
    # no row sent twice: one sendMessage per delivered row, every one from a live bot
    delivered = [row for row in rows if row.delivered_at is not None and not row.last_error]
    sent = [e for e in sandbox.requests("sendMessage", chat_id=OWNER) if e.status == 200]
    # delivery is at-least-once: the leader killed with SIGKILL may have sent a row it
    # could not mark delivered, and the next process sends that one row again; live
    # processes never send a row twice
    assert len(delivered) <= len(sent) <= len(delivered) + 1
