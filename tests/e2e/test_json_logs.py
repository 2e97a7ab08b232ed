"""``LOG_JSON=true``: every line ``python -m bot`` prints (stdout and stderr) is one JSON
object, and no token or password appears in any, also when the Bot API answers 401 and
when the database is down."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from bot.sandbox import SandboxServer
from tests.e2e.support import OWNER
from tests.support.tokens import fake_token

TOKEN = fake_token("SANDBOX", 424242)
REVOKED = fake_token("REVOKED", 424242)
DB_PASSWORD = "s3cret-db-passw0rd"


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.isupper() and not k.startswith("TELEGRAM_")}
    for name in ("DATABASE_URL", "PORT", "LOG_LEVEL", "SENTRY_DSN"):
        env.pop(name, None)
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}",
        TELEGRAM_OWNER_IDS=str(OWNER),
        FEED_SPEED="0",
        HEALTH_PORT="0",
        LOG_JSON="true",
        LOG_LEVEL="DEBUG",
    )
    env.update(values)
    return env


async def _run_bot(
    env: dict[str, str], cwd: Path, until: Callable[[list[str]], bool] | None
) -> list[str]:
    """Run ``python -m bot`` until it exits or, once ``until(lines)`` holds, SIGTERM it;
    returns every line it printed on stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    lines: list[str] = []
    changed = asyncio.Event()

    async def read(stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        async for raw in stream:
            if raw.strip():
                lines.append(raw.decode().rstrip("\n"))
                changed.set()

    readers = [asyncio.create_task(read(process.stdout)), asyncio.create_task(read(process.stderr))]
    try:
        async with asyncio.timeout(90):
            while until is not None and not until(lines) and process.returncode is None:
                changed.clear()
                with suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await changed.wait()
        if until is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            await process.wait()
            await asyncio.gather(*readers)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return lines


def _check(lines: list[str], *secrets: str) -> list[dict[str, object]]:
    assert lines
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not JSON: {line!r}") from None
        for secret in secrets:
            assert secret not in line
            assert ":" not in secret or secret.partition(":")[2] not in line  # a token's key
    return parsed


async def _sandbox() -> SandboxServer:
    sandbox = SandboxServer(TOKEN, web_user_id=OWNER)
    sandbox.add_user(OWNER, "Ada", "ada")
    await sandbox.start()
    return sandbox


async def test_a_running_bot_prints_only_json_lines(tmp_path: Path) -> None:
    sandbox = await _sandbox()
    try:
        env = _env(tmp_path, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE=sandbox.base_url)
        lines = await _run_bot(env, tmp_path, lambda _: len(sandbox.messages(OWNER)) >= 1)
    finally:
        await sandbox.stop()
    events = [line.get("event") for line in _check(lines, TOKEN)]
    assert "bot.started" in events and "bot.stopped" in events
    assert any(line.get("logger", "").startswith("aiogram") for line in _check(lines))


async def test_json_lines_hold_no_token_when_the_bot_api_answers_401(tmp_path: Path) -> None:
    sandbox = await _sandbox()

    def refused(lines: list[str]) -> bool:
        return any("bot.connect_refused" in line for line in lines)

    try:
        env = _env(tmp_path, TELEGRAM_BOT_TOKEN=REVOKED, TELEGRAM_API_BASE=sandbox.base_url)
        lines = await _run_bot(env, tmp_path, refused)
    finally:
        await sandbox.stop()
    events = [line.get("event") for line in _check(lines, REVOKED)]
    assert "bot.connect_refused" in events


async def test_json_lines_hold_no_password_when_the_database_is_down(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://desk:{DB_PASSWORD}@127.0.0.1:{port}/desk"
    env = _env(tmp_path, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE="http://127.0.0.1:9")
    env["DATABASE_URL"] = url
    lines = await _run_bot(env, tmp_path, None)
    parsed = _check(lines, TOKEN, DB_PASSWORD)
    assert [line["event"] for line in parsed if line.get("level") == "error"][-1] == (
        "bot.cannot_start"
    )
