"""Strategy instances as configuration: the strategies file (TOML) and its validation.

``STRATEGIES_FILE`` lists instances, each a table of the array ``[[strategy]]``::

    [[strategy]]
    name = "btc-trend"            # unique; names the job, the /strategies row, the source
    kind = "sma_cross"            # see KINDS
    symbols = ["BTC/USDT"]        # as the market data lists them
    timeframe = "1h"              # core.marketdata.base.TIMEFRAMES
    cron = "0 * * * *"            # or: every = "15m" (s, m, h suffix, or seconds)
    risk_pct = 1                  # percent of equity lost at the stop, per trade
    enabled = true                # default true
    params = { fast = 10, slow = 30 }

The old single ``STRATEGY*`` settings are a one-instance shorthand (:func:`shorthand`).
Every mistake is reported at start-up, one line each naming the instance and the field;
nothing starts while one is left.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import Settings
from core.errors import ConfigError
from core.marketdata.base import TIMEFRAMES
from core.strategies.base import Strategy
from core.strategies.donchian import DonchianBreakout
from core.strategies.sma_cross import SmaCross

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger
    from apscheduler.triggers.cron import CronTrigger

__all__ = [
    "KINDS",
    "StrategySpec",
    "build_instance_strategy",
    "check_symbols",
    "load_strategies_file",
    "parse_strategies",
    "shorthand",
]

#: Strategy kinds and their constructors; parameters are the constructors' keywords.
KINDS: dict[str, Callable[..., Strategy]] = {
    "sma_cross": SmaCross,
    "donchian_breakout": DonchianBreakout,
}

#: Parameters each kind accepts (besides risk, caps and tick, which come from elsewhere).
KIND_PARAMS: dict[str, frozenset[str]] = {
    "sma_cross": frozenset({"fast", "slow", "atr_period", "atr_multiple", "reward_multiple"}),
    "donchian_breakout": frozenset({"period", "atr_period", "atr_multiple", "reward_multiple"}),
}

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,48}$")
_EVERY = re.compile(r"^(\d+)\s*([smh]?)$")


@dataclass(frozen=True, slots=True)
class StrategySpec:
    """One strategy instance. ``every_seconds`` or ``cron`` (UTC crontab) schedules it;
    ``risk_pct`` is percent of equity lost at the stop; ``params`` go to the kind."""

    name: str
    kind: str
    symbols: tuple[str, ...]
    timeframe: str
    risk_pct: Decimal
    cron: str | None = None
    every_seconds: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    enabled: bool = True

    @property
    def schedule(self) -> str:
        """``cron 0 * * * *`` or ``every 900 s``."""
        return f"cron {self.cron}" if self.cron else f"every {self.every_seconds} s"

    def trigger(self) -> tuple[BaseTrigger, int]:
        """APScheduler trigger (UTC) and misfire grace in seconds (cron 60, else one
        interval). Raises ConfigError for a bad crontab."""
        if self.cron:
            try:
                return crontab(self.cron), 60
            except ValueError as exc:
                raise ConfigError(f"strategy {self.name!r} field cron: {exc}") from exc
        from apscheduler.triggers.interval import IntervalTrigger

        seconds = self.every_seconds or 60
        return IntervalTrigger(seconds=seconds, timezone=UTC), seconds


def crontab(text: str) -> CronTrigger:
    """APScheduler's trigger (UTC) for a five-field crontab; ValueError when it is not one.
    APScheduler is imported here, by the processes that schedule or check a strategy, not
    by every command that builds an engine."""
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger.from_crontab(text, timezone=UTC)


def _decimals(params: Mapping[str, Any]) -> dict[str, Any]:
    """TOML floats as Decimal (``atr_multiple = 2.5``), the rest as they are."""
    return {k: Decimal(str(v)) if isinstance(v, float) else v for k, v in params.items()}


def _every(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        match = _EVERY.match(str(value).strip())
        if match is None:
            raise ValueError(f"{value!r} is not a duration such as 30s, 15m, 1h or 900")
        seconds = int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be positive")
    return seconds


def parse_strategies(
    data: Mapping[str, Any], origin: str = "STRATEGIES_FILE"
) -> tuple[list[StrategySpec], list[str]]:
    """Instances from the parsed TOML ``data`` (see the module docstring) and the
    mistakes found, one line each: ``origin: strategy 'x' field y: why``. The caller adds
    the symbol checks (:func:`check_symbols`) and refuses to start on any line."""
    errors: list[str] = []
    specs: list[StrategySpec] = []
    tables = data.get("strategy", [])
    if not isinstance(tables, list):
        return [], [f"{origin}: expected [[strategy]] tables"]
    seen: set[str] = set()
    for index, table in enumerate(tables, start=1):
        name = str(table.get("name", f"#{index}"))

        def bad(field_name: str, why: str, name: str = name) -> None:
            errors.append(f"{origin}: strategy {name!r} field {field_name}: {why}")

        if not _NAME.match(name):
            bad("name", "use 1-48 letters, digits, '.', '_' or '-'")
        elif name in seen:
            bad("name", "used twice")
        seen.add(name)
        kind = str(table.get("kind", ""))
        if kind not in KINDS:
            bad("kind", f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        symbols = table.get("symbols", [])
        if isinstance(symbols, str):
            symbols = [symbols]
        if not symbols or not all(isinstance(s, str) and s for s in symbols):
            bad("symbols", "list at least one symbol")
            symbols = []
        timeframe = str(table.get("timeframe", "1h"))
        if timeframe not in TIMEFRAMES:
            bad("timeframe", f"unknown timeframe {timeframe!r}; use one of {', '.join(TIMEFRAMES)}")
        cron = table.get("cron")
        every = table.get("every")
        every_seconds = None
        if (cron is None) == (every is None):
            bad("cron", "give exactly one of cron or every")
        elif cron is not None:
            try:
                crontab(str(cron))
            except ValueError as exc:
                bad("cron", f"{cron!r} is not a crontab: {exc}")
        else:
            try:
                every_seconds = _every(every)
            except ValueError as exc:
                bad("every", str(exc))
        try:
            risk = Decimal(str(table.get("risk_pct", 1)))
            if not 0 < risk <= 100:
                raise ValueError
        except (InvalidOperation, ValueError):
            bad(
                "risk_pct",
                f"must be a percent above 0 and at most 100, got {table.get('risk_pct')!r}",
            )
            risk = Decimal(1)
        params = table.get("params", {})
        if not isinstance(params, dict):
            bad("params", "must be a table")
            params = {}
        unknown = set(params) - KIND_PARAMS.get(kind, frozenset(params))
        if unknown:
            bad("params", f"{kind} takes no {', '.join(sorted(unknown))}")
        elif kind in KINDS:
            try:
                KINDS[kind](Decimal(1), **_decimals(params))
            except (TypeError, ValueError, ArithmeticError) as exc:
                bad("params", str(exc))
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            bad("enabled", "must be true or false")
        specs.append(
            StrategySpec(
                name=name,
                kind=kind,
                symbols=tuple(symbols),
                timeframe=timeframe,
                risk_pct=risk,
                cron=None if cron is None else str(cron),
                every_seconds=every_seconds,
                params=dict(params),
                enabled=bool(enabled),
            )
        )
    return specs, errors


def load_strategies_file(path: Path) -> tuple[list[StrategySpec], list[str]]:
    """Read and parse the strategies file: the instances and the mistakes found (as
    :func:`parse_strategies`).

    Raises:
        ConfigError: the file cannot be read or is not TOML.
    """
    import tomllib  # only with a strategies file: 0.12 MiB that every other start kept

    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"STRATEGIES_FILE: cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"STRATEGIES_FILE: {path} is not valid TOML: {exc}") from exc
    return parse_strategies(data)


def shorthand(settings: Settings, timeframe: str) -> list[StrategySpec]:
    """The instance the old ``STRATEGY*`` settings describe: ``STRATEGY`` on
    ``FEED_SYMBOL`` every ``STRATEGY_INTERVAL`` s (or ``STRATEGY_CRON``), risking
    ``STRATEGY_RISK_PCT`` %, on ``timeframe`` candles; none for ``STRATEGY=none``.

    Raises:
        ConfigError: an unknown ``STRATEGY``, a bad ``STRATEGY_CRON``, or both
            ``STRATEGY`` and ``STRATEGIES_FILE`` set.
    """
    kind = settings.strategy.strip().lower()
    if kind == "none":
        return []
    if kind not in KINDS:
        raise ConfigError(
            f"STRATEGY: unknown strategy {settings.strategy!r}; use none or one of "
            f"{', '.join(KINDS)} (for more instances, symbols and schedules: STRATEGIES_FILE)"
        )
    if settings.strategies_file is not None:
        raise ConfigError("STRATEGY: set STRATEGY=none when STRATEGIES_FILE lists the strategies")
    if settings.strategy_cron:
        try:
            crontab(settings.strategy_cron)
        except ValueError as exc:
            raise ConfigError(f"STRATEGY_CRON: {exc}") from exc
    return [
        StrategySpec(
            name=kind,
            kind=kind,
            symbols=(settings.feed_symbol,),
            timeframe=timeframe,
            risk_pct=settings.strategy_risk_pct,
            cron=settings.strategy_cron or None,
            every_seconds=None if settings.strategy_cron else settings.strategy_interval,
        )
    ]


def check_symbols(
    specs: Sequence[StrategySpec], listed: set[str], timeframes: set[str] | None = None
) -> list[str]:
    """Lines for symbols the market data does not list (and, for the replay, timeframes it
    does not have: ``timeframes`` None means any), for the enabled instances (a disabled
    one may name a market of another venue)."""
    errors = []
    for spec in specs:
        if not spec.enabled:
            continue
        missing = [s for s in spec.symbols if s not in listed]
        if missing:
            errors.append(
                f"STRATEGIES_FILE: strategy {spec.name!r} field symbols: "
                f"{', '.join(missing)} not listed by the market data"
            )
        if timeframes is not None and spec.timeframe not in timeframes:
            errors.append(
                f"STRATEGIES_FILE: strategy {spec.name!r} field timeframe: the market data "
                f"has only {', '.join(sorted(timeframes))} candles"
            )
    return errors


def build_instance_strategy(spec: StrategySpec, settings: Settings, tick: Decimal) -> Strategy:
    """The strategy object of ``spec`` for one symbol whose price tick is ``tick``, capped
    by ``MAX_ORDER_QUANTITY`` / ``MAX_ORDER_NOTIONAL``.

    Raises:
        ConfigError: the kind rejects its parameters (``fast >= slow``).
    """
    params = _decimals(spec.params)
    try:
        return KINDS[spec.kind](
            spec.risk_pct,
            max_quantity=settings.max_order_quantity,
            max_notional=settings.max_order_notional,
            tick=tick,
            **params,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"STRATEGIES_FILE: strategy {spec.name!r} field params: {exc}") from exc
