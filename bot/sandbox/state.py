"""The simulated Telegram world behind the sandbox: users, chats, messages, the update queue.

Everything runs on one asyncio event loop; mutations are synchronous, and every change
bumps :attr:`SandboxState.revision` and wakes whoever waits for a change (long-polling
``getUpdates``, the web page's long poll, :meth:`SandboxServer.wait_for`).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import struct
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from bot.sandbox.errors import BotAPIError, SandboxUsageError
from bot.sandbox.models import (
    CallbackQueryRecord,
    ChatAction,
    RequestLogEntry,
    SandboxStats,
    SentMessage,
    SimChat,
    SimUser,
    UserMessage,
    Webhook,
)
from bot.sandbox.textmarkup import bot_command_entities

__all__ = ["DEFAULT_ALLOWED_UPDATES", "UPDATE_TYPES", "SandboxState"]

UPDATE_TYPES = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
)
"""Update types of the Bot API ``Update`` object."""

DEFAULT_ALLOWED_UPDATES = frozenset(UPDATE_TYPES) - {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}
"""What Telegram delivers when ``allowed_updates`` was never set or set to ``[]``."""

CONFLICT_DESCRIPTION = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
WEBHOOK_ACTIVE_DESCRIPTION = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
TERMINATED_BY_WEBHOOK_DESCRIPTION = "Conflict: terminated by setWebhook request"


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def unix(moment: datetime) -> int:
    """Unix time in whole seconds (Bot API ``date`` fields); naive datetimes count as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


