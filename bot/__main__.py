"""``python -m bot``: run the Telegram bot (long polling) on the configured engine.

The settings, the token and the owners are checked before aiogram is imported (about a
second of imports), so a bot that cannot start says so at once. Pending migrations run in a
child process meanwhile (:func:`core.db.engine.start_upgrade`): alembic loads here only
when the child could not finish (then its error is reported as before); a schema found at
head, or brought there by the child, is not checked a second time.

Exit status: 0 after a clean stop (SIGINT/SIGTERM), 2 when the settings cannot be served
(one line on stderr says what to set; a JSON log line when ``LOG_JSON=true``).
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import TYPE_CHECKING

from bot.preflight import check_settings
from core.config import Settings, load_settings
from core.db.engine import start_upgrade
from core.errors import ConfigError
from core.logging import configure_logging

if TYPE_CHECKING:
    from bot.delivery import DeliveryPolicy


def _refuse(exc: ConfigError, settings: Settings | None) -> int:
    """One line saying why the bot cannot start: JSON once ``LOG_JSON=true`` is known."""
    if settings is not None and settings.log_json:
        import structlog

        structlog.get_logger("bot").error("bot.cannot_start", error=str(exc))
    else:
        sys.stderr.write(f"signaldesk bot: {exc}\n")
    return 2


def main(policy: DeliveryPolicy | None = None) -> int:
    """Load the settings, refuse to start without a token or owners, then poll.
    ``policy`` changes the outbox's pace (the benchmarks post cards unpaced)."""
    settings: Settings | None = None
    try:
        settings = load_settings()
        check_settings(settings)
        configure_logging(settings.log_level, json=settings.log_json, secrets=settings.secrets())
        from core.reporting import init_error_reporting

        init_error_reporting(settings)
        # migrations run in a child process while aiogram is imported (see start_upgrade)
        upgrading = start_upgrade(settings.database_url)
        # aiogram's import builds ~1,500 pydantic models; the cyclic collector, run over and
        # over as they pile up, took 10-15% of it. What the imports built (~270k objects)
        # lives as long as the process: collected once and frozen here, no collection
        # scans it again (re-enabled unfrozen, the young generation's first pass and the
        # start-up hook's full one took ~0.3 s of CPU before the first getUpdates).
        gc.disable()
        try:
            from bot.app import BotApp  # aiogram: only for a bot that can start

            app = BotApp.from_settings(settings, policy)
        finally:
            gc.collect()
            gc.freeze()
            gc.enable()
            if upgrading is not None:
                upgrading.wait()  # never leave a migration half done behind
        # at head (found so, or the child brought it there): the engine need not check
        # again; after a failed child it upgrades here and reports what failed
        app.migrate = upgrading is not None and upgrading.returncode != 0
        asyncio.run(app.run())
    except ConfigError as exc:  # also a broker extra missing when the engine is built
        return _refuse(exc, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
