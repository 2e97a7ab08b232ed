"""structlog configuration: console lines for people, JSON lines (``LOG_JSON=true``) for
log collectors, and one redaction of secrets for every line.

Every line, whether it comes from structlog or from the standard library's logging (aiogram,
aiohttp, httpx, APScheduler, alembic, ccxt, SQLAlchemy), passes :class:`Redactor` as the
last step before it is written, tracebacks included. It replaces with ``***``:

- the known secret values of the settings (:meth:`core.config.Settings.secrets`: the bot
  token and its secret part, ``WEBHOOK_SECRET``, ``CCXT_API_KEY``/``CCXT_SECRET``/
  ``CCXT_PASSWORD``, ``MT5_PASSWORD``, the database password, the path and query of
  ``HEARTBEAT_PING_URL``), as written and as they appear URL-encoded or JSON-escaped;
- whatever looks like a bot token (``bot<digits>:<30+ characters>`` in a Bot API URL, or
  ``<digits>:<30+ characters>`` alone) and the password of any ``scheme://user:password@``.

With ``json=True`` every line is one JSON object: structlog's own, and the standard
library's (aiogram, aiohttp, APScheduler, alembic, ccxt, asyncio, Python's warnings) through
structlog's ``ProcessorFormatter`` with the same fields (``event``, ``level``, ``logger``,
``timestamp``, ``exception``); uncaught exceptions, in the main thread, in other threads
and in ``__del__`` (unraisable), are logged too, never printed raw.

httpx's and aiohttp's per-request INFO lines (which carry URLs) are off at every level, and
an uncaught exception's traceback is logged (so redacted) instead of printed raw. A line
that cannot be written is dropped, never raised into the code that logged it (the standard
library's handlers already behave so).
"""

from __future__ import annotations

import json as jsonlib
import logging
import re
import sys
import threading
from collections.abc import Iterable
from contextlib import suppress
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

# structlog imports rich when it is installed (typer depends on it), for its default
# exception formatter only: 87 modules, 3.6 MiB resident and ~25 ms of every start. The
# renderers below name plain_traceback, and rich's default would show each frame's locals
# (a request URL embeds the bot token), so structlog is imported with rich hidden when this
# module comes first (the entry points import it before anything that logs). rich itself
# stays importable for typer afterwards.
if "structlog" not in sys.modules and "rich" not in sys.modules:
    sys.modules["rich"] = None  # type: ignore[assignment]  # None: "import rich" fails
    try:
        import structlog
    finally:
        del sys.modules["rich"]
import structlog  # (bound here when it was imported before)

__all__ = ["MASK", "Redactor", "configure_logging", "redactor"]

MASK = "***"
"""What a redacted secret is replaced with."""
MIN_SECRET_CHARS = 4
"""Shorter values are not redacted by value (they would mask ordinary words)."""

_PATTERNS = (
    # a Bot API URL's /bot<token>/ and a bare token (digits, a colon, the secret part)
    (re.compile(r"(?<![A-Za-z0-9])(bot)?\d{3,}:[A-Za-z0-9_-]{30,}"), r"\1" + MASK),
    # the password in scheme://user:password@host
    (re.compile(r"(://[^/\s:@]*:)[^@\s/]+@"), r"\1" + MASK + "@"),
)

#: Loggers whose INFO lines are per-request lines with URLs: WARNING and up only.
QUIET = ("httpx", "httpcore", "aiohttp.access", "aiohttp.client")
#: Loggers kept at WARNING unless LOG_LEVEL is higher (chatty at INFO).
NOISY = ("aiosqlite", "sqlalchemy.engine", "alembic", "apscheduler", "matplotlib", "PIL")


