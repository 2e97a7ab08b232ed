"""The install paths the README names, each into a fresh environment outside the checkout.

- A built wheel installed with pip-compatible tooling (uv's ``pip install``, the locked
  versions) into a fresh venv: ``signaldesk migrate`` and ``signaldesk status`` work from
  an unrelated directory (the migrations ship inside the wheel) on SQLite and PostgreSQL.
- Heroku's Python buildpack path, ``uv sync --locked --no-default-groups`` (no extras):
  the Procfile's release command migrates a ``postgres://`` database and ``python -m bot``
  starts polling (pointed at the sandbox Bot API server) and answers the owner.

These tests download from the package registry what uv's cache lacks; where the registry
cannot be reached they are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.sandbox import SandboxServer
from tests.support.tokens import fake_token

ROOT = Path(__file__).resolve().parents[2]
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
POSTGRES_URL = os.environ.get(
    "SIGNALDESK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TOKEN = fake_token("INSTALL", 123456789)
OWNER = 1001

pytestmark = pytest.mark.install


def _run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        text = result.stdout + result.stderr
        if "network" in text.lower() or "failed to fetch" in text.lower():
            pytest.skip(f"the package registry cannot be reached: {text.strip()[-300:]}")
        pytest.fail(f"{' '.join(args)} exited {result.returncode}:\n{text}")
    return result.stdout


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without SignalDesk's settings or the test venv (a new user's shell)."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in {"VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT"}
        and not k.upper().startswith(("TELEGRAM_", "DATABASE_", "BROKER", "SIGNALDESK_"))
    }
    return {**keep, **extra}


@pytest.fixture(scope="module")
def uv() -> str:
    if UV is None:
        pytest.skip("uv is not installed (make installs it into .venv/bin)")
    return UV


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database as a Heroku-style ``postgres://`` URL."""
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a base dependency
        pytest.skip("asyncpg is not installed")
    name = f"sd_install_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=3)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.skip(f"no PostgreSQL server answers at {POSTGRES_URL}: {exc}")
    base = POSTGRES_URL.rsplit("/", 1)[0].replace("postgresql://", "postgres://", 1)
    yield f"{base}/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def wheel_venv(uv: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the built wheel (with the ccxt extra) and nothing of the checkout."""
    work = tmp_path_factory.mktemp("wheel")
    _run([uv, "build", "--wheel", "--out-dir", str(work / "dist")], cwd=ROOT)
    wheel = next((work / "dist").glob("signaldesk-*.whl"))
    requirements = work / "requirements.txt"
    _run(
        [uv, "export", "--frozen", "--no-dev", "--extra", "ccxt", "--no-emit-project",
         "--no-hashes", "--quiet", "--output-file", str(requirements)],
        cwd=ROOT,
    )  # fmt: skip
    venv = work / "venv"
    _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], cwd=work)
    python = str(venv / "bin" / "python")
    _run([uv, "pip", "install", "--quiet", "--python", python, "-r", str(requirements)], cwd=work)
    _run([uv, "pip", "install", "--quiet", "--no-deps", "--python", python, str(wheel)], cwd=work)
    return venv


def test_the_wheel_carries_its_migrations_and_replay_data(wheel_venv: Path) -> None:
    site = next((wheel_venv / "lib").glob("python3*/site-packages"))
    assert (site / "core" / "db" / "migrations" / "env.py").is_file()
    assert sorted(p.name for p in (site / "core" / "db" / "migrations" / "versions").glob("0*.py"))
    assert list((site / "core" / "marketdata" / "data").glob("*.csv.gz"))


def test_installed_wheel_migrates_and_reports_status_on_sqlite_from_any_directory(
    wheel_venv: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    env = _clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.db'}")
    cli = str(wheel_venv / "bin" / "signaldesk")

    assert "latest migration" in _run([cli, "migrate"], cwd=elsewhere, env=env)
    status = _run([cli, "status"], cwd=elsewhere, env=env)

    assert "broker     paper" in status
    assert "10,000.00 USDT" in status


def test_installed_wheel_migrates_and_reports_status_on_postgresql(
    wheel_venv: Path, postgres_database: str, tmp_path: Path
) -> None:
    env = _clean_env(DATABASE_URL=f"{postgres_database}?sslmode=disable")
    cli = str(wheel_venv / "bin" / "signaldesk")

    assert "latest migration" in _run([cli, "migrate"], cwd=tmp_path, env=env)
    assert "broker     paper" in _run([cli, "status"], cwd=tmp_path, env=env)


def _procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


async def test_buildpack_path_release_then_bot_on_postgres_answers_the_owner(
    uv: str, postgres_database: str, tmp_path: Path
) -> None:
    venv = tmp_path / "buildpack-venv"
    env = _clean_env(UV_PROJECT_ENVIRONMENT=str(venv))
    _run([uv, "sync", "--locked", "--no-default-groups", "--quiet"], cwd=ROOT, env=env)
    app_env = _clean_env(
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        DATABASE_URL=postgres_database,
    )
    procfile = _procfile()

    release = await asyncio.to_thread(
        subprocess.run, procfile["release"], shell=True, cwd=tmp_path, env=app_env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert release.returncode == 0, release.stderr

    sandbox = SandboxServer(TOKEN)
    sandbox.add_user(OWNER, "Ada", "ada")
    async with sandbox:
        bot_env = {
            **app_env,
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_OWNER_IDS": str(OWNER),
            "TELEGRAM_API_BASE": sandbox.base_url,
            "STRATEGY": "none",
        }
        worker = await asyncio.create_subprocess_shell(
            procfile["worker"], cwd=tmp_path, env=bot_env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        try:
            await sandbox.wait_for(lambda s: s.waiting_polls > 0, timeout=90)
            sandbox.send_user_message(OWNER, OWNER, "/status")
            reply = await sandbox.wait_for_message(OWNER, contains="Broker", timeout=60)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            _, stderr = await asyncio.wait_for(worker.communicate(), timeout=60)
    assert "paper" in reply.plain_text
    assert TOKEN.split(":")[1] not in stderr.decode()
