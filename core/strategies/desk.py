"""StrategyDesk: the strategy instances of one engine, run on their schedules.

Each instance (:class:`~core.strategies.instances.StrategySpec`) runs one
:class:`~core.strategies.runner.StrategyRunner` per symbol on the market data's closed
candles of its timeframe. The owner's pause is persisted (table ``strategy_state``) and
re-read at every scheduled run, so it holds across processes and restarts; pausing and
resuming are audited. Every signal a strategy proposes gets a ``lineage`` audit event:
the instance, the timeframe, the last candle's open time and close and the indicator
values that fired, so ``/history`` answers "why was this proposed".

Sizing: equity is in the account's currency; where a symbol's quote currency differs
(ETH/BTC on a USDT account, USDJPY on a USD one) it is converted with the market data's
rate (``BTC/USDT``, or the inverse of ``USD/JPY``) before the strategy sizes the trade.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import structlog
from sqlmodel.ext.asyncio.session import AsyncSession

from core.brokers.base import Broker
from core.db import repositories as repo
from core.db.engine import Database
from core.db.models import StrategyStateRow
from core.domain import Signal, utcnow
from core.errors import InvalidInputError, NotFoundError, UnknownSymbolError
from core.marketdata.base import Instrument, MarketData
from core.services.signals import SignalService
from core.strategies.base import Strategy
from core.strategies.instances import StrategySpec
from core.strategies.runner import StrategyRunner

__all__ = ["InstanceStatus", "StrategyDesk"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    """One instance as ``/strategies`` shows it; times are UTC, None when never."""

    spec: StrategySpec
    paused: bool
    paused_by: str
    last_run_at: datetime | None
    last_signal_id: int | None
    last_signal_at: datetime | None
    next_run_at: datetime | None


class StrategyDesk:
    """Runs, lists, pauses and resumes strategy instances.

    Args:
        specs: the instances.
        runners: per instance name, its runners (one per symbol).
        instruments: by symbol, for precision and the quote currency.
        db: where the pause and the last run live, and the lineage is audited.
        market: the candles and conversion rates.
        broker: the account equity.
        clock: current UTC time.
    """

    def __init__(
        self,
        specs: Sequence[StrategySpec],
        runners: Mapping[str, Sequence[StrategyRunner]],
        instruments: Mapping[str, Instrument],
        db: Database,
        market: MarketData,
        broker: Broker,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self._runners = runners
        self._instruments = instruments
        self._db = db
        self._market = market
        self._broker = broker
        self._clock = clock

    @classmethod
    def build(
        cls,
        specs: Sequence[StrategySpec],
        make_strategy: Callable[[StrategySpec, Instrument], Strategy],
        instruments: Mapping[str, Instrument],
        db: Database,
        market: MarketData,
        broker: Broker,
        signals: SignalService,
        clock: Callable[[], datetime] = utcnow,
    ) -> StrategyDesk:
        """A desk with one runner per (enabled instance, symbol); ``make_strategy`` builds
        the strategy of an instance for one instrument."""
        runners = {
            spec.name: [
                StrategyRunner(
                    make_strategy(spec, instruments[symbol]),
                    None,
                    broker,
                    signals,
                    symbol,
                )
                for symbol in (spec.symbols if spec.enabled else ())
            ]
            for spec in specs
        }
        return cls(specs, runners, instruments, db, market, broker, clock)

    def spec(self, name: str) -> StrategySpec:
        """The instance called ``name``. Raises NotFoundError naming the known ones."""
        try:
            return self.specs[name]
        except KeyError:
            known = ", ".join(self.specs) or "none"
            raise NotFoundError(f"no strategy instance {name!r}; known: {known}") from None

    async def run(self) -> list[Signal]:
        """Run every enabled, unpaused instance once; the signals proposed."""
        proposed: list[Signal] = []
        for name, spec in self.specs.items():
            if spec.enabled:
                proposed += await self.run_instance(name)
        return proposed

    async def run_instance(self, name: str, *, forced: bool = False) -> list[Signal]:
        """Run instance ``name`` once (skipped while paused unless ``forced``, as the
        owner's ``/run`` is); records the run and each signal's lineage.

        Raises:
            NotFoundError: no such instance.
            BrokerError: candles, a rate or the equity could not be read.
        """
        spec = self.spec(name)
        if not forced and (await self._state(name)).paused:
            log.info("strategy paused: run skipped", strategy=name)
            return []
        now = self._clock()
        account = await self._broker.account()
        proposed: list[Signal] = []
        for runner in self._runners[name]:
            instrument = self._instruments[runner.symbol]
            candles = await self._market.candles(
                runner.symbol, spec.timeframe, runner.strategy.lookback
            )
            equity = await self._in_quote(account.equity, account.currency, instrument)
            signals = await runner.evaluate(candles, equity)
            for signal in signals:
                await self._lineage(spec, runner, signal, instrument)
            proposed += signals
        async with self._db.session() as session:
            row = await self._row(session, name)
            row.last_run_at = now
            if proposed:
                row.last_signal_id = proposed[-1].id
                row.last_signal_at = now
        return proposed

    async def statuses(
        self, next_runs: Mapping[str, datetime | None] | None = None
    ) -> list[InstanceStatus]:
        """Every instance with its persisted state; ``next_runs`` (from the scheduler)
        fills the next run, else it is computed from the instance's trigger."""
        now = self._clock()
        result = []
        for name, spec in self.specs.items():
            state = await self._state(name)
            if next_runs is not None and name in next_runs:
                next_at = next_runs[name]
            else:
                trigger, _ = spec.trigger()
                next_at = trigger.get_next_fire_time(None, now) if spec.enabled else None
            result.append(
                InstanceStatus(
                    spec,
                    state.paused,
                    state.paused_by,
                    state.last_run_at,
                    state.last_signal_id,
                    state.last_signal_at,
                    next_at,
                )
            )
        return result

    async def set_paused(self, name: str, paused: bool, actor: str) -> InstanceStatus:
        """Pause or resume instance ``name`` (persisted, audited). Raises NotFoundError."""
        self.spec(name)
        now = self._clock()
        async with self._db.session() as session:
            row = await self._row(session, name)
            row.paused = paused
            row.paused_by = actor[:128] if paused else ""
            row.updated_at = now
            await repo.add_audit(
                session,
                actor=actor[:128],
                action="strategy_pause" if paused else "strategy_resume",
                at=now,
                reason=f"strategy {name}",
            )
        [status] = [s for s in await self.statuses() if s.spec.name == name]
        return status

    async def _state(self, name: str) -> StrategyStateRow:
        async with self._db.session() as session:
            row = await session.get(StrategyStateRow, name)
            return row if row is not None else StrategyStateRow(name=name)

    @staticmethod
    async def _row(session: AsyncSession, name: str) -> StrategyStateRow:
        row = await session.get(StrategyStateRow, name)
        if row is None:
            row = StrategyStateRow(name=name)
            session.add(row)
        return row

    async def _in_quote(self, equity: Decimal, currency: str, instrument: Instrument) -> Decimal:
        """``equity`` (in ``currency``) in ``instrument``'s quote currency, converted at
        the market data's last price of QUOTE/CURRENCY (or 1 / CURRENCY/QUOTE).

        Raises:
            InvalidInputError: the market data has neither pair.
        """
        quote = instrument.quote
        if not quote or quote == currency:
            return equity
        try:
            rate = (await self._market.quote(f"{quote}/{currency}")).last
            return equity / rate
        except UnknownSymbolError:
            pass
        try:
            return equity * (await self._market.quote(f"{currency}/{quote}")).last
        except UnknownSymbolError:
            raise InvalidInputError(
                f"cannot size {instrument.symbol}: the market data lists neither "
                f"{quote}/{currency} nor {currency}/{quote} to convert the equity"
            ) from None

    async def _lineage(
        self, spec: StrategySpec, runner: StrategyRunner, signal: Signal, instrument: Instrument
    ) -> None:
        """The audit event saying what the strategy saw when it proposed ``signal``."""
        candle = runner.last_candle
        indicators: Mapping[str, Decimal] = getattr(runner.strategy, "indicators", {})
        seen = ", ".join(f"{k} {instrument.format_price(v)}" for k, v in indicators.items())
        reason = (
            f"strategy {spec.name} ({spec.kind}) on {spec.timeframe} candles of "
            f"{signal.symbol}: last candle {candle.at:%Y-%m-%d %H:%M} UTC close "
            f"{instrument.format_price(candle.close)}; {seen}"
            if candle is not None
            else f"strategy {spec.name} ({spec.kind})"
        )
        async with self._db.session() as session:
            await repo.add_audit(
                session,
                actor=f"strategy:{spec.name}"[:128],
                action="lineage",
                at=self._clock(),
                signal_id=signal.id,
                reason=reason,
            )
