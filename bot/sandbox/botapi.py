"""The Bot API methods the sandbox implements, over a :class:`SandboxState`.

Each method takes the decoded request parameters and returns the ``result`` of a successful
answer or raises :class:`BotAPIError` with Telegram's error code and description. Parameter
values arrive as strings (form bodies, nested objects JSON-encoded) or as JSON values (JSON
bodies); :class:`Params` accepts both. See https://core.telegram.org/bots/api.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bot.sandbox.errors import BotAPIError
from bot.sandbox.models import (
    CallbackAnswer,
    ChatAction,
    MessageVersion,
    SentMessage,
    SimChat,
    Webhook,
)
from bot.sandbox.state import SandboxState, unix, utcnow
from bot.sandbox.textmarkup import check_url, format_text

__all__ = [
    "MAX_CAPTION_LENGTH",
    "METHODS",
    "RATE_LIMITED_METHODS",
    "BotAPI",
    "Params",
    "Upload",
    "canonical_method",
]

MAX_CAPTION_LENGTH = 1024
"""Telegram's limit on a media caption, in UTF-16 units after entity parsing."""
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")

NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup of the "
    "specified message are exactly the same as a current content and reply markup of the "
    "message"
)
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
SCOPE_TYPES = frozenset(
    {
        "default",
        "all_private_chats",
        "all_group_chats",
        "all_chat_administrators",
        "chat",
        "chat_administrators",
        "chat_member",
    }
)
_BUTTON_KEYS = (
    "text",
    "callback_data",
    "url",
    "login_url",
    "web_app",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
    "style",
    "icon_custom_emoji_id",
)
_BUTTON_ACTIONS = frozenset(_BUTTON_KEYS) - {"text", "style", "icon_custom_emoji_id"}
#: ``setWebhook``'s ``secret_token``: 1-256 characters A-Z, a-z, 0-9, _ and -
_SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]*$")

METHODS = (
    "getMe",
    "getUpdates",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "setMyCommands",
    "getMyCommands",
    "deleteMyCommands",
    "sendMessage",
    "sendPhoto",
    "editMessageText",
    "editMessageCaption",
    "editMessageMedia",
    "editMessageReplyMarkup",
    "deleteMessage",
    "answerCallbackQuery",
    "getChat",
    "sendChatAction",
)
"""The Bot API methods the sandbox answers (Telegram method names are case-insensitive)."""

RATE_LIMITED_METHODS = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "editMessageText",
        "editMessageCaption",
        "editMessageMedia",
        "editMessageReplyMarkup",
    }
)
"""Methods subject to flood control when the sandbox enforces rate limits."""

_CANONICAL = {name.lower(): name for name in METHODS}


def canonical_method(name: str) -> str | None:
    """The canonical spelling of a Bot API method name, or ``None`` if not implemented."""
    return _CANONICAL.get(name.lower())


@dataclass(frozen=True)
class Upload:
    """A file sent in a multipart request (``photo`` or an ``attach://name`` field)."""

    filename: str
    data: bytes


