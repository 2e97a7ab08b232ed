"""Fixtures for the sandbox tests: a running SandboxServer and a real aiogram Bot on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiogram import Bot

from bot.sandbox import SandboxServer
from tests.sandbox.support import OTHER, OWNER, TOKEN, close_bot, make_bot


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxServer]:
    server = SandboxServer(TOKEN)
    server.add_user(OWNER, "Ada", "ada")
    server.add_user(OTHER, "Bob", "bob")
    async with server:
        yield server


@pytest.fixture
async def bot(sandbox: SandboxServer) -> AsyncIterator[Bot]:
    bot = make_bot(sandbox)
    try:
        yield bot
    finally:
        await close_bot(bot)
