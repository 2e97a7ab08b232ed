"""structlog configuration: console lines for people, JSON lines (``LOG_JSON=true``) for
log collectors. Secrets never reach the logs: settings hold them as ``SecretStr``."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging"]


def configure_logging(level: str = "INFO", *, json: bool = False) -> None:
    """Route structlog and the standard library's logging to stderr at ``level``."""
    logging.basicConfig(level=level, stream=sys.stderr, format="%(message)s", force=True)
    for noisy in ("aiosqlite", "sqlalchemy.engine", "alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    renderer: list[structlog.types.Processor] = (
        # exceptions as a plain traceback string (no locals) in an "exception" field
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if json
        # plain tracebacks: rich's default shows each frame's locals, and aiogram's
        # make_request holds the request URL, which embeds the bot token
        else [
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            )
        ]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
