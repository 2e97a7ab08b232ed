"""Optional error reporting to Sentry (``SENTRY_DSN``; the ``sentry`` extra).

:func:`init_error_reporting` starts sentry-sdk when ``SENTRY_DSN`` is set. Every event
(message, exception values, breadcrumbs, request data, extra fields) passes the process's
one log redaction (:data:`core.logging.redactor`) in ``before_send`` and
``before_breadcrumb``, and the SDK's default data collection is kept (no user identity, IP
addresses or cookies; its event scrubber on), so what reaches Sentry holds no secret a log
line would not.
"""

from __future__ import annotations

from typing import Any

from core.config import Settings
from core.errors import ConfigError
from core.logging import redactor

__all__ = ["MISSING_EXTRA", "init_error_reporting", "redact_event"]

MISSING_EXTRA = (
    "SENTRY_DSN is set but sentry-sdk is not installed: "
    "pip install '.[sentry]' (or uv sync --extra sentry), or unset SENTRY_DSN"
)


def redact_event(value: Any) -> Any:
    """``value`` (a Sentry event or any part of one) with every string redacted; dicts,
    lists and tuples are copied, other values returned as they are."""
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, dict):
        return {key: redact_event(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_event(item) for item in value]
    return value


def _before_send(event: Any, _hint: Any) -> Any:
    return redact_event(event)


def init_error_reporting(settings: Settings) -> bool:
    """Start sentry-sdk when ``SENTRY_DSN`` is set; True when it was started.

    Raises:
        ConfigError: :data:`MISSING_EXTRA` (one line) when the extra is not installed.
    """
    if settings.sentry_dsn is None:
        return False
    try:
        import sentry_sdk
    except ImportError:
        raise ConfigError(MISSING_EXTRA) from None
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        before_send=_before_send,
        before_breadcrumb=_before_send,
    )
    return True
