"""Command argument parsing as an aiogram filter.

``Args(parser)`` runs after ``Command(...)``: it parses ``CommandObject.args`` and hands the
result to the handler as ``args``; when the parser raises ``ValueError`` the filter fails and
the catch-all in :mod:`bot.handlers.commands` answers with the command's usage line.

Numbers and ids are read through :mod:`core.bounds`, the same bounds as the webhook's and
the CLI's: :func:`decimal` builds the parser of one bounded number (``decimal("quantity")``,
``decimal("trail_pct", upper=Decimal(100))``), :func:`signal_ref` reads a signal id.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from aiogram.filters import CommandObject, Filter
from aiogram.types import Message

from bot.render import DEFAULT_HISTORY, MAX_HISTORY
from core import bounds
from core.errors import InvalidInputError

__all__ = [
    "Args",
    "close_args",
    "decimal",
    "free_text",
    "history_count",
    "no_args",
    "signal_ref",
    "symbol",
]

_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/:._-]{0,31}$")


class Args(Filter):
    """Passes when ``parse(command.args or "")`` succeeds; injects the result as ``args``."""

    def __init__(self, parse: Callable[[str], Any]) -> None:
        self._parse = parse

    async def __call__(self, message: Message, command: CommandObject) -> bool | dict[str, Any]:
        try:
            return {"args": self._parse((command.args or "").strip())}
        except ValueError:
            return False


def no_args(text: str) -> None:
    """A command that takes nothing."""
    if text:
        raise ValueError("no arguments expected")


def history_count(text: str) -> int:
    """``[N]``: 1 to :data:`~bot.render.MAX_HISTORY`, default 10."""
    if not text:
        return DEFAULT_HISTORY
    count = int(text)  # ValueError for non-numbers
    if not 1 <= count <= MAX_HISTORY:
        raise ValueError("out of range")
    return count


def symbol(text: str) -> str:
    """``SYMBOL``: one token such as ``BTC/USDT``, ``btcusdt`` or ``EURUSD``, upper-cased."""
    if not _SYMBOL.match(text):
        raise ValueError("one symbol expected")
    return text.upper()


def close_args(text: str) -> tuple[str, str]:
    """``SYMBOL [PERCENT|QUANTITY]``: the symbol (upper-cased) and the amount as typed
    (``""``, ``50%``, ``0.01``); the amount's value is checked by the service, which names
    what is wrong."""
    parts = text.split()
    if not 1 <= len(parts) <= 2:
        raise ValueError("a symbol and at most an amount expected")
    return symbol(parts[0]), (parts[1] if len(parts) == 2 else "")


def free_text(text: str) -> str:
    """``[reason]``: anything but control characters, up to 500 characters."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f]", " ", text[:500])


def decimal(
    name: str, *, positive: bool = True, upper: Decimal | None = None
) -> Callable[[str], Decimal]:
    """The parser of one number named ``name``: finite, storable as ``NUMERIC(36,18)``
    (below 10^18, at most 18 decimals), positive (or ``>= 0``), at most ``upper``. See
    :func:`core.bounds.decimal_value`; its refusal is a ``ValueError`` (the usage line)."""

    def parse(text: str) -> Decimal:
        try:
            return bounds.decimal_value(name, text, positive=positive, upper=upper)
        except InvalidInputError as exc:
            raise ValueError(str(exc)) from None

    return parse


def signal_ref(text: str) -> int:
    """``ID`` or ``#ID``: a signal id. Not a whole number: ``ValueError`` (the usage line);
    one no column can hold: :class:`~core.errors.NotFoundError` ("no signal with id ...",
    answered by the error handler)."""
    if not re.fullmatch(r"#?\d+", text.strip()):
        raise ValueError("a signal id expected")
    return bounds.signal_id(text)
