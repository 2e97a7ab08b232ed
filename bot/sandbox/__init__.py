"""A local Telegram Bot API server ("the sandbox") with simulated users and a web chat page.

Used for the demo mode (no real Telegram token) and for end-to-end tests, where the real
aiogram client talks to it over real HTTP::

    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    async with SandboxServer("123456:TEST-TOKEN") as sandbox:
        sandbox.add_user(42, "Ada", "ada")
        session = AiohttpSession(api=TelegramAPIServer.from_base(sandbox.base_url))
        bot = Bot("123456:TEST-TOKEN", session=session)
"""

from bot.sandbox.errors import BotAPIError, SandboxUsageError
from bot.sandbox.models import (
    Button,
    CallbackAnswer,
    CallbackQueryRecord,
    ChatAction,
    MessageVersion,
    RateLimits,
    RequestLogEntry,
    SandboxStats,
    SentMessage,
    SimChat,
    SimUser,
    UserMessage,
    Webhook,
)
from bot.sandbox.server import SandboxServer

__all__ = [
    "BotAPIError",
    "Button",
    "CallbackAnswer",
    "CallbackQueryRecord",
    "ChatAction",
    "MessageVersion",
    "RateLimits",
    "RequestLogEntry",
    "SandboxServer",
    "SandboxStats",
    "SandboxUsageError",
    "SentMessage",
    "SimChat",
    "SimUser",
    "UserMessage",
    "Webhook",
]
