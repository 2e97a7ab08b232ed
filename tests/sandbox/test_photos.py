"""sendPhoto, editMessageCaption and editMessageMedia answer like Telegram, through aiogram."""

from __future__ import annotations

import struct
import zlib

import aiohttp
import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import (
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
)

from bot.sandbox import SandboxServer
from tests.sandbox.support import OWNER


def png(width: int, height: int) -> bytes:
    """A real (tiny, grey) PNG of ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


MARKUP = InlineKeyboardMarkup(
    inline_keyboard=[[InlineKeyboardButton(text="Approve", callback_data="approve:7")]]
)


async def test_a_photo_with_caption_and_buttons_is_recorded_and_served(
    sandbox: SandboxServer, bot: Bot
) -> None:
    image = png(40, 30)

    sent = await bot.send_photo(
        OWNER,
        BufferedInputFile(image, "chart.png"),
        caption="<b>BUY</b> 0.01 BTC/USDT",
        parse_mode="HTML",
        reply_markup=MARKUP,
    )

    assert sent.caption == "BUY 0.01 BTC/USDT" and sent.text is None
    assert sent.photo is not None and (sent.photo[-1].width, sent.photo[-1].height) == (40, 30)
    assert sent.caption_entities is not None and sent.caption_entities[0].type == "bold"
    stored = sandbox.message(OWNER, sent.message_id)
    assert stored.photo is not None and sandbox.state.files[stored.photo] == image
    assert stored.buttons == [[("Approve", "approve:7")]]
    url = f"{sandbox.base_url}/sandbox/file/{stored.photo}"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
        assert await resp.read() == image


async def test_caption_and_media_edits_follow_telegram_rules(
    sandbox: SandboxServer, bot: Bot
) -> None:
    sent = await bot.send_photo(OWNER, BufferedInputFile(png(4, 4), "a.png"), caption="pending")
    stored = sandbox.message(OWNER, sent.message_id)
    first = stored.photo

    await bot.edit_message_caption(
        chat_id=OWNER, message_id=sent.message_id, caption="<i>Filled</i>", parse_mode="HTML"
    )
    assert stored.plain_text == "Filled" and stored.photo == first
    assert stored.buttons == []  # no reply_markup: the keyboard goes, as in Telegram

    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_caption(
            chat_id=OWNER, message_id=sent.message_id, caption="<i>Filled</i>", parse_mode="HTML"
        )
    with pytest.raises(TelegramBadRequest, match="message caption is too long"):
        await bot.edit_message_caption(
            chat_id=OWNER, message_id=sent.message_id, caption="x" * 1025
        )
    with pytest.raises(TelegramBadRequest, match="there is no text in the message to edit"):
        await bot.edit_message_text("text", chat_id=OWNER, message_id=sent.message_id)

    await bot.edit_message_media(
        InputMediaPhoto(media=BufferedInputFile(png(8, 6), "b.png"), caption="new chart"),
        chat_id=OWNER,
        message_id=sent.message_id,
        reply_markup=MARKUP,
    )
    assert stored.photo != first and stored.plain_text == "new chart"
    assert stored.buttons == [[("Approve", "approve:7")]]
    assert [v.photo == first for v in stored.history] == [True, True, False]


async def test_photo_errors(sandbox: SandboxServer, bot: Bot) -> None:
    text = await bot.send_message(OWNER, "a text card")
    with pytest.raises(TelegramBadRequest, match="there is no caption in the message to edit"):
        await bot.edit_message_caption(chat_id=OWNER, message_id=text.message_id, caption="c")
    with pytest.raises(TelegramBadRequest, match="there is no media in the message to edit"):
        await bot.edit_message_media(
            InputMediaPhoto(media=BufferedInputFile(png(2, 2), "c.png")),
            chat_id=OWNER,
            message_id=text.message_id,
        )
    with pytest.raises(TelegramBadRequest, match="message caption is too long"):
        await bot.send_photo(OWNER, BufferedInputFile(png(2, 2), "d.png"), caption="y" * 1025)
    with pytest.raises(TelegramBadRequest, match="IMAGE_PROCESS_FAILED"):
        await bot.send_photo(OWNER, BufferedInputFile(b"not an image", "e.png"))
    with pytest.raises(TelegramBadRequest, match="wrong file identifier"):
        await bot.send_photo(OWNER, "no-such-file-id")
    assert [m.message_id for m in sandbox.messages(OWNER)] == [text.message_id]
    sent = await bot.send_photo(OWNER, BufferedInputFile(png(2, 2), "f.png"), caption="1" * 1024)
    assert sent.caption == "1" * 1024  # exactly 1024 is allowed


async def test_media_edit_to_the_same_image_and_caption_is_not_modified(
    sandbox: SandboxServer, bot: Bot
) -> None:
    sent = await bot.send_photo(OWNER, BufferedInputFile(png(4, 4), "a.png"), caption="card")
    stored = sandbox.message(OWNER, sent.message_id)
    same = InputMediaPhoto(media=stored.photo or "", caption="card")

    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_media(same, chat_id=OWNER, message_id=sent.message_id)
    with pytest.raises(TelegramBadRequest, match="message caption is too long"):
        await bot.edit_message_media(
            InputMediaPhoto(media=stored.photo or "", caption="z" * 1025),
            chat_id=OWNER,
            message_id=sent.message_id,
        )
    await bot.edit_message_media(
        InputMediaPhoto(media=stored.photo or "", caption="card, new caption"),
        chat_id=OWNER,
        message_id=sent.message_id,
    )
    assert stored.plain_text == "card, new caption" and len(stored.history) == 2
