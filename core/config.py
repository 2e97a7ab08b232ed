"""Settings, read from the environment and a ``.env`` file (pydantic-settings).

Every field maps to the upper-case environment variable of the same name, and every one is
listed with a comment in ``.env.example``. :func:`load_settings` turns validation errors
into one :class:`~core.errors.ConfigError` that names each bad variable and what it expects.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.errors import ConfigError

__all__ = [
    "BrokerName",
    "DrawdownAction",
    "MarketDataName",
    "Settings",
    "load_settings",
    "normalize_database_url",
]

DEFAULT_FEED_CSV = Path(__file__).parent / "marketdata" / "data" / "btc_usdt_1h.csv.gz"


class BrokerName(StrEnum):
    """Which broker executes orders."""

    PAPER = "paper"
    CCXT = "ccxt"
    MT5 = "mt5"


class MarketDataName(StrEnum):
    """Where strategies, the drift check and the paper broker read prices."""

    REPLAY = "replay"
    CCXT = "ccxt"
    MT5 = "mt5"


class DrawdownAction(StrEnum):
    """What the drawdown guard does when a max level is breached."""

    ALERT = "alert"
    PAUSE = "pause"
    FLATTEN = "flatten"


def normalize_database_url(url: str) -> str:
    """Rewrite a database URL to its async driver.

    ``postgres://`` (Heroku's form) and ``postgresql://`` become ``postgresql+asyncpg://``;
    ``sqlite://`` becomes ``sqlite+aiosqlite://``. URLs naming a driver are kept as they are.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("expected a URL such as sqlite:///signaldesk.db or postgresql://...")
    rewrites = {
        "postgres": "postgresql+asyncpg",
        "postgresql": "postgresql+asyncpg",
        "sqlite": "sqlite+aiosqlite",
    }
    return f"{rewrites.get(scheme, scheme)}://{rest}"


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
    signal_ttl_seconds: int = Field(900, gt=0, description="how long a proposal can be approved")
    max_price_drift_pct: Decimal = Field(
        Decimal("1.0"), gt=0, description="approval blocks if price moved more since proposal"
    )
    max_order_quantity: Decimal = Field(
        Decimal(1), gt=0, description="base units per order (MT5 forex: 100000 = 1 lot)"
    )
    max_order_notional: Decimal = Field(
        Decimal(10000), gt=0, description="quote currency per order"
    )
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_json: bool = Field(False, description="JSON log lines instead of the console format")

    # --- paper broker and replay feed ---------------------------------------------------
    paper_starting_balance: Decimal = Field(Decimal(10000), gt=0)
    paper_currency: str = Field("USDT", min_length=1)
    paper_spread_bps: Decimal = Field(Decimal(2), ge=0, description="full bid/ask spread")
    paper_slippage_bps: Decimal = Field(Decimal(1), ge=0, description="added against the taker")
    paper_fee_bps: Decimal = Field(Decimal(10), ge=0, description="fee on fill notional")
    paper_leverage: Decimal = Field(Decimal(1), gt=0, description="margin = notional / leverage")
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
    command_max_age_seconds: int = Field(
        120, gt=0, description="commands older than this (sent while down) are skipped"
    )
    confirm_ttl_seconds: int = Field(60, gt=0, description="destructive-command confirmation")
    sandbox_host: str = "127.0.0.1"
    sandbox_port: int = Field(8081, ge=0, le=65535)

    # --- always-on duties ---------------------------------------------------------------
    heartbeat_interval: int = Field(3600, gt=0, description="seconds between heartbeats")
    heartbeat_ping_url: str | None = Field(None, description="dead man's switch URL")
    drawdown_check_interval: int = Field(10, gt=0)
    drawdown_warn_pct: Decimal = Field(Decimal(5), gt=0, lt=100)
    drawdown_max_pct: Decimal = Field(Decimal(10), gt=0, lt=100)
    daily_loss_max_pct: Decimal = Field(Decimal(5), gt=0, lt=100)
    drawdown_hysteresis_pct: Decimal = Field(Decimal(1), ge=0, lt=100)
    drawdown_action: DrawdownAction = DrawdownAction.PAUSE
    expiry_check_interval: int = Field(15, gt=0)
    reconcile_interval: int = Field(60, gt=0)
    strategy: str = Field("none", description="none or sma_cross")
    strategy_interval: int = Field(60, gt=0, description="seconds between strategy runs")
    strategy_cron: str | None = Field(None, description="crontab; overrides the interval")
    strategy_risk_pct: Decimal = Field(Decimal(1), gt=0, le=100)
    webhook_secret: SecretStr | None = None
    port: int | None = Field(None, ge=0, le=65535, description="webhook HTTP port")
    webhook_max_body_bytes: int = Field(16384, gt=0)

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

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("telegram_owner_ids", mode="before")
    @classmethod
    def _owner_ids(cls, value: Any) -> Any:
        return _parse_id_list(value)

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
            name = "_".join(str(part) for part in error["loc"][:1]).upper() or "SETTINGS"
            got = error.get("input")
            got_text = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{name}: {error['msg']}{got_text}")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines)) from None
