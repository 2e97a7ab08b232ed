"""Error reporting (SENTRY_DSN): events pass the log redaction; a missing extra is one line."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from core.errors import ConfigError
from core.logging import MASK, redactor
from core.reporting import MISSING_EXTRA, init_error_reporting, redact_event
from tests.support.tokens import fake_token

TOKEN = fake_token("SENTRY", 123456)


def test_an_event_is_redacted_everywhere(make_settings: Any) -> None:
    redactor.add(["hunter2-password"])
    event = {
        "message": f"call to https://api.telegram.org/bot{TOKEN}/getMe failed",
        "exception": {"values": [{"value": "login hunter2-password refused"}]},
        "breadcrumbs": [("crumb", "postgresql://u:pw9876@db/x")],
        "level": "error",
        "count": 3,
    }
    try:
        clean = redact_event(event)
    finally:
        redactor.clear()
    text = repr(clean)
    assert TOKEN not in text and "hunter2-password" not in text and "pw9876" not in text
    assert MASK in clean["message"] and clean["count"] == 3 and clean["level"] == "error"


def test_no_dsn_no_reporting(make_settings: Any) -> None:
    assert init_error_reporting(make_settings()) is False


def test_a_missing_extra_is_one_line_naming_it(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sentry_sdk", None)  # import sentry_sdk fails
    with pytest.raises(ConfigError) as error:
        init_error_reporting(make_settings(sentry_dsn="https://key@127.0.0.1:9/1"))
    assert str(error.value) == MISSING_EXTRA
    assert "\n" not in MISSING_EXTRA and "[sentry]" in MISSING_EXTRA


def test_the_sdk_gets_the_redaction_as_before_send(make_settings: Any) -> None:
    import sentry_sdk

    try:
        assert init_error_reporting(make_settings(sentry_dsn="https://key@127.0.0.1:9/1"))
        options = sentry_sdk.get_client().options
        # the SDK's defaults: no user identity (IP, user), the event scrubber on; setting
        # the deprecated send_default_pii, or a data_collection dict, would change them
        assert options["data_collection"]["provided_by_user"] is False
        assert options["data_collection"]["user_info"] is False
        assert options["event_scrubber"] is not None
        event = options["before_send"]({"message": f"token {TOKEN}"}, {})
        assert TOKEN not in event["message"]
    finally:
        sentry_sdk.init()  # no DSN: reporting off again
