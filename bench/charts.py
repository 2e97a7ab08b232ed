"""``python -m bench.charts``: how long a card chart takes to render, and what a render in
its worker thread does to the event loop (a tap is answered by that loop).

Prints one table and exits 1 when a target of the issue "Decide from the phone" is missed:

- render of a 60-candle card chart (:func:`bot.chart.render_png`): median under 300 ms,
  also shown as a ratio to a floor (an empty figure of the same size saved as PNG: the
  least a chart costs on this machine);
- render of ``/pnl``'s equity curve (:func:`bot.chart.render_equity_png`, 500 points: the
  most a curve keeps), median, and as a ratio to the same floor;
- event-loop lag while charts render in ``asyncio.to_thread``: the worst lateness of a
  5 ms ticker, against the same ticker on an idle loop (a tap waits at most about that).

Times are ``time.perf_counter()`` in one process; matplotlib is imported first (the bot
does it in a worker thread after start-up) and the heap is frozen as the bot freezes it.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bot.chart import ChartSpec, render_equity_png, render_png, warm_up
from core.domain import Candle, Side
from core.services.reports import MAX_CURVE_POINTS, EquityPoint

RENDERS = 20
TICK = 0.005


def _spec() -> ChartSpec:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    candles = []
    price = Decimal(113000)
    for n in range(60):
        move = Decimal((n * 37) % 200 - 100)
        candles.append(
            Candle(
                start + timedelta(hours=n),
                price,
                price + 250,
                price - 250,
                price + move,
                Decimal(1),
            )
        )
        price += move
    return ChartSpec("BTC/USDT", "1h", candles, price, price, price - 1500, price + 2500, Side.BUY)


def _curve() -> list[EquityPoint]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        EquityPoint(start + timedelta(minutes=30 * n), Decimal(10000 + (n * 37) % 400 - 200))
        for n in range(MAX_CURVE_POINTS)
    ]


def _median_seconds(render: Callable[[], bytes]) -> tuple[float, list[float]]:
    """Median seconds of :data:`RENDERS` calls of ``render``, and every time."""
    times = []
    for _ in range(RENDERS):
        started = time.perf_counter()
        render()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def _floor() -> float:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.3), dpi=100)
    FigureCanvasAgg(fig)
    started = time.perf_counter()
    fig.savefig(io.BytesIO(), format="png")
    return time.perf_counter() - started


async def _lag(seconds: float, busy: bool) -> float:
    """Worst lateness (s) of a 5 ms ticker over ``seconds``, with charts rendering in a
    worker thread meanwhile when ``busy``."""
    stop = asyncio.Event()

    async def render_loop() -> None:
        spec = _spec()
        while not stop.is_set():
            await asyncio.to_thread(render_png, spec)

    worker = asyncio.create_task(render_loop()) if busy else None
    worst = 0.0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        before = loop.time()
        await asyncio.sleep(TICK)
        worst = max(worst, loop.time() - before - TICK)
    stop.set()
    if worker is not None:
        await worker
    return worst


def main() -> int:
    """Run the measurements, print the table; 1 when a target is missed."""
    warm_up()
    # the bot freezes its start-up heap (gc.freeze) so collections skip it; without that the
    # collector's passes over the bench's own objects would be measured as render lag
    gc.collect()
    gc.freeze()
    spec = _spec()
    size = len(render_png(spec))
    median, times = _median_seconds(lambda: render_png(spec))
    curve = _curve()
    curve_size = len(render_equity_png(curve, "USDT"))
    curve_median, _ = _median_seconds(lambda: render_equity_png(curve, "USDT"))
    floor = statistics.median(_floor() for _ in range(5))
    idle = asyncio.run(_lag(2.0, busy=False))
    busy = asyncio.run(_lag(4.0, busy=True))
    ok = median < 0.3 and size < 100_000 and curve_size < 100_000
    print(f"{'metric':<48} {'value':>14}  target")
    verdict = "ok" if ok else "MISSED"
    label = f"card chart render, median of {RENDERS}"
    print(f"{label:<48} {median * 1000:>11.0f} ms  < 300 ms {verdict}")
    print(f"{'  p95':<48} {sorted(times)[int(RENDERS * 0.95) - 1] * 1000:>11.0f} ms")
    print(f"{'  floor (empty figure to PNG)':<48} {floor * 1000:>11.0f} ms")
    print(f"{'  ratio to the floor':<48} {median / floor:>12.1f} x")
    print(f"{'  PNG size':<48} {size / 1000:>11.1f} KB  < 100 KB")
    print(f"{'equity curve render (500 points), median':<48} {curve_median * 1000:>11.0f} ms")
    print(f"{'  ratio to the floor':<48} {curve_median / floor:>12.1f} x")
    print(f"{'  PNG size':<48} {curve_size / 1000:>11.1f} KB  < 100 KB")
    print(f"{'event-loop lag, idle (worst 5 ms tick)':<48} {idle * 1000:>11.1f} ms")
    print(f"{'event-loop lag, charts rendering in a thread':<48} {busy * 1000:>11.1f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
