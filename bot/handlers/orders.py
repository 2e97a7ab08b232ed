"""Resting orders: ``/orders`` lists them with a Cancel button under each of ours.

A Cancel press runs the cancel first and only then talks to Telegram (the toast, the
result line, the refreshed list), so no Telegram failure after the press can stop the
cancel. An order that is no longer open gets "no open order ..." and nothing changes.
"""

from __future__ import annotations

from contextlib import suppress

import structlog
from aiogram import Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from bot import render
from bot.callbacks import OrderCallback
from bot.handlers.args import Args, no_args
from bot.handlers.replies import answer_pages
from core.app import Engine
from core.errors import NotFoundError

__all__ = ["create_router"]

log = structlog.get_logger(__name__)


def create_router() -> Router:
    """The router of ``/orders`` and its Cancel buttons."""
    router = Router(name="orders")
    router.message.register(on_orders, Command("orders"), Args(no_args))
    router.callback_query.register(on_cancel, OrderCallback.filter())
    return router


async def on_orders(message: Message, engine: Engine) -> None:
    """``/orders``: the venue's resting orders, what each is, a Cancel button per ours."""
    orders = await engine.trading.open_orders()
    known = await engine.symbols.known(o.report.symbol for o in orders)
    await answer_pages(message, render.orders_pages(orders, known))


async def on_cancel(query: CallbackQuery, callback_data: OrderCallback, engine: Engine) -> None:
    """A Cancel button: cancel that order, then report and refresh the list."""
    actor = render.actor_name(query.from_user)
    log.info("order.cancel", client_order_id=callback_data.cid, actor=actor)
    try:
        result = await engine.trading.cancel(callback_data.cid, actor)
    except NotFoundError as exc:
        await query.answer(render.error_line(exc)[: render.MAX_TOAST])
        return
    await query.answer(render.cancel_toast(result))
    message = query.message
    if not isinstance(message, Message):
        return
    await message.answer(render.cancel_result_text(result, actor))
    orders = await engine.trading.open_orders()
    known = await engine.symbols.known(o.report.symbol for o in orders)
    pages = render.orders_pages(orders, known)
    if len(pages) > 1:  # one message cannot show them all: list them anew
        await answer_pages(message, pages)
        return
    with suppress(TelegramAPIError):  # "message is not modified" when nothing changed
        await message.edit_text(pages[0].text, reply_markup=pages[0].markup)
