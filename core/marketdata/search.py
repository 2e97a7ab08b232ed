"""Symbol search over the market data's listing, cached in the database (seed 004).

The listing of a market-data source is stored in ``symbol_cache`` with the time it was
read. A search reads the cache; a cache older than ``SYMBOLS_TTL_SECONDS`` is refreshed
first, and the scheduler refreshes it in the background; a search that finds nothing
refreshes once (a market listed since) and searches again. So a second search costs no
request to the venue.

:meth:`SymbolSearch.resolve` turns any unambiguous spelling (``btcusdt``, ``BTC-USDT``,
``btc/usdt``) into the venue's symbol; an ambiguous one raises with the candidates.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import col, select

from core.db.engine import Database
from core.db.models import SymbolCacheRow
from core.domain import utcnow
from core.errors import BrokerError, InvalidInputError, UnknownSymbolError
from core.marketdata.base import Instrument, MarketData

__all__ = ["SymbolSearch", "normalize_symbol"]

#: Candidates listed in an "ambiguous symbol" message.
MAX_CANDIDATES = 8


def normalize_symbol(text: str) -> str:
    """Upper case without separators: ``btc-usdt``, ``BTC/USDT`` -> ``BTCUSDT``."""
    return re.sub(r"[^A-Z0-9]", "", text.upper())


def _instrument(row: SymbolCacheRow) -> Instrument:
    """A cached row as the instrument it stores."""
    return Instrument(
        symbol=row.symbol,
        base=row.base,
        quote=row.quote,
        kind=row.kind,
        price_tick=row.price_tick,
        quantity_step=row.quantity_step,
        min_quantity=row.min_quantity,
        min_notional=row.min_notional,
        contract_size=row.contract_size,
    )


def _key(instrument: Instrument) -> str:
    """A symbol's normalized spelling, settle currency dropped: ``BTC/USDT:USDT`` keeps
    its suffix so spot and perpetual stay apart (``BTCUSDTUSDT``)."""
    return normalize_symbol(instrument.symbol)


class SymbolSearch:
    """Search and resolve symbols of ``market`` through the database cache.

    Args:
        db: where the cache lives.
        market: the source of the listing.
        ttl_seconds: age after which the cache is refreshed (``SYMBOLS_TTL_SECONDS``).
        clock: current UTC time.
    """

    def __init__(
        self,
        db: Database,
        market: MarketData,
        ttl_seconds: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._market = market
        self._ttl = timedelta(seconds=ttl_seconds)
        self._clock = clock

    async def refresh(self) -> list[Instrument]:
        """Read the listing from the market data and replace the cached one.

        Raises:
            BrokerError: the market data could not be read (the cache is kept).
        """
        listed = await self._market.symbols()
        now = self._clock()
        source = self._market.name
        async with self._db.session() as session:
            await session.exec(  # type: ignore[call-overload]
                delete(SymbolCacheRow).where(col(SymbolCacheRow.source) == source)
            )
            for item in listed:
                session.add(
                    SymbolCacheRow(
                        source=source,
                        symbol=item.symbol[:64],
                        base=item.base[:32],
                        quote=item.quote[:32],
                        kind=item.kind[:16],
                        price_tick=item.price_tick,
                        quantity_step=item.quantity_step,
                        min_quantity=item.min_quantity,
                        min_notional=item.min_notional,
                        contract_size=item.contract_size,
                        fetched_at=now,
                    )
                )
        return listed

    async def listing(self) -> list[Instrument]:
        """The cached listing, refreshed first when missing or older than the TTL."""
        cached, fetched_at = await self._cached()
        if not cached or fetched_at is None or self._clock() - fetched_at >= self._ttl:
            return await self.refresh()
        return cached

    async def search(self, query: str, limit: int = 20) -> list[Instrument]:
        """Instruments whose symbol, base or quote matches ``query`` (any case and
        separators), exact matches and bases first; a miss refreshes once (after asking a
        market data that searches rather than lists, IBKR's ``match``, for ``query``)."""
        found = self._match(await self.listing(), query)
        if not found:
            match = getattr(self._market, "match", None)
            if match is not None:  # a venue that searches instead of listing (IBKR)
                await match(query)
            found = self._match(await self.refresh(), query)
        return found[:limit]

    async def instrument(self, symbol: str) -> Instrument:
        """The listed instrument of exactly ``symbol``. Raises UnknownSymbolError."""
        for item in await self.listing():
            if item.symbol == symbol:
                return item
        for item in await self.refresh():
            if item.symbol == symbol:
                return item
        raise UnknownSymbolError(f"{self._market.name} does not list {symbol}")

    async def known(self, symbols: Iterable[str]) -> dict[str, Instrument]:
        """The listed instruments of ``symbols`` (by symbol) from the cache, for printing
        prices with their precision: a symbol the market data does not list is left out
        (no refresh for it), and so is everything when a stale or missing listing cannot
        be refreshed. Never raises BrokerError."""
        wanted = set(symbols)
        if not wanted:
            return {}
        async with self._db.session() as session:
            rows = (
                await session.exec(
                    select(SymbolCacheRow).where(
                        col(SymbolCacheRow.source) == self._market.name,
                        col(SymbolCacheRow.symbol).in_(wanted),
                    )
                )
            ).all()
        now = self._clock()
        if len(rows) == len(wanted) and all(now - r.fetched_at < self._ttl for r in rows):
            return {r.symbol: _instrument(r) for r in rows}
        try:
            listed = await self.listing()
        except BrokerError:
            return {r.symbol: _instrument(r) for r in rows}
        return {item.symbol: item for item in listed if item.symbol in wanted}

    async def resolve(self, text: str) -> str:
        """The venue's symbol for ``text``: the exact symbol, or the one symbol whose
        normalized spelling equals it (``btcusdt`` -> ``BTC/USDT``).

        Raises:
            UnknownSymbolError: nothing matches.
            InvalidInputError: several symbols match; the message lists the candidates.
        """
        wanted = text.strip()
        for attempt in range(2):
            listed = await (self.listing() if attempt == 0 else self.refresh())
            if any(item.symbol == wanted for item in listed):
                return wanted
            key = normalize_symbol(wanted)
            exact = [i for i in listed if _key(i) == key]
            if len(exact) == 1:
                return exact[0].symbol
            candidates = exact or self._match(listed, wanted)
            if len(candidates) == 1 and exact:
                return candidates[0].symbol
            if candidates:
                names = ", ".join(i.symbol for i in candidates[:MAX_CANDIDATES])
                more = len(candidates) - MAX_CANDIDATES
                tail = f" and {more} more" if more > 0 else ""
                raise InvalidInputError(f"{wanted!r} is ambiguous: {names}{tail}")
        raise UnknownSymbolError(f"unknown symbol {wanted}: {self._market.name} lists none like it")

    async def _cached(self) -> tuple[list[Instrument], datetime | None]:
        async with self._db.session() as session:
            rows = (
                await session.exec(
                    select(SymbolCacheRow)
                    .where(col(SymbolCacheRow.source) == self._market.name)
                    .order_by(col(SymbolCacheRow.symbol))
                )
            ).all()
        items = [_instrument(r) for r in rows]
        fetched_at = min((r.fetched_at for r in rows), default=None)
        return items, fetched_at

    @staticmethod
    def _match(listed: list[Instrument], query: str) -> list[Instrument]:
        """Ranked matches: exact spelling, then base, then prefix, then anywhere."""
        key = normalize_symbol(query)
        if not key:
            return []
        ranked: list[tuple[int, str, Instrument]] = []
        for item in listed:
            spelled = _key(item)
            if spelled == key:
                rank = 0
            elif item.base.upper() == key:
                rank = 1
            elif spelled.startswith(key):
                rank = 2
            elif key in spelled:
                rank = 3
            else:
                continue
            ranked.append((rank, item.symbol, item))
        return [item for _, _, item in sorted(ranked, key=lambda r: (r[0], r[1]))]
