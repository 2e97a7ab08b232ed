"""Results from the trade record: ``/pnl [day|week|month|all]``, ``/trades [N]`` and
``/signal ID`` (one signal's lineage).

Each handler parses, reads the trade record (:class:`core.services.trades.TradeService`)
and formats with :mod:`bot.render`; nothing changes state.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot import render
from bot.handlers.args import Args, history_count, signal_ref
from bot.handlers.replies import answer_long
from core.app import Engine
from core.domain import ZERO
from core.services.trades import trade_stats

__all__ = ["PERIODS", "create_router", "period_start"]

#: The periods of ``/pnl``; ``day`` starts at 00:00 UTC, the others count back from now.
PERIODS = ("day", "week", "month", "all")


def _period(text: str) -> str:
    """``[day|week|month|all]``, default ``all``."""
    period = text.strip().lower() or "all"
    if period not in PERIODS:
        raise ValueError("a period expected")
    return period


def period_start(period: str, now: datetime) -> datetime | None:
    """The UTC start of ``period`` at ``now``: today's midnight UTC, 7 or 30 days back, or
    None for ``all``."""
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        return now - timedelta(days=7)
    if period == "month":
        return now - timedelta(days=30)
    return None


def create_router() -> Router:
    """The router of ``/pnl``, ``/trades`` and ``/signal``."""
    router = Router(name="results")
    router.message.register(on_pnl, Command("pnl"), Args(_period))
    router.message.register(on_trades, Command("trades"), Args(history_count))
    router.message.register(on_signal, Command("signal"), Args(signal_ref))
    return router


async def on_pnl(message: Message, args: str, engine: Engine) -> None:
    """``/pnl [period]``: the closed trades' figures and the open positions' unrealized
    PnL (from the broker's positions)."""
    since = period_start(args, engine.clock())
    stats = trade_stats(await engine.trades.closed_since(since))
    positions = await engine.trading.positions()
    unrealized = sum((p.unrealized_pnl for p in positions), ZERO)
    currency = (await engine.trading.account()).currency
    await message.answer(render.pnl_text(args, stats, unrealized, currency))


async def on_trades(message: Message, args: int, engine: Engine) -> None:
    """``/trades [N]``: the last N trades, newest first."""
    await answer_long(message, render.trades_text(await engine.trades.recent(limit=args)))


async def on_signal(message: Message, args: int, engine: Engine) -> None:
    """``/signal ID``: the signal, its audit events (proposal, edits, decision, order
    states) and the trade it opened. Raises NotFoundError (answered by the error handler)."""
    signal = await engine.signals.get(args)
    events = await engine.signals.history(limit=100, signal_id=args)
    trade = await engine.trades.for_signal(args)
    await answer_long(message, render.signal_text(signal, events, trade))
