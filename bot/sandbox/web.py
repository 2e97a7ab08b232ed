"""The web chat page of the sandbox: static assets and its small JSON API.

Routes (all on the sandbox's port):

* ``GET /`` - the chat page (``static/chat.html``), assets under ``GET /sandbox/static/``.
* ``GET /sandbox/api/updates?since=REV&timeout=S`` - long poll: waits up to ``S`` seconds
  (default 20, at most 25) until the sandbox revision exceeds ``REV``, then answers
  ``{"revision", "bot", "user", "chat", "commands", "messages", "notices"}`` where
  ``messages`` are the web chat's messages changed since ``REV`` and ``notices`` the
  callback answers (toasts) for the web user's presses since ``REV``.
* ``GET /sandbox/file/<file_id>`` - an image the bot sent (``sendPhoto``); a message's
  ``photo_url`` points here.
* ``POST /sandbox/api/send`` ``{"text"}`` - the web user writes a message.
* ``POST /sandbox/api/press`` ``{"message_id", "callback_data"}`` - the web user taps a button.

The page acts as a Telegram user, so the JSON API refuses requests whose ``Host`` is not the
loopback name when bound to loopback (DNS rebinding) and POSTs that are not
``application/json`` or come from another ``Origin`` (cross-site requests).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from bot.sandbox.errors import SandboxUsageError
from bot.sandbox.models import SentMessage, UserMessage
from bot.sandbox.state import unix

if TYPE_CHECKING:
    from bot.sandbox.server import SandboxServer

__all__ = ["STATIC_DIR", "add_web_routes", "message_to_web"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""Where ``chat.html``, ``chat.js`` and ``chat.css`` live."""

_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
_MAX_POLL_SECONDS = 25.0


def message_to_web(server: SandboxServer, message: SentMessage | UserMessage) -> dict[str, Any]:
    """The JSON the page renders for one message (plain text + Bot API entities)."""
    data: dict[str, Any] = {
        "message_id": message.message_id,
        "from_bot": message.from_bot,
        "revision": message.revision,
        "deleted": message.deleted_at is not None,
    }
    if isinstance(message, SentMessage):
        markup = message.reply_markup or {}
        data.update(
            sender=server.state.bot_user.get("first_name", "Bot"),
            text=message.plain_text,
            entities=list(message.entities),
            date=unix(message.sent_at) if message.sent_at else None,
            edit_date=unix(message.edited_at) if message.edited_at else None,
            keyboard=[
                [
                    {
                        "text": b.get("text", ""),
                        "callback_data": b.get("callback_data"),
                        "url": b.get("url"),
                    }
                    for b in row
                ]
                for row in markup.get("inline_keyboard", [])
            ],
            had_buttons=message.had_buttons,
            silent=message.disable_notification,
            photo_url=f"/sandbox/file/{message.photo}" if message.photo else None,
        )
    else:
        user = server.state.users.get(message.user_id)
        data.update(
            sender=user.first_name if user else str(message.user_id),
            user_id=message.user_id,
            text=message.text,
            entities=message.entities,
            date=unix(message.date),
            edit_date=None,
            keyboard=[],
            had_buttons=False,
            silent=False,
        )
    return data


def add_web_routes(app: web.Application, server: SandboxServer) -> None:
    """Register the page, its assets and its JSON API on ``app``."""
    handlers = _WebHandlers(server)
    app.router.add_get("/", handlers.index)
    app.router.add_static("/sandbox/static/", STATIC_DIR, follow_symlinks=False)
    app.router.add_get("/sandbox/api/updates", handlers.updates)
    app.router.add_get("/sandbox/file/{file_id}", handlers.file)
    app.router.add_post("/sandbox/api/send", handlers.send)
    app.router.add_post("/sandbox/api/press", handlers.press)


