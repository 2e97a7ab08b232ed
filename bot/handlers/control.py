"""Account control: ``/pause [reason]``, ``/resume``, ``/closeall``, ``/close SYMBOL
[PERCENT|QUANTITY]``, the Close 25 % / 50 % / 100 % buttons under ``/positions`` and their
confirmation buttons.

Destructive commands (closing positions, resuming after a max drawdown breach) first ask
with a [Confirm] [Cancel] keyboard. The button's callback data holds the Unix time the
question was asked, so a press more than ``CONFIRM_TTL_SECONDS`` later is refused without
any stored state, also after a restart. One confirmation runs once: a second press (double
tap, a second owner) gets "Already confirmed".

A confirmed action executes first and reports after: once the confirmation is claimed, no
Telegram failure (429, 5xx, network) can stop it. The press is answered and the question
edited to "⏳ Closing…" (which removes the buttons) before the broker calls, but either
failing is only logged; the result is a report through the outbox (delivered, retried,
never lost), worded by :mod:`bot.render`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import structlog
from aiogram import Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from bot import render
from bot.callbacks import ConfirmAction, ConfirmCallback, PositionCallback
from bot.handlers.args import Args, close_args, free_text, no_args
from bot.handlers.replies import answer_long
from core.app import Engine
from core.config import Settings
from core.errors import NotFoundError
from core.notify import NoticeKind, Notification, Priority
from core.services.trading import CloseAmount, ClosePlan

__all__ = ["create_router"]

log = structlog.get_logger(__name__)

_NO_SYMBOL = "-"


def create_router() -> Router:
    """The router of the control commands and their confirmation buttons."""
    router = Router(name="control")
    confirmations = _Confirmations()
    router.message.register(on_pause, Command("pause"), Args(free_text))
    router.message.register(on_resume, Command("resume"), Args(no_args))
    router.message.register(on_closeall, Command("closeall"), Args(no_args))
    router.message.register(on_close, Command("close"), Args(close_args))
    router.callback_query.register(on_position_button, PositionCallback.filter())
    router.callback_query.register(confirmations.on_press, ConfirmCallback.filter())
    return router


async def on_pause(message: Message, args: str, engine: Engine) -> None:
    """``/pause [reason]``: approvals are blocked (BLOCKED: paused) until ``/resume``; then,
    with ``PAUSE_CANCELS_ENTRIES``, resting entry orders are cancelled (exits stay)."""
    assert message.from_user is not None
    actor = render.actor_name(message.from_user)
    operator = await engine.trading.pause(args, actor)
    cancelled = await engine.trading.after_pause(actor)
    await answer_long(message, render.paused_text(operator, cancelled))


async def on_resume(message: Message, engine: Engine, settings: Settings) -> None:
    """``/resume``: lift the pause at once, or ask first after a max drawdown breach (the
    guard is then re-armed from the current equity)."""
    assert message.from_user is not None
    operator = await engine.trading.operator_status()
    if operator.breached:
        await _ask(
            message,
            render.resume_prompt(operator, settings.confirm_ttl_seconds),
            ConfirmAction.RESUME,
            _NO_SYMBOL,
        )
    elif not operator.paused:
        await message.answer(render.not_paused())
    else:
        await engine.risk.resume(render.actor_name(message.from_user))
        await message.answer(render.resumed_text())


async def on_closeall(message: Message, engine: Engine, settings: Settings) -> None:
    """``/closeall``: list the open positions (and those it leaves alone) and the resting
    entry orders, and ask to confirm cancelling those and closing every position
    SignalDesk opened."""
    views = await engine.trading.book()
    entries = [o for o in await engine.trading.open_orders() if o.is_entry]
    if not views and not entries:
        await message.answer(render.no_positions())
        return
    if all(v.external for v in views) and not entries:
        await message.answer(render.only_external(views))
        return
    prompt = render.confirm_prompt(views, entries, settings.confirm_ttl_seconds)
    await _ask(message, prompt, ConfirmAction.CLOSE_ALL, _NO_SYMBOL)


async def on_close(
    message: Message, args: tuple[str, str], engine: Engine, settings: Settings
) -> None:
    """``/close SYMBOL [PERCENT|QUANTITY]``: show what would close and ask to confirm.
    The symbol is matched loosely (``btcusdt`` finds ``BTC/USDT``); a bad amount is
    answered with what is wrong (the error handler) and changes nothing."""
    wanted, amount = args
    try:
        plan = await engine.trading.plan_close(wanted, CloseAmount.parse(amount))
    except NotFoundError:
        await message.answer(render.no_position(wanted))
        return
    await _ask_close(message, plan, "", settings)


async def on_position_button(
    query: CallbackQuery, callback_data: PositionCallback, engine: Engine, settings: Settings
) -> None:
    """A Close 25 % / 50 % / 100 % button under ``/positions``: ask to confirm that close,
    for that one position (its ticket, ours or not: the owner picked it)."""
    message = query.message
    if not isinstance(message, Message):  # older than 48 h
        await query.answer("Expired")
        return
    percent = callback_data.percent
    amount = CloseAmount.parse(f"{percent}%")
    try:
        plan = await engine.trading.plan_close(callback_data.symbol, amount, callback_data.ref)
    except NotFoundError:
        await query.answer(render.no_position(callback_data.symbol))
        return
    await query.answer()
    await _ask_close(message, plan, callback_data.ref, settings)


async def _ask_close(message: Message, plan: ClosePlan, ref: str, settings: Settings) -> None:
    prompt = render.close_prompt(plan, settings.confirm_ttl_seconds)
    keyboard = render.confirm_keyboard(
        ConfirmAction.CLOSE, plan.symbol, int(time.time()), plan.amount.text(), ref
    )
    await answer_long(message, prompt, keyboard)


async def _ask(message: Message, prompt: str, action: ConfirmAction, symbol_: str) -> None:
    keyboard = render.confirm_keyboard(action, symbol_, int(time.time()))
    await answer_long(message, prompt, keyboard)


_COMMAND_OF = {
    ConfirmAction.CLOSE_ALL: "closeall",
    ConfirmAction.CLOSE: "close",
    ConfirmAction.RESUME: "resume",
}

#: The toast of a confirmed press.
_TOAST = {
    ConfirmAction.CLOSE_ALL: "Closing…",
    ConfirmAction.CLOSE: "Closing…",
    ConfirmAction.RESUME: "Resuming",
}


async def _cosmetic(call: Awaitable[Any], what: str) -> None:
    """Await a Bot API call whose failure must not stop what follows (a toast, an edit)."""
    try:
        await call
    except TelegramAPIError as exc:
        log.warning("confirm.cosmetic_failed", call=what, error=exc.message)


class _Confirmations:
    """Runs confirmed actions; remembers which questions were already confirmed (in
    memory, only as long as their buttons are valid) so each runs once."""

    def __init__(self) -> None:
        self._used: dict[tuple[int, int], int] = {}

    def _claim(self, key: tuple[int, int], issued: int, ttl: int) -> bool:
        horizon = time.time() - ttl - 1
        for old in [k for k, at in self._used.items() if at < horizon]:
            del self._used[old]
        if key in self._used:
            return False
        self._used[key] = issued
        return True

    async def on_press(
        self,
        query: CallbackQuery,
        callback_data: ConfirmCallback,
        engine: Engine,
        settings: Settings,
    ) -> None:
        """Cancel, refuse an expired button, or run the confirmed action and report its
        result through the outbox (see the module docstring)."""
        message = query.message
        action = callback_data.action
        if not isinstance(message, Message):  # older than 48 h: long expired
            await query.answer("Expired")
            return
        if action is ConfirmAction.CANCEL:
            await query.answer("Cancelled")
            await message.edit_text(render.confirm_cancelled())
            return
        ttl = settings.confirm_ttl_seconds
        if time.time() - callback_data.issued > ttl:
            await query.answer("Expired")
            await message.edit_text(render.confirm_expired(_COMMAND_OF[action]))
            return
        if not self._claim((message.chat.id, message.message_id), callback_data.issued, ttl):
            await _cosmetic(query.answer(render.confirm_taken()), "answer")
            return
        actor = render.actor_name(query.from_user)
        log.info("confirm.run", action=action.name, symbol=callback_data.symbol, actor=actor)
        # claimed: from here on the action runs whatever Telegram answers, and without
        # waiting for it (a Telegram that hangs delays nothing)
        cosmetics = asyncio.gather(
            _cosmetic(query.answer(_TOAST.get(action, "Confirmed")), "answer"),
            _cosmetic(message.edit_text(render.confirm_running(action, actor)), "edit"),
        )
        try:
            report = await self._execute(action, callback_data, actor, engine)
            await engine.notifier.notify(
                Notification(NoticeKind.TEXT, report, priority=Priority.ALERT)
            )
        finally:
            await cosmetics

    async def _execute(
        self, action: ConfirmAction, data: ConfirmCallback, actor: str, engine: Engine
    ) -> str:
        """Run the confirmed ``action``; return its report (plain text, for the outbox)."""
        if action is ConfirmAction.RESUME:
            await engine.risk.resume(actor)  # re-arms the drawdown guard from current equity
            return render.resumed_text()
        if action is ConfirmAction.CLOSE_ALL:
            results = await engine.trading.close_all(actor)
            # trading stays active: the pending cards are re-checked and re-rendered, so
            # they show what they now do to the (flat) account
            await engine.signals.follow_state()
        else:
            amount = CloseAmount.parse(data.amount)
            results = await engine.trading.close(data.symbol, amount, actor, data.ref)
        known = await engine.symbols.known(r.symbol for r in results.closes)
        return render.close_results_text(results, actor, known)
