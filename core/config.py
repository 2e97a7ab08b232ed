"""Settings, read from the environment and a ``.env`` file (pydantic-settings).

Every field maps to the upper-case environment variable of the same name, and every one is
listed with a comment in ``.env.example``. :func:`load_settings` turns validation errors
into one :class:`~core.errors.ConfigError` that names each bad variable and what it expects,
one line each, never echoing a secret (a token, a key, a URL's password).

Checked here, beyond each field's type and range (numbers through :mod:`core.bounds`):
``DATABASE_URL`` is a URL of a supported driver (SQLite or PostgreSQL; reachability is
checked at start-up by :func:`core.db.engine.upgrade_schema`, with
:func:`database_location` naming the place), ``TELEGRAM_BOT_TOKEN`` has the shape
``<digits>:<35 characters>`` that @BotFather gives (any ``<digits>:<characters>`` when
``TELEGRAM_API_BASE`` points at a self-hosted server or the sandbox),
``TELEGRAM_API_BASE`` is an http(s) URL, ``TELEGRAM_WEBHOOK_URL`` is an https URL (http
only on 127.0.0.1 or localhost, for the sandbox) and comes with ``PORT``,
``TELEGRAM_WEBHOOK_SECRET`` is what the Bot API's ``setWebhook`` accepts as
``secret_token`` (1-256 characters A-Z, a-z, 0-9, _ and -), ``DRAWDOWN_WARN_PCT`` is
below ``DRAWDOWN_MAX_PCT``, and ``OUTBOX_RETENTION_DAYS`` and ``EQUITY_SNAPSHOT_DETAIL_DAYS``
are 0 (keep forever) or at least 7.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from core.bounds import NonNegativeDecimal, PositiveDecimal
from core.errors import ConfigError
from core.notify import QuietHours

__all__ = [
    "BrokerName",
    "DrawdownAction",
    "MarketDataName",
    "Settings",
    "database_location",
    "load_settings",
    "normalize_database_url",
]

DEFAULT_FEED_CSV = Path(__file__).parent / "marketdata" / "data" / "btc_usdt_1h.csv.gz"


class BrokerName(StrEnum):
    """Which broker executes orders."""

    PAPER = "paper"
    CCXT = "ccxt"
    MT5 = "mt5"
    IBKR = "ibkr"


class MarketDataName(StrEnum):
    """Where strategies, the drift check and the paper broker read prices."""

    REPLAY = "replay"
    CCXT = "ccxt"
    MT5 = "mt5"
    IBKR = "ibkr"


class MarketClosedPolicy(StrEnum):
    """What an order for a closed market does (IBKR): ``block`` refuses it with "market
    closed, opens in 2 h"; ``day_order`` sends it as a DAY order that rests until the open."""

    BLOCK = "block"
    DAY_ORDER = "day_order"


class DrawdownAction(StrEnum):
    """What the drawdown guard does when a max level is breached."""

    ALERT = "alert"
    PAUSE = "pause"
    FLATTEN = "flatten"


SUPPORTED_DATABASES = ("sqlite+aiosqlite", "postgresql+asyncpg")
"""The drivers SignalDesk runs on (after :func:`normalize_database_url`)."""
_DATABASE_EXAMPLE = "sqlite:///signaldesk.db or postgresql://USER:PASSWORD@HOST:5432/DB"
#: @BotFather's token: the bot's id, a colon, 35 characters (the secret part).
TELEGRAM_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]{35}$")
#: A token a self-hosted Bot API server or the sandbox accepts: the same shape, any length.
TELEGRAM_TOKEN_SHAPE = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
#: The Bot API's ``setWebhook`` ``secret_token``: 1-256 characters A-Z, a-z, 0-9, _ and -.
WEBHOOK_SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
#: Hosts a plain-http ``TELEGRAM_WEBHOOK_URL`` may name (the sandbox on this machine).
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_INTERVAL_SECONDS = 366 * 86400
"""The longest interval, age or time to live a setting may give (a year)."""

Seconds = Annotated[int, Field(gt=0, le=MAX_INTERVAL_SECONDS)]

#: The longest retention a setting may give, in days (a century).
MAX_RETENTION_DAYS = 36500

#: The shortest retention other than 0 (keep forever), in days: the daily summary reads
#: the last 3 days of the outbox, and ``/pnl week`` wants a week of detail.
MIN_RETENTION_DAYS = 7


