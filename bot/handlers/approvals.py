"""Approve / Reject taps on signal cards.

Bot API rule followed: ``answerCallbackQuery`` must be called for every callback query, or
the owner's client shows a spinner until it times out. So every tap is answered with a short
toast, on success, on a lost race ("Already decided: filled") and on errors alike. The
authorization middleware has already refused strangers.

After the service call the tapped card is edited in place to the signal's final state
(buttons removed), concurrently with the answer. The engine also queues a card update in the
outbox; when the deliverer gets to it the card already shows that state, and Telegram's
"message is not modified" is treated as delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import structlog
from aiogram import Bot, Router
from aiogram.types import CallbackQuery, Message

from bot import render
from bot.callbacks import CardAction, SignalCallback
from bot.delivery import Cards, edit_card, kind_of
from core.app import Engine
from core.domain import OrderReport, Signal
from core.errors import SignalDeskError, TransitionConflictError

__all__ = ["create_router"]

log = structlog.get_logger(__name__)


def create_router() -> Router:
    """The router of the card buttons."""
    router = Router(name="approvals")
    router.callback_query.register(on_card_button, SignalCallback.filter())
    return router


async def on_card_button(
    query: CallbackQuery, callback_data: SignalCallback, bot: Bot, engine: Engine, cards: Cards
) -> None:
    """Approve or reject ``callback_data.signal_id`` as the tapping owner, answer the
    callback with the outcome, and edit the tapped card to the signal's current state."""
    actor = render.actor_name(query.from_user)
    signal_id = callback_data.signal_id
    signal: Signal | None = None
    report: OrderReport | None = None
    refresh = True
    try:
        if callback_data.action is CardAction.APPROVE:
            decision = await engine.signals.approve(signal_id, actor)
            signal, report = decision.signal, decision.report
            toast = render.approve_toast(decision)
        else:
            signal = await engine.signals.reject(signal_id, actor)
            toast = render.reject_toast(signal)
    except TransitionConflictError as exc:
        toast = render.conflict_toast(exc.current)
    except SignalDeskError as exc:  # no such signal, a broker failure: nothing to show
        toast = str(exc)[: render.MAX_TOAST]
        refresh = False
    except Exception:
        await query.answer(render.internal_error()[: render.MAX_TOAST])
        raise
    log.info(
        "card.tap", signal=signal_id, action=callback_data.action.name, actor=actor, toast=toast
    )
    replies: list[Awaitable[object]] = [bot.answer_callback_query(query.id, text=toast)]
    if refresh and isinstance(query.message, Message):  # None/inaccessible after 48 h
        replies.append(_refresh(bot, engine, cards, query.message, signal_id, signal, report))
    results = await asyncio.gather(*replies, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            log.warning("card.tap_reply_failed", signal=signal_id, error=repr(result))


async def _refresh(
    bot: Bot,
    engine: Engine,
    cards: Cards,
    message: Message,
    signal_id: int,
    signal: Signal | None,
    report: OrderReport | None,
) -> None:
    """Edit the tapped card to the signal's current state (read when the tap lost a race)."""
    if signal is None:
        signal = await engine.signals.get(signal_id)
    card = await cards.render(signal, report)
    await edit_card(bot, message.chat.id, message.message_id, card, kind_of(message))
