"""The bounds of every number, id and text that enters SignalDesk, in one place.

Every entry point (the webhook, the CLI, chat command arguments, callback data and the
settings) reads its numbers through these helpers, so a value that the database cannot hold
exactly is refused at the gate with a line naming the field, instead of failing deep inside
(an overflow, a 500) or being silently rounded (``1e-30`` stored as 0).

The limits come from the schema (core/db/types.py): money and quantities are
``NUMERIC(36,18)``, so at most :data:`MONEY_INTEGER_DIGITS` digits before the point and
:data:`MONEY_SCALE` after it; ids are 64-bit signed integers (PostgreSQL ``BIGINT``, SQLite
``INTEGER``), so an id outside ``1..MAX_ID`` cannot exist and is "not found", not an error.

Two shapes of each check:

- plain functions (:func:`decimal_value`, :func:`signal_id`, :func:`clean_text`) that raise
  :class:`~core.errors.InvalidInputError` or :class:`~core.errors.NotFoundError` with
  ``"<field> ..."``, for the CLI, chat arguments and services;
- pydantic metadata (:func:`decimal_bounds`, :func:`text_bounds`, and the ready types
  :data:`PositiveDecimal`, :data:`NonNegativeDecimal`, :data:`Percent`) whose errors are the
  reason under the field's name, for the webhook's model and the settings.

Adding a field elsewhere (``trail_pct``, ``breakeven_at_r``) is one annotation,
``trail_pct: Percent | None = None`` in a pydantic model, or one call,
``decimal_value("trail_pct", text, upper=Decimal(100))`` in a parser.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from core.errors import InvalidInputError, NotFoundError

__all__ = [
    "MAX_ID",
    "MAX_JSON_DEPTH",
    "MONEY_INTEGER_DIGITS",
    "MONEY_SCALE",
    "NonNegativeDecimal",
    "Percent",
    "PositiveDecimal",
    "check_json_depth",
    "clean_text",
    "decimal_bounds",
    "decimal_problem",
    "decimal_value",
    "is_storable_id",
    "signal_id",
    "text_bounds",
    "text_problem",
]

MONEY_INTEGER_DIGITS = 18
"""Digits before the decimal point that ``NUMERIC(36,18)`` holds (values below 10^18)."""
MONEY_SCALE = 18
"""Digits after the decimal point that ``NUMERIC(36,18)`` holds (steps of 10^-18)."""
MAX_ID = 2**63 - 1
"""The largest id a 64-bit signed integer column holds."""
MAX_JSON_DEPTH = 8
"""The deepest nesting of arrays and objects the webhook parses (an alert is depth 1)."""
MAX_NUMBER_CHARS = 80
"""The longest text read as a number; longer is refused before it is parsed."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _as_decimal(value: Any) -> Decimal | str:
    """``value`` as an exact Decimal, or why it is not a number."""
    if isinstance(value, bool):
        return "must be a number"
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        if value.bit_length() > 4 * (MONEY_INTEGER_DIGITS + 1):
            return f"must be below 10^{MONEY_INTEGER_DIGITS}"
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))  # the shortest text that reads back as the float
    if isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_NUMBER_CHARS:
            return f"must be a number of at most {MAX_NUMBER_CHARS} characters"
        try:
            return Decimal(text)
        except InvalidOperation:
            return "must be a number"
    return "must be a number"


def decimal_problem(
    value: Decimal,
    *,
    positive: bool = True,
    lower: Decimal | None = None,
    upper: Decimal | None = None,
) -> str | None:
    """Why ``value`` cannot be stored as ``NUMERIC(36,18)`` or is out of range, or None.

    Checks, in order: finite; fewer than :data:`MONEY_INTEGER_DIGITS` integer digits; at
    most :data:`MONEY_SCALE` decimals (so nothing rounds, and a positive value never becomes
    0); ``> 0`` when ``positive`` (else ``>= 0``); ``>= lower``; ``<= upper``.
    """
    if not value.is_finite():
        return "must be a finite number"
    if value and value.adjusted() >= MONEY_INTEGER_DIGITS:
        return f"must be below 10^{MONEY_INTEGER_DIGITS}"
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    if value and exponent + trailing < -MONEY_SCALE:
        return f"must have at most {MONEY_SCALE} decimal places"
    if positive and value <= 0:
        return "must be a positive number"
    if value < 0:
        return "must not be negative"
    if lower is not None and value < lower:
        return f"must be at least {lower}"
    if upper is not None and value > upper:
        return f"must be at most {upper}"
    return None


