"""Charts for a phone, as small PNGs: card charts (the last candles of a symbol with the
entry, stop loss, take profit and the current price) and the equity curve of ``/pnl``.

matplotlib (Agg backend, object API: no pyplot, so renders in threads do not share state)
is imported inside the render worker, so neither the CLI nor the bot's start-up pays for
it. Every render runs in a worker thread (:func:`off_loop`, ``asyncio.to_thread``), so a
slow render never delays a tap. :func:`chart_png` is a card's chart: it reads candles from
the market-data port, and any failure (no candles, an unknown symbol, a render error)
returns ``None``: a card is never lost because of a picture; the caller sends the text
card. :func:`symbol_png` is ``/chart``'s (a bad symbol or timeframe raises, to be
answered); :func:`equity_png` plots ``/pnl``'s equity curve.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import accumulate
from typing import Any

import structlog

from core.domain import Candle, Side
from core.marketdata.base import MarketData, timeframe_delta
from core.services.reports import EquityPoint

__all__ = [
    "CHART_CANDLES",
    "DEFAULT_TIMEFRAME",
    "ChartSpec",
    "chart_png",
    "equity_png",
    "off_loop",
    "render_equity_png",
    "render_png",
    "symbol_png",
    "warm_up",
]

log = structlog.get_logger(__name__)

#: Candles on a card chart.
CHART_CANDLES = 60
#: The timeframe of card charts (signals carry no timeframe of their own).
DEFAULT_TIMEFRAME = "1h"
#: A chart larger than this (bytes) is not sent (Telegram accepts 10 MB; a phone wants small).
MAX_PNG_BYTES = 100_000

_WIDTH_IN, _HEIGHT_IN, _DPI = 6.0, 3.3, 100  # 600 x 330 px: sharp on a phone, ~30 KB


@dataclass(frozen=True, slots=True)
class ChartSpec:
    """What one chart shows: ``candles`` (oldest first) of ``symbol`` on ``timeframe``, and
    the horizontal levels (quote currency) of a signal: ``entry`` (limit or reference
    price), ``stop_loss``, ``take_profit``, ``current`` (the last price); ``side`` colours
    the entry line. Levels may be ``None`` (``/chart`` has none but the current price)."""

    symbol: str
    timeframe: str
    candles: Sequence[Candle]
    current: Decimal | None = None
    entry: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    side: Side | None = None


def render_png(spec: ChartSpec) -> bytes:
    """Render ``spec`` as a PNG (blocking: call it in a worker thread).

    Raises:
        ValueError: ``spec`` has no candles, or the PNG is over :data:`MAX_PNG_BYTES`.
    """
    if not spec.candles:
        raise ValueError(f"no candles for {spec.symbol} {spec.timeframe}")
    fig = _figure()
    ax = fig.add_axes((0.02, 0.08, 0.80, 0.84))
    xs = range(len(spec.candles))
    opens = [float(c.open) for c in spec.candles]
    closes = [float(c.close) for c in spec.candles]
    up = [c >= o for o, c in zip(opens, closes, strict=True)]
    colours = ["#26a69a" if u else "#ef5350" for u in up]
    ax.vlines(
        xs, [float(c.low) for c in spec.candles], [float(c.high) for c in spec.candles],
        colors=colours, linewidth=0.8,
    )  # fmt: skip
    ax.vlines(xs, opens, closes, colors=colours, linewidth=4.0)  # bodies: one collection
    ax.margins(x=0.01, y=0.08)
    levels = [
        ("entry", spec.entry, "#1e88e5" if spec.side is not Side.SELL else "#8e24aa", "-"),
        ("stop", spec.stop_loss, "#e53935", "--"),
        ("target", spec.take_profit, "#43a047", "--"),
        ("last", spec.current, "#616161", ":"),
    ]
    drawn = sorted(
        ((float(level), label, level, colour, style) for label, level, colour, style in levels
         if level is not None),
    )  # fmt: skip
    low, high = ax.get_ylim()
    for y, *_ in drawn:
        low, high = min(low, y), max(high, y)
    ax.set_ylim(low - (high - low) * 0.04, high + (high - low) * 0.04)
    gap = (high - low) * 0.07  # labels at least this far apart, lines where they are
    previous = None
    for y, label, level, colour, style in drawn:
        ax.axhline(y, color=colour, linestyle=style, linewidth=1.2)
        at = y if previous is None else max(y, previous + gap)
        previous = at
        text = f"{label} {level:,.{_places(level)}f}"
        ax.annotate(
            text, xy=(1.0, at), xycoords=("axes fraction", "data"), xytext=(3, 0),
            textcoords="offset points", va="center", fontsize=8, color=colour,
        )  # fmt: skip
    ax.set_title(f"{spec.symbol} · {spec.timeframe}", fontsize=10, loc="left")
    ax.set_xticks([])
    ax.tick_params(axis="y", labelsize=7, left=False, labelleft=False)
    _plain(ax, ("top", "right", "left"))
    return _png(fig)


def render_equity_png(points: Sequence[EquityPoint], currency: str = "") -> bytes:
    """The equity curve of ``points`` (oldest first; equity in quote currency ``currency``)
    as a PNG, the high-water mark dotted (blocking: call it in a worker thread).

    Raises:
        ValueError: ``points`` is empty, or the PNG is over :data:`MAX_PNG_BYTES`.
    """
    if not points:
        raise ValueError("no equity history")
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.ticker import StrMethodFormatter

    fig = _figure()
    ax = fig.add_axes((0.14, 0.12, 0.83, 0.78))
    times = [p.at for p in points]
    equity = [float(p.equity) for p in points]
    peaks = list(accumulate(equity, max))  # the high-water mark so far
    ax.plot(times, equity, color="#1e88e5", linewidth=1.4)
    ax.plot(times, peaks, color="#9e9e9e", linewidth=0.8, linestyle=":")
    ax.fill_between(times, equity, peaks, color="#ef5350", alpha=0.15, linewidth=0)
    locator = AutoDateLocator(minticks=3, maxticks=7)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.tick_params(labelsize=7)
    ax.set_title(f"Equity{' · ' + currency if currency else ''}", fontsize=10, loc="left")
    _plain(ax, ("top", "right"))
    return _png(fig)


def _figure() -> Any:
    """A phone-sized matplotlib ``Figure`` on the Agg canvas (imported lazily: heavy)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_WIDTH_IN, _HEIGHT_IN), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _plain(ax: Any, hidden: Sequence[str]) -> None:
    """Hide the ``hidden`` spines and draw a light horizontal grid."""
    for side in hidden:
        ax.spines[side].set_visible(False)
    ax.grid(axis="y", linewidth=0.3, alpha=0.5)


