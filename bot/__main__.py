"""``python -m bot``: run the Telegram bot (long polling) on the configured engine.

Exit status: 0 after a clean stop (SIGINT/SIGTERM), 2 when the settings cannot be served
(one line on stderr says what to set).
"""

from __future__ import annotations

import asyncio
import sys

from bot.app import BotApp
from bot.delivery import DeliveryPolicy
from core.config import load_settings
from core.errors import ConfigError
from core.logging import configure_logging


def main(policy: DeliveryPolicy | None = None) -> int:
    """Load the settings, refuse to start without a token or owners, then poll.
    ``policy`` changes the outbox's pace (the benchmarks post cards unpaced)."""
    try:
        settings = load_settings()
        app = BotApp.from_settings(settings, policy)
        configure_logging(settings.log_level, json=settings.log_json, secrets=settings.secrets())
        asyncio.run(app.run())
    except ConfigError as exc:  # also a broker extra missing when the engine is built
        sys.stderr.write(f"signaldesk bot: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
