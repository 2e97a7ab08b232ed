"""Markets and strategies from the chat: ``/symbols QUERY``, ``/strategies`` with its
Pause / Resume buttons, ``/run NAME``.

Each handler parses, calls one core service (the symbol search, the strategy desk) and
formats the answer with :mod:`bot.render`. A pause or resume is persisted and audited by
the desk (the scheduled runs re-read it, also after a restart); the button press is
answered and the list edited in place.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InaccessibleMessage, Message

from bot import render
from bot.callbacks import StrategyAction, StrategyCallback
from bot.handlers.args import Args, no_args
from bot.handlers.replies import answer_long
from core.app import Engine
from core.errors import NotFoundError

__all__ = ["create_router"]


def _query(text: str) -> str:
    """``QUERY``: one word, up to 32 characters (``eth``, ``BTC/USDT``, ``eurusd``)."""
    query = text.strip()
    if not query or len(query) > 32 or " " in query:
        raise ValueError("one search word expected")
    return query


def _name(text: str) -> str:
    """``NAME``: a strategy instance's name."""
    name = text.strip()
    if not name or " " in name or len(name) > 48:
        raise ValueError("one instance name expected")
    return name


def create_router() -> Router:
    """The router of the market and strategy commands and the strategy buttons."""
    router = Router(name="markets")
    router.message.register(on_symbols, Command("symbols"), Args(_query))
    router.message.register(on_strategies, Command("strategies"), Args(no_args))
    router.message.register(on_run, Command("run"), Args(_name))
    router.callback_query.register(on_strategy_button, StrategyCallback.filter())
    return router


async def on_symbols(message: Message, args: str, engine: Engine) -> None:
    """``/symbols QUERY``: the markets whose symbol, base or quote match, from the cache."""
    found = await engine.symbols.search(args)
    await answer_long(message, render.symbols_text(args, found, engine.market.name))


async def on_strategies(message: Message, engine: Engine) -> None:
    """``/strategies``: the instances with their schedule, last run, last signal and
    next run, and a Pause or Resume button each."""
    statuses = await engine.strategies.statuses() if engine.strategies else []
    await message.answer(
        render.strategies_text(statuses), reply_markup=render.strategies_keyboard(statuses)
    )


async def on_run(message: Message, args: str, engine: Engine) -> None:
    """``/run NAME``: run one instance now (also when paused: the owner asked)."""
    if engine.strategies is None:
        raise NotFoundError("no strategy instances are configured")
    proposed = await engine.strategies.run_instance(args, forced=True)
    await message.answer(render.strategy_ran(args, len(proposed)))


async def on_strategy_button(
    query: CallbackQuery, callback_data: StrategyCallback, engine: Engine
) -> None:
    """Pause or Resume pressed: persist it (audited), answer, and edit the list."""
    desk = engine.strategies
    if desk is None or callback_data.name not in desk.specs:
        await query.answer(render.inactive_button())
        return
    actor = render.actor_name(query.from_user)
    paused = callback_data.action is StrategyAction.PAUSE
    status = await desk.set_paused(callback_data.name, paused, actor)
    await query.answer(render.strategy_toggled(status))
    statuses = await desk.statuses()
    if query.message is not None and not isinstance(query.message, InaccessibleMessage):
        await query.message.edit_text(
            render.strategies_text(statuses), reply_markup=render.strategies_keyboard(statuses)
        )