def _png(fig: Any) -> bytes:
    """``fig`` saved as PNG. Raises ValueError over :data:`MAX_PNG_BYTES`."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    data = buffer.getvalue()
    if len(data) > MAX_PNG_BYTES:
        raise ValueError(f"chart of {len(data)} bytes is over {MAX_PNG_BYTES}")
    return data


def warm_up() -> None:
    """Import matplotlib and its fonts (blocking, seconds on a busy machine: run it in a
    worker thread after start-up) so the first card's chart renders in the usual time."""
    _figure().canvas.draw()


def _places(level: Decimal) -> int:
    """Decimals to print a level with: 2 for prices over 100, more for small ones."""
    return 2 if abs(level) >= 100 else 5


async def chart_png(
    market: MarketData,
    spec: ChartSpec,
    count: int = CHART_CANDLES,
    *,
    render: Callable[[ChartSpec], bytes] = render_png,
) -> bytes | None:
    """The chart of ``spec`` with its last ``count`` candles read from ``market`` (the
    candles in ``spec`` are replaced), drawn by ``render`` (:func:`render_png`; tests inject
    a slow one) off the event loop; ``None`` when it cannot be made (no candles, the market
    data failed, a render error), logged as ``chart.failed``. Never raises (except on
    cancellation)."""
    try:
        candles = await market.candles(spec.symbol, spec.timeframe, count)
    except Exception as exc:  # a picture never costs a card: the caller sends the text
        log.warning("chart.failed", symbol=spec.symbol, error=repr(exc)[:200])
        return None
    return await off_loop(render, _with_candles(spec, candles))


async def symbol_png(
    market: MarketData, symbol: str, timeframe: str, count: int = CHART_CANDLES
) -> bytes | None:
    """``/chart``: the last ``count`` candles of ``symbol`` on ``timeframe`` with the
    current price, rendered off the event loop; ``None`` when the render fails.

    Raises:
        InvalidInputError: ``timeframe`` is not one of the market data's timeframes.
        UnknownSymbolError: the market data does not know ``symbol``.
        BrokerTemporaryError: the market data did not answer.
    """
    timeframe_delta(timeframe)
    candles = await market.candles(symbol, timeframe, count)
    return await off_loop(render_png, _with_candles(ChartSpec(symbol, timeframe, ()), candles))


async def equity_png(points: Sequence[EquityPoint], currency: str = "") -> bytes | None:
    """``/pnl``'s equity curve (:func:`render_equity_png`) rendered off the event loop;
    ``None`` with fewer than two points (no curve yet) or when the render fails."""
    if len(points) < 2:
        return None
    return await off_loop(render_equity_png, points, currency)


async def off_loop(render: Callable[..., bytes], *args: Any) -> bytes | None:
    """``render(*args)`` in a worker thread; ``None`` (logged as ``chart.failed``) when it
    raises. The one place renders leave the event loop."""
    try:
        return await asyncio.to_thread(render, *args)
    except Exception as exc:  # a picture never costs the text
        log.warning("chart.failed", render=render.__name__, error=repr(exc)[:200])
        return None


def _with_candles(spec: ChartSpec, candles: Sequence[Candle]) -> ChartSpec:
    """``spec`` with ``candles``, its current price defaulting to the last close."""
    return ChartSpec(
        spec.symbol, spec.timeframe, candles, spec.current or _last(candles), spec.entry,
        spec.stop_loss, spec.take_profit, spec.side,
    )  # fmt: skip


def _last(candles: Sequence[Candle]) -> Decimal | None:
    return candles[-1].close if candles else None
