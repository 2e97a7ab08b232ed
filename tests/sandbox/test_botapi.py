"""The sandbox answers the real aiogram client like Telegram: shapes, rules, error texts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramUnauthorizedError,
)
from aiogram.types import (
    BotCommand,
    ChatFullInfo,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    ReplyParameters,
)

from bot.sandbox import SandboxServer
from tests.sandbox.support import GROUP, OTHER, OWNER, TOKEN, close_bot, make_bot

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "of the specified message are exactly the same as a current content and reply markup of "
    "the message"
)


def card_markup() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text="Approve", callback_data="approve:7"),
                InlineKeyboardButton(text="Reject", callback_data="reject:7"),
            ],
            [InlineKeyboardButton(text="Chart", url="https://example.com/c/7")],
        ]
    )


async def test_get_me_through_telegram_api_server_from_base(
    sandbox: SandboxServer, bot: Bot
) -> None:
    me = await bot.get_me()

    assert me.id == 123456789
    assert me.is_bot is True
    assert me.username == "signaldesk_sandbox_bot"
    # the request really went over HTTP to /bot{token}/getMe
    assert [e.method for e in sandbox.request_log] == ["getMe"]
    assert sandbox.stats.requests["getMe"] == 1


async def test_wrong_token_is_unauthorized(sandbox: SandboxServer) -> None:
    stranger = make_bot(sandbox, token="987654:wrong-token")
    try:
        with pytest.raises(TelegramUnauthorizedError, match="Unauthorized"):
            await stranger.get_me()
    finally:
        await close_bot(stranger)
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{sandbox.base_url}/bot987654:wrong/getMe") as resp,
    ):
        assert resp.status == 401
        assert await resp.json() == {
            "ok": False,
            "error_code": 401,
            "description": "Unauthorized",
        }


async def test_unknown_method_is_404(sandbox: SandboxServer) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{sandbox.base_url}/bot{TOKEN}/sendTeleportation", data={"x": "1"}) as resp,
    ):
        assert resp.status == 404
        assert await resp.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
    # method names are case-insensitive, as on Telegram
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sandbox.base_url}/bot{TOKEN}/GETME") as resp,
    ):
        assert resp.status == 200
        assert (await resp.json())["result"]["id"] == 123456789


async def test_send_message_with_inline_keyboard_is_recorded(
    sandbox: SandboxServer, bot: Bot
) -> None:
    sent = await bot.send_message(
        OWNER,
        "<b>BUY</b> 0.5 BTC @ <code>64 000</code> &lt;paper&gt;",
        parse_mode="HTML",
        reply_markup=card_markup(),
        disable_notification=True,
    )

    # what aiogram got back is a Telegram Message: markup parsed into entities
    assert sent.message_id == 1
    assert sent.chat.id == OWNER and sent.chat.type == "private"
    assert sent.from_user is not None and sent.from_user.id == 123456789
    assert sent.text == "BUY 0.5 BTC @ 64 000 <paper>"
    assert [(e.type, e.offset, e.length) for e in sent.entities or []] == [
        ("bold", 0, 3),
        ("code", 14, 6),
    ]
    assert sent.html_text == "<b>BUY</b> 0.5 BTC @ <code>64 000</code> &lt;paper&gt;"
    assert sent.reply_markup is not None
    assert sent.reply_markup.model_dump(exclude_none=True) == card_markup().model_dump(
        exclude_none=True
    )
    assert abs(sent.date.timestamp() - datetime.now(UTC).timestamp()) < 5

    [message] = sandbox.messages(OWNER)
    assert message.text == "<b>BUY</b> 0.5 BTC @ <code>64 000</code> &lt;paper&gt;"
    assert message.parse_mode == "HTML"
    assert message.plain_text == "BUY 0.5 BTC @ 64 000 <paper>"
    assert message.buttons == [
        [("Approve", "approve:7"), ("Reject", "reject:7")],
        [("Chart", None)],
    ]
    assert message.disable_notification is True
    assert message.sent_at is not None and message.edited_at is None
    assert len(message.history) == 1
    assert sandbox.messages(OTHER) == []


async def test_form_multipart_json_and_query_bodies_are_accepted(sandbox: SandboxServer) -> None:
    url = f"{sandbox.base_url}/bot{TOKEN}/sendMessage"
    markup = {"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}
    multipart = aiohttp.FormData()
    multipart.add_field("chat_id", str(OWNER))
    multipart.add_field("text", "multipart")
    multipart.add_field("reply_markup", json.dumps(markup), content_type="application/json")
    async with aiohttp.ClientSession() as http:
        for kwargs in (
            {
                "data": {
                    "chat_id": str(OWNER),
                    "text": "urlencoded",
                    "reply_markup": json.dumps(markup),
                }
            },
            {"data": multipart},
            {"json": {"chat_id": OWNER, "text": "json", "reply_markup": markup}},
            {"params": {"chat_id": str(OWNER), "text": "query"}},
        ):
            async with http.post(url, **kwargs) as resp:  # type: ignore[arg-type]
                body = await resp.json()
                assert resp.status == 200, body
                assert body["ok"] is True
    sent = sandbox.messages(OWNER)
    assert [m.text for m in sent] == ["urlencoded", "multipart", "json", "query"]
    assert [m.buttons for m in sent] == [[[("Go", "go")]]] * 3 + [[]]


async def test_edit_text_and_markup(sandbox: SandboxServer, bot: Bot) -> None:
    sent = await bot.send_message(OWNER, "Proposal #7", reply_markup=card_markup())

    edited = await bot.edit_message_text(
        "<b>Filled</b> at 64 010", chat_id=OWNER, message_id=sent.message_id, parse_mode="HTML"
    )

    assert not isinstance(edited, bool)
    assert edited.text == "Filled at 64 010"
    assert edited.edit_date is not None
    assert edited.reply_markup is None  # no reply_markup given: Telegram drops the keyboard
    message = sandbox.message(OWNER, sent.message_id)
    assert message.text == "<b>Filled</b> at 64 010"
    assert message.buttons == []
    assert message.edited_at is not None
    assert [v.plain_text for v in message.history] == ["Proposal #7", "Filled at 64 010"]
    assert message.history[0].buttons[0] == [("Approve", "approve:7"), ("Reject", "reject:7")]

    new_markup = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Undo", callback_data="undo:7")]]
    )
    await bot.edit_message_reply_markup(
        chat_id=OWNER, message_id=sent.message_id, reply_markup=new_markup
    )
    assert message.buttons == [[("Undo", "undo:7")]]
    assert message.plain_text == "Filled at 64 010"
    assert len(message.edits) == 2


async def test_message_is_not_modified(sandbox: SandboxServer, bot: Bot) -> None:
    sent = await bot.send_message(
        OWNER, "<b>Same</b>", parse_mode="HTML", reply_markup=card_markup()
    )

    with pytest.raises(TelegramBadRequest) as caught:
        await bot.edit_message_text(
            "<b>Same</b>",
            chat_id=OWNER,
            message_id=sent.message_id,
            parse_mode="HTML",
            reply_markup=card_markup(),
        )
    assert caught.value.message == NOT_MODIFIED
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_reply_markup(
            chat_id=OWNER, message_id=sent.message_id, reply_markup=card_markup()
        )
    # the same text with different formatting is a modification
    await bot.edit_message_text(
        "Same", chat_id=OWNER, message_id=sent.message_id, reply_markup=card_markup()
    )
    assert len(sandbox.message(OWNER, sent.message_id).history) == 2


@pytest.mark.parametrize(
    ("kwargs", "description"),
    [
        ({"chat_id": 555, "text": "hi"}, "Bad Request: chat not found"),
        ({"chat_id": OWNER, "text": ""}, "Bad Request: message text is empty"),
        ({"chat_id": OWNER, "text": "   \n "}, "Bad Request: message text is empty"),
        ({"chat_id": OWNER, "text": "x" * 4097}, "Bad Request: message is too long"),
        (
            {"chat_id": OWNER, "text": "price < 5", "parse_mode": "HTML"},
            'Bad Request: can\'t parse entities: Unsupported start tag "" at byte offset 6',
        ),
        (
            {"chat_id": OWNER, "text": "<p>hi</p>", "parse_mode": "HTML"},
            'Bad Request: can\'t parse entities: Unsupported start tag "p" at byte offset 0',
        ),
        (
            {
                "chat_id": OWNER,
                "text": "hi",
                "reply_markup": InlineKeyboardMarkup(
                    inline_keyboard=[[InlineKeyboardButton(text="x", callback_data="y" * 65)]]
                ),
            },
            "Bad Request: BUTTON_DATA_INVALID",
        ),
    ],
)
async def test_send_message_errors(
    sandbox: SandboxServer, bot: Bot, kwargs: dict[str, object], description: str
) -> None:
    with pytest.raises(TelegramBadRequest) as caught:
        await bot.send_message(**kwargs)  # type: ignore[arg-type]
    assert caught.value.message == description
    assert sandbox.messages(OWNER) == []
    assert sandbox.stats.errors[400] == 1


async def test_exactly_4096_characters_is_allowed(sandbox: SandboxServer, bot: Bot) -> None:
    await bot.send_message(OWNER, "x" * 4096)
    # markup does not count towards the limit
    await bot.send_message(OWNER, "<b>" + "y" * 4096 + "</b>", parse_mode="HTML")
    assert [len(m.plain_text) for m in sandbox.messages(OWNER)] == [4096, 4096]


async def test_edit_errors(sandbox: SandboxServer, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest) as caught:
        await bot.edit_message_text("x", chat_id=OWNER, message_id=99)
    assert caught.value.message == "Bad Request: message to edit not found"
    sandbox.send_user_message(OWNER, OWNER, "my own words")
    with pytest.raises(TelegramBadRequest, match="message can't be edited"):
        await bot.edit_message_text("x", chat_id=OWNER, message_id=1)
    sent = await bot.send_message(OWNER, "ok")
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.edit_message_text("", chat_id=OWNER, message_id=sent.message_id)
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.edit_message_text("x", chat_id=777, message_id=sent.message_id)


async def test_callback_answer_rules(sandbox: SandboxServer, bot: Bot) -> None:
    sent = await bot.send_message(OWNER, "Card", reply_markup=card_markup())
    callback_id = sandbox.press_button(OWNER, sent.message_id, "approve:7", OWNER)

    assert await bot.answer_callback_query(callback_id, text="Approved", show_alert=True)

    answer = sandbox.callback_answers[callback_id]
    assert (answer.text, answer.show_alert) == ("Approved", True)
    too_old = "Bad Request: query is too old and response timeout expired or query ID is invalid"
    with pytest.raises(TelegramBadRequest) as caught:
        await bot.answer_callback_query(callback_id)
    assert caught.value.message == too_old
    with pytest.raises(TelegramBadRequest) as caught:
        await bot.answer_callback_query("424242")
    assert caught.value.message == too_old


async def test_press_button_validates_the_message_and_button(
    sandbox: SandboxServer, bot: Bot
) -> None:
    from bot.sandbox import SandboxUsageError

    sent = await bot.send_message(OWNER, "Card", reply_markup=card_markup())
    with pytest.raises(SandboxUsageError, match="no button with callback_data 'nope'"):
        sandbox.press_button(OWNER, sent.message_id, "nope", OWNER)
    with pytest.raises(SandboxUsageError, match="does not exist"):
        sandbox.press_button(OWNER, 99, "approve:7", OWNER)
    with pytest.raises(SandboxUsageError, match="not a member"):
        sandbox.press_button(OWNER, sent.message_id, "approve:7", OTHER)
    await bot.edit_message_reply_markup(chat_id=OWNER, message_id=sent.message_id)
    with pytest.raises(SandboxUsageError, match="no button"):
        sandbox.press_button(OWNER, sent.message_id, "approve:7", OWNER)


async def test_commands_round_trip(sandbox: SandboxServer, bot: Bot) -> None:
    commands = [
        BotCommand(command="positions", description="Open positions"),
        BotCommand(command="pause", description="Stop approving new trades"),
    ]
    assert await bot.set_my_commands(commands)

    assert sandbox.commands == [
        ("positions", "Open positions"),
        ("pause", "Stop approving new trades"),
    ]
    assert [c.model_dump() for c in await bot.get_my_commands()] == [
        c.model_dump() for c in commands
    ]
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Close All", description="x")])
    assert await bot.delete_my_commands()
    assert await bot.get_my_commands() == []


async def test_get_chat_and_chat_action(sandbox: SandboxServer, bot: Bot) -> None:
    sandbox.add_group(GROUP, "Desk", [OWNER, OTHER])

    private = await bot.get_chat(OWNER)
    group = await bot.get_chat(GROUP)

    assert isinstance(private, ChatFullInfo)
    assert (private.id, private.type, private.first_name, private.username) == (
        OWNER,
        "private",
        "Ada",
        "ada",
    )
    assert (group.type, group.title) == ("group", "Desk")
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.get_chat(-999)
    assert await bot.send_chat_action(OWNER, "typing")
    assert [(a.chat_id, a.action) for a in sandbox.chat_actions] == [(OWNER, "typing")]
    with pytest.raises(TelegramBadRequest, match="wrong parameter action"):
        await bot.send_chat_action(OWNER, "dancing")


async def test_group_messages_and_membership(sandbox: SandboxServer, bot: Bot) -> None:
    from bot.sandbox import SandboxUsageError

    sandbox.add_group(GROUP, "Desk", [OWNER])
    sandbox.add_user(1003, "Eve")

    sent = await bot.send_message(GROUP, "hello desk")
    update = sandbox.send_user_message(GROUP, OWNER, "/positions@signaldesk_sandbox_bot")

    assert sent.chat.type == "group" and sent.chat.title == "Desk"
    assert update["message"]["chat"] == {
        "id": GROUP,
        "type": "group",
        "title": "Desk",
        "all_members_are_administrators": True,
    }
    assert update["message"]["entities"] == [{"type": "bot_command", "offset": 0, "length": 33}]
    with pytest.raises(SandboxUsageError, match="not a member"):
        sandbox.send_user_message(GROUP, 1003, "let me in")
    # ids are per chat: the user's message is #2 after the bot's #1
    assert [m.message_id for m in sandbox.transcript(GROUP)] == [1, 2]


async def test_blocked_user_is_forbidden(sandbox: SandboxServer, bot: Bot) -> None:
    sandbox.set_blocked(OWNER)
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(OWNER, "anyone there?")
    sandbox.set_blocked(OWNER, False)
    await bot.send_message(OWNER, "welcome back")


async def test_replies(sandbox: SandboxServer, bot: Bot) -> None:
    update = sandbox.send_user_message(OWNER, OWNER, "/status")
    user_message_id = update["message"]["message_id"]

    reply = await bot.send_message(
        OWNER, "All good", reply_parameters=ReplyParameters(message_id=user_message_id)
    )

    assert reply.reply_to_message is not None
    assert reply.reply_to_message.text == "/status"
    with pytest.raises(TelegramBadRequest, match="message to be replied not found"):
        await bot.send_message(OWNER, "x", reply_parameters=ReplyParameters(message_id=99))
    await bot.send_message(
        OWNER,
        "x",
        reply_parameters=ReplyParameters(message_id=99, allow_sending_without_reply=True),
    )


async def test_user_message_date_and_delete(sandbox: SandboxServer, bot: Bot) -> None:
    when = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    update = sandbox.send_user_message(OWNER, OWNER, "old news", date=when)
    assert update["message"]["date"] == int(when.timestamp())
    assert update["message"]["from"]["id"] == OWNER
    assert "entities" not in update["message"]

    sent = await bot.send_message(OWNER, "temporary")
    assert await bot.delete_message(OWNER, sent.message_id)
    assert sandbox.messages(OWNER) == []
    assert sandbox.messages(OWNER, include_deleted=True)[0].deleted_at is not None
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(OWNER, sent.message_id)
    _ = timedelta  # naive dates count as UTC
    naive = sandbox.send_user_message(OWNER, OWNER, "naive", date=datetime(2026, 1, 5, 12, 0))
    assert naive["message"]["date"] == int(when.timestamp())


async def test_wait_for_explains_a_timeout(sandbox: SandboxServer, bot: Bot) -> None:
    await bot.send_message(OWNER, "something else")
    with pytest.raises(TimeoutError) as caught:
        await sandbox.wait_for_message(OWNER, contains="Filled", timeout=0.3)
    text = str(caught.value)
    assert "containing 'Filled'" in text
    assert "'something else'" in text  # the summary shows what the chat holds
    assert "sendMessage" in text
