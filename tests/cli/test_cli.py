"""The ``signaldesk`` command line, run as real processes on a real SQLite file."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

SIGNALDESK = [sys.executable, "-c", "from bot.cli import main; main()"]


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Run ``signaldesk ARGS`` in a fresh process on tmp_path/cli.db with a frozen replay
    (``python=True``: ARGS are arguments to the Python interpreter instead)."""
    base = {k: v for k, v in os.environ.items() if not k.isupper() or k in {"PATH", "HOME"}}
    base.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}",
        FEED_SPEED="0",
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )

    def run(
        *args: str, env: dict[str, str] | None = None, python: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args] if python else [*SIGNALDESK, *args],
            cwd=tmp_path,
            env={**base, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


def _rows(db: Path, table: str) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except sqlite3.OperationalError:  # no schema yet
            return 0


def test_propose_list_approve_and_see_the_position(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proposed = run("propose", "BTC/USDT", "buy", "0.01", "--sl", "110000", "--note", "cli test")
    assert proposed.returncode == 0, proposed.stderr
    assert proposed.stdout.startswith("#1    PROPOSED  buy  0.01 BTC/USDT market")

    listed = run("signals")
    assert "#1    PROPOSED" in listed.stdout and "sl 110,000.00" in listed.stdout

    approved = run("approve", "1")
    assert approved.returncode == 0, approved.stderr
    assert "#1    FILLED" in approved.stdout
    # close of the first real candle 113,666.68 + 2 bps of half-spread and slippage
    assert "filled 0.01 BTC/USDT @ 113,689.42 (fee 1.13689420 USDT)" in approved.stdout

    positions = run("positions")
    assert positions.stdout.startswith("BTC/USDT   long  0.01 entry 113,689.42")


def test_a_new_process_sees_the_signals_positions_and_audit_of_the_previous_one(run) -> None:  # type: ignore[no-untyped-def]
    assert run("propose", "BTC/USDT", "buy", "0.02").returncode == 0
    assert run("approve", "1").returncode == 0
    assert run("propose", "BTC/USDT", "sell", "0.01").returncode == 0
    assert run("reject", "2", "--reason", "too early").returncode == 0

    listed = run("signals", "--all").stdout.splitlines()
    assert [line.split()[:2] for line in listed] == [["#2", "REJECTED"], ["#1", "FILLED"]]
    assert "BTC/USDT   long  0.02" in run("positions").stdout
    trail = run("history").stdout.splitlines()
    assert [line.split()[4] for line in trail] == [
        "rejected",
        "propose",
        "filled",
        "submitted",
        "approved",
        "propose",
    ]
    assert "(too early)" in trail[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("propose", "BTC/USDT", "sideways", "-1"), "'sideways' is not one of 'buy', 'sell'"),
        (("propose", "BTC/USDT", "buy", "-1"), "quantity must be a positive number, got -1"),
        (("propose", "BTC/USDT", "buy", "lots"), "quantity must be a number, got lots"),
        (("propose", "BTC/USDT", "buy", "0.01", "--sl", "0"), "sl must be a positive number"),
        (("propose", "DOGE/USDT", "buy", "1"), "unknown symbol DOGE/USDT"),
        # the gate's size rules at proposal (paper, 10,000 USDT; limits 1 BTC, 10,000 USDT)
        (("propose", "BTC/USDT", "buy", "1000"), "quantity 1000 over the limit 1"),
        (("propose", "BTC/USDT", "buy", "0.1"), "notional 11366.67 over the limit 10000.00"),
        (("approve", "42"), "no signal with id 42"),
        # hostile inputs that used to end in a 120-line traceback or a rounded value
        (("propose", "BTC/USDT", "buy", "1e309"), "quantity must be below 10^18, got 1e309"),
        (("propose", "BTC/USDT", "buy", "9" * 5000), "quantity must be a number of at most 80"),
        (("propose", "BTC/USDT", "buy", "1e-30"), "quantity must have at most 18 decimal"),
        (("propose", "BTC/USDT", "buy", "NaN"), "quantity must be a finite number"),
        (("propose", "BTC/USDT", "buy", "0.01", "--tp", "1e20"), "tp must be below 10^18"),
        (("propose", "BTC/USDT", "buy", "0.01", "--note", "a\x1b[2Jb"), "note must not contain"),
        (("approve", "9" * 20), "no signal with id 99999999999999999999"),
        (("reject", "9" * 20), "no signal with id 99999999999999999999"),
        (("approve", "0"), "no signal with id 0"),
        (
            ("history", "9" * 20),
            "Invalid value for 'limit': Input should be less than or equal to 1000",
        ),
    ],
)
def test_bad_input_prints_a_clear_error_exits_non_zero_and_writes_nothing(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = run(*args)

    assert result.returncode != 0
    assert message in " ".join(result.stderr.replace("│", " ").split()), result.stderr
    assert "Traceback" not in result.stderr
    assert _rows(tmp_path / "cli.db", "signals") == 0
    assert _rows(tmp_path / "cli.db", "audit_events") == 0


def test_rejecting_a_filled_signal_says_so_in_plain_words(run) -> None:  # type: ignore[no-untyped-def]
    assert run("propose", "BTC/USDT", "buy", "0.01").returncode == 0
    assert run("approve", "1").returncode == 0

    result = run("reject", "1")

    assert result.returncode == 1
    assert result.stderr == "error: signal 1 is filled, cannot reject\n"


CONFIG: list[tuple[str, dict[str, str], str]] = [
    ("postgres down", {"DATABASE_URL": "postgresql://sd:hunter22@127.0.0.1:1/sd"},
     "error: DATABASE_URL: cannot connect to 127.0.0.1:1 (Connect call failed"),
    ("no such host", {"DATABASE_URL": "postgres://sd:hunter22@db.invalid:5432/sd"},
     "error: DATABASE_URL: cannot connect to db.invalid:5432 ("),
    ("sqlite folder", {"DATABASE_URL": "sqlite:////nonexistent/dir/sd.db"},
     "error: DATABASE_URL: cannot connect to /nonexistent/dir/sd.db (no folder"),
    ("unsupported", {"DATABASE_URL": "mysql://sd:hunter22@db/sd"},
     "DATABASE_URL: unsupported database 'mysql'"),
    ("malformed", {"DATABASE_URL": "postgres://sd:hunter22@db:54x2/sd"},
     "DATABASE_URL: not a valid database URL"),
    ("token", {"TELEGRAM_BOT_TOKEN": "123:hunter22"}, "TELEGRAM_BOT_TOKEN: expected <digits>:"),
    ("api base", {"TELEGRAM_API_BASE": "api.telegram.org/hunter22"},
     "TELEGRAM_API_BASE: must be an http(s) URL"),
    ("warn over max", {"DRAWDOWN_WARN_PCT": "20", "DRAWDOWN_MAX_PCT": "10"},
     "DRAWDOWN_WARN_PCT must be below DRAWDOWN_MAX_PCT"),
]  # fmt: skip


@pytest.mark.parametrize(("env", "message"), [c[1:] for c in CONFIG], ids=[c[0] for c in CONFIG])
def test_a_setting_that_cannot_be_served_exits_2_with_one_line_naming_it(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = run("status", env=env)

    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "hunter22" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) <= 2  # "invalid settings:" and its line
    assert _rows(tmp_path / "cli.db", "signals") == 0
    assert _rows(tmp_path / "cli.db", "audit_events") == 0


def test_a_busy_port_stops_the_engine_with_one_line(run) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))  # where the webhook binds
        busy.listen()
        port = busy.getsockname()[1]

        result = run("engine", env={"PORT": str(port), "LOG_LEVEL": "ERROR"})

    assert result.returncode == 2
    assert result.stderr == f"error: PORT {port} is in use\n"


