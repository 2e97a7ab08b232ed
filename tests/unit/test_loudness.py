"""How loud a message is: the owner's level per topic, the floors (alerts and cards are
never off) and quiet hours (local time, spanning midnight, across a DST change); the
QUIET_HOURS setting's parsing; each notification's topic."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from core.config import load_settings
from core.errors import ConfigError
from core.notify import (
    Loudness,
    NoticeKind,
    NoticeSettings,
    Notification,
    Priority,
    QuietHours,
    Topic,
    loudness,
)

LOUD, SILENT, OFF = Loudness.LOUD, Loudness.SILENT, Loudness.OFF
ALERT, ROUTINE, NOTICE = Priority.ALERT, Priority.ROUTINE, Priority.NOTICE
BERLIN = ZoneInfo("Europe/Berlin")
NIGHT = QuietHours(time(23), time(7))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (topic, priority, the owner's level of the topic, quiet hours, zone, now UTC) -> loudness
CASES = [
    # no quiet hours: the owner's level, with the floors
    (Topic.FILL, ROUTINE, LOUD, None, UTC, "2026-01-15 12:00", LOUD),
    (Topic.FILL, ROUTINE, SILENT, None, UTC, "2026-01-15 12:00", SILENT),
    (Topic.FILL, ROUTINE, OFF, None, UTC, "2026-01-15 12:00", OFF),
    (Topic.HEARTBEAT, ROUTINE, None, None, UTC, "2026-01-15 12:00", SILENT),  # its default
    (Topic.CARD, ROUTINE, OFF, None, UTC, "2026-01-15 12:00", SILENT),  # never off
    (Topic.ALERT, ALERT, OFF, None, UTC, "2026-01-15 12:00", SILENT),  # never off
    (Topic.ALERT, ALERT, SILENT, None, UTC, "2026-01-15 12:00", SILENT),  # silenced: ok
    (Topic.WARNING, ALERT, OFF, None, UTC, "2026-01-15 12:00", SILENT),  # an alert: never off
    (Topic.WARNING, NOTICE, OFF, None, UTC, "2026-01-15 12:00", OFF),
    (Topic.OTHER, ROUTINE, None, None, UTC, "2026-01-15 12:00", LOUD),
    # quiet hours 23:00-07:00 span midnight: [23:00, 07:00) local
    (Topic.FILL, ROUTINE, LOUD, NIGHT, UTC, "2026-01-15 22:59", LOUD),
    (Topic.FILL, ROUTINE, LOUD, NIGHT, UTC, "2026-01-15 23:00", SILENT),
    (Topic.FILL, ROUTINE, LOUD, NIGHT, UTC, "2026-01-16 00:00", SILENT),
    (Topic.FILL, ROUTINE, LOUD, NIGHT, UTC, "2026-01-16 06:59", SILENT),
    (Topic.FILL, ROUTINE, LOUD, NIGHT, UTC, "2026-01-16 07:00", LOUD),
    (Topic.CARD, ROUTINE, LOUD, NIGHT, UTC, "2026-01-16 03:00", SILENT),
    (Topic.FILL, ROUTINE, OFF, NIGHT, UTC, "2026-01-16 03:00", OFF),  # off stays off
    (Topic.ALERT, ALERT, LOUD, NIGHT, UTC, "2026-01-16 03:00", LOUD),  # alerts still ring
    (Topic.WARNING, ALERT, LOUD, NIGHT, UTC, "2026-01-16 03:00", LOUD),
    # a daytime span does not wrap
    (Topic.EXIT, ROUTINE, LOUD, QuietHours(time(9), time(17)), UTC, "2026-01-15 08:59", LOUD),
    (Topic.EXIT, ROUTINE, LOUD, QuietHours(time(9), time(17)), UTC, "2026-01-15 09:00", SILENT),
    (Topic.EXIT, ROUTINE, LOUD, QuietHours(time(9), time(17)), UTC, "2026-01-15 17:00", LOUD),
    # local time in the zone: Berlin is UTC+1 in winter, UTC+2 in summer
    (Topic.FILL, ROUTINE, LOUD, NIGHT, BERLIN, "2026-01-15 22:00", SILENT),  # 23:00 CET
    (Topic.FILL, ROUTINE, LOUD, NIGHT, BERLIN, "2026-07-15 21:00", SILENT),  # 23:00 CEST
    (Topic.FILL, ROUTINE, LOUD, NIGHT, BERLIN, "2026-07-15 05:00", LOUD),  # 07:00 CEST
    (Topic.FILL, ROUTINE, LOUD, NIGHT, BERLIN, "2026-01-15 05:30", SILENT),  # 06:30 CET
    # the night DST starts (29 March 2026, 02:00 CET -> 03:00 CEST): 04:59 UTC is 06:59
    # CEST, still quiet; 05:00 UTC is 07:00 CEST, no longer (an hour earlier in UTC)
    (Topic.FILL, ROUTINE, LOUD, NIGHT, BERLIN, "2026-03-29 04:59", SILENT),
    (Topic.FILL, ROUTINE, LOUD, NIGHT, BERLIN, "2026-03-29 05:00", LOUD),
    # the night DST ends (25 October 2026, 03:00 CEST -> 02:00 CET): 05:59 UTC is 06:59 CET
    (Topic.FILL, ROUTINE, LOUD, NIGHT, BERLIN, "2026-10-25 05:59", SILENT),
    (Topic.FILL, ROUTINE, LOUD, NIGHT, BERLIN, "2026-10-25 06:00", LOUD),
]


@pytest.mark.parametrize(("topic", "priority", "level", "quiet", "zone", "now", "expected"), CASES)
def test_loudness(
    topic: Topic,
    priority: Priority,
    level: Loudness | None,
    quiet: QuietHours | None,
    zone: ZoneInfo,
    now: str,
    expected: Loudness,
) -> None:
    settings = NoticeSettings({} if level is None else {topic: level}, quiet, zone)

    assert loudness(topic, priority, settings, utc(now)) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("  ", None),
        ("23:00-07:00", NIGHT),
        (" 22:30 - 06:15 ", QuietHours(time(22, 30), time(6, 15))),
        ("00:00-23:59", QuietHours(time(0), time(23, 59))),
    ],
)
def test_quiet_hours_parse(text: str, expected: QuietHours | None) -> None:
    assert QuietHours.parse(text) == expected


@pytest.mark.parametrize("text", ["23:00", "23-07", "24:00-07:00", "23:00-7:60", "07:00-07:00"])
def test_a_bad_quiet_hours_value_is_one_line_naming_quiet_hours(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUIET_HOURS", text)

    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)

    [line] = [line for line in str(caught.value).splitlines() if "QUIET_HOURS" in line]
    assert line.strip().startswith("QUIET_HOURS: ")
    assert "HH:MM-HH:MM" in line or "must differ" in line


def test_quiet_hours_setting_is_parsed_and_empty_means_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUIET_HOURS", "23:00-07:00")
    assert load_settings(_env_file=None).quiet == NIGHT
    monkeypatch.setenv("QUIET_HOURS", "")
    assert load_settings(_env_file=None).quiet is None


def test_a_notification_without_a_topic_takes_its_kinds() -> None:
    assert Notification(NoticeKind.SIGNAL_CARD, signal_id=1).resolved_topic is Topic.CARD
    assert Notification(NoticeKind.SIGNAL_UPDATE, signal_id=1).resolved_topic is Topic.CARD
    assert Notification(NoticeKind.TEXT, "hi").resolved_topic is Topic.OTHER
    assert Notification(NoticeKind.TEXT, "x", topic=Topic.FILL).resolved_topic is Topic.FILL
    assert Notification(NoticeKind.TRADE_EXIT).resolved_topic is Topic.EXIT
    flatten = Notification(NoticeKind.FLATTEN_REPORT, priority=ALERT)
    assert flatten.resolved_topic is Topic.ALERT