class Redactor:
    """Masks secrets in text: the registered values and the token/URL-password patterns.

    ``redactor(text) -> text``. Values are registered with :meth:`add` (the settings'
    secrets at start-up); registering is idempotent and values shorter than
    :data:`MIN_SECRET_CHARS` characters are ignored.
    """

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._by_value: re.Pattern[str] | None = None

    def add(self, values: Iterable[str | None]) -> None:
        """Register secret values, with their URL-encoded and JSON-escaped forms."""
        forms = set()
        for value in values:
            if not value or len(value) < MIN_SECRET_CHARS:
                continue
            forms.update({value, quote(value, safe=""), quote_plus(value)})
            forms.add(jsonlib.dumps(value)[1:-1])
        if forms - self._values:
            self._values |= forms
            ordered = sorted(self._values, key=len, reverse=True)  # longest first
            self._by_value = re.compile("|".join(re.escape(v) for v in ordered))

    def clear(self) -> None:
        """Forget the registered values (the patterns stay)."""
        self._values.clear()
        self._by_value = None

    def __call__(self, text: str) -> str:
        if self._by_value is not None:
            text = self._by_value.sub(MASK, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


redactor = Redactor()
"""The process's redactor, used by every line :func:`configure_logging` sets up."""


class _RedactingFormatter(logging.Formatter):
    """The standard library's lines (message, arguments and traceback), redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redactor(super().format(record))


def _redact_rendered(_logger: Any, _name: str, rendered: Any) -> Any:
    """structlog's last processor: redact the rendered line (a str after the renderer)."""
    return redactor(rendered) if isinstance(rendered, str) else rendered


class _SafePrintLogger:
    """structlog's logger: writes each rendered line to ``stream`` under ``handler``'s lock,
    the lock the standard library's lines to the same stream take, so a line from a worker
    thread (matplotlib warming up, a library's log) never lands inside another; and never
    raises: a log line that cannot be written (a closed or broken stderr, a dead log
    collector's pipe) is dropped, so the duty that logged it (the drawdown guard, a
    heartbeat) carries on."""

    def __init__(self, stream: TextIO, handler: logging.Handler) -> None:
        self._stream = stream
        self._handler = handler

    def msg(self, message: str) -> None:
        """Write ``message`` and a newline, then flush."""
        self._handler.acquire()
        try:
            with suppress(OSError, ValueError):  # ValueError: I/O operation on a closed file
                self._stream.write(message + "\n")
                self._stream.flush()
        finally:
            self._handler.release()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _log_uncaught(kind: type[BaseException], error: BaseException, tb: Any) -> None:
    """``sys.excepthook``: an uncaught exception's traceback, through the redaction."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, tb)
        return
    logging.getLogger("signaldesk").critical("uncaught exception", exc_info=(kind, error, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    """``threading.excepthook``: a thread's uncaught exception, as a log line."""
    if args.exc_value is None:
        return
    logging.getLogger("signaldesk").critical(
        "uncaught exception in a thread",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def _log_unraisable(unraisable: Any) -> None:
    """``sys.unraisablehook``: an exception Python could not raise (``__del__``)."""
    error = unraisable.exc_value
    logging.getLogger("signaldesk").error(
        "unraisable exception",
        exc_info=(type(error), error, unraisable.exc_traceback) if error else None,
    )


def _json_formatter() -> logging.Formatter:
    """The standard library's records as structlog's JSON lines, redacted."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
            _redact_rendered,
        ],
    )


def configure_logging(
    level: str = "INFO", *, json: bool = False, secrets: Iterable[str | None] = ()
) -> None:
    """Route structlog and the standard library's logging to stderr at ``level``, every
    line redacted (see the module's docstring); ``secrets`` are registered with
    :data:`redactor` first (pass :meth:`core.config.Settings.secrets`)."""
    redactor.add(secrets)
    sys.excepthook = _log_uncaught  # a crash's traceback is a log line too
    threading.excepthook = _log_thread_uncaught
    sys.unraisablehook = _log_unraisable
    logging.captureWarnings(True)  # warnings.warn(...) lines go through the handler
    stream = sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_json_formatter() if json else _RedactingFormatter("%(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    numeric = logging.getLevelName(level)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, numeric))
    for quiet in QUIET:
        logging.getLogger(quiet).setLevel(max(logging.WARNING, numeric))
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
            _redact_rendered,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_: _SafePrintLogger(stream, handler),
        cache_logger_on_first_use=False,
    )
