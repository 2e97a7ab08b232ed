"""``/notify``: how loud each topic of notification is, with buttons to change it.

The levels are persisted by :func:`core.notify.set_level` (table
``notification_settings``) and read by the outbox deliverer as it sends each message, so a
change applies to everything not yet delivered. Cards and the drawdown guard's alerts are
offered Loud and Silent only; a forged Off for them is refused by ``set_level`` and
answered with its reason. Buttons are owner-only like every other (the authorization
middleware refuses strangers before this router sees the press).
"""

from __future__ import annotations

import structlog
from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InaccessibleMessage, Message

from bot import render
from bot.callbacks import NotifyCallback
from bot.handlers.args import Args, no_args
from core.app import Engine
from core.errors import InvalidInputError
from core.notify import NoticeSettings, read_settings, set_level

__all__ = ["create_router"]

log = structlog.get_logger(__name__)


def create_router() -> Router:
    """The router of ``/notify`` and its buttons."""
    router = Router(name="notify")
    router.message.register(on_notify, Command("notify"), Args(no_args))
    router.callback_query.register(on_notify_button, NotifyCallback.filter())
    return router


async def _settings(engine: Engine) -> NoticeSettings:
    settings = engine.settings
    return await read_settings(engine.db, settings.quiet, settings.display_zone)


async def on_notify(message: Message, engine: Engine) -> None:
    """``/notify``: each topic's level and the quiet hours, with the buttons."""
    settings = await _settings(engine)
    await message.answer(
        render.notify_text(settings), reply_markup=render.notify_keyboard(settings)
    )


async def on_notify_button(
    query: CallbackQuery, callback_data: NotifyCallback, engine: Engine
) -> None:
    """A level pressed: persist it, answer, and edit the list in place."""
    topic, level = callback_data.topic, callback_data.level
    try:
        await set_level(engine.db, topic, level)
    except InvalidInputError as exc:
        log.info("notify.refused", topic=topic.value, level=level.value, error=str(exc))
        await query.answer(render.notify_refused(exc), show_alert=True)
        return
    log.info("notify.set", topic=topic.value, level=level.value, actor=query.from_user.id)
    await query.answer(render.notify_set(topic, level))
    settings = await _settings(engine)
    if query.message is not None and not isinstance(query.message, InaccessibleMessage):
        await query.message.edit_text(
            render.notify_text(settings), reply_markup=render.notify_keyboard(settings)
        )
