"""Answers longer than one Telegram message: sent as several, nothing cut."""

from __future__ import annotations

from collections.abc import Sequence

from aiogram.types import InlineKeyboardMarkup, Message

from bot import render

__all__ = ["answer_long", "answer_pages"]


async def answer_pages(message: Message, pages: Sequence[render.Page]) -> Message:
    """Answer ``message`` with each page in order (its buttons under it); returns the last
    message sent. Raises aiogram's ``TelegramAPIError`` when a send fails."""
    sent: Message | None = None
    for page in pages:
        sent = await message.answer(page.text, reply_markup=page.markup)
    assert sent is not None, "a reply has at least one page"
    return sent


async def answer_long(
    message: Message, text: str, reply_markup: InlineKeyboardMarkup | None = None
) -> Message:
    """Answer ``message`` with ``text``, split at line boundaries into messages of at most
    4096 characters (:func:`bot.render.split_message`); ``reply_markup`` goes under the
    last one (a confirmation button follows everything it confirms)."""
    chunks = render.split_message(text)
    pages = [render.Page(chunk) for chunk in chunks[:-1]]
    return await answer_pages(message, [*pages, render.Page(chunks[-1], reply_markup)])
