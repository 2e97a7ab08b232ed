"""``retry_temporary``: a temporary broker error (no effect, by contract) is retried up to
three attempts in all; anything else, and the last temporary error, propagates; a call
that succeeds is made once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest
import stamina

from core.brokers.base import retry_temporary
from core.errors import BrokerPermanentError, BrokerTemporaryError


@pytest.fixture(autouse=True)
def no_backoff() -> Iterator[None]:
    """stamina without its sleeps, its attempts as the code asks (capped, not set)."""
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


def _failing(*errors: Exception) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """A call that raises ``errors`` one per attempt, then answers "ok"; and its attempts."""
    calls: list[int] = []

    async def call() -> str:
        calls.append(len(calls) + 1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return call, calls


async def test_a_call_that_succeeds_is_made_once() -> None:
    call, calls = _failing()

    assert await retry_temporary(call) == "ok"
    assert calls == [1]


async def test_temporary_errors_are_retried_until_the_call_succeeds() -> None:
    call, calls = _failing(BrokerTemporaryError("busy"), BrokerTemporaryError("busy"))

    assert await retry_temporary(call) == "ok"
    assert calls == [1, 2, 3]


async def test_the_third_temporary_error_propagates() -> None:
    errors = [BrokerTemporaryError(f"busy {n}") for n in (1, 2, 3)]
    call, calls = _failing(*errors)

    with pytest.raises(BrokerTemporaryError, match="busy 3"):
        await retry_temporary(call)
    assert calls == [1, 2, 3]


async def test_any_other_error_propagates_at_once() -> None:
    call, calls = _failing(BrokerPermanentError("refused"))

    with pytest.raises(BrokerPermanentError, match="refused"):
        await retry_temporary(call)
    assert calls == [1]


async def test_a_permanent_error_on_a_retry_propagates_at_once() -> None:
    call, calls = _failing(BrokerTemporaryError("busy"), BrokerPermanentError("refused"))

    with pytest.raises(BrokerPermanentError, match="refused"):
        await retry_temporary(call)
    assert calls == [1, 2]


async def test_a_call_that_succeeds_builds_no_retry_machinery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unwanted(**_: object) -> None:
        raise AssertionError("stamina was used for a call that needed no retry")

    monkeypatch.setattr(stamina, "retry_context", unwanted)
    call, calls = _failing()

    assert await retry_temporary(call) == "ok"
    assert calls == [1]
