"""Read-only owner commands and the fallbacks.

``/start``, ``/help``, ``/status``, ``/drawdown``, ``/heartbeat``, ``/positions``,
``/signals``, ``/balance``, ``/history [N]``: each parses its arguments, calls one service
and formats the answer with :mod:`bot.render`. (``/heartbeat`` changes no state either: it
sends a heartbeat ahead of the schedule.) This router is included last: its fallbacks
answer a known command with bad arguments by its usage line, an unknown command by a
one-line hint, plain text in a private chat by a hint, and any button no handler claimed
(an outdated keyboard) with a toast, because every callback query must be answered.
"""

from __future__ import annotations

import re
import time

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message

from bot import render
from bot.delivery import Cards, OutboxDeliverer
from bot.handlers.args import Args, history_count, no_args
from bot.handlers.replies import answer_long, answer_pages
from core.app import Engine
from core.config import Settings

__all__ = ["MAX_PENDING_CARDS", "create_router"]

MAX_PENDING_CARDS = 10
"""``/signals`` posts at most this many cards at once."""


def create_router() -> Router:
    """The router of the read-only commands, then the fallbacks."""
    router = Router(name="commands")
    router.message.register(on_start, Command("start"), Args(no_args))
    router.message.register(on_help, Command("help"), Args(no_args))
    router.message.register(on_status, Command("status"), Args(no_args))
    router.message.register(on_drawdown, Command("drawdown"), Args(no_args))
    router.message.register(on_heartbeat, Command("heartbeat"), Args(no_args))
    router.message.register(on_positions, Command("positions"), Args(no_args))
    router.message.register(on_signals, Command("signals"), Args(no_args))
    router.message.register(on_balance, Command("balance"), Args(no_args))
    router.message.register(on_history, Command("history"), Args(history_count))
    router.message.register(on_bad_arguments, Command(*(spec.name for spec in render.COMMANDS)))
    router.message.register(on_unknown_command, Command(re.compile(r".+")))
    router.message.register(on_private_text, F.chat.type == "private", F.text)
    router.callback_query.register(on_inactive_button)
    return router


async def on_start(message: Message) -> None:
    """``/start``: what the bot does and the commands."""
    assert message.from_user is not None
    await message.answer(render.start_text(message.from_user))


async def on_help(message: Message) -> None:
    """``/help``: the commands."""
    await message.answer(render.help_text())


async def on_status(
    message: Message, engine: Engine, settings: Settings, started_at: float
) -> None:
    """``/status``: mode, broker, equity, drawdown, pause, positions, pending, uptime and
    the last heartbeat. ``started_at`` is the bot's ``time.monotonic()`` at start-up."""
    summary = await engine.trading.status()
    uptime = time.monotonic() - started_at
    last_beat = engine.heartbeat.last_beat_at
    await message.answer(render.status_text(summary, settings, uptime, last_beat, engine.clock()))


async def on_drawdown(message: Message, engine: Engine) -> None:
    """``/drawdown``: the guard's figures and limits, read without changing anything."""
    await message.answer(render.drawdown_text(await engine.risk.figures()))


async def on_heartbeat(message: Message, engine: Engine, deliverer: OutboxDeliverer) -> None:
    """``/heartbeat``: send one now, as the schedule would (silent, to the card chat,
    pinging ``HEARTBEAT_PING_URL``). Asked from another chat (an owner's private chat when
    cards go to a group), it is also the reply there. The card chat is the deliverer's: it
    follows a group's move to a supergroup."""
    heartbeat = await engine.heartbeat.beat()
    if message.chat.id != deliverer.chat_id:
        await message.answer(render.heartbeat_text(heartbeat), disable_notification=True)


async def on_positions(message: Message, engine: Engine) -> None:
    """``/positions``: each open position with entry (our fills), mark, unrealized PnL,
    stop loss, take profit and where they live, and Close 25 % / 50 % / 100 % buttons."""
    views = await engine.trading.book()
    broker = engine.broker.name
    known = await engine.symbols.known(v.position.symbol for v in views)
    await answer_pages(message, render.positions_pages(views, broker, known))


async def on_balance(message: Message, engine: Engine) -> None:
    """``/balance``: balance, equity, margin, free margin."""
    await message.answer(render.balance_text(await engine.trading.account()))


async def on_history(message: Message, args: int, engine: Engine) -> None:
    """``/history [N]``: the last N audit events (signals and their outcomes)."""
    await answer_long(message, render.history_text(await engine.signals.history(limit=args)))


async def on_signals(message: Message, engine: Engine, cards: Cards) -> None:
    """``/signals``: each pending signal as a card with its buttons, oldest first. The new
    card becomes the one the engine's updates edit in this chat."""
    pending = await engine.signals.pending()
    if not pending:
        await message.answer(render.no_pending())
        return
    for signal in pending[:MAX_PENDING_CARDS]:
        card = await cards.render(signal)
        assert message.bot is not None
        sent, kind = await cards.post(message.bot, message.chat.id, signal, card)
        await cards.remember(signal.id, sent.chat.id, sent.message_id, kind)
    if len(pending) > MAX_PENDING_CARDS:
        await message.answer(render.pending_more(len(pending) - MAX_PENDING_CARDS))


async def on_bad_arguments(message: Message, command: CommandObject) -> None:
    """A known command whose arguments did not parse: its usage line."""
    await message.answer(render.usage(command.command))


async def on_unknown_command(message: Message, command: CommandObject) -> None:
    """A command this bot does not have (addressed to it, in a group)."""
    await message.answer(render.unknown_command(command.command))


async def on_private_text(message: Message) -> None:
    """Plain text in a private chat: point to /help. (In groups, chatter is ignored.)"""
    await message.answer(render.private_hint())


async def on_inactive_button(query: CallbackQuery) -> None:
    """A button no handler knows: answer it so the client stops waiting."""
    await query.answer(render.inactive_button())
