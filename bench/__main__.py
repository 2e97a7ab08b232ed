"""``python -m bench`` (``make bench``): latency, burst and memory figures of the bot.

Prints one table and exits 1 when a target of issue 3 is missed:

- tap -> order placed: p99 under 15 ms, over at least 200 approvals; the bot runs as its own
  process, the tap is the sandbox queueing the callback query, the order is placed when the
  paper broker fills it. The engine's own share (``SignalService.approve`` -> fill, no
  Telegram) is shown under it;
- tap -> card edited (p50, p99);
- an alert reaches the chat under 2 s while 100 cards are queued, with zero 429s while the
  burst drains under the sandbox's Telegram flood limits at the production pace;
- ``python -m bot``: idle RSS under 150 MB, and the start-up time to its first getUpdates
  on a fresh database.

Options: ``--approvals N`` (default 200), ``--burst N`` (default 100), ``--idle S``
(default 5). The burst takes about N seconds: Telegram's pace is 1 msg/s per chat.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
from pathlib import Path

from bench.scenarios import alert_behind_burst, approve_latency, idle_bot, percentile, tap_latency
from core.logging import configure_logging

WARMUP = 10


def _row(metric: str, value: str, target: str = "", ok: bool | None = None) -> str:
    verdict = "" if ok is None else ("ok" if ok else "MISSED")
    return f"{metric:<46} {value:>17}  {target:<12} {verdict}"


def _p50_p99(values: list[float]) -> str:
    return f"{percentile(values, 50):.1f} / {percentile(values, 99):.1f} ms"


async def _run(approvals: int, burst: int, idle: float) -> int:
    with tempfile.TemporaryDirectory(prefix="signaldesk-bench-") as name:
        tmp = Path(name)
        print(f"tapping {WARMUP} + {approvals} cards ...", file=sys.stderr)
        taps = await tap_latency(tmp, approvals, WARMUP)
        core = await approve_latency(tmp, approvals, WARMUP)
        print(f"draining a {burst}-card burst (about {burst} s at 1 msg/s) ...", file=sys.stderr)
        flood = await alert_behind_burst(tmp, burst)
        print("idling python -m bot ...", file=sys.stderr)
        process = await idle_bot(tmp, idle)

    checks = {
        "order": percentile(taps.order, 99) < 15,
        "alert": flood.alert_seconds < 2,
        "429": flood.rate_limited == 0,
        "rss": process.idle_rss_mib < 150,
    }
    n = len(taps.order)
    rows = [
        _row("metric", "value", "target"),
        _row(
            f"tap -> order placed, p50 / p99 ({n} taps)",
            _p50_p99(taps.order),
            "p99 < 15 ms",
            checks["order"],
        ),
        _row("  engine only: approve() -> order placed", _p50_p99(core)),
        _row(f"tap -> card edited, p50 / p99 ({n} taps)", _p50_p99(taps.card)),
        _row(
            f"alert behind a {flood.cards}-card burst",
            f"{flood.alert_seconds:.2f} s",
            "< 2 s",
            checks["alert"],
        ),
        _row("  cards delivered before the alert", str(flood.cards_before_alert)),
        _row(
            f"429s while the burst drained ({flood.drain_seconds:.0f} s)",
            str(flood.rate_limited),
            "0",
            checks["429"],
        ),
        _row(
            f"python -m bot idle RSS (after {process.idle:g} s)",
            f"{process.idle_rss_mib:.0f} MiB",
            "< 150 MB",
            checks["rss"],
        ),
        _row("python -m bot start-up to first getUpdates", f"{process.startup_seconds:.2f} s"),
    ]
    print(
        f"SignalDesk bench: sandbox on loopback, SQLite, paper broker, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs; {WARMUP} warm-up taps not counted"
    )
    print("\n".join(rows))
    return 0 if all(checks.values()) else 1


def main() -> int:
    """Parse the options and run the scenarios."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--approvals", type=int, default=200, help="taps measured (>= 2)")
    parser.add_argument("--burst", type=int, default=100, help="cards queued before the alert")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before the RSS")
    args = parser.parse_args()
    configure_logging("WARNING")
    return asyncio.run(_run(max(args.approvals, 2), args.burst, args.idle))


if __name__ == "__main__":
    sys.exit(main())