class _WebHandlers:
    def __init__(self, server: SandboxServer) -> None:
        self.server = server

    def _check_request(self, request: web.Request, *, post: bool) -> None:
        host = urlsplit(f"//{request.host}").hostname or ""
        if self.server.host in _LOOPBACK_NAMES and host not in _LOOPBACK_NAMES:
            raise web.HTTPForbidden(text="the sandbox page answers only on its loopback address")
        if not post:
            return
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="send application/json")
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(text="cross-origin requests are refused")

    async def index(self, request: web.Request) -> web.StreamResponse:
        self._check_request(request, post=False)
        return web.FileResponse(STATIC_DIR / "chat.html", headers={"Cache-Control": "no-store"})

    def _snapshot(self, since: int) -> dict[str, Any]:
        server = self.server
        state = server.state
        chat_id = server.web_chat_id
        user_id = server.web_user_id
        chat = state.chats.get(chat_id) if chat_id is not None else None
        user = state.users.get(user_id) if user_id is not None else None
        messages = [
            message_to_web(server, m)
            for m in (state.transcript(chat.id) if chat else [])
            if m.revision > since
        ]
        notices = [
            {
                "callback_id": record.id,
                "message_id": record.message_id,
                "text": record.answer.text,
                "show_alert": record.answer.show_alert,
            }
            for record in state.callbacks.values()
            if record.answer is not None
            and record.answer.revision > since
            and record.user_id == user_id
            and record.chat_id == chat_id
        ]
        commands = state.bot_commands.get(('{"type": "default"}', ""), [])
        return {
            "revision": state.revision,
            "bot": {
                "id": state.bot_user["id"],
                "first_name": state.bot_user.get("first_name"),
                "username": state.bot_user.get("username"),
            },
            "user": user.to_api() if user else None,
            "chat": chat.to_api() if chat else None,
            "commands": commands,
            "messages": messages,
            "notices": notices,
        }

    async def file(self, request: web.Request) -> web.StreamResponse:
        self._check_request(request, post=False)
        data = self.server.state.files.get(request.match_info["file_id"])
        if data is None:
            raise web.HTTPNotFound(text="no such file")
        kind = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
        return web.Response(body=data, content_type=kind, headers={"Cache-Control": "max-age=3600"})

    async def updates(self, request: web.Request) -> web.StreamResponse:
        self._check_request(request, post=False)
        try:
            since = int(request.query.get("since", "0"))
            timeout = min(float(request.query.get("timeout", "20")), _MAX_POLL_SECONDS)
        except ValueError:
            raise web.HTTPBadRequest(text="since and timeout must be numbers") from None
        state = self.server.state
        if state.revision <= since and timeout > 0:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while state.revision <= since:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await state.wait_wake(remaining)
        return web.json_response(self._snapshot(since), headers={"Cache-Control": "no-store"})

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        self._check_request(request, post=True)
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="invalid JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="expected a JSON object")
        return body

    def _who(self) -> tuple[int, int]:
        chat_id, user_id = self.server.web_chat_id, self.server.web_user_id
        if chat_id is None or user_id is None:
            raise web.HTTPConflict(text="no web user yet: the sandbox has no users")
        return chat_id, user_id

    async def send(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            return web.json_response({"ok": False, "error": "empty message"}, status=400)
        chat_id, user_id = self._who()
        try:
            update = self.server.send_user_message(chat_id, user_id, text)
        except SandboxUsageError as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response({"ok": True, "message_id": update["message"]["message_id"]})

    async def press(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request)
        message_id, data = body.get("message_id"), body.get("callback_data")
        if not isinstance(message_id, int) or not isinstance(data, str):
            return web.json_response(
                {"ok": False, "error": "message_id (int) and callback_data (str) required"},
                status=400,
            )
        chat_id, user_id = self._who()
        try:
            callback_id = self.server.press_button(chat_id, message_id, data, user_id)
        except SandboxUsageError as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=409)
        return web.json_response({"ok": True, "callback_id": callback_id})
