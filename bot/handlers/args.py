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

from bot.render import DEFAULT_HISTORY, EDIT_TERMS, MAX_HISTORY
from core import bounds
from core.errors import InvalidInputError
from core.services.signals import SignalEdit

__all__ = [
    "Args",
    "close_args",
    "decimal",
    "free_text",
    "history_count",
    "no_args",
    "order_terms",
    "signal_ref",
    "symbol",
    "trade_args",
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


#: The keywords of an order's terms and the SignalEdit field each sets.
_TERMS = {
    "qty": "quantity",
    "risk": "risk_pct",
    "sl": "stop_loss",
    "tp": "take_profit",
    "limit": "limit_price",
}
_NAMES = {"qty": "quantity", "sl": "stop loss", "tp": "take profit", "limit": "limit price"}
HUNDRED = Decimal(100)


def order_terms(text: str) -> SignalEdit:
    """``[qty Q] [risk N%] [sl PRICE] [tp PRICE] [limit PRICE] [market]`` in any order
    (an edit reply: ``sl 61000 tp 66000 qty 0.02 limit 62500``). Numbers are read through
    :func:`core.bounds.decimal_value` (positive, storable; risk a percent up to 100).

    Raises:
        InvalidInputError: an unknown word, a keyword twice or without its number, a bad
            number (``sl abc``), both qty and risk, or nothing at all; the message names it.
    """
    words = text.split()
    if not words:
        raise InvalidInputError(f"nothing to change; reply with any of: {EDIT_TERMS}")
    values: dict[str, Any] = {}
    index = 0
    while index < len(words):
        word = words[index].lower()
        if word == "market" and "market" not in values:
            values["market"] = True
            index += 1
            continue
        field = _TERMS.get(word)
        if field is None or field in values:
            shown = words[index][:20]
            problem = "twice" if field else "is not a term"
            raise InvalidInputError(f"{shown!r} {problem}; use any of: {EDIT_TERMS}")
        if index + 1 >= len(words):
            raise InvalidInputError(f"{word} needs a number")
        raw = words[index + 1]
        if field == "risk_pct":
            values[field] = bounds.decimal_value("risk", raw.removesuffix("%"), upper=HUNDRED)
        else:
            values[field] = bounds.decimal_value(_NAMES[word], raw)
        index += 2
    if "quantity" in values and "risk_pct" in values:
        raise InvalidInputError("give either qty or risk, not both")
    if "market" in values and "limit_price" in values:
        raise InvalidInputError("give either market or limit, not both")
    return SignalEdit(**values)


def trade_args(text: str) -> tuple[str, SignalEdit]:
    """``SYMBOL QTY|risk N% [sl PRICE] [tp PRICE] [limit PRICE]`` (``/buy``, ``/sell``):
    the symbol as typed (resolved later by the symbol search) and the terms, which hold
    exactly one of quantity and risk_pct. ``risk`` needs ``sl``.

    Raises:
        ValueError: no symbol (the usage line).
        InvalidInputError: as :func:`order_terms`, no size, or risk without a stop loss.
    """
    words = text.split()
    if not words:
        raise ValueError("a symbol expected")
    name = symbol(words[0])
    rest = words[1:]
    if rest and rest[0].lower() not in _TERMS and rest[0].lower() != "market":
        rest = ["qty", *rest]  # the bare number after the symbol is the quantity
    terms = order_terms(" ".join(rest)) if rest else SignalEdit()
    if terms.quantity is None and terms.risk_pct is None:
        raise InvalidInputError("give a quantity (/buy BTC/USDT 0.01) or risk 1% with a sl")
    if terms.risk_pct is not None and terms.stop_loss is None:
        raise InvalidInputError("risk % needs a stop loss (sl PRICE): the risk is to the stop")
    return name, terms
