"""``SandboxServer``: a local Telegram Bot API server on aiohttp, plus the web chat page.

The Bot API lives at ``{base_url}/bot{token}/{method}`` and answers like
``https://api.telegram.org`` for the methods in :data:`bot.sandbox.botapi.METHODS`; the web
chat page is served at ``/`` (assets under ``/sandbox/static/``, JSON under
``/sandbox/api/``). Tests drive the simulated humans through the Python API of
:class:`SandboxServer` and read what the bot did from it.

Once the bot calls ``setWebhook``, each new update is POSTed as JSON to the webhook's URL
with the ``X-Telegram-Bot-Api-Secret-Token`` header (when a secret was given), one at a
time and in order: an answer other than 2xx, or no answer, is recorded as the webhook's
``last_error_date`` / ``last_error_message`` (Telegram's wording) and the same update is
pushed again after a growing pause (:data:`PUSH_RETRY_SECONDS` to
:data:`PUSH_RETRY_MAX_SECONDS`), before any later one. A method in the webhook's answer
is not executed. While :meth:`SandboxServer.set_unreachable` has Telegram down, nothing
is pushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from bot.sandbox.botapi import RATE_LIMITED_METHODS, BotAPI, Params, Upload, canonical_method
from bot.sandbox.errors import BotAPIError, SandboxUsageError
from bot.sandbox.models import (
    CallbackAnswer,
    CallbackQueryRecord,
    ChatAction,
    RateLimits,
    RequestLogEntry,
    SandboxStats,
    SentMessage,
    SimChat,
    SimUser,
    UserMessage,
    Webhook,
)
from bot.sandbox.ratelimit import FloodControl
from bot.sandbox.state import SandboxState, utcnow

__all__ = ["SandboxServer"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Default seconds :meth:`SandboxServer.wait_for` waits. Waiting is event-driven, so a
#: passing test never waits this long; it is generous so that a busy machine does not
#: fail a test whose event is merely late.
WAIT_SECONDS = 30.0

_UNAUTHORIZED = BotAPIError(401, "Unauthorized")
_NOT_FOUND = BotAPIError(404, "Not Found")
_SHUTDOWN_TIMEOUT = 0.1  # seconds an in-flight request (a long poll) may finish on shutdown
#: Seconds before a failed webhook push is retried, doubling up to the maximum (Telegram
#: waits longer; the sandbox keeps tests short).
PUSH_RETRY_SECONDS = 0.1
PUSH_RETRY_MAX_SECONDS = 2.0
#: Seconds a webhook push may take before it counts as failed ("Read timeout expired").
PUSH_TIMEOUT_SECONDS = 60.0
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name


@dataclass
class _Failure:
    """One armed failure: answer ``error`` (or cut the connection) ``remaining`` more times."""

    method: str  # lower-case method name
    remaining: int
    error: BotAPIError | None = None
    drop: bool = False
    after_processing: bool = False


def _chat_id_of(raw: dict[str, Any]) -> int | None:
    value = raw.get("chat_id")
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Decode Bot API parameters from the query string and a form or JSON body."""
    params: dict[str, Any] = dict(request.query)
    if not request.body_exists:
        return params
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise BotAPIError.bad_request("can't parse JSON request body") from None
        if not isinstance(body, dict):
            raise BotAPIError.bad_request("JSON request body must be an object")
        params.update(body)
        return params
    form = await request.post()
    for key, value in form.items():
        if isinstance(value, str):
            params[key] = value
        elif isinstance(value, (bytes, bytearray)):
            params[key] = bytes(value).decode("utf-8", errors="replace")
        else:  # an uploaded file (aiohttp FileField): kept for sendPhoto / editMessageMedia
            params[key] = Upload(str(value.filename or key), value.file.read())
    return params


