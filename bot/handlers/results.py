"""Results from the trade record: ``/pnl [day|week|month|all]`` (with the equity curve),
``/daily [N]``, ``/performance``, ``/trades [N]``, ``/signal ID`` (one signal's lineage)
and ``/chart SYMBOL [TIMEFRAME]``.

Each handler parses, reads one core service (:class:`core.services.reports.ReportService`,
:class:`core.services.trades.TradeService`, the market data) and formats with
:mod:`bot.render`; pictures are drawn off the event loop by :mod:`bot.chart`. Nothing
changes state.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import BufferedInputFile, Message

from bot import chart, render
from bot.handlers.args import Args, history_count, no_args, signal_ref, symbol
from bot.handlers.replies import answer_long
from core.app import Engine
from core.errors import InvalidInputError
from core.services.reports import MAX_DAYS, PERIODS

__all__ = ["DEFAULT_DAYS", "create_router", "day_count"]

#: N of a bare ``/daily``.
DEFAULT_DAYS = 7


def _period(text: str) -> str:
    """``[day|week|month|all]``, default ``all``."""
    period = text.strip().lower() or "all"
    if period not in PERIODS:
        raise ValueError("a period expected")
    return period


def day_count(text: str) -> int:
    """``[N]`` of ``/daily``: a whole number of days, 1 to :data:`MAX_DAYS`, default
    :data:`DEFAULT_DAYS`. Raises InvalidInputError naming N (answered by the error
    handler)."""
    if not text:
        return DEFAULT_DAYS
    if not text.isdigit() or not 1 <= int(text) <= MAX_DAYS:
        raise InvalidInputError(
            f"N must be a whole number of days from 1 to {MAX_DAYS}, got {text}"
        )
    return int(text)


def _chart_args(text: str) -> tuple[str, str]:
    """``SYMBOL [TIMEFRAME]``: the symbol (upper-cased) and the timeframe as typed (default
    the card charts' ``1h``); the timeframe is checked against the market data's."""
    parts = text.split()
    if not 1 <= len(parts) <= 2:
        raise ValueError("a symbol and at most a timeframe expected")
    return symbol(parts[0]), (parts[1] if len(parts) == 2 else chart.DEFAULT_TIMEFRAME)


def create_router() -> Router:
    """The router of the result commands and ``/chart``."""
    router = Router(name="results")
    router.message.register(on_pnl, Command("pnl"), Args(_period))
    router.message.register(on_daily, Command("daily"), Args(day_count))
    router.message.register(on_performance, Command("performance"), Args(no_args))
    router.message.register(on_trades, Command("trades"), Args(history_count))
    router.message.register(on_signal, Command("signal"), Args(signal_ref))
    router.message.register(on_chart, Command("chart"), Args(_chart_args))
    return router


async def on_pnl(message: Message, args: str, engine: Engine) -> None:
    """``/pnl [period]``: the figures as the caption of the period's equity curve (photo
    first, then the text, when the text is over a caption's 1024 characters); the text
    alone when there is no equity history or the curve cannot be drawn."""
    report = await engine.reports.pnl(args)
    text = render.pnl_text(report)
    png = await chart.equity_png(report.curve, report.currency)
    if png is None:
        await message.answer(text)
        return
    photo = BufferedInputFile(png, f"equity-{args}.png")
    if len(text) <= render.MAX_CAPTION:
        await message.answer_photo(photo, caption=text)
        return
    await message.answer_photo(photo)
    await answer_long(message, text)


async def on_daily(message: Message, args: int, engine: Engine) -> None:
    """``/daily [N]``: the last N local days (``DISPLAY_TIMEZONE``), newest first."""
    report = await engine.reports.daily(args)
    await answer_long(message, render.daily_text(report, engine.settings.display_zone))


async def on_performance(message: Message, engine: Engine) -> None:
    """``/performance``: closed trades per symbol and per source."""
    await answer_long(message, render.performance_text(await engine.reports.performance()))


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


async def on_chart(message: Message, args: tuple[str, str], engine: Engine) -> None:
    """``/chart SYMBOL [TIMEFRAME]``: the last candles with the current price, as a photo;
    a text answer when it cannot be drawn. Raises InvalidInputError (timeframe) and
    UnknownSymbolError (symbol), answered by the error handler."""
    name, timeframe = args
    png = await chart.symbol_png(engine.market, name, timeframe)
    if png is None:
        await message.answer(render.chart_failed(name, timeframe))
        return
    await message.answer_photo(
        BufferedInputFile(png, "chart.png"), caption=render.chart_caption(name, timeframe)
    )
