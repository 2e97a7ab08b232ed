"""The sandbox's flood control on a driven clock: a group's burst and its refill."""

from __future__ import annotations

from bot.sandbox import RateLimits
from bot.sandbox.ratelimit import FloodControl

GROUP = -4242
LOOSE_CHATS = {"per_chat_per_second": 1000.0, "per_chat_burst": 1000}  # only the group binds


def _sends(flood: FloodControl, count: int, now: float, *, chat: int = GROUP) -> list[int | None]:
    """The ``retry_after`` of ``count`` messages to ``chat`` at ``now`` (None: passed)."""
    return [flood.check(chat, is_group=chat < 0, now=now) for _ in range(count)]


def test_a_group_takes_group_burst_at_once_then_refills_at_group_per_minute() -> None:
    flood = FloodControl(RateLimits(group_per_minute=600, group_burst=2, **LOOSE_CHATS))

    assert _sends(flood, 3, now=0.0) == [None, None, 1]
    assert _sends(flood, 2, now=0.1) == [None, 1]  # 600 a minute: one token per 0.1 s
    assert _sends(flood, 3, now=0.6) == [None, None, 1]  # refilled up to the burst only
    assert _sends(flood, 3, now=0.6, chat=2001) == [None] * 3  # a private chat has no group pace


def test_the_default_group_burst_is_telegrams_twenty_a_minute() -> None:
    flood = FloodControl(RateLimits(**LOOSE_CHATS))

    assert _sends(flood, 21, now=0.0) == [None] * 20 + [3]  # one token per 3 s
    assert _sends(flood, 1, now=3.0) == [None]
