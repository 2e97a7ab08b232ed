"""Settings from the environment and ``.env``: defaults, URL rewriting, owner ids, bad
values (a ConfigError naming the variable and what is expected) and secrets kept out of
repr/str.

Every test uses the ``make_settings`` fixture, which clears SignalDesk's variables from the
environment and runs in an empty temp dir (no stray ``.env``). Where the environment itself
is under test, ``load_settings()`` is called directly so no keyword override hides it.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.config import (
    DEFAULT_FEED_CSV,
    BrokerName,
    DrawdownAction,
    load_settings,
    normalize_database_url,
)
from core.errors import ConfigError
from tests.support.tokens import fake_token

# --- defaults -------------------------------------------------------------------------------


def test_defaults_are_a_local_sqlite_file_and_the_paper_broker(make_settings: Any) -> None:
    settings = load_settings()

    assert settings.database_url == "sqlite+aiosqlite:///signaldesk.db"
    assert settings.broker is BrokerName.PAPER
    assert settings.feed_speed == 0.1
    assert settings.feed_symbol == "BTC/USDT"
    assert settings.feed_csv == DEFAULT_FEED_CSV
    assert settings.paper_starting_balance == Decimal(10000)
    assert (settings.paper_spread_bps, settings.paper_slippage_bps, settings.paper_fee_bps) == (
        Decimal(2),
        Decimal(1),
        Decimal(10),
    )
    assert settings.drawdown_action is DrawdownAction.PAUSE
    assert settings.telegram_bot_token is None
    assert settings.telegram_owner_ids == []
    assert settings.card_chat_id is None


def test_make_settings_fixture_replays_manually(make_settings: Any) -> None:
    assert make_settings().feed_speed == 0


def test_environment_values_are_parsed_to_their_types(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROKER", "ccxt")
    monkeypatch.setenv("PAPER_FEE_BPS", "7.5")
    monkeypatch.setenv("SIGNAL_TTL_SECONDS", "300")
    monkeypatch.setenv("CCXT_SANDBOX", "false")
    monkeypatch.setenv("DRAWDOWN_ACTION", "flatten")

    settings = load_settings()

    assert settings.broker is BrokerName.CCXT
    assert settings.paper_fee_bps == Decimal("7.5")
    assert settings.signal_ttl_seconds == 300
    assert settings.ccxt_sandbox is False
    assert settings.drawdown_action is DrawdownAction.FLATTEN


def test_dotenv_file_is_read_and_the_environment_wins_over_it(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("BROKER=mt5\nMAX_ORDER_QUANTITY=0.25\n", encoding="utf-8")
    monkeypatch.setenv("BROKER", "ccxt")

    settings = load_settings()

    assert settings.max_order_quantity == Decimal("0.25")  # from .env
    assert settings.broker is BrokerName.CCXT  # the environment beats .env


def test_keyword_overrides_win_over_the_environment(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEED_SPEED", "5")

    assert make_settings().feed_speed == 0
    assert load_settings().feed_speed == 5.0


# --- DATABASE_URL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(
            "postgres://u:p@db.example.com:5432/d1",
            "postgresql+asyncpg://u:p@db.example.com:5432/d1",
            id="heroku-postgres",
        ),
        pytest.param(
            "postgresql://u:p@127.0.0.1/d1",
            "postgresql+asyncpg://u:p@127.0.0.1/d1",
            id="postgresql",
        ),
        pytest.param(
            "sqlite:///data/signaldesk.db",
            "sqlite+aiosqlite:///data/signaldesk.db",
            id="sqlite-relative",
        ),
        pytest.param(
            "sqlite:////var/lib/signaldesk.db",
            "sqlite+aiosqlite:////var/lib/signaldesk.db",
            id="sqlite-absolute",
        ),
        pytest.param(
            "postgresql+asyncpg://u@h/d1", "postgresql+asyncpg://u@h/d1", id="asyncpg-kept"
        ),
        pytest.param("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db", id="aiosqlite-kept"),
    ],
)
def test_database_url_is_rewritten_to_the_async_driver(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)

    assert load_settings().database_url == expected
    assert normalize_database_url(given) == expected


def test_normalize_database_url_only_rewrites_the_scheme() -> None:
    # "postgres" inside the rest of the URL is left alone
    assert (
        normalize_database_url("postgres://postgres:postgres@postgres/postgres")
        == "postgresql+asyncpg://postgres:postgres@postgres/postgres"
    )


def test_normalize_database_url_without_a_scheme_raises_value_error() -> None:
    with pytest.raises(
        ValueError, match=re.escape("expected a URL such as sqlite:///signaldesk.db")
    ):
        normalize_database_url("signaldesk.db")


# --- TELEGRAM_OWNER_IDS ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param("[111, 222]", [111, 222], id="json-list"),
        pytest.param("111,222", [111, 222], id="comma-separated"),
        pytest.param(" 111 , 222 ,", [111, 222], id="comma-separated-with-spaces"),
        pytest.param("111", [111], id="single-id"),
        pytest.param("", [], id="empty"),
        pytest.param("[]", [], id="empty-json-list"),
    ],
)
def test_telegram_owner_ids_accepts_json_comma_separated_single_and_empty(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, given: str, expected: list[int]
) -> None:
    monkeypatch.setenv("TELEGRAM_OWNER_IDS", given)

    settings = load_settings()

    assert settings.telegram_owner_ids == expected
    assert settings.owner_ids == frozenset(expected)


def test_card_chat_id_is_the_first_owner_unless_a_chat_is_set(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_OWNER_IDS", "222,111")
    assert load_settings().card_chat_id == 222

    monkeypatch.setenv("TELEGRAM_CHAT_ID", "-1001234")
    assert load_settings().card_chat_id == -1001234


# --- bad values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        pytest.param(
            "BROKER", "nyse", "Input should be 'paper', 'ccxt', 'mt5' or 'ibkr'", id="broker"
        ),
        pytest.param(
            "TELEGRAM_OWNER_IDS",
            "abc",
            "Input should be a valid integer, unable to parse string as an integer",
            id="owner-ids-not-integers",
        ),
        pytest.param("TELEGRAM_OWNER_IDS", "[1,", "not valid JSON", id="owner-ids-broken-json"),
        pytest.param(
            "DRAWDOWN_MAX_PCT", "150", "Input should be less than 100", id="drawdown-over-100"
        ),
        pytest.param(
            "FEED_SPEED",
            "-1",
            "Input should be greater than or equal to 0",
            id="negative-feed-speed",
        ),
        pytest.param(
            "DATABASE_URL",
            "signaldesk.db",
            "expected a URL such as sqlite:///signaldesk.db or postgresql://",
            id="url-without-scheme",
        ),
        pytest.param("SIGNAL_TTL_SECONDS", "0", "Input should be greater than 0", id="zero-ttl"),
        pytest.param("PAPER_FEE_BPS", "ten", "must be a number", id="fee-not-a-number"),
        pytest.param("LOG_LEVEL", "LOUD", "String should match pattern", id="log-level"),
        pytest.param(
            "SANDBOX_PORT", "70000", "Input should be less than or equal to 65535", id="port"
        ),
        pytest.param("DAILY_SUMMARY_AT", "25:00", "must be a local time HH:MM", id="summary-hour"),
        pytest.param("DAILY_SUMMARY_AT", "9pm", "must be a local time HH:MM", id="summary-word"),
    ],
)
def test_bad_value_raises_config_error_naming_the_variable_and_what_is_expected(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    message = str(caught.value)
    assert message.startswith("invalid settings:\n")
    lines = message.splitlines()[1:]
    assert len(lines) == 1
    assert lines[0].strip().startswith(f"{name}: ")
    assert expected in lines[0]
    if name == "DATABASE_URL":  # a URL may hold a password: never echoed
        assert "(got" not in lines[0]
    else:
        assert f"(got {value!r})" in lines[0]


def test_every_bad_variable_gets_its_own_line(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROKER", "nyse")
    monkeypatch.setenv("FEED_SPEED", "-1")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    names = sorted(line.strip().split(":")[0] for line in str(caught.value).splitlines()[1:])
    assert names == ["BROKER", "FEED_SPEED"]


def test_bad_keyword_override_is_reported_by_its_variable_name(make_settings: Any) -> None:
    with pytest.raises(
        ConfigError, match=r"\n  PAPER_LEVERAGE: must be a positive number \(got 0\)"
    ):
        make_settings(paper_leverage=Decimal(0))


# --- secrets --------------------------------------------------------------------------------

SECRETS = {
    "TELEGRAM_BOT_TOKEN": fake_token("SETTINGS", 123456),
    "CCXT_API_KEY": "ccxt-api-key-value",
    "CCXT_SECRET": "ccxt-secret-value",
    "CCXT_PASSWORD": "ccxt-password-value",
    "MT5_PASSWORD": "mt5-password-value",
    "WEBHOOK_SECRET": "webhook-secret-value",
}


def test_secrets_are_kept_out_of_repr_and_str(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)

    settings = load_settings()

    shown = repr(settings) + str(settings)
    for value in SECRETS.values():
        assert value not in shown
    assert "**********" in shown
    assert settings.telegram_bot_token is not None
    assert settings.telegram_bot_token.get_secret_value() == SECRETS["TELEGRAM_BOT_TOKEN"]
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == SECRETS["WEBHOOK_SECRET"]


def test_settings_are_frozen(make_settings: Any) -> None:
    settings = make_settings()

    with pytest.raises(ValueError, match="frozen"):
        settings.broker = BrokerName.CCXT


# --- hostile values: one line naming the variable, no secret echoed ----------------------

REAL_TOKEN = fake_token("SHAPE", 7212345678)  # the shape @BotFather gives
HOSTILE: list[tuple[dict[str, str], str, list[str]]] = [
    ({"DATABASE_URL": "mysql://root:hunter22@db/x"}, "DATABASE_URL: unsupported database 'mysql'",
     ["hunter22"]),
    ({"DATABASE_URL": "postgresql+psycopg2://u:hunter22@h/d"}, "DATABASE_URL: unsupported",
     ["hunter22"]),
    ({"DATABASE_URL": "postgres://u:hunter22@db:port/x"}, "DATABASE_URL: not a valid database URL",
     ["hunter22"]),
    ({"DATABASE_URL": "u:hunter22@db/x"}, "DATABASE_URL: expected a URL", ["hunter22"]),
    ({"TELEGRAM_BOT_TOKEN": "7212345678:AAFshort"}, "TELEGRAM_BOT_TOKEN: expected <digits>:<35",
     ["AAFshort"]),
    ({"TELEGRAM_BOT_TOKEN": REAL_TOKEN + "x"}, "TELEGRAM_BOT_TOKEN: expected", ["SHAPE_fake"]),
    ({"TELEGRAM_BOT_TOKEN": "bot" + REAL_TOKEN, "TELEGRAM_API_BASE": "http://127.0.0.1:8081"},
     "TELEGRAM_BOT_TOKEN: expected", ["SHAPE_fake"]),
    ({"TELEGRAM_API_BASE": "api.telegram.org"}, "TELEGRAM_API_BASE: must be an http(s) URL", []),
    ({"TELEGRAM_API_BASE": "htps://api.telegram.org"}, "TELEGRAM_API_BASE: must be an http", []),
    ({"TELEGRAM_API_BASE": "http://host:port"}, "TELEGRAM_API_BASE: must be an http(s) URL", []),
    ({"HEARTBEAT_PING_URL": "hc-ping.com/5f1e-secret-uuid"}, "HEARTBEAT_PING_URL: must be an",
     ["5f1e-secret-uuid"]),
    ({"DRAWDOWN_WARN_PCT": "20", "DRAWDOWN_MAX_PCT": "10"},
     "DRAWDOWN_WARN_PCT must be below DRAWDOWN_MAX_PCT (got 20 and 10)", []),
    ({"DRAWDOWN_WARN_PCT": "10", "DRAWDOWN_MAX_PCT": "10"},
     "DRAWDOWN_WARN_PCT must be below DRAWDOWN_MAX_PCT", []),
    ({"MAX_ORDER_QUANTITY": "1e309"}, "MAX_ORDER_QUANTITY: must be below 10^18", []),
    ({"MAX_ORDER_NOTIONAL": "1e-30"}, "MAX_ORDER_NOTIONAL: must have at most 18 decimal", []),
    ({"MAX_PRICE_DRIFT_PCT": "NaN"}, "MAX_PRICE_DRIFT_PCT: must be a finite number", []),
    ({"HEARTBEAT_INTERVAL": "9" * 20}, "HEARTBEAT_INTERVAL: Input should be less than or equal",
     []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("env", "expected", "hidden"), HOSTILE, ids=[next(iter(h[0].values()))[:30] for h in HOSTILE]
)
def test_a_hostile_value_gets_one_line_naming_its_variable_and_never_its_secret(
    make_settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    expected: str,
    hidden: list[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid settings:"
    assert len(lines) == 2, lines
    assert lines[1].strip().startswith(expected)
    for secret in hidden:
        assert secret not in str(caught.value)


def test_a_real_token_passes_and_a_sandbox_token_needs_an_api_base(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", REAL_TOKEN)
    assert load_settings().telegram_bot_token is not None

    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "424242:e2e-sandbox-token")
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN: expected"):
        load_settings()
    monkeypatch.setenv("TELEGRAM_API_BASE", "http://127.0.0.1:8081/")
    assert load_settings().telegram_api_base == "http://127.0.0.1:8081/"


def test_settings_list_their_secrets_for_the_log_redaction(make_settings: Any) -> None:
    settings = make_settings(
        telegram_bot_token=REAL_TOKEN,
        database_url="postgresql://signaldesk:p%40ss-w0rd@db:5432/sd",
        heartbeat_ping_url="https://hc-ping.com/5f1e2d3c-uuid?create=1",
        ccxt_secret="ccxt-secret-value",
    )

    secrets = settings.secrets()

    for value in (REAL_TOKEN, REAL_TOKEN.partition(":")[2], "p@ss-w0rd",
                  "5f1e2d3c-uuid", "create=1", "ccxt-secret-value"):  # fmt: skip
        assert value in secrets


def test_daily_summary_at_is_a_local_clock_time_or_off(make_settings: Any) -> None:
    assert make_settings().daily_summary_time is None
    assert make_settings(daily_summary_at="").daily_summary_time is None
    assert make_settings(daily_summary_at="07:05").daily_summary_time == (7, 5)


def test_retention_days_are_zero_for_forever_or_at_least_a_week(make_settings: Any) -> None:
    defaults = make_settings()
    assert (defaults.outbox_retention_days, defaults.equity_snapshot_detail_days) == (30, 30)
    assert make_settings(outbox_retention_days=0, equity_snapshot_detail_days=7)
    with pytest.raises(ConfigError) as caught:
        make_settings(outbox_retention_days=3, equity_snapshot_detail_days=-1)
    assert str(caught.value).splitlines()[1:] == [
        "  OUTBOX_RETENTION_DAYS: must be 0 (keep forever) or at least 7 days (got 3)",
        "  EQUITY_SNAPSHOT_DETAIL_DAYS: Input should be greater than or equal to 0 (got -1)",
    ]


@pytest.mark.parametrize(
    "url",
    ["http://bot.example.com", "ftp://bot.example.com", "https://", "https://x.io/?k=v", "bot"],
)
def test_a_webhook_url_must_be_https_and_is_never_echoed(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("TELEGRAM_WEBHOOK_URL", url)
    monkeypatch.setenv("PORT", "8080")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    (line,) = str(caught.value).splitlines()[1:]
    assert line.strip().startswith("TELEGRAM_WEBHOOK_URL: must be an https URL")
    assert "(got" not in line


def test_a_webhook_url_needs_port_and_http_only_on_this_machine(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_WEBHOOK_URL", "https://bot.example.com/")
    with pytest.raises(ConfigError, match="TELEGRAM_WEBHOOK_URL needs PORT"):
        load_settings()

    monkeypatch.setenv("PORT", "8080")
    assert load_settings().telegram_webhook_url == "https://bot.example.com"
    monkeypatch.setenv("TELEGRAM_WEBHOOK_URL", "http://127.0.0.1:8080")
    assert load_settings().telegram_webhook_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize("secret", ["has space", "plus+slash/", "x" * 257])
def test_a_webhook_secret_is_what_set_webhook_accepts(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", secret)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    (line,) = str(caught.value).splitlines()[1:]
    assert line.strip().startswith("TELEGRAM_WEBHOOK_SECRET: must be 1-256 characters")
    assert secret not in str(caught.value)
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "Shared_secret-1")
    assert "Shared_secret-1" in load_settings().secrets()