def normalize_database_url(url: str) -> str:
    """Rewrite a database URL to its async driver and check that SignalDesk supports it.

    ``postgres://`` (Heroku's form) and ``postgresql://`` become ``postgresql+asyncpg://``;
    ``sqlite://`` becomes ``sqlite+aiosqlite://``. URLs naming a driver are kept as they
    are and must be one of :data:`SUPPORTED_DATABASES`.

    Raises:
        ValueError: not a URL, a malformed one (a port that is not a number), or an
            unsupported database or driver. The message never contains the URL.
    """
    scheme, sep, rest = url.strip().partition("://")
    if not sep or not scheme:
        raise ValueError(f"expected a URL such as {_DATABASE_EXAMPLE}")
    rewrites = {
        "postgres": "postgresql+asyncpg",
        "postgresql": "postgresql+asyncpg",
        "sqlite": "sqlite+aiosqlite",
    }
    normalized = f"{rewrites.get(scheme, scheme)}://{rest}"
    try:
        parsed = make_url(normalized)
    except (ArgumentError, ValueError):
        raise ValueError(
            f"not a valid database URL (check the port and special characters; "
            f"percent-encode them in the password), e.g. {_DATABASE_EXAMPLE}"
        ) from None
    if parsed.drivername not in SUPPORTED_DATABASES:
        raise ValueError(
            f"unsupported database {parsed.drivername!r}: use {_DATABASE_EXAMPLE} "
            f"(drivers: {', '.join(SUPPORTED_DATABASES)})"
        )
    return normalized


