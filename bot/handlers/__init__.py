"""The bot's routers, one per concern, in the order the dispatcher tries them."""

from __future__ import annotations

from aiogram import Router

from bot.handlers import approvals, commands, control, markets, notify, orders, results, trade

__all__ = ["get_routers"]


def get_routers() -> list[Router]:
    """Fresh routers (a router can belong to one dispatcher only): card buttons, control
    commands with their confirmations, resting orders with their Cancel buttons, markets
    and strategies, /buy /sell and edit replies, /pnl and /trades, /notify, then the read-only
    commands and the fallbacks, which must come last."""
    return [
        approvals.create_router(),
        control.create_router(),
        orders.create_router(),
        markets.create_router(),
        trade.create_router(),
        results.create_router(),
        notify.create_router(),
        commands.create_router(),
    ]
