"""``python -m bench.floor``: the floor bot, a bare aiogram 3 bot that does the least a bot
answering SignalDesk's Approve tap must do: long-poll ``getUpdates``, and on every callback
query call ``answerCallbackQuery`` (the spinner stops) then ``editMessageText`` of the card
(its buttons removed). No database, no broker.

The benchmark runs it as its own process against its own sandbox, like ``python -m bot``,
so its start-up time, its idle RSS and its tap -> card edited latency are the floors that
SignalDesk's figures are divided by. Settings come from the environment: ``FLOOR_TOKEN``
and ``FLOOR_API_BASE`` (the sandbox's base URL).
"""

from __future__ import annotations

import asyncio
import os

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import CallbackQuery, Message


async def on_tap(query: CallbackQuery) -> None:
    """Answer the tap, then edit the card in place without its buttons."""
    await query.answer("Done")
    if isinstance(query.message, Message):
        await query.message.edit_text(f"{query.message.text}\ndone", reply_markup=None)


async def run(token: str, base_url: str) -> None:
    """Poll ``base_url``'s Bot API as ``token`` until cancelled (SIGTERM/SIGINT)."""
    bot = Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(base_url)))
    dispatcher = Dispatcher()
    dispatcher.callback_query.register(on_tap)
    await dispatcher.start_polling(bot, handle_signals=True)


if __name__ == "__main__":
    asyncio.run(run(os.environ["FLOOR_TOKEN"], os.environ["FLOOR_API_BASE"]))
