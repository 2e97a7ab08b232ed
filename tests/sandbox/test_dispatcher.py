"""A real aiogram Dispatcher polls the sandbox (real getUpdates over HTTP) and handles updates."""

from __future__ import annotations

from aiogram import Bot, Dispatcher, F
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.sandbox import SandboxServer
from tests.sandbox.support import OWNER, polling


async def test_user_command_reaches_a_handler(sandbox: SandboxServer, bot: Bot) -> None:
    dp = Dispatcher()
    seen: list[tuple[int, str | None]] = []

    @dp.message(Command("positions"))
    async def positions(message: Message, command: CommandObject) -> None:
        assert message.from_user is not None
        seen.append((message.from_user.id, command.args))
        await message.answer(f"<b>No open positions</b> ({command.args})", parse_mode="HTML")

    async with polling(dp, bot, sandbox):
        sandbox.send_user_message(OWNER, OWNER, "/positions BTC")
        reply = await sandbox.wait_for_message(OWNER, contains="No open positions")

    assert seen == [(OWNER, "BTC")]
    assert reply.text == "<b>No open positions</b> (BTC)"
    assert reply.plain_text == "No open positions (BTC)"
    # the dispatcher confirmed the update: nothing is left in the queue
    assert sandbox.pending_updates == []


async def test_button_press_is_answered_and_the_card_settles(
    sandbox: SandboxServer, bot: Bot
) -> None:
    dp = Dispatcher()

    @dp.callback_query(F.data.startswith("approve:"))
    async def approve(query: CallbackQuery) -> None:
        assert isinstance(query.message, Message)
        await query.answer("Approved")
        await query.message.edit_text(f"Filled #{(query.data or '').split(':')[1]} at 64 010")

    card = await bot.send_message(
        OWNER,
        "BUY 0.5 BTC",
        reply_markup=InlineKeyboardMarkup(
            inline_keyboard=[
                [
                    InlineKeyboardButton(text="Approve", callback_data="approve:7"),
                    InlineKeyboardButton(text="Reject", callback_data="reject:7"),
                ]
            ]
        ),
    )
    async with polling(dp, bot, sandbox):
        callback_id = sandbox.press_button(OWNER, card.message_id, "approve:7", OWNER)
        settled = await sandbox.wait_for(
            lambda s: (
                s.message(OWNER, card.message_id).edited_at is not None
                and callback_id in s.callback_answers
            ),
            description="the card edited and the callback answered",
        )

    assert settled
    message = sandbox.message(OWNER, card.message_id)
    assert message.text == "Filled #7 at 64 010"
    assert message.buttons == []
    assert message.had_buttons
    assert sandbox.callback_answers[callback_id].text == "Approved"
    query = sandbox.callback_queries[callback_id]
    assert (query.user_id, query.data) == (OWNER, "approve:7")


async def test_handler_sees_the_callback_update_shape(sandbox: SandboxServer, bot: Bot) -> None:
    dp = Dispatcher()
    got: list[CallbackQuery] = []

    @dp.callback_query()
    async def any_press(query: CallbackQuery) -> None:
        got.append(query)
        await query.answer()

    card = await bot.send_message(
        OWNER,
        "Pick",
        reply_markup=InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(text="One", callback_data="one")]]
        ),
    )
    async with polling(dp, bot, sandbox):
        callback_id = sandbox.press_button(OWNER, card.message_id, "one", OWNER)
        await sandbox.wait_for(lambda s: callback_id in s.callback_answers)

    [query] = got
    assert query.id == callback_id
    assert query.data == "one"
    assert query.from_user.id == OWNER
    assert query.chat_instance
    assert isinstance(query.message, Message)
    assert query.message.message_id == card.message_id
    assert query.message.reply_markup is not None
    assert sandbox.callback_answers[callback_id].text is None
