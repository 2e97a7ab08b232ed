"""Fixtures of the service tests (files that define their own ``engines`` keep it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.conftest import Clock
from tests.support.duties import Engines


@pytest.fixture
async def engines(make_settings: Callable[..., Any], clock: Clock) -> AsyncIterator[Engines]:
    """Starts engines with settings overrides (``await engines.start(url, **overrides)``)
    and closes them all after the test."""
    factory = Engines(make_settings, clock)
    yield factory
    await factory.close_all()