class Params:
    """Typed access to the parameters of one Bot API request (form or JSON encoded)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def present(self, name: str) -> bool:
        """Whether the parameter was sent with a non-empty value."""
        value = self.raw.get(name)
        return value is not None and value != ""

    def get_str(self, name: str) -> str | None:
        """The parameter as a string, or ``None`` when absent."""
        value = self.raw.get(name)
        if value is None:
            return None
        return value if isinstance(value, str) else str(value)

    def get_int(self, name: str, *, invalid: str | None = None) -> int | None:
        """The parameter as an integer; a non-integer raises 400 (``invalid`` or a default)."""
        value = self.raw.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            raise BotAPIError.bad_request(invalid or f"parameter {name!r} must be an integer")
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise BotAPIError.bad_request(
                invalid or f"parameter {name!r} must be an integer"
            ) from None

    def get_float(self, name: str) -> float | None:
        """The parameter as a number (seconds, for instance), or ``None`` when absent."""
        value = self.raw.get(name)
        if value is None or value == "":
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise BotAPIError.bad_request(f"parameter {name!r} must be a number") from None

    def get_bool(self, name: str) -> bool:
        """The parameter as a boolean (``true``/``1``/``True`` are true; absent is false)."""
        value = self.raw.get(name)
        if isinstance(value, bool):
            return value
        if value is None:
            return False
        return str(value).strip().lower() in ("true", "1", "yes", "on")

    def get_json(self, name: str, *, invalid: str | None = None) -> Any:
        """A nested object: JSON-decoded when it came as a string; ``None`` when absent."""
        value = self.raw.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise BotAPIError.bad_request(
                    invalid or f"can't parse {name} JSON object"
                ) from None
        return value


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def parse_reply_markup(value: Any) -> dict[str, Any] | None:
    """Validate a ``reply_markup`` the way Telegram does and return its canonical form.

    Inline keyboards are checked button by button (text, exactly one action,
    ``callback_data`` of 1-64 bytes, valid URLs); an empty inline keyboard means none.
    Reply keyboards, ``remove_keyboard`` and ``force_reply`` are accepted as given.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BotAPIError.bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in value:
        rows = value["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise BotAPIError.bad_request(
                'field "inline_keyboard" of the InlineKeyboardMarkup should be an Array of Arrays'
            )
        clean_rows = [[_parse_inline_button(b) for b in row] for row in rows]
        clean_rows = [row for row in clean_rows if row]
        if not clean_rows:
            return None
        return {"inline_keyboard": clean_rows}
    if any(k in value for k in ("keyboard", "remove_keyboard", "force_reply")):
        return {k: v for k, v in value.items() if v is not None}
    raise BotAPIError.bad_request("can't parse reply keyboard markup JSON object")