class SandboxState:
    """The Telegram side of the conversation: what humans did and what the bot sent.

    ``bot_user`` is the Bot API ``User`` object of the bot (``getMe``); ``log_size`` bounds
    the request log and the record of filtered-out updates (a long demo run stays small).
    """

    def __init__(self, bot_user: dict[str, Any], *, log_size: int = 10_000) -> None:
        self.bot_user = bot_user
        self.users: dict[int, SimUser] = {}
        self.chats: dict[int, SimChat] = {}
        self._chat_log: dict[int, list[SentMessage | UserMessage]] = {}
        self.updates: list[dict[str, Any]] = []
        self._next_update_id = 1
        self.allowed_updates: frozenset[str] = DEFAULT_ALLOWED_UPDATES
        self.dropped_updates: deque[dict[str, Any]] = deque(maxlen=log_size)
        self.callbacks: dict[str, CallbackQueryRecord] = {}
        self._callback_ids = itertools.count(1)
        self.bot_commands: dict[tuple[str, str], list[dict[str, str]]] = {}
        self.last_commands: list[tuple[str, str]] = []
        self.chat_actions: list[ChatAction] = []
        self.request_log: deque[RequestLogEntry] = deque(maxlen=log_size)
        self.stats = SandboxStats()
        self.revision = 0
        self._event = asyncio.Event()
        self._poll_generation = 0
        self.waiting_polls = 0
        #: uploaded images by ``file_id`` (``sendPhoto``, ``editMessageMedia``)
        self.files: dict[str, bytes] = {}
        #: the webhook of ``setWebhook`` (updates are pushed to it), None while polling
        self.webhook: Webhook | None = None

    # -- change notification -------------------------------------------------------------

    def wake(self) -> None:
        """Wake every waiter without recording a change."""
        event, self._event = self._event, asyncio.Event()
        event.set()

    def changed(self) -> int:
        """Record a change: bump and return :attr:`revision`, wake every waiter."""
        self.revision += 1
        self.wake()
        return self.revision

    async def wait_wake(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the next wake-up; ``True`` if one came.

        Check your condition, then call this without awaiting anything in between.
        """
        event = self._event
        if seconds <= 0:
            return False
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            return False
        return True

    # -- the simulated world ---------------------------------------------------------------

    def add_user(
        self,
        user_id: int,
        first_name: str,
        username: str | None = None,
        *,
        last_name: str | None = None,
        language_code: str | None = "en",
    ) -> SimUser:
        """Register a user and their private chat (chat id == user id)."""
        if user_id <= 0:
            raise SandboxUsageError(f"user ids are positive, got {user_id}")
        if user_id in self.users:
            raise SandboxUsageError(f"user {user_id} is already registered")
        user = SimUser(user_id, first_name, username, last_name, language_code)
        self.users[user_id] = user
        self.chats[user_id] = SimChat(
            id=user_id,
            type="private",
            first_name=first_name,
            last_name=last_name,
            username=username,
            member_ids=[user_id],
        )
        self._chat_log[user_id] = []
        self.changed()
        return user

    def add_group(
        self, chat_id: int, title: str, member_ids: Iterable[int], *, username: str | None = None
    ) -> SimChat:
        """Register a group (negative ``chat_id``; ``-100...`` makes it a supergroup)."""
        if chat_id >= 0:
            raise SandboxUsageError(f"group chat ids are negative, got {chat_id}")
        if chat_id in self.chats:
            raise SandboxUsageError(f"chat {chat_id} is already registered")
        members = list(member_ids)
        unknown = [m for m in members if m not in self.users]
        if unknown:
            raise SandboxUsageError(f"add_group({chat_id}): unknown member ids {unknown}")
        kind = "supergroup" if str(chat_id).startswith("-100") and chat_id < -(10**12) else "group"
        chat = SimChat(id=chat_id, type=kind, title=title, username=username, member_ids=members)
        self.chats[chat_id] = chat
        self._chat_log[chat_id] = []
        self.changed()
        return chat

    def migrate_group(self, chat_id: int, new_chat_id: int) -> SimChat:
        """Upgrade group ``chat_id`` to the supergroup ``new_chat_id`` (same title and
        members, no messages), as Telegram does: from then on the Bot API answers sends
        and edits in the old group with 400 "group chat was upgraded to a supergroup
        chat" and ``parameters.migrate_to_chat_id``."""
        old = self.require_chat(chat_id)
        if old.type != "group":
            raise SandboxUsageError(f"only a (basic) group can be upgraded, not {old.type}")
        new = self.add_group(new_chat_id, old.title or "", old.member_ids, username=old.username)
        if new.type != "supergroup":
            raise SandboxUsageError(f"supergroup ids look like -100XXXXXXXXXX, got {new_chat_id}")
        old.migrated_to_chat_id = new_chat_id
        self.changed()
        return new

    def require_user(self, user_id: int) -> SimUser:
        """The registered user, or :class:`SandboxUsageError`."""
        try:
            return self.users[user_id]
        except KeyError:
            raise SandboxUsageError(f"unknown user {user_id}; call add_user() first") from None

    def require_chat(self, chat_id: int) -> SimChat:
        """The registered chat, or :class:`SandboxUsageError`."""
        try:
            return self.chats[chat_id]
        except KeyError:
            raise SandboxUsageError(
                f"unknown chat {chat_id}; call add_user() or add_group() first"
            ) from None

    def _require_member(self, chat: SimChat, user_id: int) -> SimUser:
        user = self.require_user(user_id)
        if user_id not in chat.member_ids:
            raise SandboxUsageError(f"user {user_id} is not a member of chat {chat.id}")
        return user

    def next_message_id(self, chat: SimChat) -> int:
        """Allocate the next message id of ``chat`` (ids are per chat, from 1)."""
        message_id = chat.next_message_id
        chat.next_message_id += 1
        return message_id

    def append_message(self, message: SentMessage | UserMessage) -> None:
        """Add a message to its chat's transcript."""
        self._chat_log[message.chat_id].append(message)

    def find_message(self, chat_id: int, message_id: int) -> SentMessage | UserMessage | None:
        """The message ``message_id`` of ``chat_id`` unless missing or deleted."""
        for message in reversed(self._chat_log.get(chat_id, [])):
            if message.message_id == message_id:
                return None if message.deleted_at is not None else message
        return None

    def transcript(self, chat_id: int) -> list[SentMessage | UserMessage]:
        """Every message of the chat, users' and bot's, in order (deleted ones included)."""
        return list(self._chat_log.get(chat_id, []))

    def bot_messages(self, chat_id: int, *, include_deleted: bool = False) -> list[SentMessage]:
        """The bot's messages in the chat, oldest first."""
        return [
            m
            for m in self._chat_log.get(chat_id, [])
            if isinstance(m, SentMessage) and (include_deleted or m.deleted_at is None)
        ]

    def store_file(self, data: bytes) -> str:
        """Keep an uploaded image; return its ``file_id`` (the same bytes, the same id)."""
        file_id = "sandbox-" + hashlib.sha256(data).hexdigest()[:32]
        self.files[file_id] = data
        return file_id

    # -- Bot API object shapes -------------------------------------------------------------

    def message_to_api(
        self, message: SentMessage | UserMessage, *, with_reply: bool = True
    ) -> dict[str, Any]:
        """The Bot API ``Message`` object for a stored message."""
        chat = self.chats[message.chat_id]
        data: dict[str, Any] = {"message_id": message.message_id}
        if isinstance(message, SentMessage):
            assert message.sent_at is not None
            data["from"] = dict(self.bot_user)
            data["chat"] = chat.to_api()
            data["date"] = unix(message.sent_at)
            if with_reply and message.reply_to_message_id is not None:
                target = self.find_message(message.chat_id, message.reply_to_message_id)
                if target is not None:
                    data["reply_to_message"] = self.message_to_api(target, with_reply=False)
            if message.edited_at is not None:
                data["edit_date"] = unix(message.edited_at)
            text_key, entities_key = "text", "entities"
            if message.photo is not None:
                text_key, entities_key = "caption", "caption_entities"
                data["photo"] = [self._photo_size(message.photo)]
            if message.plain_text or message.photo is None:
                data[text_key] = message.plain_text
            if message.entities:
                data[entities_key] = [dict(e) for e in message.entities]
            markup = message.reply_markup
            if markup and markup.get("inline_keyboard"):
                data["reply_markup"] = markup
        else:
            data["from"] = self.users[message.user_id].to_api()
            data["chat"] = chat.to_api()
            data["date"] = unix(message.date)
            if with_reply and message.reply_to_message_id is not None:
                target = self.find_message(message.chat_id, message.reply_to_message_id)
                if target is not None:
                    data["reply_to_message"] = self.message_to_api(target, with_reply=False)
            data["text"] = message.text
            if message.entities:
                data["entities"] = [dict(e) for e in message.entities]
        return data

    def _photo_size(self, file_id: str) -> dict[str, Any]:
        """The Bot API ``PhotoSize`` of a stored PNG (width and height from its header)."""
        data = self.files.get(file_id, b"")
        width = height = 0
        if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
            width, height = struct.unpack(">II", data[16:24])
        return {
            "file_id": file_id,
            "file_unique_id": file_id[-16:],
            "width": width,
            "height": height,
            "file_size": len(data),
        }

    def chat_chat_instance(self, chat_id: int) -> str:
        """A stable ``chat_instance`` string for callback queries from ``chat_id``."""
        digest = hashlib.sha256(f"{self.bot_user['id']}:{chat_id}".encode()).hexdigest()
        return str(int(digest[:15], 16))

    # -- updates ---------------------------------------------------------------------------

    def queue_update(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Create an ``Update`` of ``kind``; stored unless ``allowed_updates`` excludes it.

        As with Telegram, the filter applies when the update is created: an excluded update
        is dropped for good (kept in :attr:`dropped_updates` for inspection).
        """
        update = {"update_id": self._next_update_id, kind: payload}
        self._next_update_id += 1
        if kind in self.allowed_updates:
            self.updates.append(update)
        else:
            self.dropped_updates.append(update)
        self.changed()
        return update

    def confirm_updates(self, offset: int) -> None:
        """Apply a ``getUpdates`` offset: positive forgets updates with a smaller id; negative
        keeps only the last ``-offset`` updates."""
        if offset > 0:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        elif offset < 0:
            self.updates = self.updates[offset:]

    def drop_pending_updates(self) -> None:
        """Forget every pending update (``deleteWebhook(drop_pending_updates=True)``)."""
        self.updates.clear()
        self.changed()

    def choose_updates(self, allowed_updates: list[str] | None) -> None:
        """Store an ``allowed_updates`` choice (``getUpdates``, ``setWebhook``): ``None``
        keeps the previous setting, ``[]`` (or only unknown types) the default set."""
        if allowed_updates is not None:
            chosen = frozenset(t for t in allowed_updates if t in UPDATE_TYPES)
            self.allowed_updates = chosen or DEFAULT_ALLOWED_UPDATES

    def set_webhook(self, webhook: Webhook, *, drop_pending_updates: bool) -> None:
        """Push updates to ``webhook`` from now on (a held ``getUpdates`` ends with 409
        "terminated by setWebhook request"); the pending ones too unless dropped."""
        self.webhook = webhook
        self.choose_updates(webhook.allowed_updates)
        if drop_pending_updates:
            self.updates.clear()
        self.changed()

    def delete_webhook(self) -> None:
        """Back to ``getUpdates``: pending updates stay queued for it."""
        self.webhook = None
        self.changed()

    async def get_updates(
        self,
        *,
        offset: int | None,
        limit: int,
        wait_seconds: float,
        allowed_updates: list[str] | None,
    ) -> list[dict[str, Any]]:
        """``getUpdates`` with real long polling.

        Confirms by ``offset``, stores ``allowed_updates`` (``None``: keep the previous
        setting; ``[]``: the default set), then returns up to ``limit`` pending updates,
        waiting up to ``wait_seconds`` (the Bot API ``timeout``) for the first one. A newer
        concurrent ``getUpdates`` ends an older one with ``409 Conflict``, like Telegram.
        Updates stay queued until a later call confirms them with a greater offset. While
        a webhook is set it answers ``409 Conflict`` at once (Telegram's wording), and a
        ``setWebhook`` during the wait ends it with ``409``.
        """
        if self.webhook is not None:
            raise BotAPIError(409, WEBHOOK_ACTIVE_DESCRIPTION)
        self._poll_generation += 1
        generation = self._poll_generation
        self.wake()  # an older long poll sees the new generation and ends with 409
        self.choose_updates(allowed_updates)
        if offset is not None:
            self.confirm_updates(offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        waiting = False
        try:
            while True:
                if generation != self._poll_generation:
                    raise BotAPIError(409, CONFLICT_DESCRIPTION)
                if self.webhook is not None:
                    raise BotAPIError(409, TERMINATED_BY_WEBHOOK_DESCRIPTION)
                if self.updates:
                    return [dict(u) for u in self.updates[:limit]]
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                if not waiting:
                    waiting = True
                    self.waiting_polls += 1
                    self.wake()
                await self.wait_wake(remaining)
        finally:
            if waiting:
                self.waiting_polls -= 1

    # -- what the humans do ----------------------------------------------------------------

    def send_user_message(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        date: datetime | None = None,
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        """A user writes ``text`` in ``chat_id`` (as a reply to message ``reply_to``, which
        must exist there); queues and returns the ``message`` Update."""
        chat = self.require_chat(chat_id)
        self._require_member(chat, user_id)
        if chat.migrated_to_chat_id is not None:
            raise SandboxUsageError(f"chat {chat_id} is now {chat.migrated_to_chat_id}")
        if not text or not text.strip():
            raise SandboxUsageError("Telegram does not send empty messages")
        if reply_to is not None and self.find_message(chat_id, reply_to) is None:
            raise SandboxUsageError(f"message {reply_to} does not exist in chat {chat_id}")
        moment = date if date is not None else utcnow()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        message = UserMessage(
            chat_id=chat_id,
            message_id=self.next_message_id(chat),
            user_id=user_id,
            text=text,
            entities=bot_command_entities(text),
            date=moment,
            reply_to_message_id=reply_to,
        )
        self.append_message(message)
        message.revision = self.revision + 1
        return self.queue_update("message", self.message_to_api(message))

    def press_button(self, chat_id: int, message_id: int, callback_data: str, user_id: int) -> str:
        """A user presses the inline button carrying ``callback_data``; returns the query id."""
        chat = self.require_chat(chat_id)
        user = self._require_member(chat, user_id)
        message = self.find_message(chat_id, message_id)
        if message is None:
            raise SandboxUsageError(f"message {message_id} does not exist in chat {chat_id}")
        if not isinstance(message, SentMessage):
            raise SandboxUsageError(f"message {message_id} in chat {chat_id} is not the bot's")
        datas = [data for row in message.buttons for _, data in row if data is not None]
        if callback_data not in datas:
            raise SandboxUsageError(
                f"message {message_id} in chat {chat_id} has no button with callback_data "
                f"{callback_data!r}; its buttons are {message.buttons!r}"
            )
        callback_id = f"{self.bot_user['id']}{next(self._callback_ids):08d}"
        self.callbacks[callback_id] = CallbackQueryRecord(
            id=callback_id,
            chat_id=chat_id,
            message_id=message_id,
            user_id=user_id,
            data=callback_data,
            pressed_at=utcnow(),
        )
        self.queue_update(
            "callback_query",
            {
                "id": callback_id,
                "from": user.to_api(),
                "message": self.message_to_api(message),
                "chat_instance": self.chat_chat_instance(chat_id),
                "data": callback_data,
            },
        )
        return callback_id
