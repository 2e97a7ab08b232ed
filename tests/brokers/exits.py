"""The protective-exit request the exit service sends, for the adapter tests."""

from __future__ import annotations

from decimal import Decimal

from core.domain import OrderRequest, OrderType, Side


def exit_request(
    client_order_id: str,
    symbol: str,
    quantity: str,
    trigger: str,
    *,
    kind: OrderType = OrderType.STOP,
    side: Side = Side.SELL,
) -> OrderRequest:
    """A reduce-only STOP (or ``kind``) of ``quantity`` base units at ``trigger`` (quote),
    as the exit service builds it: ``client_order_id`` is ``<entry id>-sl<n>`` or
    ``-tp<n>`` and ``position_ref`` the entry's id."""
    return OrderRequest(
        client_order_id,
        symbol,
        side,
        Decimal(quantity),
        order_type=kind,
        trigger_price=Decimal(trigger),
        reduce_only=True,
        position_ref=client_order_id.rsplit("-", 1)[0],
    )
