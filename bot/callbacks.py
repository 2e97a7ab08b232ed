"""Inline-button payloads as aiogram ``CallbackData`` factories.

Telegram limits ``callback_data`` to 1-64 bytes; ``CallbackData.pack()`` raises ``ValueError``
past that. Both payloads here stay far below it (``sig:a:123456`` is 12 bytes, a confirmation
with a 32-character symbol about 50).

A confirmation carries the Unix time it was issued, so its expiry needs no server-side state
and still holds after a restart.
"""

from __future__ import annotations

import enum

from aiogram.filters.callback_data import CallbackData

__all__ = [
    "CardAction",
    "ConfirmAction",
    "ConfirmCallback",
    "SignalCallback",
    "StrategyAction",
    "StrategyCallback",
]


class CardAction(enum.StrEnum):
    """The two buttons of a signal card."""

    APPROVE = "a"
    REJECT = "r"


class SignalCallback(CallbackData, prefix="sig"):
    """Approve or reject signal ``signal_id``: ``sig:<a|r>:<id>``."""

    action: CardAction
    signal_id: int


class ConfirmAction(enum.StrEnum):
    """What a confirmation button does once pressed."""

    CLOSE_ALL = "all"
    CLOSE = "one"
    RESUME = "resume"
    CANCEL = "no"


class ConfirmCallback(CallbackData, prefix="cfm", sep="|"):
    """A destructive command confirmed by a button: ``cfm|<action>|<symbol>|<issued>``.

    ``symbol`` is the position to close (``-`` when not applicable); ``|`` separates the
    fields because ccxt swap symbols contain ``:`` (``BTC/USDT:USDT``). ``issued`` is the Unix
    time (whole seconds) the question was asked; the button is void ``CONFIRM_TTL_SECONDS``
    later.
    """

    action: ConfirmAction
    symbol: str
    issued: int


class StrategyAction(enum.StrEnum):
    """The buttons of ``/strategies``."""

    PAUSE = "p"
    RESUME = "r"


class StrategyCallback(CallbackData, prefix="stg", sep="|"):
    """Pause or resume strategy instance ``name``: ``stg|<p|r>|<name>`` (names are at
    most 48 characters, so the payload stays under 64 bytes)."""

    action: StrategyAction
    name: str