def decimal_value(
    name: str,
    value: Any,
    *,
    positive: bool = True,
    lower: Decimal | None = None,
    upper: Decimal | None = None,
) -> Decimal:
    """Read ``value`` (text, int, float or Decimal) as an exact, storable Decimal.

    ``name`` is the field as the user knows it (``quantity``, ``--sl``, ``risk_pct``).
    Bounds as in :func:`decimal_problem`.

    Raises:
        InvalidInputError: ``"<name> must ..."``, without echoing more than 80 characters.
    """
    number = _read(value, positive=positive, lower=lower, upper=upper)
    if isinstance(number, str):
        shown = str(value)
        shown = shown if len(shown) <= 40 else shown[:20] + "..."
        raise InvalidInputError(f"{name} {number}, got {shown}")
    return number


def _read(
    value: Any, *, positive: bool, lower: Decimal | None, upper: Decimal | None
) -> Decimal | str:
    """``value`` as a checked Decimal, or the reason it is refused."""
    number = _as_decimal(value)
    if isinstance(number, str):
        return number
    problem = decimal_problem(number, positive=positive, lower=lower, upper=upper)
    return number if problem is None else problem


def is_storable_id(value: int) -> bool:
    """Whether ``value`` fits an id column (``1..MAX_ID``)."""
    return 1 <= value <= MAX_ID


def signal_id(value: int | str) -> int:
    """A signal id from the CLI, a chat argument or callback data.

    Raises:
        NotFoundError: ``no signal with id N`` when it is not a whole number in
            ``1..MAX_ID`` (such a signal cannot exist).
    """
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if not text.isdigit() or len(text) > 19:
            shown = text if len(text) <= 24 else text[:20] + "..."
            raise NotFoundError(f"no signal with id {shown}")
        value = int(text)
    if not is_storable_id(value):
        shown = str(value) if value.bit_length() < 256 else "beyond 64 bits"
        raise NotFoundError(f"no signal with id {shown}")
    return value


def text_problem(value: str, max_length: int, *, multiline: bool = False) -> str | None:
    """Why ``value`` is not acceptable text, or None: longer than ``max_length`` characters,
    or a NUL or other control character (a line break is allowed when ``multiline``)."""
    if len(value) > max_length:
        return f"must be at most {max_length} characters"
    if (_CONTROL_MULTILINE if multiline else _CONTROL).search(value):
        return "must not contain control characters (NUL, escapes, ...)"
    return None


def clean_text(name: str, value: str, max_length: int, *, multiline: bool = False) -> str:
    """``value`` checked by :func:`text_problem`.

    Raises:
        InvalidInputError: ``"<name> must ..."``.
    """
    problem = text_problem(value, max_length, multiline=multiline)
    if problem is not None:
        raise InvalidInputError(f"{name} {problem}")
    return value


def check_json_depth(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` arrays/objects, before it is parsed (the
    standard parser recurses, and thousands of levels exhaust the stack).

    Raises:
        InvalidInputError: ``body nests deeper than N levels``.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                raise InvalidInputError(f"body nests deeper than {limit} levels")
        elif char in "]}":
            depth -= 1


# --- pydantic types ---------------------------------------------------------------------


def decimal_bounds(
    *, positive: bool = True, lower: Decimal | None = None, upper: Decimal | None = None
) -> BeforeValidator:
    """Pydantic metadata reading text, int, float or Decimal as an exact Decimal checked
    by :func:`decimal_problem`; the error is the reason, under the field's name.

    Use as ``trail_pct: Annotated[Decimal, decimal_bounds(upper=Decimal(100))] | None``.
    """

    def validate(value: Any) -> Decimal:
        number = _read(value, positive=positive, lower=lower, upper=upper)
        if isinstance(number, str):
            raise PydanticCustomError("bounds", number)
        return number

    return BeforeValidator(validate)


PositiveDecimal = Annotated[Decimal, decimal_bounds(positive=True)]
"""A quantity or price: ``> 0``, storable as ``NUMERIC(36,18)`` without rounding."""
NonNegativeDecimal = Annotated[Decimal, decimal_bounds(positive=False)]
"""An amount that may be 0 (a fee, a spread), storable as ``NUMERIC(36,18)``."""
Percent = Annotated[Decimal, decimal_bounds(positive=True, upper=Decimal(100))]
"""A percentage in ``(0, 100]`` (1.5 means 1.5 %)."""


def text_bounds(max_length: int, *, multiline: bool = False) -> BeforeValidator:
    """Pydantic metadata for text: surrounding whitespace stripped, then at most
    ``max_length`` characters and no control characters (see :func:`text_problem`).

    Use as ``note: Annotated[str, text_bounds(500)] = ""``.
    """

    def validate(value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            problem = text_problem(value, max_length, multiline=multiline)
            if problem is not None:
                raise PydanticCustomError("bounds", problem)
        return value

    return BeforeValidator(validate)
