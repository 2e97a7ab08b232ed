"""The buttons of signal cards: Approve / Reject, and the edits before approval (half / double
the size, risk 0.5 % / 1 % / 2 %, Edit which asks for a reply).

Every button carries the card version it was rendered with: an Approve or an edit from a
card that changed since is refused ("the card changed, look again") and changes nothing.
An edit is answered with a toast; the card itself is re-rendered by the engine's
``signal_update`` (the outbox), like every other card change.

Bot API rule followed: ``answerCallbackQuery`` must be called for every callback query, or
the owner's client shows a spinner until it times out. So every tap is answered with a short
toast, on success, on a lost race ("Already decided: filled") and on errors alike. The
authorization middleware has already refused strangers. An Approve is answered as soon as
the approval is committed ("Approved: order sent", or why it was blocked), before the broker
is called, so a slow broker never leaves the spinner running.

The tapped card is edited in place twice: to the decided state as soon as the approval
commits (buttons removed, "order sent", alongside the answer), and after the broker answered
to the signal's final state (the fill). The second edit waits for the first, so the card
never ends on the earlier state. The engine also queues a card update in the outbox; the
deliverer skips it when this process already showed that very card
(:meth:`bot.delivery.Cards.edit`), so Telegram never has to refuse a second edit as "message
is not modified".

Until Telegram has taken the answer and the decided edit, the tap is open in
:class:`bot.priority.Taps` (``cards.taps``): the outbox deliverer waits for it; long
polling does not (a ``/pause`` is read at once)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from decimal import Decimal

import structlog
from aiogram import Bot, Router
from aiogram.types import CallbackQuery, ForceReply, Message

from bot import render
from bot.callbacks import CardAction, SignalCallback
from bot.delivery import Cards, kind_of
from bot.priority import TapHandle
from core import bounds
from core.app import Engine
from core.domain import OrderReport, Signal, SignalStatus
from core.errors import CardChangedError, SignalDeskError, TransitionConflictError
from core.services.signals import SignalEdit

__all__ = ["create_router"]

log = structlog.get_logger(__name__)

HUNDRED = Decimal(100)
#: Turns of the event loop the answer and the decided edit of a tap take to be written to
#: their (open) Bot API connections: one to build each request and hand it to aiohttp,
#: one for the task aiohttp writes it in. The approval waits for them before it calls the
#: broker, whose work would otherwise run first (about a millisecond of CPU).
SEND_TURNS = 2


def create_router() -> Router:
    """The router of the card buttons."""
    router = Router(name="approvals")
    router.callback_query.register(on_card_button, SignalCallback.filter())
    return router


async def on_card_button(
    query: CallbackQuery, callback_data: SignalCallback, bot: Bot, engine: Engine, cards: Cards
) -> None:
    """Approve or reject ``callback_data.signal_id`` as the tapping owner, answer the
    callback with the outcome, and edit the tapped card to the signal's current state.
    Background work gives way until the answer and the decided edit are on the wire
    (:mod:`bot.priority`)."""
    with cards.taps.deciding() as tap:
        await _on_card_button(query, callback_data, bot, engine, cards, tap)


async def _on_card_button(
    query: CallbackQuery,
    callback_data: SignalCallback,
    bot: Bot,
    engine: Engine,
    cards: Cards,
    tap: TapHandle,
) -> None:
    actor = render.actor_name(query.from_user)
    signal_id = callback_data.signal_id
    signal: Signal | None = None
    report: OrderReport | None = None
    refresh = True
    answer: asyncio.Future[object] | None = None
    shown: asyncio.Future[None] | None = None
    message = query.message if isinstance(query.message, Message) else None  # None after 48 h

    def answer_with(toast: str) -> asyncio.Future[object]:
        return asyncio.ensure_future(bot.answer_callback_query(query.id, text=toast))

    async def decided(signal: Signal) -> None:  # before the broker is called
        nonlocal answer, shown
        answer = answer_with(render.decided_toast(signal))
        if message is not None:  # the buttons go now, whatever the broker's latency
            shown = asyncio.ensure_future(_show_decided(bot, cards, message, signal))
        tap.close_after([answer] if shown is None else [answer, shown])
        for _ in range(SEND_TURNS):  # onto the wire before the broker call's work starts
            await asyncio.sleep(0)

    try:
        if callback_data.action is CardAction.APPROVE:
            version = callback_data.version
            decision = await engine.signals.approve(
                signal_id, actor, version, decided, shown=cards.pending(signal_id, version)
            )
            signal, report = decision.signal, decision.report
            toast = render.approve_toast(decision)
        elif callback_data.action is CardAction.REJECT:
            signal = await engine.signals.reject(signal_id, actor)
            toast = render.reject_toast(signal)
        else:
            await _on_edit_button(query, callback_data, bot, engine, actor)
            return
    except TransitionConflictError as exc:
        toast = render.conflict_toast(exc.current)
    except CardChangedError as exc:  # the edit's signal_update re-renders the card
        toast = str(exc)
        refresh = False
    except SignalDeskError as exc:  # no such signal, a broker failure: nothing to show
        toast = str(exc)[: render.MAX_TOAST]
        refresh = False
    except Exception:
        if answer is None:
            await query.answer(render.internal_error()[: render.MAX_TOAST])
        raise
    log.info(
        "card.tap", signal=signal_id, action=callback_data.action.name, actor=actor, toast=toast
    )
    replies: list[Awaitable[object]] = [answer or answer_with(toast)]
    if refresh and message is not None:
        replies.append(
            _after(shown, _refresh(bot, engine, cards, message, signal_id, signal, report))
        )
    elif shown is not None:
        replies.append(shown)
    results = await asyncio.gather(*replies, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            log.warning("card.tap_reply_failed", signal=signal_id, error=repr(result))


_SCALES = {CardAction.HALF: Decimal("0.5"), CardAction.DOUBLE: Decimal(2)}


async def _on_edit_button(
    query: CallbackQuery, data: SignalCallback, bot: Bot, engine: Engine, actor: str
) -> None:
    """Half / double / Risk N %: edit the signal (compare-and-set on ``data.version``) and answer
    with the new size. Edit: check the card is current and ask for the changes as a reply
    to a prompt that names the signal and the version. Errors propagate to the caller."""
    if data.action is CardAction.EDIT:
        signal = await engine.signals.get(data.signal_id)
        if signal.status is not SignalStatus.PROPOSED:
            raise TransitionConflictError(signal.id, signal.status, "edit")
        if signal.card_version != data.version:
            raise CardChangedError(signal.id)
        await query.answer()
        if isinstance(query.message, Message):
            await bot.send_message(
                query.message.chat.id,
                render.edit_prompt(signal),
                reply_markup=ForceReply(input_field_placeholder="sl 61000 tp 66000 qty 0.02"),
            )
        return
    if data.action is CardAction.RISK:
        change = SignalEdit(risk_pct=bounds.decimal_value("risk", data.arg, upper=HUNDRED))
    else:
        change = SignalEdit(scale=_SCALES[data.action])
    signal = await engine.signals.edit(data.signal_id, data.version, change, actor)
    log.info("card.edit", signal=signal.id, action=data.action.name, actor=actor)
    await query.answer(render.edit_toast(signal))


async def _after(first: Awaitable[None] | None, then: Awaitable[None]) -> None:
    """Await ``first`` (its failure only logged), then ``then``: the card's decided state
    must reach Telegram before its final one, never after it."""
    if first is not None:
        try:
            await first
        except Exception as exc:  # the final edit below still brings the card up to date
            log.warning("card.tap_reply_failed", error=repr(exc))
    await then


async def _show_decided(bot: Bot, cards: Cards, message: Message, signal: Signal) -> None:
    """Edit the tapped card to ``signal`` as decided, before the broker answers."""
    card = await cards.decided(signal)
    await cards.edit(bot, message.chat.id, message.message_id, card, kind_of(message))


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
    await cards.edit(bot, message.chat.id, message.message_id, card, kind_of(message))
