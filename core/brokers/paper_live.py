"""The paper broker on live prices: a dry run on today's market (seed 003).

:class:`LivePaperBroker` is the :class:`~core.brokers.paper.PaperBroker` (same ledger,
same execution rules, every order, fill and position persisted) whose feed is a
:class:`~core.marketdata.live.LiveFeed`. Before each broker call it refreshes the feed:
the last price of the symbol asked about and of every symbol with a position or a resting
order, and the one-minute candles since the oldest resting order of each symbol. Any
symbol the market data lists can be traded; no API key is needed.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlmodel import col, select

from core.brokers.paper import PaperBroker
from core.db.models import PaperOrderRow, PaperPositionRow
from core.domain import (
    Account,
    ExitStyle,
    OrderReport,
    OrderRequest,
    OrderState,
    Position,
    Quote,
)
from core.marketdata.live import LiveFeed

__all__ = ["LivePaperBroker"]


class LivePaperBroker(PaperBroker):
    """A paper broker over a :class:`LiveFeed` (arguments as :class:`PaperBroker`)."""

    feed: LiveFeed

    async def _refresh(self, *symbols: str) -> None:
        """Refresh the feed for ``symbols`` plus every held or resting symbol."""
        async with self._db.session() as session:
            held = (await session.exec(select(PaperPositionRow.symbol))).all()
            resting = (
                await session.exec(
                    select(PaperOrderRow.symbol, PaperOrderRow.placed_candle_at).where(
                        col(PaperOrderRow.state) == OrderState.OPEN.value
                    )
                )
            ).all()
        since: dict[str, datetime] = {}
        for symbol, at in resting:
            since[symbol] = min(at, since.get(symbol, at))
        await self.feed.refresh({*symbols, *held}, since)

    async def quote(self, symbol: str) -> Quote:
        """As :meth:`PaperBroker.quote`, on the live price."""
        await self._refresh(symbol)
        return await super().quote(symbol)

    async def place_order(self, request: OrderRequest) -> OrderReport:
        """As :meth:`PaperBroker.place_order`, on the live price."""
        await self._refresh(request.symbol)
        return await super().place_order(request)

    async def get_order(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """As :meth:`PaperBroker.get_order`, after matching on live candles."""
        await self._refresh(symbol)
        return await super().get_order(client_order_id, symbol)

    async def close_position(
        self,
        symbol: str,
        client_order_id: str,
        quantity: Decimal | None = None,
        position_ref: str = "",
    ) -> OrderReport | None:
        """As :meth:`PaperBroker.close_position`, on the live price."""
        await self._refresh(symbol)
        return await super().close_position(symbol, client_order_id, quantity, position_ref)

    async def cancel_order(self, client_order_id: str, symbol: str) -> OrderReport:
        """As :meth:`PaperBroker.cancel_order`, after matching on live candles."""
        await self._refresh(symbol)
        return await super().cancel_order(client_order_id, symbol)

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        """As :meth:`PaperBroker.open_orders`, after matching on live candles."""
        await self._refresh(*([symbol] if symbol else []))
        return await super().open_orders(symbol)

    async def exit_style(self, symbol: str) -> ExitStyle:
        """As :meth:`PaperBroker.exit_style`."""
        await self._refresh(symbol)
        return await super().exit_style(symbol)

    async def positions(self) -> list[Position]:
        """As :meth:`PaperBroker.positions`, marked to the live prices."""
        await self._refresh()
        return await super().positions()

    async def account(self) -> Account:
        """As :meth:`PaperBroker.account`, marked to the live prices."""
        await self._refresh()
        return await super().account()
