"""Position sizing from a risk budget (fixed-fractional sizing).

Used by the built-in strategy and by webhook alerts that give ``risk_pct`` instead of a
quantity.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from core.errors import InvalidInputError

__all__ = ["QUANTITY_QUANTUM", "size_for_risk"]

#: Quantities are rounded down to this many base units; broker adapters then round down to
#: the market's own step.
QUANTITY_QUANTUM = Decimal("0.00000001")


def size_for_risk(
    equity: Decimal,
    risk_pct: Decimal,
    entry: Decimal,
    stop_loss: Decimal,
    *,
    max_quantity: Decimal | None = None,
    max_notional: Decimal | None = None,
) -> Decimal:
    """The quantity whose loss at the stop is ``risk_pct`` percent of ``equity``:

        quantity = equity x risk_pct / 100 / |entry - stop_loss|

    rounded down to :data:`QUANTITY_QUANTUM`, then capped at ``max_quantity`` (base units)
    and ``max_notional / entry`` (quote currency) so the proposal passes the approval-time
    size checks (a capped trade risks less than ``risk_pct``, never more). Fees and
    slippage are not included. Prices are in quote currency, the result in base units.

    This is the fixed-fractional ("percent risk") model: R. Vince, *Portfolio Management
    Formulas* (1990); Van K. Tharp, *Trade Your Way to Financial Freedom* (1999), the
    chapter on position sizing.

    Raises:
        InvalidInputError: non-positive equity, risk or prices, the stop at the entry, or a
            result that rounds to zero.
    """
    if equity <= 0 or risk_pct <= 0 or entry <= 0 or stop_loss <= 0:
        raise InvalidInputError("sizing needs positive equity, risk %, entry and stop loss")
    distance = abs(entry - stop_loss)
    if distance == 0:
        raise InvalidInputError("the stop loss equals the entry price; cannot size the risk")
    quantity = equity * risk_pct / 100 / distance
    if max_quantity is not None:
        quantity = min(quantity, max_quantity)
    if max_notional is not None:
        quantity = min(quantity, max_notional / entry)
    quantity = quantity.quantize(QUANTITY_QUANTUM, ROUND_DOWN)
    if quantity <= 0:
        raise InvalidInputError(
            f"{risk_pct}% of {equity} at a stop {distance} away rounds to no quantity"
        )
    return quantity
