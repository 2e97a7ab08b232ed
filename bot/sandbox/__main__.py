"""Run the sandbox on its own: ``python -m bot.sandbox --port 8081 --user 42:Ada``.

Starts a :class:`SandboxServer`, registers the given users (the first one is the web page's
user) and serves until interrupted. Point a bot at ``http://HOST:PORT`` with
``TelegramAPIServer.from_base`` and open the same address in a browser to chat with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from bot.sandbox.server import SandboxServer

log = logging.getLogger("bot.sandbox")


def _user(value: str) -> tuple[int, str]:
    user_id, _, name = value.partition(":")
    try:
        return int(user_id), name or f"User {user_id}"
    except ValueError:
        raise argparse.ArgumentTypeError("expected USER_ID[:FIRST_NAME]") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options: ``--token``, ``--host``, ``--port``, ``--user`` (repeatable),
    ``--rate-limits``."""
    parser = argparse.ArgumentParser(prog="python -m bot.sandbox", description=__doc__)
    parser.add_argument("--token", default="123456:SANDBOX-TOKEN", help="the bot token to accept")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (keep loopback)")
    parser.add_argument("--port", type=int, default=8081, help="TCP port (0 picks a free one)")
    parser.add_argument(
        "--user",
        type=_user,
        action="append",
        default=None,
        metavar="ID[:NAME]",
        help="a simulated user; the first is the web page's (default 1:Owner)",
    )
    parser.add_argument(
        "--rate-limits", action="store_true", help="enforce Telegram's flood limits (429s)"
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Start the sandbox with ``args`` and serve until cancelled."""
    sandbox = SandboxServer(
        args.token, host=args.host, port=args.port, enforce_rate_limits=args.rate_limits
    )
    for user_id, name in args.user or [(1, "Owner")]:
        sandbox.add_user(user_id, name)
    async with sandbox:
        log.warning(
            "Telegram sandbox: Bot API at %s/bot<token>/<method>, web chat at %s/",
            sandbox.base_url,
            sandbox.base_url,
        )
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m bot.sandbox``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