def database_location(url: str) -> str:
    """Where ``url`` points, without its password: ``host:port`` (PostgreSQL; 5432 when
    not given) or the SQLite file (``:memory:`` for an in-memory database)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "the database"
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def _parse_id_list(value: Any) -> Any:
    """Accept a JSON list (``[1, 2]``), a comma-separated string (``1,2``) or a single id."""
    if isinstance(value, int):
        return [value]
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc.msg}") from exc
    return [part.strip() for part in text.split(",") if part.strip()]


class Settings(BaseSettings):
    """All of SignalDesk's settings. Units are in the field names or descriptions:
    ``*_pct`` are percent (1.5 = 1.5 %), ``*_bps`` basis points (1 bps = 0.01 %), intervals
    and ages are seconds, amounts are in the account's quote currency."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # --- engine -------------------------------------------------------------------------
    database_url: str = Field(
        "sqlite+aiosqlite:///signaldesk.db",
        description="SQLAlchemy URL; postgres:// and postgresql:// are rewritten to asyncpg",
    )
    broker: BrokerName = Field(BrokerName.PAPER, description="paper, ccxt or mt5")
    signal_ttl_seconds: Seconds = Field(900, description="how long a proposal can be approved")
    max_price_drift_pct: PositiveDecimal = Field(
        Decimal("1.0"), description="approval blocks if price moved more since proposal"
    )
    max_order_quantity: PositiveDecimal = Field(
        Decimal(1), description="base units per order (MT5 forex: 100000 = 1 lot)"
    )
    max_order_notional: PositiveDecimal = Field(
        Decimal(10000), description="quote currency per order"
    )
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_json: bool = Field(False, description="JSON log lines instead of the console format")
    sentry_dsn: SecretStr | None = Field(
        None, description="report errors to Sentry (the sentry extra)"
    )

    # --- paper broker and replay feed ---------------------------------------------------
    paper_starting_balance: PositiveDecimal = Field(Decimal(10000))
    paper_currency: str = Field("USDT", min_length=1)
    paper_spread_bps: NonNegativeDecimal = Field(Decimal(2), description="full bid/ask spread")
    paper_slippage_bps: NonNegativeDecimal = Field(
        Decimal(1), description="added against the taker"
    )
    paper_fee_bps: NonNegativeDecimal = Field(Decimal(10), description="fee on fill notional")
    paper_leverage: PositiveDecimal = Field(Decimal(1), description="margin = notional / leverage")
    feed_csv: Path = Field(DEFAULT_FEED_CSV, description="CSV(.gz) of candles to replay")
    feed_symbol: str = Field("BTC/USDT", pattern=r"^[A-Z0-9]+/[A-Z0-9]+$")
    feed_speed: float = Field(
        0.1, ge=0, description="replayed candles per second of wall time; 0 = manual steps"
    )
    feed_start: datetime | None = Field(None, description="open time of the first candle")

    # --- Telegram -----------------------------------------------------------------------
    telegram_bot_token: SecretStr | None = Field(None, description="unset = sandbox")
    telegram_owner_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    telegram_chat_id: int | None = Field(None, description="default: first owner's chat")
    telegram_api_base: str | None = Field(None, description="Bot API server base URL")
    telegram_webhook_url: str | None = Field(
        None,
        description="public https base URL: webhook mode (updates POSTed to <base>/telegram "
        "on PORT) instead of long polling",
    )
    telegram_webhook_secret: SecretStr | None = Field(
        None,
        description="setWebhook secret_token every process shares; unset = a random one "
        "per start (one process)",
    )
    command_max_age_seconds: Seconds = Field(
        120, description="commands older than this (sent while down) are skipped"
    )
    confirm_ttl_seconds: Seconds = Field(60, description="destructive-command confirmation")
    card_charts: bool = Field(
        True, description="post cards as a chart photo with the card as caption"
    )
    display_timezone: str = Field(
        "UTC", description="IANA zone for times shown in chat (cards), e.g. Europe/Berlin"
    )
    quiet_hours: str = Field(
        "",
        description="HH:MM-HH:MM local time (DISPLAY_TIMEZONE) when routine messages are "
        "silent, never alerts; may span midnight (23:00-07:00); empty: none",
    )
    daily_summary_at: str | None = Field(
        None, description="local time HH:MM (DISPLAY_TIMEZONE) of the daily summary; unset: off"
    )
    sandbox_host: str = "127.0.0.1"
    sandbox_port: int = Field(8081, ge=0, le=65535)

    # --- always-on duties ---------------------------------------------------------------
    heartbeat_interval: Seconds = Field(3600, description="seconds between heartbeats")
    heartbeat_ping_url: str | None = Field(None, description="dead man's switch URL")
    drawdown_check_interval: Seconds = Field(10)
    drawdown_warn_pct: Decimal = Field(Decimal(5), gt=0, lt=100)
    drawdown_max_pct: Decimal = Field(Decimal(10), gt=0, lt=100)
    daily_loss_max_pct: Decimal = Field(Decimal(5), gt=0, lt=100)
    drawdown_hysteresis_pct: Decimal = Field(Decimal(1), ge=0, lt=100)
    drawdown_action: DrawdownAction = DrawdownAction.PAUSE
    flatten_external: bool = Field(
        False, description="the drawdown flatten also closes positions SignalDesk did not open"
    )
    close_concurrency: int = Field(
        100,
        ge=1,
        le=100,
        description=(
            "closes /closeall and the flatten send to the broker at once; the venue's own "
            "rate limiter paces them"
        ),
    )
    pause_cancels_entries: bool = Field(
        True, description="/pause and the guard's pause cancel resting entry orders"
    )
    expiry_check_interval: Seconds = Field(15)
    outbox_retention_days: int = Field(
        30,
        ge=0,
        le=MAX_RETENTION_DAYS,
        description="days a delivered message stays in the outbox; 0 = forever, else >= 7",
    )
    equity_snapshot_detail_days: int = Field(
        30,
        ge=0,
        le=MAX_RETENTION_DAYS,
        description="days equity snapshots keep every point, then 4 an hour; 0 = forever, "
        "else >= 7",
    )
    reconcile_interval: Seconds = Field(60)
    exit_check_interval: Seconds = Field(
        10, description="seconds between checks of protective exits and trailing stops"
    )
    strategy: str = Field("none", description="none or sma_cross")
    strategy_interval: Seconds = Field(60, description="seconds between strategy runs")
    strategy_cron: str | None = Field(None, description="crontab; overrides the interval")
    strategy_risk_pct: Decimal = Field(Decimal(1), gt=0, le=100)
    webhook_secret: SecretStr | None = None
    port: int | None = Field(None, ge=0, le=65535, description="webhook HTTP port")
    webhook_max_body_bytes: int = Field(16384, gt=0)
    health_port: int | None = Field(
        9464,
        ge=0,
        le=65535,
        description="/healthz, /readyz and /metrics while the bot runs; 0 = any free port",
    )
    health_host: str = Field("127.0.0.1", description="address the health port binds")

    # --- ccxt ---------------------------------------------------------------------------
    ccxt_exchange: str = "binance"
    ccxt_api_key: SecretStr | None = None
    ccxt_secret: SecretStr | None = None
    ccxt_password: SecretStr | None = None
    ccxt_sandbox: bool = Field(True, description="use the exchange's testnet")
    ccxt_market_type: str = Field("spot", pattern=r"^(spot|swap|future)$")
    ccxt_account_currency: str = Field(
        "USDT", min_length=1, description="currency equity and positions are valued in"
    )

    # --- market data, strategies file, symbol search --------------------------------------
    market_data: MarketDataName | None = Field(
        None,
        description="replay (no network), ccxt (public, no key) or mt5; unset = the "
        "broker's own venue (paper: replay)",
    )
    market_data_cache_seconds: float = Field(
        1.0, ge=0, description="seconds a quote or candle answer from the network is reused"
    )
    ccxt_config: dict[str, Any] = Field(
        default_factory=dict, description="JSON merged into the ccxt exchange's options"
    )
    replay_files: dict[str, Path] = Field(
        default_factory=dict, description='more replayed symbols: {"ETH/USDT": "eth.csv.gz"}'
    )
    strategies_file: Path | None = Field(None, description="TOML file of strategy instances")
    symbols_ttl_seconds: int = Field(
        86400, gt=0, description="age after which the cached symbol list is refreshed"
    )

    # --- MetaTrader 5 -------------------------------------------------------------------
    mt5_login: int | None = None
    mt5_password: SecretStr | None = None
    mt5_server: str | None = None
    mt5_path: str | None = None
    mt5_magic: int = 20251121
    mt5_deviation: int = Field(20, ge=0, description="max price deviation in points")

    # --- Interactive Brokers (TWS or IB Gateway) and market hours ------------------------
    ibkr_host: str = Field("127.0.0.1", description="where TWS / IB Gateway listens")
    ibkr_port: int = Field(
        7497, gt=0, lt=65536, description="API port: TWS paper 7497, live 7496; Gateway 4002/4001"
    )
    ibkr_client_id: int = Field(1, ge=0, description="API client id (one per connection)")
    ibkr_account: str = Field("", description="account to trade; empty: the only one managed")
    ibkr_delayed_data: bool = Field(
        False, description="ask for delayed quotes when the account has no subscription"
    )
    market_closed_policy: MarketClosedPolicy = Field(
        MarketClosedPolicy.BLOCK,
        description="an order for a closed market: block it, or send a day order to the open",
    )

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("outbox_retention_days", "equity_snapshot_detail_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if 0 < value < MIN_RETENTION_DAYS:
            raise PydanticCustomError(
                "retention_days",
                "must be 0 (keep forever) or at least {minimum} days",
                {"minimum": MIN_RETENTION_DAYS},
            )
        return value

    @field_validator("display_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise PydanticCustomError("timezone", "must be an IANA time zone such as UTC") from exc
        return value

    @field_validator("daily_summary_at")
    @classmethod
    def _summary_at(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value.strip()):
            raise PydanticCustomError("clock_time", "must be a local time HH:MM such as 21:00")
        return value.strip()

    @property
    def daily_summary_time(self) -> tuple[int, int] | None:
        """:attr:`daily_summary_at` as ``(hour, minute)``; None when unset."""
        if self.daily_summary_at is None:
            return None
        hour, minute = self.daily_summary_at.split(":")
        return int(hour), int(minute)

    @property
    def display_zone(self) -> ZoneInfo:
        """:attr:`display_timezone` as a ``ZoneInfo``."""
        return ZoneInfo(self.display_timezone)

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str) -> str:
        try:
            QuietHours.parse(value)
        except ValueError as exc:
            raise PydanticCustomError("quiet_hours", str(exc)) from exc
        return value.strip()

    @property
    def quiet(self) -> QuietHours | None:
        """:attr:`quiet_hours` parsed (``None``: no quiet hours)."""
        return QuietHours.parse(self.quiet_hours)

    @field_validator("telegram_api_base", "heartbeat_ping_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise PydanticCustomError(
                "http_url", "must be an http(s) URL such as https://host:port"
            )
        return value

    @field_validator("telegram_webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            parts = None
        secure = parts is not None and parts.scheme == "https" and bool(parts.hostname)
        local = parts is not None and parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
        if parts is None or not (secure or local) or parts.query or parts.fragment:
            raise PydanticCustomError(
                "webhook_url",
                "must be an https URL such as https://bot.example.com, without query "
                "(http only for 127.0.0.1 or localhost)",
            )
        return value

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not WEBHOOK_SECRET_TOKEN.match(value.get_secret_value()):
            raise PydanticCustomError(
                "webhook_secret",
                "must be 1-256 characters A-Z, a-z, 0-9, _ or - (the Bot API's secret_token)",
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        token = self.telegram_bot_token
        if token is not None:
            value = token.get_secret_value()
            shape = TELEGRAM_TOKEN if self.telegram_api_base is None else TELEGRAM_TOKEN_SHAPE
            if not shape.match(value):
                raise PydanticCustomError(
                    "token",
                    "TELEGRAM_BOT_TOKEN: expected <digits>:<35 letters, digits, - or _>, "
                    "the token @BotFather gives",
                )
        if self.telegram_webhook_url is not None and self.port is None:
            raise PydanticCustomError(
                "webhook_port",
                "TELEGRAM_WEBHOOK_URL needs PORT: the port of the web server that receives "
                "the updates (/telegram, beside /webhook and /healthz)",
            )
        if self.drawdown_warn_pct >= self.drawdown_max_pct:
            raise PydanticCustomError(
                "drawdown",
                "DRAWDOWN_WARN_PCT must be below DRAWDOWN_MAX_PCT "
                f"(got {self.drawdown_warn_pct} and {self.drawdown_max_pct})",
            )
        return self

    @field_validator("telegram_owner_ids", mode="before")
    @classmethod
    def _owner_ids(cls, value: Any) -> Any:
        return _parse_id_list(value)

    def secrets(self) -> list[str]:
        """Every secret value these settings hold, for the log redaction
        (:func:`core.logging.configure_logging`): the bot token and its secret part, the
        webhook secrets, the exchange's key, secret and password, the MT5 password, the
        Sentry DSN, the database password and the path and query of ``HEARTBEAT_PING_URL``."""
        values = [
            secret.get_secret_value()
            for secret in (
                self.telegram_bot_token,
                self.webhook_secret,
                self.telegram_webhook_secret,
                self.ccxt_api_key,
                self.ccxt_secret,
                self.ccxt_password,
                self.mt5_password,
                self.sentry_dsn,
            )
            if secret is not None
        ]
        if self.telegram_bot_token is not None:
            values.append(self.telegram_bot_token.get_secret_value().partition(":")[2])
        password = make_url(self.database_url).password
        if password:  # decoded; the redactor adds its URL-encoded form
            values.append(str(password))
        if self.heartbeat_ping_url:
            parts = urlsplit(self.heartbeat_ping_url)
            path = parts.path.strip("/")
            values += [parts.path, path, *path.split("/"), parts.query]
        return [v for v in values if v]

    @property
    def owner_ids(self) -> frozenset[int]:
        """Telegram user ids allowed to act."""
        return frozenset(self.telegram_owner_ids)

    @property
    def card_chat_id(self) -> int | None:
        """Where signal cards and alerts go: TELEGRAM_CHAT_ID, else the first owner's chat."""
        if self.telegram_chat_id is not None:
            return self.telegram_chat_id
        return self.telegram_owner_ids[0] if self.telegram_owner_ids else None


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment and ``.env``; keyword overrides win.

    Raises:
        ConfigError: one line per invalid variable, naming it and what is expected.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if not error["loc"]:  # a rule across fields names its variables itself
                lines.append(message)
                continue
            field = str(error["loc"][0])
            got = error.get("input")
            shown = not isinstance(got, dict) and field not in _UNECHOED
            got_text = f" (got {_shown(got)})" if shown else ""
            lines.append(f"{field.upper()}: {message}{got_text}")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines)) from None


#: Settings whose value is never repeated in an error: secrets, and URLs that may hold
#: a password, a token or a dead man's switch's key.
_UNECHOED = frozenset(
    name
    for name, info in Settings.model_fields.items()
    if "SecretStr" in str(info.annotation) or name.endswith("_url") or name.endswith("_base")
)


def _shown(value: Any) -> str:
    """``value`` as an error quotes it: at most 40 characters."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:36] + "..."
