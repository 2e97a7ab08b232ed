"""Trading from the chat: ``/buy`` and ``/sell`` propose a signal (source ``chat``) whose
card is posted like any other, with the same checks; nothing executes without the tap on
Approve. A reply to an edit prompt (see :func:`bot.render.edit_prompt`) edits the pending
signal it names, at the card version it names (``SignalService.edit``: compare-and-set,
audited, re-checked); the card is re-rendered by the engine's ``signal_update``.

Bad input is a :class:`~core.errors.SignalDeskError` answered by the error handler in one
line that names the problem (``quantity must be a positive number, got -1``,
``unknown symbol NOPE``); nothing is stored then.
"""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot import render
from bot.handlers.args import Args, order_terms, trade_args
from core.app import Engine
from core.domain import OrderType, Side
from core.services.signals import Proposal, SignalEdit

__all__ = ["CHAT_SOURCE", "create_router"]

#: The source of signals proposed from the chat.
CHAT_SOURCE = "chat"


def create_router() -> Router:
    """The router of ``/buy``, ``/sell`` and the replies to edit prompts."""
    router = Router(name="trade")
    router.message.register(on_trade, Command("buy", "sell"), Args(trade_args))
    router.message.register(
        on_edit_reply,
        F.reply_to_message.text.func(lambda text: render.edit_prompt_ref(text) is not None),
        F.text,
    )
    return router


async def on_trade(
    message: Message, command: CommandObject, args: tuple[str, SignalEdit], engine: Engine
) -> None:
    """``/buy|/sell SYMBOL QTY|risk N% [sl X] [tp Y] [limit Z]``: resolve the symbol with
    the symbol search, size a ``risk`` order from equity and the stop, and propose."""
    typed, terms = args
    side = Side.BUY if command.command == "buy" else Side.SELL
    symbol = await engine.symbols.resolve(typed)
    quantity = terms.quantity
    if quantity is None:
        assert terms.risk_pct is not None and terms.stop_loss is not None  # trade_args
        entry = terms.limit_price or (await engine.market.quote(symbol)).last
        quantity = await engine.signals.risk_size(terms.risk_pct, entry, terms.stop_loss)
    actor = render.actor_name(message.from_user) if message.from_user else CHAT_SOURCE
    signal = await engine.signals.propose(
        Proposal(
            source=CHAT_SOURCE,
            symbol=symbol,
            side=side,
            quantity=quantity,
            order_type=OrderType.LIMIT if terms.limit_price is not None else OrderType.MARKET,
            limit_price=terms.limit_price,
            stop_loss=terms.stop_loss,
            take_profit=terms.take_profit,
            note=f"from the chat by {actor}",
        )
    )
    await message.answer(render.chat_proposed(signal))


async def on_edit_reply(message: Message, bot: Bot, engine: Engine) -> None:
    """A reply to one of this bot's edit prompts: apply the terms to the signal and
    version the prompt names (a prompt that is not this bot's own is ignored)."""
    replied = message.reply_to_message
    assert replied is not None and replied.text is not None and message.text is not None
    ref = render.edit_prompt_ref(replied.text)
    if ref is None or replied.from_user is None or replied.from_user.id != bot.id:
        return
    signal_id, version = ref
    assert message.from_user is not None
    actor = render.actor_name(message.from_user)
    signal = await engine.signals.edit(signal_id, version, order_terms(message.text), actor)
    await message.answer(render.edit_done(signal))