def test_an_invalid_setting_names_the_variable(run, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run(
        [*SIGNALDESK, "status"],
        env={**os.environ, "BROKER": "nyse", "DATABASE_URL": "sqlite://"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "BROKER: Input should be 'paper', 'ccxt', 'mt5' or 'ibkr' (got 'nyse')" in result.stderr


@pytest.mark.parametrize(
    ("entry", "prefix"),
    [
        (
            "import sys; sys.argv = ['signaldesk', 'status']; from bot.cli import main; main()",
            "error",
        ),
        ("import sys; from bot.__main__ import main; sys.exit(main())", "signaldesk bot"),
    ],
    ids=["signaldesk", "python -m bot"],
)
@pytest.mark.parametrize(
    ("broker", "prelude", "message"),
    [
        (
            "ccxt",
            "import sys; sys.modules['ccxt'] = None",
            "BROKER=ccxt needs the ccxt extra: pip install 'signaldesk[ccxt]'",
        ),
        ("mt5", "", "BROKER=mt5 needs Windows and the mt5 extra: pip install 'signaldesk[mt5]'"),
        (
            "ibkr",
            "import sys; sys.modules['ib_async'] = None",
            "BROKER=ibkr needs the ibkr extra: pip install 'signaldesk[ibkr]'",
        ),
    ],
)
def test_a_broker_whose_extra_is_missing_stops_start_up_with_one_line_naming_it(
    tmp_path: Path, entry: str, prefix: str, broker: str, prelude: str, message: str
) -> None:
    code = f"{prelude}\n{entry}"
    env = {
        **os.environ,
        "BROKER": broker,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "TELEGRAM_BOT_TOKEN": "123456:not-a-real-token-" + "x" * 18,  # the real shape
        "TELEGRAM_OWNER_IDS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"{prefix}: {message}"]


def test_propose_takes_a_trailing_stop_and_refuses_150_naming_the_field(run) -> None:  # type: ignore[no-untyped-def]
    refused = run("propose", "BTC/USDT", "buy", "0.01", "--sl", "113000", "--trail", "150")
    assert refused.returncode == 1
    assert "trail_pct must be above 0 and below 100" in refused.stderr

    proposed = run(
        "propose", "BTC/USDT", "buy", "0.01", "--sl", "113000", "--trail", "1", "--breakeven-r", "2"
    )
    assert proposed.returncode == 0, proposed.stderr


def _eth_csv(path: Path) -> Path:
    """A small ETH/USDT replay on the bundled BTC candles' first hours."""
    rows = ["timestamp,open,high,low,close,volume"]
    rows += [f"2025-01-01T{h:02d}:00:00Z,3000,3010,2990,{3000 + h},1" for h in range(24)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_symbols_searches_and_propose_accepts_any_unambiguous_spelling(  # type: ignore[no-untyped-def]
    run, tmp_path: Path
) -> None:
    eth = _eth_csv(tmp_path / "eth.csv")
    (tmp_path / ".env").write_text(f'REPLAY_FILES={{"ETH/USDT": "{eth}"}}\n')  # a 2nd symbol

    listed = run("symbols", "eth")
    assert listed.returncode == 0, listed.stderr
    assert " ".join(listed.stdout.split()) == "ETH/USDT spot ETH/USDT min 0.00001 tick 0.01"

    proposed = run("propose", "eth-usdt", "buy", "0.5")
    assert proposed.returncode == 0, proposed.stderr
    assert "buy  0.5 ETH/USDT market  ref 3,000.00" in proposed.stdout

    ambiguous = run("propose", "usdt", "buy", "0.5")
    assert ambiguous.returncode == 1
    assert "error: 'usdt' is ambiguous: BTC/USDT, ETH/USDT" in ambiguous.stderr
    assert _rows(tmp_path / "cli.db", "signals") == 1


def _imports(run, command: str, modules: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """``signaldesk COMMAND`` run in-process in one fresh interpreter; its output, whose
    last line lists which of ``modules`` it imported (``imported:`` and their names)."""
    probe = (
        "import sys\n"
        "from bot.cli import main\n"
        f"sys.argv = ['signaldesk', {command!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print('imported:', *sorted(m for m in {modules!r} if m in sys.modules))\n"
    )
    done = run("-c", probe, python=True)
    assert done.returncode == 0, done.stderr
    return done


def test_status_never_imports_aiogram_ccxt_or_plotting(run) -> None:  # type: ignore[no-untyped-def]
    """A command that does not talk to Telegram imports neither aiogram nor the heavy
    optional libraries (nor rich, which structlog would pull in, nor stamina, which only a
    failed broker call needs, nor APScheduler with no strategy to schedule), so the
    command line answers at once."""
    heavy = ("aiogram", "aiohttp", "ccxt", "matplotlib", "ib_async", "MetaTrader5", "rich")
    heavy += ("stamina", "tenacity", "apscheduler")
    done = _imports(run, "status", heavy)
    assert "trading    ACTIVE" in done.stdout
    assert done.stdout.splitlines()[-1] == "imported:"


def test_help_imports_neither_the_engine_nor_rich(run) -> None:  # type: ignore[no-untyped-def]
    """``signaldesk --help`` answers without SQLAlchemy, the models, structlog or rich's
    help rendering: the engine is imported by the commands that use it."""
    done = _imports(run, "--help", ("sqlalchemy", "sqlmodel", "core.db", "structlog", "rich"))
    assert "Commands:" in done.stdout and "status" in done.stdout
    assert done.stdout.splitlines()[-1] == "imported:"


def _plugin_package(root: Path) -> Path:
    """An installed pydantic plugin under ``root`` (a dist-info with a ``pydantic`` entry
    point, observing nothing); loading it writes the file it returns."""
    (root / "probe_plugin-1.0.dist-info").mkdir(parents=True)
    (root / "probe_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: probe-plugin\nVersion: 1.0\n"
    )
    (root / "probe_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[pydantic]\nprobe = probe_plugin:plugin\n"
    )
    (root / "probe_plugin.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(root / 'loaded')!r}).write_text('yes')\n"
        "class _Plugin:\n"
        "    def new_schema_validator(self, *args, **kwargs):\n"
        "        return None, None, None\n"
        "plugin = _Plugin()\n"
    )
    return root / "loaded"


@pytest.mark.parametrize(("setting", "loads"), [(None, False), ("", True)])
def test_pydantic_plugins_are_off_unless_the_environment_says_otherwise(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, setting: str | None, loads: bool
) -> None:
    """Every entry point spares pydantic's scan for plugins (PYDANTIC_DISABLE_PLUGINS
    defaults to __all__); an explicit value, empty included, is pydantic's to read."""
    loaded = _plugin_package(tmp_path / "site")
    checkout = str(Path(__file__).resolve().parents[2])
    env = {"PYTHONPATH": os.pathsep.join([checkout, str(tmp_path / "site")])}
    if setting is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = setting
    done = run("status", env=env)
    assert done.returncode == 0, done.stderr
    assert "trading    ACTIVE" in done.stdout
    assert loaded.exists() is loads
