"""The log redaction: registered secret values (plain, URL-encoded, JSON-escaped) and the
token and URL-password patterns, on structlog's and the standard library's lines."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
import time

import pytest
import structlog

from core.logging import MASK, Redactor, configure_logging
from tests.support.tokens import fake_token

TOKEN = fake_token("REDACT")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"url=https://api.telegram.org/bot{TOKEN}/getMe",
            f"url=https://api.telegram.org/bot{MASK}/getMe",
        ),
        (f"token {TOKEN} here", f"token {MASK} here"),
        ("postgresql+asyncpg://sd:s3cr%40t@db:5432/x", f"postgresql+asyncpg://sd:{MASK}@db:5432/x"),
        ("redis://:only-pass@cache:6379", f"redis://:{MASK}@cache:6379"),
        ("http://127.0.0.1:8081/healthz", "http://127.0.0.1:8081/healthz"),
        ("order 1234:abc filled", "order 1234:abc filled"),
    ],
)
def test_patterns_mask_tokens_and_url_passwords_without_a_registered_value(
    text: str, expected: str
) -> None:
    assert Redactor()(text) == expected


def test_registered_values_are_masked_plain_url_encoded_and_json_escaped() -> None:
    redact = Redactor()
    redact.add(['p@ss/w"rd', "abc", None, "ping-key-123"])

    assert redact('pw p@ss/w"rd') == f"pw {MASK}"
    assert redact("pw p%40ss%2Fw%22rd") == f"pw {MASK}"
    assert redact('{"pw": "p@ss/w\\"rd"}') == f'{{"pw": "{MASK}"}}'
    assert redact("https://hc-ping.com/ping-key-123") == f"https://hc-ping.com/{MASK}"
    assert (
        redact("abc stays: too short to mask by value") == "abc stays: too short to mask by value"
    )


@pytest.mark.parametrize("json", [False, True])
def test_every_line_is_redacted_structlog_stdlib_and_tracebacks(
    capfd: pytest.CaptureFixture[str], restore_logging: None, json: bool
) -> None:
    configure_logging("DEBUG", json=json, secrets=["wh-secret-value-91"])

    structlog.get_logger("t").info("event", secret="wh-secret-value-91", url=f"/bot{TOKEN}/x")
    logging.getLogger("aiogram.dispatcher").error("Failed: %s", f"url=/bot{TOKEN}/getUpdates")
    try:
        raise RuntimeError("boom wh-secret-value-91")
    except RuntimeError:
        logging.getLogger("ccxt").exception("with a traceback")
        structlog.get_logger("t").exception("and structlog's")
    logging.getLogger("httpx").info("HTTP Request: GET https://hc-ping.com/uuid")

    err = capfd.readouterr().err
    assert "wh-secret-value-91" not in err
    assert TOKEN.partition(":")[2] not in err
    assert err.count(MASK) >= 5
    assert "HTTP Request" not in err  # httpx's request lines are off


def test_a_line_that_cannot_be_written_is_dropped_not_raised_into_the_caller(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("INFO")
    stream.close()  # a closed stderr, a dead collector's pipe

    structlog.get_logger("risk").warning("drawdown level changed", new="max")  # no raise
    structlog.get_logger("risk").info("and again")


class _PipeLike(io.StringIO):
    """A stream whose writes give other threads a turn, as a write to a pipe does."""

    def write(self, text: str) -> int:
        time.sleep(0)
        return super().write(text)


def test_json_lines_from_two_threads_never_land_inside_each_other(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """structlog's lines (the event loop) and the standard library's (a worker thread:
    matplotlib warming up, a library's log) share stderr; each line stays whole."""
    lines = 500
    stream = _PipeLike()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("INFO", json=True)

    def library() -> None:
        for number in range(lines):
            logging.getLogger("library").warning("library line %d", number)

    worker = threading.Thread(target=library)
    worker.start()
    for number in range(lines):
        structlog.get_logger("duties").info("duties.ran", number=number)
    worker.join()

    written = stream.getvalue().splitlines()
    assert len(written) == 2 * lines
    events = [json.loads(line)["event"] for line in written]  # each one whole JSON
    assert events.count("duties.ran") == lines


def test_structlog_comes_without_rich_and_rich_stays_importable() -> None:
    """core.logging imports structlog with rich hidden: structlog's default exception
    formatter (used before configure_logging) is then the plain one, never rich's, which
    shows each frame's locals; rich itself (typer's) still imports afterwards."""
    probe = (
        "import sys\n"
        "import core.logging, structlog\n"
        "print('rich' in sys.modules, structlog.dev.default_exception_formatter.__name__)\n"
        "import rich.console\n"
        "print('rich importable')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["False plain_traceback", "rich importable"]
