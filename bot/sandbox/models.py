"""Records of the simulated Telegram world that tests and the web page read.

All times are timezone-aware UTC ``datetime`` objects unless a field says "monotonic"
(``time.monotonic()`` seconds, for measuring intervals such as rate limits). The objects are
live views owned by the sandbox: read them, do not mutate them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "Button",
    "CallbackAnswer",
    "CallbackQueryRecord",
    "ChatAction",
    "MessageVersion",
    "RateLimits",
    "RequestLogEntry",
    "SandboxStats",
    "SentMessage",
    "SimChat",
    "SimUser",
    "UserMessage",
    "Webhook",
]

Button = tuple[str, str | None]
"""One inline keyboard button as ``(text, callback_data)``; ``callback_data`` is ``None``
for URL and other non-callback buttons."""


def buttons_of(reply_markup: dict[str, Any] | None) -> list[list[Button]]:
    """The inline keyboard of a Bot API ``reply_markup`` as rows of ``(text, callback_data)``."""
    if not reply_markup or "inline_keyboard" not in reply_markup:
        return []
    return [
        [(str(b.get("text", "")), b.get("callback_data")) for b in row]
        for row in reply_markup["inline_keyboard"]
    ]


@dataclass
class SimUser:
    """A simulated Telegram user (Bot API ``User`` with ``is_bot: false``).

    ``blocked_bot`` makes the bot's sends to this user's private chat fail with
    ``403 Forbidden: bot was blocked by the user``.
    """

    id: int
    first_name: str
    username: str | None = None
    last_name: str | None = None
    language_code: str | None = "en"
    blocked_bot: bool = False

    def to_api(self) -> dict[str, Any]:
        """The Bot API ``User`` object."""
        data: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            data["last_name"] = self.last_name
        if self.username:
            data["username"] = self.username
        if self.language_code:
            data["language_code"] = self.language_code
        return data


@dataclass
class SimChat:
    """A simulated chat: ``private`` (``id`` == the user's id), ``group`` or ``supergroup``.

    Group ids are negative; ids of the form ``-100XXXXXXXXXX`` are supergroups, as in
    Telegram. ``member_ids`` lists the users who may write into a group.
    """

    id: int
    type: str
    title: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    username: str | None = None
    member_ids: list[int] = field(default_factory=list)
    next_message_id: int = 1
    #: set once the group was upgraded to a supergroup (:meth:`SandboxState.migrate_group`)
    migrated_to_chat_id: int | None = None

    def to_api(self) -> dict[str, Any]:
        """The Bot API ``Chat`` object (as embedded in a ``Message``)."""
        data: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.type == "private":
            data["first_name"] = self.first_name or ""
            if self.last_name:
                data["last_name"] = self.last_name
        else:
            data["title"] = self.title or ""
            if self.type == "group":
                data["all_members_are_administrators"] = True
        if self.username:
            data["username"] = self.username
        return data


@dataclass(frozen=True)
class MessageVersion:
    """One version of a bot message: as sent, or as left by one edit.

    ``text`` is exactly what the bot sent (HTML kept as given), ``plain_text`` and
    ``entities`` are what Telegram made of it (Bot API ``MessageEntity`` dicts, UTF-16
    offsets), ``reply_markup`` is the Bot API markup object or ``None``; ``at`` is when this
    version was created. A photo message (``sendPhoto``) has the ``file_id`` of its image in
    ``photo`` (the bytes are in :attr:`SandboxState.files`) and its caption as the text.
    """

    text: str
    parse_mode: str | None
    plain_text: str
    entities: tuple[dict[str, Any], ...]
    reply_markup: dict[str, Any] | None
    at: datetime
    photo: str | None = None

    @property
    def buttons(self) -> list[list[Button]]:
        """The inline keyboard as rows of ``(text, callback_data)``; ``[]`` for none."""
        return buttons_of(self.reply_markup)


@dataclass
class SentMessage:
    """A message the bot sent (``sendMessage``), with its whole edit history.

    ``history`` holds every version, the original first and the current one last, so
    ``len(history) - 1`` is the number of successful edits. ``sent_at`` / ``edited_at`` /
    ``deleted_at`` are UTC datetimes; ``revision`` is the sandbox change counter value of the
    last change (used by the web page).
    """

    chat_id: int
    message_id: int
    history: list[MessageVersion]
    disable_notification: bool = False
    reply_to_message_id: int | None = None
    sent_at: datetime | None = None
    edited_at: datetime | None = None
    deleted_at: datetime | None = None
    revision: int = 0
    from_bot: bool = True

    @property
    def current(self) -> MessageVersion:
        """The latest version."""
        return self.history[-1]

    @property
    def text(self) -> str:
        """The current text exactly as the bot sent it (HTML markup kept as given)."""
        return self.current.text

    @property
    def parse_mode(self) -> str | None:
        """The ``parse_mode`` of the current version (``"HTML"``, ``None``...)."""
        return self.current.parse_mode

    @property
    def plain_text(self) -> str:
        """The current text as Telegram shows it (markup parsed away, trimmed)."""
        return self.current.plain_text

    @property
    def entities(self) -> tuple[dict[str, Any], ...]:
        """The current formatting entities (Bot API ``MessageEntity`` dicts)."""
        return self.current.entities

    @property
    def reply_markup(self) -> dict[str, Any] | None:
        """The current Bot API ``reply_markup`` object, or ``None``."""
        return self.current.reply_markup

    @property
    def buttons(self) -> list[list[Button]]:
        """The current inline keyboard as rows of ``(text, callback_data)``; ``[]`` if none."""
        return self.current.buttons

    @property
    def photo(self) -> str | None:
        """The ``file_id`` of the current image of a photo message, else ``None``."""
        return self.current.photo

    @property
    def edits(self) -> list[MessageVersion]:
        """The versions created by edits (``history`` without the original)."""
        return self.history[1:]

    @property
    def had_buttons(self) -> bool:
        """Whether any version, past or current, carried an inline keyboard."""
        return any(v.buttons for v in self.history)


@dataclass
class UserMessage:
    """A message a simulated user wrote (queued to the bot as a ``message`` update).

    ``date`` is the message's date (UTC), ``entities`` the Bot API entities Telegram attached
    (``bot_command`` for commands).
    """

    chat_id: int
    message_id: int
    user_id: int
    text: str
    entities: list[dict[str, Any]]
    date: datetime
    revision: int = 0
    deleted_at: datetime | None = None
    from_bot: bool = False
    #: the message this one replies to (Bot API ``reply_to_message``), if any
    reply_to_message_id: int | None = None


@dataclass
class CallbackAnswer:
    """The bot's ``answerCallbackQuery`` for one callback query.

    ``text`` is the notification text (``None`` for none), ``show_alert`` whether it is an
    alert rather than a toast, ``answered_at`` a UTC datetime.
    """

    callback_id: str
    text: str | None
    show_alert: bool
    url: str | None
    cache_time: int
    answered_at: datetime
    revision: int = 0


@dataclass
class CallbackQueryRecord:
    """A button press by a simulated user (a ``callback_query`` update) and its answer."""

    id: str
    chat_id: int
    message_id: int
    user_id: int
    data: str
    pressed_at: datetime
    answer: CallbackAnswer | None = None


@dataclass(frozen=True)
class ChatAction:
    """One ``sendChatAction`` call: ``action`` (``"typing"``...) in ``chat_id`` at ``at`` (UTC)."""

    chat_id: int
    action: str
    at: datetime


@dataclass(frozen=True)
class RequestLogEntry:
    """One Bot API request the sandbox answered.

    ``method`` is the canonical method name (``"sendMessage"``; unknown methods as called),
    ``chat_id`` the target chat when the request had one, ``at`` a monotonic timestamp in
    seconds (``time.monotonic()``), ``date`` the UTC wall time, ``status`` the HTTP status,
    ``error_code`` / ``description`` the Telegram error if any, ``injected`` whether the
    error came from :meth:`SandboxServer.fail_next`, ``dropped`` whether the connection was
    cut by :meth:`SandboxServer.drop_next`, ``params`` the decoded request parameters.
    """

    method: str
    chat_id: int | None
    at: float
    date: datetime
    status: int
    error_code: int | None = None
    description: str | None = None
    injected: bool = False
    dropped: bool = False
    params: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the request was answered ``{"ok": true}``."""
        return self.error_code is None and not self.dropped


@dataclass
class SandboxStats:
    """Counters over the sandbox's lifetime.

    ``requests`` counts Bot API requests per canonical method name (all answers, errors
    included), ``errors`` counts error answers per HTTP status, ``rate_limited`` the 429s sent
    by the rate limiter, ``injected`` the errors produced by ``fail_next``, ``dropped`` the
    connections cut by ``drop_next``.
    """

    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[int] = field(default_factory=Counter)
    rate_limited: int = 0
    injected: int = 0
    dropped: int = 0

    @property
    def total_requests(self) -> int:
        """All Bot API requests answered so far."""
        return sum(self.requests.values())


@dataclass(frozen=True)
class RateLimits:
    """Telegram's flood limits as token buckets (applied when rate limits are enforced).

    Defaults follow the Bot API FAQ: about one message per second per chat (with a burst
    of ``per_chat_burst``), at most 20 messages per minute in a group, about 30 messages per
    second overall. Rates are per second except ``group_per_minute``. ``group_burst`` is how
    many messages a group takes at once (``None``: ``group_per_minute``, Telegram's); a
    test sets a small burst with a fast refill to see a group's pace in well under a minute.
    """

    per_chat_per_second: float = 1.0
    per_chat_burst: int = 3
    group_per_minute: int = 20
    group_burst: int | None = None
    global_per_second: float = 30.0
    global_burst: int = 30


@dataclass
class Webhook:
    """The webhook registered by ``setWebhook``: where the sandbox pushes updates.

    ``secret_token`` travels in the ``X-Telegram-Bot-Api-Secret-Token`` header of every
    push (``None``: no header). ``last_error_date`` / ``last_error_message`` describe the
    latest failed push, as ``getWebhookInfo`` reports them (Telegram's wording, e.g. "Wrong
    response from the webhook: 401 Unauthorized"); ``delivered`` counts accepted pushes.
    """

    url: str
    secret_token: str | None = None
    max_connections: int = 40
    allowed_updates: list[str] | None = None
    set_at: datetime | None = None
    last_error_date: datetime | None = None
    last_error_message: str = ""
    delivered: int = 0

    def __repr__(self) -> str:  # the secret stays out of test failure output
        return f"Webhook(url={self.url!r}, delivered={self.delivered})"
