"""Card charts: the last candles of a symbol with the entry, stop loss, take profit and the
current price, as a small PNG for a phone.

matplotlib (Agg backend, object API: no pyplot, so renders in threads do not share state)
is imported inside the render worker, so neither the CLI nor the bot's start-up pays for
it. :func:`chart_png` is the async entry point: it reads candles from the market-data port
and renders in a worker thread (``asyncio.to_thread``), so a slow render never delays a tap.
Any failure (no candles, an unknown symbol, a render error) returns ``None``: a card is
never lost because of a picture; the caller sends the text card.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import structlog

from core.domain import Candle, Side
from core.marketdata.base import MarketData

__all__ = [
    "CHART_CANDLES",
    "DEFAULT_TIMEFRAME",
    "ChartSpec",
    "chart_png",
    "render_png",
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
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: heavy import
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_WIDTH_IN, _HEIGHT_IN), dpi=_DPI)
    FigureCanvasAgg(fig)
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
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="y", linewidth=0.3, alpha=0.5)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    data = buffer.getvalue()
    if len(data) > MAX_PNG_BYTES:
        raise ValueError(f"chart of {len(data)} bytes is over {MAX_PNG_BYTES}")
    return data


def warm_up() -> None:
    """Import matplotlib and its fonts (blocking, seconds on a busy machine: run it in a
    worker thread after start-up) so the first card's chart renders in the usual time."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1), dpi=_DPI)
    FigureCanvasAgg(fig).draw()


def _places(level: Decimal) -> int:
    """Decimals to print a level with: 2 for prices over 100, more for small ones."""
    return 2 if abs(level) >= 100 else 5


async def chart_png(
    market: MarketData,
    spec: ChartSpec,
    count: int = CHART_CANDLES,
) -> bytes | None:
    """The chart of ``spec`` with its last ``count`` candles read from ``market`` (the
    candles in ``spec`` are replaced), rendered off the event loop; ``None`` when it cannot
    be made (no candles, the market data failed, a render error), logged as
    ``chart.failed``. Never raises (except on cancellation)."""
    try:
        candles = await market.candles(spec.symbol, spec.timeframe, count)
        full = ChartSpec(
            spec.symbol, spec.timeframe, candles, spec.current or _last(candles), spec.entry,
            spec.stop_loss, spec.take_profit, spec.side,
        )  # fmt: skip
        return await asyncio.to_thread(render_png, full)
    except Exception as exc:  # a picture never costs a card: the caller sends the text
        log.warning("chart.failed", symbol=spec.symbol, error=repr(exc)[:200])
        return None


def _last(candles: Sequence[Candle]) -> Decimal | None:
    return candles[-1].close if candles else None
