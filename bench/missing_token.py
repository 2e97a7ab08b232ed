"""``python -m bench.missing_token``: how fast ``python -m bot`` refuses to start without a
token (checked before aiogram is imported), against the time to import aiogram alone.

Prints a table: median and max wall seconds over N runs (default 5) of each command.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = 5


def _time(args: list[str], env: dict[str, str], cwd: str) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, check=False)
    return time.perf_counter() - started, done.returncode


def main() -> None:
    """Run each command ``RUNS`` times and print the table."""
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else RUNS
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DATABASE_"))}
    commands = {
        "python -m bot, no TELEGRAM_BOT_TOKEN": [sys.executable, "-m", "bot"],
        "python -c 'import aiogram' (for scale)": [sys.executable, "-c", "import aiogram"],
        "python -c 'pass' (interpreter alone)": [sys.executable, "-c", "pass"],
    }
    with tempfile.TemporaryDirectory() as cwd:  # no .env
        print(f"{'command':44} {'median s':>9} {'max s':>7} {'exit':>5}")
        for name, args in commands.items():
            times, codes = [], set()
            for _ in range(runs):
                seconds, code = _time(args, env, cwd)
                times.append(seconds)
                codes.add(code)
            print(
                f"{name:44} {statistics.median(times):9.3f} {max(times):7.3f} "
                f"{','.join(map(str, sorted(codes))):>5}"
            )


if __name__ == "__main__":
    main()
