"""Number and time conversions shared by the broker adapters.

Libraries hand back floats, ints, numeric strings or None; SignalDesk works in
:class:`~decimal.Decimal` and timezone-aware UTC datetimes. ``Decimal(str(x))`` keeps the
shortest decimal form of a float (``0.1`` stays ``0.1``, not ``0.1000000000000000055...``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal

from core.domain import ZERO

__all__ = ["dec", "dec_or_zero", "floor_to_step", "from_epoch_ms", "plain"]


def dec(value: object) -> Decimal | None:
    """``Decimal(str(value))``, or None for None and the empty string."""
    if value is None or value == "":
        return None
    return Decimal(str(value))


def dec_or_zero(value: object) -> Decimal:
    """:func:`dec`, with 0 for None."""
    result = dec(value)
    return ZERO if result is None else result


def floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    """The largest multiple of ``step`` that is not above ``value`` (``step`` > 0)."""
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def from_epoch_ms(value: object) -> datetime | None:
    """A UTC datetime from milliseconds since the Unix epoch; None for None or 0."""
    if value is None or value == 0:
        return None
    return datetime.fromtimestamp(float(str(value)) / 1000, UTC)


def plain(value: Decimal) -> str:
    """``value`` for people: no exponent, no trailing zeros (``5.0`` -> ``5``)."""
    return format(value.normalize(), "f")