class SandboxServer:
    """A faithful local Telegram Bot API server with simulated users and a web chat page.

    ``token`` must look like a Telegram token (``"123456:ABC..."``); its numeric part is the
    bot's user id. ``port=0`` picks a free port (kept across :meth:`set_unreachable`).
    ``enforce_rate_limits`` turns on Telegram's flood control (``rate_limits``, see
    :class:`RateLimits`) for ``sendMessage`` and ``editMessage*``. ``web_user_id`` /
    ``web_chat_id`` choose who the web page acts as and which chat it shows (default: the first
    user added and their private chat).

    Point aiogram at it with ``AiohttpSession(api=TelegramAPIServer.from_base(base_url))``.
    The web page lets whoever can reach it act as ``web_user_id``: keep ``host`` on loopback.
    """

    def __init__(
        self,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        enforce_rate_limits: bool = False,
        rate_limits: RateLimits | None = None,
        web_user_id: int | None = None,
        web_chat_id: int | None = None,
        bot_first_name: str = "SignalDesk",
        bot_username: str = "signaldesk_sandbox_bot",
    ) -> None:
        bot_id, sep, secret = token.partition(":")
        if not sep or not bot_id.isdigit() or not secret or any(c.isspace() for c in token):
            raise ValueError("token must look like a Telegram bot token: '<digits>:<secret>'")
        self.token = token
        self.host = host
        self._port = port
        self.enforce_rate_limits = enforce_rate_limits
        self.rate_limits = rate_limits or RateLimits()
        self._flood = FloodControl(self.rate_limits)
        self._web_user_id = web_user_id
        self._web_chat_id = web_chat_id
        self.state = SandboxState(
            {
                "id": int(bot_id),
                "is_bot": True,
                "first_name": bot_first_name,
                "username": bot_username,
                "can_join_groups": True,
                "can_read_all_group_messages": True,
                "supports_inline_queries": False,
                "can_connect_to_business": False,
                "has_main_web_app": False,
            }
        )
        self.api = BotAPI(self.state)
        self._failures: list[_Failure] = []
        self._runner: web.AppRunner | None = None
        self._pusher: asyncio.Task[None] | None = None
        self._started = False
        self._unreachable = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port (known once started; stays the same across outages)."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``: the value for ``TelegramAPIServer.from_base``."""
        if not self._started:
            raise RuntimeError("SandboxServer is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def bot_user(self) -> dict[str, Any]:
        """The bot's Bot API ``User`` object (what ``getMe`` returns)."""
        return dict(self.state.bot_user)

    def _build_app(self) -> web.Application:
        from bot.sandbox.web import add_web_routes

        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method:.*}", self._handle_bot_api)
        add_web_routes(app, self)
        return app

    async def _bind(self) -> None:
        runner = web.AppRunner(
            self._build_app(),
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        if self._port == 0:
            for address in runner.addresses:
                if isinstance(address, tuple) and len(address) >= 2:
                    self._port = int(address[1])
                    break

    async def _unbind(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def start(self) -> None:
        """Start listening on ``host:port``."""
        if self._started:
            return
        await self._bind()
        self._started = True
        self._unreachable = False
        self._pusher = asyncio.create_task(self._push_updates(), name="sandbox-webhook-pusher")
        log.info("Telegram sandbox listening on %s", self.base_url)

    async def stop(self) -> None:
        """Stop listening and pushing, and drop every connection (in-flight long polls
        included)."""
        pusher, self._pusher = self._pusher, None
        if pusher is not None:
            pusher.cancel()
            await asyncio.wait({pusher})
        await self._unbind()
        self._started = False

    async def __aenter__(self) -> SandboxServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def unreachable(self) -> bool:
        """Whether :meth:`set_unreachable` has taken the server off the network."""
        return self._unreachable

    async def set_unreachable(self, unreachable: bool) -> None:
        """Simulate a Telegram outage: really stop (or resume) accepting connections.

        ``True`` closes the listening socket and every open connection (pending long polls
        are cut), so clients get connection errors; ``False`` listens again on the same port.
        The simulated world (messages, queued updates) is kept.
        """
        if not self._started:
            raise RuntimeError("SandboxServer is not started")
        if unreachable == self._unreachable:
            return
        if unreachable:
            self._unreachable = True
            await self._unbind()
        else:
            await self._bind()
            self._unreachable = False
        self.state.wake()

    # -- the Bot API over HTTP -------------------------------------------------------------

    def _take_failure(self, method: str) -> _Failure | None:
        lowered = method.lower()
        for failure in self._failures:
            if failure.method == lowered and failure.remaining > 0:
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                return failure
        return None

    async def _handle_bot_api(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        date = utcnow()
        if not hmac.compare_digest(request.match_info["token"].encode(), self.token.encode()):
            return web.json_response(_UNAUTHORIZED.to_payload(), status=401)
        name = request.match_info["method"]
        canonical = canonical_method(name)
        method = canonical or name
        raw: dict[str, Any] = {}
        result: Any = None
        error: BotAPIError | None = None
        injected = dropped = False
        try:
            raw = await _read_params(request)
            failure = self._take_failure(method)
            if failure is not None and failure.drop:
                dropped = True
                if failure.after_processing and canonical is not None:
                    with contextlib.suppress(BotAPIError):  # the answer is lost either way
                        await self.api.call(canonical, Params(raw))
            elif failure is not None and failure.error is not None:
                injected = True
                error = failure.error
            elif canonical is None:
                error = _NOT_FOUND
            else:
                self._check_flood(canonical, raw, arrived)
                result = await self.api.call(canonical, Params(raw))
        except BotAPIError as exc:
            error = exc
        except SandboxUsageError as exc:  # pragma: no cover - a sandbox bug, not the bot's
            error = BotAPIError(500, f"Internal Server Error: {exc}")
        status = 200 if error is None else error.error_code
        self._record(
            RequestLogEntry(
                method=method,
                chat_id=self._chat_for_log(canonical, raw),
                at=arrived,
                date=date,
                status=0 if dropped else status,
                error_code=None if error is None else error.error_code,
                description=None if error is None else error.description,
                injected=injected,
                dropped=dropped,
                params=raw,
            )
        )
        if dropped:
            return self._drop_connection(request)
        if error is not None:
            return web.json_response(error.to_payload(), status=status)
        return web.json_response({"ok": True, "result": result})

    def _chat_for_log(self, canonical: str | None, raw: dict[str, Any]) -> int | None:
        chat_id = _chat_id_of(raw)
        if chat_id is None and canonical == "answerCallbackQuery":
            record = self.state.callbacks.get(str(raw.get("callback_query_id", "")))
            chat_id = record.chat_id if record else None
        return chat_id

    def _check_flood(self, canonical: str, raw: dict[str, Any], now: float) -> None:
        if not self.enforce_rate_limits or canonical not in RATE_LIMITED_METHODS:
            return
        chat_id = _chat_id_of(raw)
        if chat_id is None or chat_id not in self.state.chats:
            return  # the method itself answers "chat not found"
        is_group = self.state.chats[chat_id].type != "private"
        retry_after = self._flood.check(chat_id, is_group=is_group, now=now)
        if retry_after is not None:
            self.state.stats.rate_limited += 1
            raise BotAPIError(
                429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after
            )

    def _record(self, entry: RequestLogEntry) -> None:
        stats = self.state.stats
        stats.requests[entry.method] += 1
        if entry.error_code is not None:
            stats.errors[entry.error_code] += 1
        if entry.injected:
            stats.injected += 1
        if entry.dropped:
            stats.dropped += 1
        self.state.request_log.append(entry)
        self.state.wake()

    @staticmethod
    def _drop_connection(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError  # nothing is written: the client sees a dropped connection

    # -- the webhook ---------------------------------------------------------------------

    @property
    def webhook(self) -> Webhook | None:
        """The webhook set by the bot's ``setWebhook`` (None while it polls)."""
        return self.state.webhook

    async def _push_updates(self) -> None:
        """Push the pending updates to the webhook, oldest first (see the module docstring)."""
        pause = PUSH_RETRY_SECONDS
        timeout = aiohttp.ClientTimeout(total=PUSH_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                webhook = self.state.webhook
                if webhook is None or not self.state.updates or self._unreachable:
                    await self.state.wait_wake(1.0)
                    continue
                update = self.state.updates[0]
                error = await _push(http, webhook, update)
                if error is None:  # accepted: delivered, even if the webhook changed since
                    pause = PUSH_RETRY_SECONDS
                    webhook.delivered += 1
                    self.state.confirm_updates(update["update_id"] + 1)
                    self.state.changed()
                    continue
                if self.state.webhook is not webhook:
                    continue  # deleted or replaced meanwhile: start over with the new one
                webhook.last_error_date, webhook.last_error_message = utcnow(), error
                self.state.changed()
                log.info("webhook push of update %s failed: %s", update["update_id"], error)
                await asyncio.sleep(pause)
                pause = min(pause * 2, PUSH_RETRY_MAX_SECONDS)

    # -- failure injection -----------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        error_code: int,
        description: str,
        *,
        retry_after: int | None = None,
        migrate_to_chat_id: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` answer a Telegram error.

        The answer is ``{"ok": false, "error_code": error_code, "description": description}``
        with HTTP status ``error_code`` and, when given, ``parameters.retry_after`` (seconds)
        or ``parameters.migrate_to_chat_id``.
        Example: ``fail_next("sendMessage", 429, "Too Many Requests: retry after 2",
        retry_after=2)`` or ``fail_next("getUpdates", 502, "Bad Gateway", times=3)``.
        The method name is case-insensitive; the failure fires before any validation.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        error = BotAPIError(
            error_code, description, retry_after=retry_after, migrate_to_chat_id=migrate_to_chat_id
        )
        self._failures.append(_Failure(method=method.lower(), remaining=times, error=error))

    def drop_next(self, method: str, *, times: int = 1, after_processing: bool = False) -> None:
        """Cut the connection instead of answering the next ``times`` calls of ``method``.

        The client sees a network error (``TelegramNetworkError`` in aiogram). With
        ``after_processing=True`` the call takes effect first (the message is sent, the
        callback answered) and only the answer is lost: the ambiguous case a client must not
        resolve by blindly repeating a send.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        self._failures.append(
            _Failure(
                method=method.lower(), remaining=times, drop=True, after_processing=after_processing
            )
        )

    def clear_failures(self) -> None:
        """Disarm every pending :meth:`fail_next` / :meth:`drop_next`."""
        self._failures.clear()

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
        """Register a Telegram user and their private chat with the bot (chat id == user id)."""
        return self.state.add_user(
            user_id, first_name, username, last_name=last_name, language_code=language_code
        )

    def add_group(
        self, chat_id: int, title: str, member_ids: Iterable[int], *, username: str | None = None
    ) -> SimChat:
        """Register a group chat (negative id; ``-100...`` ids are supergroups) with members."""
        return self.state.add_group(chat_id, title, member_ids, username=username)

    def migrate_group(self, chat_id: int, new_chat_id: int) -> SimChat:
        """Upgrade group ``chat_id`` to supergroup ``new_chat_id`` (``-100XXXXXXXXXX``):
        sends and edits in the old group then answer 400 "Bad Request: group chat was
        upgraded to a supergroup chat" with ``parameters.migrate_to_chat_id``."""
        return self.state.migrate_group(chat_id, new_chat_id)

    def set_blocked(self, user_id: int, blocked: bool = True) -> None:
        """Whether ``user_id`` blocked the bot: sends to their chat then get 403 Forbidden."""
        self.state.require_user(user_id).blocked_bot = blocked

    def send_user_message(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        date: datetime | None = None,
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        """``user_id`` writes ``text`` in ``chat_id``: queues a ``message`` update
        (``reply_to``: as a reply to that message, carried as ``reply_to_message``).

        A leading ``/command`` (and any later one after whitespace) gets a ``bot_command``
        entity, as Telegram does. ``date`` defaults to now (naive datetimes count as UTC).
        Returns the Bot API ``Update`` (``update_id`` and ``message``). Raises
        :class:`SandboxUsageError` for an unknown chat/user or a non-member.
        """
        return self.state.send_user_message(chat_id, user_id, text, date=date, reply_to=reply_to)

    def press_button(self, chat_id: int, message_id: int, callback_data: str, user_id: int) -> str:
        """``user_id`` taps the inline button with ``callback_data`` under a bot message.

        Queues a ``callback_query`` update (``id``, ``from``, ``message``, ``chat_instance``,
        ``data``) and returns the callback query id. Raises :class:`SandboxUsageError` unless
        the message exists, is the bot's, and currently has such a button.
        """
        return self.state.press_button(chat_id, message_id, callback_data, user_id)

    def messages(self, chat_id: int, *, include_deleted: bool = False) -> list[SentMessage]:
        """The bot's messages in ``chat_id``, oldest first (live objects; do not mutate)."""
        return self.state.bot_messages(chat_id, include_deleted=include_deleted)

    def message(self, chat_id: int, message_id: int) -> SentMessage:
        """The bot's message ``message_id`` in ``chat_id`` (``KeyError`` if there is none)."""
        for message in self.state.bot_messages(chat_id, include_deleted=True):
            if message.message_id == message_id:
                return message
        raise KeyError(f"no bot message {message_id} in chat {chat_id}")

    def last_message(self, chat_id: int) -> SentMessage:
        """The bot's latest message in ``chat_id`` (``LookupError`` if there is none)."""
        sent = self.messages(chat_id)
        if not sent:
            raise LookupError(f"the bot has sent nothing to chat {chat_id}")
        return sent[-1]

    def transcript(self, chat_id: int) -> list[SentMessage | UserMessage]:
        """Every message in ``chat_id``, the users' and the bot's, in order."""
        return self.state.transcript(chat_id)

    @property
    def users(self) -> dict[int, SimUser]:
        """Registered users by id."""
        return dict(self.state.users)

    @property
    def chats(self) -> dict[int, SimChat]:
        """Registered chats by id."""
        return dict(self.state.chats)

    @property
    def callback_queries(self) -> dict[str, CallbackQueryRecord]:
        """Every button press by callback query id, with its answer if any."""
        return dict(self.state.callbacks)

    @property
    def callback_answers(self) -> dict[str, CallbackAnswer]:
        """``answerCallbackQuery`` calls by callback query id (``text``, ``show_alert``,
        ``answered_at``)."""
        return {
            cid: record.answer
            for cid, record in self.state.callbacks.items()
            if record.answer is not None
        }

    @property
    def commands(self) -> list[tuple[str, str]]:
        """The commands of the last successful ``setMyCommands`` as ``(command, description)``."""
        return list(self.state.last_commands)

    def commands_for(
        self, scope: dict[str, Any] | None = None, language_code: str = ""
    ) -> list[tuple[str, str]]:
        """The command list stored for a ``BotCommandScope`` dict (default scope) and
        language, as ``getMyCommands`` would return it."""
        key = (json.dumps(scope or {"type": "default"}, sort_keys=True), language_code)
        return [(c["command"], c["description"]) for c in self.state.bot_commands.get(key, [])]

    @property
    def chat_actions(self) -> list[ChatAction]:
        """Every ``sendChatAction`` call, oldest first."""
        return list(self.state.chat_actions)

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates queued and not yet confirmed by a ``getUpdates`` offset."""
        return [dict(u) for u in self.state.updates]

    @property
    def waiting_polls(self) -> int:
        """How many ``getUpdates`` requests are held open right now (long polling)."""
        return self.state.waiting_polls

    @property
    def allowed_updates(self) -> frozenset[str]:
        """The update types currently delivered (set by ``getUpdates(allowed_updates=...)``)."""
        return self.state.allowed_updates

    @property
    def request_log(self) -> list[RequestLogEntry]:
        """The Bot API requests answered (the latest 10 000), in order of completion."""
        return list(self.state.request_log)

    def requests(
        self, method: str | None = None, *, chat_id: int | None = None
    ) -> list[RequestLogEntry]:
        """The request log filtered by method name (case-insensitive) and/or chat id."""
        lowered = method.lower() if method else None
        return [
            e
            for e in self.state.request_log
            if (lowered is None or e.method.lower() == lowered)
            and (chat_id is None or e.chat_id == chat_id)
        ]

    @property
    def stats(self) -> SandboxStats:
        """Request counters: per method, per error status, 429s sent, injected/dropped."""
        return self.state.stats

    @property
    def web_user_id(self) -> int | None:
        """The user the web page acts as (default: the first user added)."""
        if self._web_user_id is not None:
            return self._web_user_id
        return next(iter(self.state.users), None)

    @property
    def web_chat_id(self) -> int | None:
        """The chat the web page shows (default: the web user's private chat)."""
        if self._web_chat_id is not None:
            return self._web_chat_id
        return self.web_user_id

    # -- waiting ---------------------------------------------------------------------------

    async def wait_for(
        self,
        predicate: Callable[[SandboxServer], T],
        timeout: float = WAIT_SECONDS,  # noqa: ASYNC109 - the sandbox's documented test API
        *,
        description: str | None = None,
    ) -> T:
        """Wait until ``predicate(self)`` is truthy and return its value.

        Re-evaluated on every change in the sandbox (event-driven), and at least every 0.2 s
        in case the predicate also looks at state outside the sandbox. ``timeout`` is in
        seconds; on expiry raises ``TimeoutError`` naming the predicate and summarising the
        chats and the latest requests.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"wait_for: not true after {timeout:g}s: "
                    f"{description or _describe_callable(predicate)} (last value {value!r})\n"
                    f"{self.describe()}"
                )
            await self.state.wait_wake(min(remaining, 0.2))

    async def wait_for_message(
        self,
        chat_id: int,
        *,
        contains: str | None = None,
        where: Callable[[SentMessage], bool] | None = None,
        after_message_id: int = 0,
        timeout: float = WAIT_SECONDS,  # noqa: ASYNC109 - the sandbox's documented test API
    ) -> SentMessage:
        """Wait for a bot message in ``chat_id`` newer than ``after_message_id`` whose plain
        text contains ``contains`` and that satisfies ``where``; return the first such one."""

        def find(server: SandboxServer) -> SentMessage | None:
            for message in server.messages(chat_id):
                if message.message_id <= after_message_id:
                    continue
                if contains is not None and contains not in message.plain_text:
                    continue
                if where is not None and not where(message):
                    continue
                return message
            return None

        wanted = f"a bot message in chat {chat_id}"
        if contains is not None:
            wanted += f" containing {contains!r}"
        found = await self.wait_for(find, timeout, description=wanted)
        assert found is not None
        return found

    def describe(self) -> str:
        """A human-readable summary of the sandbox (chats, queue, latest requests)."""
        lines = ["sandbox state:"]
        for chat_id, chat in self.state.chats.items():
            transcript = self.state.transcript(chat_id)
            lines.append(f"  chat {chat_id} ({chat.type}), {len(transcript)} messages")
            for message in transcript[-5:]:
                if isinstance(message, SentMessage):
                    body = message.plain_text
                    extra = f" buttons={message.buttons}" if message.buttons else ""
                    extra += " (edited)" if message.edited_at else ""
                    who = "bot"
                else:
                    body, extra, who = message.text, "", f"user {message.user_id}"
                gone = " (deleted)" if message.deleted_at else ""
                lines.append(f"    #{message.message_id} {who}: {body[:100]!r}{extra}{gone}")
        lines.append(f"  pending updates: {len(self.state.updates)}")
        webhook = self.state.webhook
        if webhook is not None:
            failing = f", last error {webhook.last_error_message!r}" * bool(webhook.last_error_date)
            lines.append(f"  webhook: {webhook.url}, {webhook.delivered} delivered{failing}")
        recent = list(self.state.request_log)[-8:]
        if recent:
            lines.append("  latest requests:")
            for entry in recent:
                outcome = "ok" if entry.ok else (entry.description or "dropped")
                lines.append(f"    {entry.method} chat={entry.chat_id}: {outcome}")
        return "\n".join(lines)


async def _push(
    http: aiohttp.ClientSession, webhook: Webhook, update: dict[str, Any]
) -> str | None:
    """POST ``update`` to ``webhook``; None when it answered 2xx, else Telegram's
    ``last_error_message`` for what went wrong."""
    headers = {SECRET_HEADER: webhook.secret_token} if webhook.secret_token else {}
    try:
        async with http.post(webhook.url, json=update, headers=headers) as response:
            await response.read()
            if 200 <= response.status < 300:
                return None
            return f"Wrong response from the webhook: {response.status} {response.reason}"
    except TimeoutError:
        return "Read timeout expired"
    except aiohttp.ClientConnectorError:
        return "Connection refused"
    except aiohttp.ClientError as exc:
        return f"Connection failed: {type(exc).__name__}"


def _describe_callable(predicate: Callable[..., Any]) -> str:
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)