def _parse_inline_button(button: Any) -> dict[str, Any]:
    prefix = "can't parse inline keyboard button: "
    if not isinstance(button, dict):
        raise BotAPIError.bad_request(prefix + "InlineKeyboardButton should be an Object")
    if not isinstance(button.get("text"), str):
        raise BotAPIError.bad_request(prefix + 'Field "text" must be of type String')
    clean = {k: button[k] for k in _BUTTON_KEYS if button.get(k) is not None}
    actions = [k for k in clean if k in _BUTTON_ACTIONS]
    if not actions:
        raise BotAPIError.bad_request(prefix + "Text buttons are unallowed in the inline keyboard")
    if "callback_data" in clean:
        data = clean["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= 64:
            raise BotAPIError.bad_request("BUTTON_DATA_INVALID")
    if "url" in clean and (not isinstance(clean["url"], str) or check_url(clean["url"]) is None):
        raise BotAPIError.bad_request("BUTTON_URL_INVALID")
    return clean


MethodHandler = Callable[[Params], Awaitable[Any]]


class BotAPI:
    """Implements the Bot API methods listed in :data:`METHODS` over a sandbox state."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._handlers: dict[str, MethodHandler] = {
            "getMe": self.get_me,
            "getUpdates": self.get_updates,
            "setWebhook": self.set_webhook,
            "deleteWebhook": self.delete_webhook,
            "getWebhookInfo": self.get_webhook_info,
            "setMyCommands": self.set_my_commands,
            "getMyCommands": self.get_my_commands,
            "deleteMyCommands": self.delete_my_commands,
            "sendMessage": self.send_message,
            "sendPhoto": self.send_photo,
            "editMessageText": self.edit_message_text,
            "editMessageCaption": self.edit_message_caption,
            "editMessageMedia": self.edit_message_media,
            "editMessageReplyMarkup": self.edit_message_reply_markup,
            "deleteMessage": self.delete_message,
            "answerCallbackQuery": self.answer_callback_query,
            "getChat": self.get_chat,
            "sendChatAction": self.send_chat_action,
        }

    async def call(self, method: str, params: Params) -> Any:
        """Run the canonical ``method``; return its ``result`` or raise :class:`BotAPIError`."""
        return await self._handlers[method](params)

    # -- helpers ---------------------------------------------------------------------------

    def _chat(self, params: Params, *, name: str = "chat_id") -> SimChat:
        if not params.present(name):
            raise BotAPIError.bad_request("chat_id is empty")
        raw = params.get_str(name) or ""
        chat: SimChat | None = None
        if raw.startswith("@"):
            wanted = raw[1:].lower()
            chat = next(
                (
                    c
                    for c in self.state.chats.values()
                    if c.type != "private" and (c.username or "").lower() == wanted
                ),
                None,
            )
        else:
            try:
                chat = self.state.chats.get(int(raw))
            except ValueError:
                chat = None
        if chat is None:
            raise BotAPIError.bad_request("chat not found")
        return chat

    def _check_can_write(self, chat: SimChat) -> None:
        if chat.type == "private" and self.state.users[chat.id].blocked_bot:
            raise BotAPIError(403, "Forbidden: bot was blocked by the user")
        if chat.migrated_to_chat_id is not None:
            raise BotAPIError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                migrate_to_chat_id=chat.migrated_to_chat_id,
            )

    def _message_id(self, params: Params) -> int:
        message_id = params.get_int("message_id", invalid="message identifier is not specified")
        if message_id is None:
            raise BotAPIError.bad_request("message identifier is not specified")
        return message_id

    def _editable(self, params: Params) -> SentMessage:
        if params.present("inline_message_id"):
            raise BotAPIError.bad_request("MESSAGE_ID_INVALID")
        chat = self._chat(params)
        self._check_can_write(chat)
        message = self.state.find_message(chat.id, self._message_id(params))
        if message is None:
            raise BotAPIError.bad_request("message to edit not found")
        if not isinstance(message, SentMessage):
            raise BotAPIError.bad_request("message can't be edited")
        return message

    def _apply_edit(
        self,
        message: SentMessage,
        *,
        text: str,
        parse_mode: str | None,
        plain: str,
        entities: list[dict[str, Any]],
        markup: dict[str, Any] | None,
        photo: str | None = None,
    ) -> dict[str, Any]:
        current = message.current
        same_content = plain == current.plain_text and _canonical_json(entities) == (
            _canonical_json(list(current.entities))
        )
        same_content = same_content and photo == current.photo
        if same_content and _canonical_json(markup) == _canonical_json(current.reply_markup):
            raise BotAPIError.bad_request(NOT_MODIFIED)
        now = utcnow()
        message.history.append(
            MessageVersion(text, parse_mode, plain, tuple(entities), markup, now, photo)
        )
        message.edited_at = now
        message.revision = self.state.changed()
        return self.state.message_to_api(message)

    @staticmethod
    def _scope_key(params: Params) -> tuple[str, str]:
        scope = params.get_json("scope", invalid="can't parse BotCommandScope JSON object")
        if scope is None:
            scope = {"type": "default"}
        if not isinstance(scope, dict) or scope.get("type") not in SCOPE_TYPES:
            raise BotAPIError.bad_request("can't parse BotCommandScope JSON object")
        language = params.get_str("language_code") or ""
        return _canonical_json(scope), language

    # -- methods ---------------------------------------------------------------------------

    async def get_me(self, params: Params) -> Any:
        """``getMe``: the bot's ``User`` object."""
        return dict(self.state.bot_user)

    async def get_updates(self, params: Params) -> Any:
        """``getUpdates``: long polling (``offset``, ``limit`` 1-100, ``timeout`` seconds,
        ``allowed_updates``)."""
        offset = params.get_int("offset")
        limit = params.get_int("limit") or 100
        limit = min(max(limit, 1), 100)
        timeout = max(params.get_float("timeout") or 0.0, 0.0)
        return await self.state.get_updates(
            offset=offset,
            limit=limit,
            wait_seconds=timeout,
            allowed_updates=self._allowed_updates(params),
        )

    def _allowed_updates(self, params: Params) -> list[str] | None:
        allowed = params.get_json("allowed_updates", invalid="can't parse allowed_updates")
        if allowed is not None and (
            not isinstance(allowed, list) or not all(isinstance(t, str) for t in allowed)
        ):
            raise BotAPIError.bad_request("can't parse allowed_updates")
        return allowed

    async def set_webhook(self, params: Params) -> Any:
        """``setWebhook``: push updates to ``url`` from now on (``getUpdates`` then answers
        409), with ``secret_token`` in the ``X-Telegram-Bot-Api-Secret-Token`` header,
        ``allowed_updates`` and ``drop_pending_updates`` as for polling; an empty ``url``
        removes the webhook. Like a self-hosted Bot API server in ``--local`` mode, the
        sandbox takes ``http://`` URLs and any port (Telegram itself wants HTTPS on 443,
        80, 88 or 8443). Telegram's errors: "bad webhook: ..." for a URL that is not
        http(s) or has no host, "secret token is too long" (over 256 characters),
        "secret token contains unallowed characters" (only A-Z, a-z, 0-9, _ and -).
        ``max_connections`` is clamped to 1-100 and stored; the sandbox pushes one update
        at a time, in order. ``certificate`` and ``ip_address`` are ignored."""
        url = (params.get_str("url") or "").strip()
        if not url:
            return await self.delete_webhook(params)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise BotAPIError.bad_request("bad webhook: Wrong port number specified") from None
        if parts.scheme not in ("http", "https"):
            raise BotAPIError.bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        if not parts.hostname:
            raise BotAPIError.bad_request("bad webhook: Failed to resolve host: no host given")
        secret = params.get_str("secret_token") or None
        if secret is not None and len(secret) > 256:
            raise BotAPIError.bad_request("secret token is too long")
        if secret is not None and not _SECRET_TOKEN.match(secret):
            raise BotAPIError.bad_request("secret token contains unallowed characters")
        connections = params.get_int("max_connections") or 40
        webhook = Webhook(
            url=url,
            secret_token=secret,
            max_connections=min(max(connections, 1), 100),
            allowed_updates=self._allowed_updates(params),
            set_at=utcnow(),
        )
        current = self.state.webhook
        if current is not None and current.url == url:  # "Webhook is already set"
            webhook.last_error_date = current.last_error_date
            webhook.last_error_message = current.last_error_message
            webhook.delivered = current.delivered
        self.state.set_webhook(
            webhook, drop_pending_updates=params.get_bool("drop_pending_updates")
        )
        return True

    async def delete_webhook(self, params: Params) -> Any:
        """``deleteWebhook``: back to ``getUpdates``; ``drop_pending_updates`` empties the
        queue."""
        if self.state.webhook is not None:
            self.state.delete_webhook()
        if params.get_bool("drop_pending_updates"):
            self.state.drop_pending_updates()
        return True

    async def get_webhook_info(self, params: Params) -> Any:
        """``getWebhookInfo``: the webhook's ``url`` ("" while polling), the pending update
        count and, once a push failed, ``last_error_date`` (unix time) and
        ``last_error_message``."""
        info: dict[str, Any] = {
            "url": "",
            "has_custom_certificate": False,
            "pending_update_count": len(self.state.updates),
        }
        webhook = self.state.webhook
        if webhook is None:
            return info
        info.update(url=webhook.url, max_connections=webhook.max_connections)
        if webhook.allowed_updates is not None:
            info["allowed_updates"] = sorted(self.state.allowed_updates)
        if webhook.last_error_date is not None:
            info["last_error_date"] = unix(webhook.last_error_date)
            info["last_error_message"] = webhook.last_error_message
        return info

    async def set_my_commands(self, params: Params) -> Any:
        """``setMyCommands``: 0-100 commands of 1-32 chars ``[a-z0-9_]``, descriptions 1-256."""
        commands = params.get_json("commands", invalid="can't parse commands JSON object")
        if not isinstance(commands, list):
            raise BotAPIError.bad_request('parameter "commands" can\'t be parsed as an Array')
        if len(commands) > 100:
            raise BotAPIError.bad_request("too many commands specified")
        clean: list[dict[str, str]] = []
        for item in commands:
            if not isinstance(item, dict):
                raise BotAPIError.bad_request("can't parse BotCommand JSON object")
            command = str(item.get("command", "")).lstrip("/")
            description = str(item.get("description", ""))
            if not (
                1 <= len(command) <= 32
                and all(c.isascii() and (c.islower() or c.isdigit() or c == "_") for c in command)
            ):
                raise BotAPIError.bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(description.strip()) <= 256:
                raise BotAPIError.bad_request("command description is empty or too long")
            clean.append({"command": command, "description": description})
        key = self._scope_key(params)
        if clean:
            self.state.bot_commands[key] = clean
        else:
            self.state.bot_commands.pop(key, None)
        self.state.last_commands = [(c["command"], c["description"]) for c in clean]
        self.state.changed()
        return True

    async def get_my_commands(self, params: Params) -> Any:
        """``getMyCommands``: the list for exactly that scope and language."""
        return [dict(c) for c in self.state.bot_commands.get(self._scope_key(params), [])]

    async def delete_my_commands(self, params: Params) -> Any:
        """``deleteMyCommands``: forget the list of that scope and language."""
        self.state.bot_commands.pop(self._scope_key(params), None)
        self.state.changed()
        return True

    async def send_message(self, params: Params) -> Any:
        """``sendMessage``: text (HTML parsed like Telegram), inline keyboard, reply target."""
        chat = self._chat(params)
        self._check_can_write(chat)
        text = params.get_str("text")
        parse_mode = params.get_str("parse_mode") or None
        entities = params.get_json("entities", invalid="can't parse entities JSON object")
        plain, found = format_text(
            text, parse_mode, entities if isinstance(entities, list) else None
        )
        markup = parse_reply_markup(
            params.get_json("reply_markup", invalid="can't parse reply keyboard markup JSON object")
        )
        reply_to = self._reply_target(params, chat)
        now = utcnow()
        assert text is not None
        message = SentMessage(
            chat_id=chat.id,
            message_id=self.state.next_message_id(chat),
            history=[MessageVersion(text, parse_mode, plain, tuple(found), markup, now)],
            disable_notification=params.get_bool("disable_notification"),
            reply_to_message_id=reply_to,
            sent_at=now,
        )
        self.state.append_message(message)
        message.revision = self.state.changed()
        return self.state.message_to_api(message)

    def _image(self, params: Params, value: Any) -> str:
        """The ``file_id`` of the image ``value`` names: an upload, ``attach://<field>`` of
        the same request, or the ``file_id`` of an image sent before. Telegram's errors:
        nothing sent, an unknown id, bytes that are not an image."""
        if isinstance(value, str) and value.startswith("attach://"):
            value = params.raw.get(value.removeprefix("attach://"))
        if isinstance(value, Upload):
            if not value.data.startswith(_IMAGE_MAGIC):
                raise BotAPIError.bad_request("IMAGE_PROCESS_FAILED")
            return self.state.store_file(value.data)
        if value is None or value == "":
            raise BotAPIError.bad_request("there is no photo in the request")
        if isinstance(value, str) and value in self.state.files:
            return value
        raise BotAPIError.bad_request("wrong file identifier/HTTP URL specified")

    def _caption(self, params: Params) -> tuple[str, str | None, str, list[dict[str, Any]]]:
        """``(caption, parse_mode, plain, entities)``; an absent caption is empty. More
        than :data:`MAX_CAPTION_LENGTH` raises 400 "message caption is too long"."""
        caption = params.get_str("caption") or ""
        parse_mode = params.get_str("parse_mode") or None
        if not caption:
            return "", parse_mode, "", []
        entities = params.get_json("caption_entities", invalid="can't parse entities JSON object")
        plain, found = format_text(
            caption,
            parse_mode,
            entities if isinstance(entities, list) else None,
            too_long="message caption is too long",
            limit=MAX_CAPTION_LENGTH,
        )
        return caption, parse_mode, plain, found

    async def send_photo(self, params: Params) -> Any:
        """``sendPhoto``: an uploaded PNG/JPEG (multipart) or a known ``file_id``, with an
        HTML caption of at most 1024 characters and an inline keyboard."""
        chat = self._chat(params)
        self._check_can_write(chat)
        caption, parse_mode, plain, found = self._caption(params)
        photo = self._image(params, params.raw.get("photo"))
        markup = parse_reply_markup(
            params.get_json("reply_markup", invalid="can't parse reply keyboard markup JSON object")
        )
        reply_to = self._reply_target(params, chat)
        now = utcnow()
        message = SentMessage(
            chat_id=chat.id,
            message_id=self.state.next_message_id(chat),
            history=[MessageVersion(caption, parse_mode, plain, tuple(found), markup, now, photo)],
            disable_notification=params.get_bool("disable_notification"),
            reply_to_message_id=reply_to,
            sent_at=now,
        )
        self.state.append_message(message)
        message.revision = self.state.changed()
        return self.state.message_to_api(message)

    def _edit_markup(self, params: Params) -> dict[str, Any] | None:
        markup = parse_reply_markup(
            params.get_json("reply_markup", invalid="can't parse reply keyboard markup JSON object")
        )
        if markup is not None and "inline_keyboard" not in markup:
            raise BotAPIError.bad_request("inline keyboard expected")
        return markup

    async def edit_message_caption(self, params: Params) -> Any:
        """``editMessageCaption``: a photo message's new caption (and keyboard; omitted:
        removed). A text message has none (400 "there is no caption in the message to
        edit")."""
        message = self._editable(params)
        if message.photo is None:
            raise BotAPIError.bad_request("there is no caption in the message to edit")
        caption, parse_mode, plain, found = self._caption(params)
        return self._apply_edit(
            message,
            text=caption,
            parse_mode=parse_mode,
            plain=plain,
            entities=found,
            markup=self._edit_markup(params),
            photo=message.photo,
        )

    async def edit_message_media(self, params: Params) -> Any:
        """``editMessageMedia``: a photo message's new image (``media``: an
        ``InputMediaPhoto`` with its own caption) and keyboard. A text message cannot
        become a photo (400 "there is no media in the message to edit")."""
        message = self._editable(params)
        media = params.get_json("media", invalid="can't parse InputMedia JSON object")
        if not isinstance(media, dict) or media.get("type") != "photo":
            raise BotAPIError.bad_request("can't parse InputMedia JSON object")
        if message.photo is None:
            raise BotAPIError.bad_request("there is no media in the message to edit")
        photo = self._image(params, media.get("media"))
        caption, parse_mode, plain, found = self._caption(
            Params({k: media.get(k) for k in ("caption", "parse_mode", "caption_entities")})
        )
        return self._apply_edit(
            message,
            text=caption,
            parse_mode=parse_mode,
            plain=plain,
            entities=found,
            markup=self._edit_markup(params),
            photo=photo,
        )

    def _reply_target(self, params: Params, chat: SimChat) -> int | None:
        reply = params.get_json("reply_parameters", invalid="can't parse reply parameters JSON")
        allow_without = params.get_bool("allow_sending_without_reply")
        target: int | None = params.get_int("reply_to_message_id")
        if isinstance(reply, dict):
            target = reply.get("message_id")
            allow_without = bool(reply.get("allow_sending_without_reply", allow_without))
            other_chat = reply.get("chat_id")
            if other_chat is not None and str(other_chat) != str(chat.id):
                return None  # replies across chats are not simulated
        elif reply is not None:
            raise BotAPIError.bad_request("can't parse reply parameters JSON")
        if target is None:
            return None
        if not isinstance(target, int):
            raise BotAPIError.bad_request("message to be replied not found")
        if self.state.find_message(chat.id, target) is None:
            if allow_without:
                return None
            raise BotAPIError.bad_request("message to be replied not found")
        return target

    async def edit_message_text(self, params: Params) -> Any:
        """``editMessageText``: new text; an omitted ``reply_markup`` removes the keyboard.
        A photo message has no text to edit (Telegram: 400 "there is no text in the message
        to edit")."""
        message = self._editable(params)
        if message.photo is not None:
            raise BotAPIError.bad_request("there is no text in the message to edit")
        text = params.get_str("text")
        parse_mode = params.get_str("parse_mode") or None
        entities = params.get_json("entities", invalid="can't parse entities JSON object")
        plain, found = format_text(
            text,
            parse_mode,
            entities if isinstance(entities, list) else None,
            too_long="MESSAGE_TOO_LONG",
        )
        markup = parse_reply_markup(
            params.get_json("reply_markup", invalid="can't parse reply keyboard markup JSON object")
        )
        if markup is not None and "inline_keyboard" not in markup:
            raise BotAPIError.bad_request("inline keyboard expected")
        assert text is not None
        return self._apply_edit(
            message, text=text, parse_mode=parse_mode, plain=plain, entities=found, markup=markup
        )

    async def edit_message_reply_markup(self, params: Params) -> Any:
        """``editMessageReplyMarkup``: replace the inline keyboard (omitted: remove it)."""
        message = self._editable(params)
        markup = parse_reply_markup(
            params.get_json("reply_markup", invalid="can't parse reply keyboard markup JSON object")
        )
        if markup is not None and "inline_keyboard" not in markup:
            raise BotAPIError.bad_request("inline keyboard expected")
        current = message.current
        return self._apply_edit(
            message,
            text=current.text,
            parse_mode=current.parse_mode,
            plain=current.plain_text,
            entities=list(current.entities),
            markup=markup,
            photo=current.photo,
        )

    async def delete_message(self, params: Params) -> Any:
        """``deleteMessage``: marks the message deleted (it leaves ``messages()``)."""
        chat = self._chat(params)
        message = self.state.find_message(chat.id, self._message_id(params))
        if message is None:
            raise BotAPIError.bad_request("message to delete not found")
        message.deleted_at = utcnow()
        message.revision = self.state.changed()
        return True

    async def answer_callback_query(self, params: Params) -> Any:
        """``answerCallbackQuery``: once per query; unknown or answered ids get 400."""
        callback_id = params.get_str("callback_query_id") or ""
        record = self.state.callbacks.get(callback_id)
        if record is None or record.answer is not None:
            raise BotAPIError.bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        text = params.get_str("text") or None
        if text is not None and len(text) > 200:
            raise BotAPIError.bad_request("MESSAGE_TOO_LONG")
        record.answer = CallbackAnswer(
            callback_id=callback_id,
            text=text,
            show_alert=params.get_bool("show_alert"),
            url=params.get_str("url") or None,
            cache_time=params.get_int("cache_time") or 0,
            answered_at=utcnow(),
        )
        record.answer.revision = self.state.changed()
        return True

    async def get_chat(self, params: Params) -> Any:
        """``getChat``: a ``ChatFullInfo`` object."""
        chat = self._chat(params)
        data = chat.to_api()
        data.pop("all_members_are_administrators", None)
        data.update(
            accent_color_id=0,
            max_reaction_count=11,
            accepted_gift_types={
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        )
        return data

    async def send_chat_action(self, params: Params) -> Any:
        """``sendChatAction``: records the action (``typing``...) for the chat."""
        chat = self._chat(params)
        self._check_can_write(chat)
        action = params.get_str("action") or ""
        if action not in CHAT_ACTIONS:
            raise BotAPIError.bad_request("wrong parameter action in request")
        self.state.chat_actions.append(ChatAction(chat.id, action, utcnow()))
        self.state.changed()
        return True
