"""Telegram-style flood control for the sandbox: token buckets per chat, per group, global."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bot.sandbox.models import RateLimits

__all__ = ["FloodControl", "TokenBucket"]


@dataclass
class TokenBucket:
    """A token bucket: ``capacity`` tokens, refilled at ``rate`` tokens per second.

    Times are monotonic seconds.
    """

    capacity: float
    rate: float
    tokens: float
    updated: float

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait_time(self, now: float) -> float:
        """Seconds until one token is available (0 if one is available now)."""
        self._refill(now)
        if self.tokens >= 1:
            return 0.0
        return (1 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        """Consume one token (call only after :meth:`wait_time` returned 0)."""
        self._refill(now)
        self.tokens -= 1


class FloodControl:
    """Decides whether a message-sending call may pass or gets ``429 retry after N``.

    A call passes only if the chat's bucket, the group bucket (for groups) and the global
    bucket all have a token; a refused call consumes nothing, as with Telegram.
    """

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self._chats: dict[int, TokenBucket] = {}
        self._groups: dict[int, TokenBucket] = {}
        self._global: TokenBucket | None = None

    def _bucket(
        self, table: dict[int, TokenBucket], key: int, capacity: float, rate: float, now: float
    ) -> TokenBucket:
        bucket = table.get(key)
        if bucket is None:
            bucket = table[key] = TokenBucket(capacity, rate, capacity, now)
        return bucket

    def check(self, chat_id: int, *, is_group: bool, now: float) -> int | None:
        """Take a token for a message to ``chat_id``; return ``retry_after`` seconds if refused.

        ``now`` is monotonic seconds. ``retry_after`` is a whole number of seconds, at least 1,
        as in Telegram's ``parameters.retry_after``.
        """
        limits = self.limits
        if self._global is None:
            self._global = TokenBucket(
                limits.global_burst, limits.global_per_second, limits.global_burst, now
            )
        buckets = [
            self._bucket(
                self._chats, chat_id, limits.per_chat_burst, limits.per_chat_per_second, now
            ),
            self._global,
        ]
        if is_group:
            burst = limits.group_per_minute if limits.group_burst is None else limits.group_burst
            buckets.append(
                self._bucket(self._groups, chat_id, burst, limits.group_per_minute / 60.0, now)
            )
        wait = max(b.wait_time(now) for b in buckets)
        if wait > 0:
            return max(1, math.ceil(wait))
        for bucket in buckets:
            bucket.take(now)
        return None
