"""The broker port: one async interface that the paper broker, ccxt and MT5 adapters provide.

Adapters answer with domain reports (:class:`~core.domain.OrderReport`,
:class:`~core.domain.Position`, :class:`~core.domain.Account`), never raw dicts, and
translate their library's exceptions at the boundary into :mod:`core.errors`:

- :class:`~core.errors.BrokerTemporaryError`: nothing happened, retrying is safe;
- :class:`~core.errors.BrokerPermanentError` (and subclasses): refused, do not retry;
- :class:`~core.errors.BrokerAmbiguousError`: the order may exist; the caller marks it
  UNKNOWN and the reconciler looks it up by client order id. Never retried blindly.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from core.domain import Account, ExitStyle, OrderReport, OrderRequest, Position, Quote, Side
from core.errors import BrokerTemporaryError

if TYPE_CHECKING:
    from core.brokers.ibkr_hours import MarketHours
    from core.config import MarketClosedPolicy

__all__ = ["Broker", "MarketHoursSource", "closing_request", "retry_temporary"]

T = TypeVar("T")


@runtime_checkable
class Broker(Protocol):
    """An execution venue. All methods are coroutines; amounts are Decimal.

    ``name`` is a short label for status messages ("paper", "ccxt:binance", "mt5").
    """

    name: str

    async def account(self) -> Account:
        """Balance, equity (open positions included) and margin in the account currency."""
        ...

    async def positions(self) -> list[Position]:
        """Open positions (non-zero net quantity), marked to the current price."""
        ...

    async def quote(self, symbol: str) -> Quote:
        """Current bid/ask/last of ``symbol``. Raises UnknownSymbolError."""
        ...

    async def place_order(self, request: OrderRequest) -> OrderReport:
        """Send one order under ``request.client_order_id``.

        Returns the order's report (FILLED with its fills for a market order that executed,
        OPEN for a resting limit order). Placing an id the broker already holds returns the
        existing order, never a second one.
        """
        ...

    async def get_order(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """Look an order up by client order id; None when the broker has no such order."""
        ...

    async def close_position(
        self,
        symbol: str,
        client_order_id: str,
        quantity: Decimal | None = None,
        position_ref: str = "",
    ) -> OrderReport | None:
        """Close the position in ``symbol`` with a reduce-only market order under
        ``client_order_id``: all of it, or ``quantity`` base units of it (a partial close;
        capped at what is held). ``position_ref`` selects one ticket on per-ticket venues
        (MT5 hedging) and never touches another. None when there is nothing to close."""
        ...

    async def cancel_order(self, client_order_id: str, symbol: str) -> OrderReport:
        """Cancel a resting order (limit, stop or take profit) by client order id.

        Returns the order's final report: CANCELLED, or FILLED when it filled before the
        cancel arrived (the fills are in the report). Cancelling an order that is already
        final returns its report unchanged.

        Raises:
            OrderNotFoundError: the broker has no order with this id.
        """
        ...

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        """Resting orders (state OPEN) at the venue, all symbols or one; each report
        carries its client order id (empty for orders placed outside SignalDesk)."""
        ...

    async def exit_style(self, symbol: str) -> ExitStyle:
        """Where this venue can hold the protective exits of a position in ``symbol``:
        ORDERS (reduce-only STOP / TAKE_PROFIT orders), ATTACHED (sl/tp on the position),
        or WATCHED (neither; SignalDesk watches the price). Raises UnknownSymbolError."""
        ...

    async def close(self) -> None:
        """Release connections and threads. The broker is not used afterwards."""
        ...


@runtime_checkable
class MarketHoursSource(Protocol):
    """A broker whose markets keep trading hours (IBKR; crypto and the MT5 adapter have
    none): when a market is closed, and what an order that adds risk does meanwhile,
    ``closed_policy`` (``MARKET_CLOSED_POLICY``: refused, or a DAY order resting until
    the open)."""

    closed_policy: MarketClosedPolicy

    async def market_hours(self, symbol: str) -> MarketHours:
        """Whether ``symbol``'s market trades now and when it opens (UTC). Raises
        UnknownSymbolError, BrokerTemporaryError."""
        ...


#: :func:`retry_temporary`'s attempts, and the seconds within which it makes them.
RETRY_ATTEMPTS = 3
RETRY_SECONDS = 10.0


async def retry_temporary(call: Callable[[], Awaitable[T]]) -> T:
    """Await ``call()``, retrying :class:`BrokerTemporaryError` (which by contract had no
    effect) with stamina's jittered backoff: at most :data:`RETRY_ATTEMPTS` attempts within
    :data:`RETRY_SECONDS`. Any other error, and the last temporary one, propagates.

    The first attempt is a plain call: stamina's retry machinery (about 55 us of Python
    per use, on every order and every drawdown check) is built only once that call has
    failed temporarily, and then replays the failure as its own first attempt, so the
    backoff, the retry hooks and the time budget (what is left of it) are as if stamina had
    made the call. stamina itself (and tenacity under it: 21 modules, 0.7 MiB resident) is
    imported only then, not by every process that imports a broker."""
    started = time.monotonic()
    try:
        return await call()
    except BrokerTemporaryError as error:
        failed = error
    import stamina

    left = max(0.0, RETRY_SECONDS - (time.monotonic() - started))
    async for attempt in stamina.retry_context(
        on=BrokerTemporaryError, attempts=RETRY_ATTEMPTS, timeout=left
    ):
        with attempt:
            if attempt.num == 1:
                raise failed
            return await call()
    raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover


def closing_request(
    symbol: str, client_order_id: str, held: Decimal, quantity: Decimal | None
) -> OrderRequest | None:
    """The reduce-only market order that closes a net position of ``held`` (signed base
    units) in ``symbol``: all of it, or ``quantity`` of it capped at what is held. None when
    nothing is held (``close_position``'s rule on a netting venue)."""
    if held == 0:
        return None
    size = abs(held) if quantity is None else min(quantity, abs(held))
    return OrderRequest(
        client_order_id=client_order_id,
        symbol=symbol,
        side=Side.SELL if held > 0 else Side.BUY,
        quantity=size,
        reduce_only=True,
    )
