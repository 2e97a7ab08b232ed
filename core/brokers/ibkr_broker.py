"""The Interactive Brokers adapter: SignalDesk's :class:`~core.brokers.base.Broker` on TWS or
IB Gateway.

Built on ``ib_async`` (the maintained successor of ib_insync; the ``ibkr`` extra), imported
when an :class:`IbkrBroker` is built, never when this module is imported. ``ib_async`` is
asyncio-native: its ``IB`` object runs on SignalDesk's own event loop, so no worker thread
is needed. It connects to TWS or IB Gateway (``IBKR_HOST``, ``IBKR_PORT``,
``IBKR_CLIENT_ID``); paper accounts first (TWS 7497, Gateway 4002).

Symbols and units:

- ``AAPL`` is a stock routed SMART in USD; ``AAPL.NASDAQ`` the same with its primary
  exchange; ``ES.2026-12`` a future by contract month (``ES.2026-12.CME`` names the
  exchange); ``EUR.USD`` a forex pair on IDEALPRO. A contract is resolved with
  ``reqContractDetailsAsync`` (what ``qualifyContractsAsync`` runs underneath), which also
  gives the minimum tick (``minTick``) and size (``minSize``, ``sizeIncrement``); exactly one
  match is required, none or several is UnknownSymbolError.
- Quantities are shares (stocks), contracts (futures) or base currency units (forex),
  rounded down to ``sizeIncrement`` and refused below ``minSize``; prices are rounded to
  ``minTick``. Average entry prices are per unit (IB's ``averageCost`` divided by the
  contract's multiplier).
- Account figures come from ``accountValues``: ``NetLiquidation`` is equity (its currency
  is the account's base currency), ``TotalCashValue`` balance and ``MaintMarginReq``
  margin, each taken from the ``BASE`` row when IB sends one, else the base currency row.
- Positions come from ``portfolio()`` (marked to ``marketPrice``, ``unrealizedPNL``). IB
  keeps no owner tag on a position, so ownership is by account: positions in the
  configured ``IBKR_ACCOUNT`` (or the only managed account) are SignalDesk's, others are
  reported and never touched. Give SignalDesk a dedicated account or sub-account.

Identity and exactly-once: every order carries the client order id in ``orderRef``.
Looking it up (``get_order``, and before every ``place_order``/``close_position``) searches
this session's ``trades()``, then ``reqAllOpenOrdersAsync()`` and
``reqCompletedOrdersAsync(apiOnly=True)``; its fills come from the trade or, after a
restart, from ``reqExecutionsAsync()`` filtered by ``Execution.orderRef``. IB does not
refuse a repeated ``orderRef``, so the look-up first is what makes a retry return the
order instead of placing a second one. IB returns executions of the current day only (TWS
can be set to keep up to 7 days); an older order is reported from its status (filled
quantity and average price) without fill rows or fees. A lost connection while
``placeOrder`` is in flight is BrokerAmbiguousError: the order may have reached IB, and the
reconciler finds it by ``orderRef`` after the restart (one order, never two).

Protective exits are ORDERS, placed after the entry fills. The issue proposed a bracket
(parent plus children) at entry; SignalDesk's exit service instead places the stop loss
and take profit as separate reduce-only orders once the entry has filled, under the
client ids ``<entry id>-sl<n>`` / ``-tp<n>`` (docs/trades.md), and IB holds those natively:
a STOP is an ``STP`` order (``auxPrice`` = trigger), a TAKE_PROFIT an ``MIT`` order (market
if touched: a take-profit-market order), both ``tif`` GTC, and both in the OCA group
``<entry id>-exits`` with ``ocaType`` 1, so IB cancels the other exit when one fills.
Why not a bracket: one path for every venue (the same service code, tests and
reconciliation as paper and ccxt), exits sized to what actually filled rather than what
was asked, trailing moves done the same way (place ``-sl<n+1>``, cancel ``-sl<n>``), and no
parent/child transmit dance that a lost connection could leave half sent. The exit
service's own one-cancels-other stays as the second line. IB has no reduce-only flag for
stocks; an exit never exceeds the position it protects because the exit service sizes it
so and OCA removes the sibling.

Errors are translated at the boundary by :func:`translate_error` from IB's error codes
(https://interactivebrokers.github.io/tws-api/message_codes.html) and the connection state:

====== ========== ====================================================================
code   kind       SignalDesk error (meaning)
====== ========== ====================================================================
100    temporary  BrokerTemporaryError (max rate of messages exceeded)
103    permanent  OrderRejectedError (duplicate order id)
110    permanent  OrderRejectedError (price does not conform to the minimum tick)
200    permanent  UnknownSymbolError (no security definition found)
201    permanent  OrderRejectedError (order rejected; InsufficientMarginError for margin)
202    permanent  OrderRejectedError (order cancelled by IB)
203    permanent  OrderRejectedError (security not allowed for this account)
354    permanent  BrokerPermanentError (no market data subscription)
434    permanent  InvalidQuantityError (order size cannot be zero)
502    temporary  BrokerTemporaryError (could not connect to TWS)
504    ambiguous  BrokerAmbiguousError (not connected; temporary when not placing)
1100   ambiguous  BrokerAmbiguousError (connectivity lost; temporary when not placing)
1101   temporary  BrokerTemporaryError (connectivity restored, data lost)
1102   temporary  BrokerTemporaryError (connectivity restored, data kept)
2103   temporary  BrokerTemporaryError (market data farm connection broken)
2104   info       None (market data farm connection OK)
2106   info       None (historical data farm connection OK)
2158   info       None (sec-def data farm connection OK)
10147  permanent  OrderNotFoundError (order id to cancel not found)
====== ========== ====================================================================

Any other code is OrderRejectedError while placing an order and BrokerPermanentError
otherwise. A connection that cannot be opened is BrokerTemporaryError; a connection lost
while an order is in flight is BrokerAmbiguousError.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

import structlog

from core.brokers._numbers import dec_or_zero, floor_to_step, plain
from core.brokers.base import closing_request
from core.brokers.ibkr_hours import MarketHours
from core.config import MarketClosedPolicy
from core.domain import (
    ZERO,
    Account,
    ExitStyle,
    Fill,
    OrderReport,
    OrderRequest,
    OrderState,
    OrderType,
    Position,
    Quote,
    Side,
    utcnow,
)
from core.errors import (
    BrokerAmbiguousError,
    BrokerError,
    BrokerPermanentError,
    BrokerTemporaryError,
    BrokerUnavailableError,
    InsufficientMarginError,
    InvalidQuantityError,
    OrderNotFoundError,
    OrderRejectedError,
    QuantityLimitError,
    UnknownSymbolError,
)

if TYPE_CHECKING:
    from core.config import Settings

__all__ = ["UNAVAILABLE_MESSAGE", "ContractSpec", "IbkrBroker", "parse_symbol", "translate_error"]

log = structlog.get_logger(__name__)

#: Raised (as BrokerUnavailableError) when ib_async is not installed.
UNAVAILABLE_MESSAGE = "BROKER=ibkr needs the ibkr extra: pip install 'signaldesk[ibkr]'"

#: The error table of the module docstring: code -> (kind, error class or None for info).
_CODES: dict[int, tuple[str, type[BrokerError] | None]] = {
    100: ("temporary", BrokerTemporaryError),
    103: ("permanent", OrderRejectedError),
    110: ("permanent", OrderRejectedError),
    200: ("permanent", UnknownSymbolError),
    201: ("permanent", OrderRejectedError),
    202: ("permanent", OrderRejectedError),
    203: ("permanent", OrderRejectedError),
    354: ("permanent", BrokerPermanentError),
    434: ("permanent", InvalidQuantityError),
    502: ("temporary", BrokerTemporaryError),
    504: ("ambiguous", BrokerAmbiguousError),
    1100: ("ambiguous", BrokerAmbiguousError),
    1101: ("temporary", BrokerTemporaryError),
    1102: ("temporary", BrokerTemporaryError),
    2103: ("temporary", BrokerTemporaryError),
    2104: ("info", None),
    2106: ("info", None),
    2158: ("info", None),
    10147: ("permanent", OrderNotFoundError),
}

# ib_async's OrderStatus.status strings.
_FILLED = "Filled"
_CANCELLED = frozenset({"Cancelled", "ApiCancelled"})
_INACTIVE = "Inactive"
_DONE = frozenset({_FILLED, _INACTIVE}) | _CANCELLED
_WORKING = frozenset({"PreSubmitted", "Submitted"})
#: ``Ticker.marketDataType`` of delayed prices (``reqMarketDataType``: 3 delayed, 4 delayed
#: frozen; 1 live, 2 frozen).
_DELAYED_TYPES = frozenset({3, 4})

_EXIT_ID = re.compile(r"^(?P<entry>.+)-(?P<kind>sl|tp)(?P<n>\d+)$")
_MONTH = re.compile(r"^(?P<year>\d{4})-(?P<month>\d{2})$")
_IB_TYPES = {
    OrderType.MARKET: "MKT",
    OrderType.LIMIT: "LMT",
    OrderType.STOP: "STP",
    OrderType.TAKE_PROFIT: "MIT",
}
_OUR_TYPES = {value: key for key, value in _IB_TYPES.items()}


def translate_error(code: int, message: str, *, placing: bool = False) -> BrokerError | None:
    """The SignalDesk error for IB error ``code`` (the module docstring's table), or None
    for an informational code. ``placing``: an order was in flight, which makes a lost
    connection ambiguous (otherwise temporary) and an unlisted code OrderRejectedError."""
    text = f"IB error {code}: {message}"
    kind, cls = _CODES.get(code, ("permanent", OrderRejectedError if placing else None))
    if kind == "info":
        return None
    if cls is None:
        return BrokerPermanentError(text)
    if kind == "ambiguous" and not placing:
        return BrokerTemporaryError(text)
    if code == 201 and ("margin" in message.lower() or "equity" in message.lower()):
        return InsufficientMarginError(text)
    return cls(text)


def _import_ib_async() -> Any:
    """The ``ib_async`` module; BrokerUnavailableError without the extra."""
    try:
        import ib_async
    except ImportError as exc:
        raise BrokerUnavailableError(UNAVAILABLE_MESSAGE) from exc
    return ib_async


def parse_symbol(lib: Any, symbol: str) -> Any:
    """The unqualified ib_async contract for a SignalDesk symbol (see the module docstring):
    ``AAPL``, ``AAPL.NASDAQ``, ``ES.2026-12``, ``ES.2026-12.CME``, ``EUR.USD``.

    Raises:
        UnknownSymbolError: the symbol has none of these forms.
    """
    parts = symbol.strip().upper().split(".")
    if not all(parts) or not parts[0].replace("-", "").isalnum():
        raise UnknownSymbolError(
            f"IBKR symbol {symbol!r} is not AAPL, AAPL.NASDAQ, ES.2026-12 or EUR.USD"
        )
    if len(parts) == 1:
        return lib.Stock(parts[0], "SMART", "USD")
    if len(parts) in (2, 3) and (month := _MONTH.match(parts[1])):
        exchange = parts[2] if len(parts) == 3 else ""
        return lib.Future(parts[0], f"{month['year']}{month['month']}", exchange)
    if len(parts) == 2 and parts[0] in _CURRENCIES and parts[1] in _CURRENCIES:
        return lib.Forex(parts[0] + parts[1])
    if len(parts) == 2:
        return lib.Stock(parts[0], "SMART", "USD", primaryExchange=parts[1])
    raise UnknownSymbolError(
        f"IBKR symbol {symbol!r} is not AAPL, AAPL.NASDAQ, ES.2026-12 or EUR.USD"
    )


#: Currencies IDEALPRO quotes, for telling ``EUR.USD`` (forex) from ``SAP.IBIS`` (a stock).
_CURRENCIES = frozenset(
    [
        "USD",
        "EUR",
        "GBP",
        "JPY",
        "CHF",
        "CAD",
        "AUD",
        "NZD",
        "SEK",
        "NOK",
        "DKK",
        "HKD",
        "SGD",
        "CNH",
        "MXN",
        "ZAR",
        "PLN",
        "CZK",
        "HUF",
        "ILS",
        "TRY",
    ]
)


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """A resolved contract and its trading increments."""

    symbol: str
    contract: Any
    tick: Decimal
    min_size: Decimal
    size_step: Decimal
    multiplier: Decimal
    hours: str = ""  # ContractDetails.liquidHours
    time_zone: str = ""  # ContractDetails.timeZoneId


class IbkrBroker:
    """A :class:`~core.brokers.base.Broker` on TWS or IB Gateway (see the module docstring).

    Args:
        ib: an ``ib_async.IB``-like object; a new ``ib_async.IB()`` when None (tests pass
            the fake of tests/support/ib_fake.py).
        host, port, client_id: where TWS / IB Gateway listens (``IBKR_HOST``, ``IBKR_PORT``,
            ``IBKR_CLIENT_ID``).
        account: the account to trade (``IBKR_ACCOUNT``); empty uses the only managed one.
        max_order_quantity, max_order_notional: per-order caps in units and quote currency
            (``MAX_ORDER_*``); closing orders and exits are exempt.
        fill_timeout: seconds to wait for a market order to fill (longer: it is reported
            OPEN and the reconciler follows it) or a resting order to be acknowledged.
        connect_timeout: seconds to wait for the API handshake.
        closed_policy: an order that adds risk on a closed market is refused (``block``)
            or sent as a DAY order resting until the open (``day_order``;
            ``MARKET_CLOSED_POLICY``). Reducing orders are always sent.
        clock: UTC now, for the market hours.

    Raises:
        BrokerUnavailableError: ``ib_async`` is not installed.
    """

    name = "ibkr"

    def __init__(
        self,
        *,
        ib: Any = None,
        host: str = "127.0.0.1",
        port: int = 7497,
        client_id: int = 1,
        account: str = "",
        max_order_quantity: Decimal | None = None,
        max_order_notional: Decimal | None = None,
        fill_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        closed_policy: MarketClosedPolicy = MarketClosedPolicy.BLOCK,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._lib = _import_ib_async()
        self._ib = ib if ib is not None else self._lib.IB()
        self.host = host
        self.port = port
        self.client_id = client_id
        self.account_id = account
        self.max_order_quantity = max_order_quantity
        self.max_order_notional = max_order_notional
        self.fill_timeout = fill_timeout
        self.connect_timeout = connect_timeout
        self.closed_policy = closed_policy
        self._clock = clock
        self._specs: dict[str, ContractSpec] = {}
        self._symbols: dict[int, str] = {}  # conId -> the SignalDesk symbol it was asked as
        self._connect_lock = asyncio.Lock()
        self._order_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> IbkrBroker:
        """A broker configured by the ``IBKR_*`` and ``MAX_ORDER_*`` settings.

        Raises:
            BrokerUnavailableError: ``ib_async`` is not installed.
        """
        return cls(
            host=settings.ibkr_host,
            port=settings.ibkr_port,
            client_id=settings.ibkr_client_id,
            account=settings.ibkr_account,
            max_order_quantity=settings.max_order_quantity,
            max_order_notional=settings.max_order_notional,
            closed_policy=settings.market_closed_policy,
        )

    @property
    def ib(self) -> Any:
        """The ``ib_async.IB`` connection (shared with the IBKR market data)."""
        return self._ib

    # --- connection -----------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the API connection if it is not open.

        Raises:
            BrokerTemporaryError: TWS / IB Gateway does not answer at ``host:port``.
        """
        async with self._connect_lock:
            if self._ib.isConnected():
                return
            try:
                await self._ib.connectAsync(
                    self.host,
                    self.port,
                    clientId=self.client_id,
                    timeout=self.connect_timeout,
                    account=self.account_id,
                )
            except (OSError, TimeoutError, ConnectionError) as exc:
                raise BrokerTemporaryError(
                    f"cannot reach TWS / IB Gateway at {self.host}:{self.port} "
                    f"(is the API enabled on that port?): {type(exc).__name__}"
                ) from exc
            if not self.account_id:
                accounts = self._ib.managedAccounts()
                self.account_id = accounts[0] if len(accounts) == 1 else ""
            log.info("ibkr connected", host=self.host, port=self.port, client_id=self.client_id)

    async def close(self) -> None:
        """Disconnect from TWS / IB Gateway."""
        if self._ib.isConnected():
            self._ib.disconnect()

    # --- contracts ------------------------------------------------------------------------

    async def spec(self, symbol: str) -> ContractSpec:
        """The resolved contract of ``symbol`` and its increments (cached).

        Raises:
            UnknownSymbolError (no or several matches), BrokerTemporaryError.
        """
        cached = self._specs.get(symbol)
        if cached is not None:
            return cached
        await self.connect()
        contract = parse_symbol(self._lib, symbol)
        try:
            details = await self._ib.reqContractDetailsAsync(contract)
        except self._lib.RequestError as exc:
            raise self._translated(exc.code, exc.message) from exc
        if not details:
            raise UnknownSymbolError(f"IBKR has no contract for {symbol}")
        if len(details) > 1:
            names = ", ".join(
                sorted({d.contract.localSymbol or d.contract.symbol for d in details})
            )
            raise UnknownSymbolError(f"{symbol} is ambiguous at IBKR ({names}); name the exchange")
        [detail] = details
        resolved = detail.contract
        spec = ContractSpec(
            symbol=symbol,
            contract=resolved,
            tick=_positive(detail.minTick, Decimal("0.01")),
            min_size=_positive(detail.minSize, Decimal(1)),
            size_step=_positive(detail.sizeIncrement, Decimal(1)),
            multiplier=_positive(resolved.multiplier, Decimal(1)),
            hours=detail.liquidHours,
            time_zone=detail.timeZoneId,
        )
        self._specs[symbol] = spec
        self._symbols[resolved.conId] = symbol
        return spec

    def resolved(self) -> list[ContractSpec]:
        """The contracts resolved so far, in the order they were first asked for."""
        return list(self._specs.values())

    def symbol_of(self, contract: Any) -> str:
        """The SignalDesk symbol of an ib_async contract: the one it was asked as, else
        ``AAPL``, ``ES.2026-12`` or ``EUR.USD`` by security type."""
        known = self._symbols.get(contract.conId)
        if known:
            return known
        if contract.secType == "FUT" and len(contract.lastTradeDateOrContractMonth) >= 6:
            month = contract.lastTradeDateOrContractMonth
            return f"{contract.symbol}.{month[:4]}-{month[4:6]}"
        if contract.secType == "CASH":
            return f"{contract.symbol}.{contract.currency}"
        return str(contract.symbol)

    # --- the port -------------------------------------------------------------------------

    async def account(self) -> Account:
        """Balance, equity and margin in the account's base currency (``accountValues``).

        Raises:
            BrokerTemporaryError: not connected, or IB has sent no account values yet.
        """
        await self.connect()
        values = [v for v in self._ib.accountValues(self.account_id)]
        base = next(
            (v.currency for v in values if v.tag == "NetLiquidation" and v.currency != "BASE"), ""
        )
        if not base:
            raise BrokerTemporaryError("IBKR has not sent the account values yet")

        def value(tag: str) -> Decimal:
            rows = {v.currency: v.value for v in values if v.tag == tag}
            return dec_or_zero(rows.get("BASE", rows.get(base)))

        return Account(
            balance=value("TotalCashValue"),
            equity=value("NetLiquidation"),
            margin=value("MaintMarginReq"),
            currency=base,
        )

    async def positions(self) -> list[Position]:
        """Open positions from ``portfolio()``, marked to IB's market price; quantities in
        shares / contracts / base units, prices per unit (see the module docstring)."""
        await self.connect()
        result = []
        for item in self._ib.portfolio():
            quantity = dec_or_zero(item.position)
            if quantity == 0:
                continue
            multiplier = _positive(item.contract.multiplier, Decimal(1))
            result.append(
                Position(
                    symbol=self.symbol_of(item.contract),
                    quantity=quantity,
                    average_entry=dec_or_zero(item.averageCost) / multiplier,
                    mark_price=dec_or_zero(item.marketPrice),
                    realized_pnl=dec_or_zero(item.realizedPNL),
                    unrealized_pnl=dec_or_zero(item.unrealizedPNL),
                    opened_by_signaldesk=not self.account_id or item.account == self.account_id,
                )
            )
        return result

    async def quote(self, symbol: str) -> Quote:
        """A snapshot (``reqTickersAsync``): bid, ask and last; the last is the mid when the
        contract has no last trade (forex), and bid/ask fall back to the last or close.
        ``delayed`` when IB answered with delayed data (the ticker's ``marketDataType`` 3
        or 4, after ``reqMarketDataType(3)`` on an account without a subscription; IB sends
        live data whenever the account has one).

        Raises:
            UnknownSymbolError, BrokerTemporaryError (no prices: market data subscription?).
        """
        spec = await self.spec(symbol)
        [ticker] = await self._ib.reqTickersAsync(spec.contract)
        bid, ask = _price(ticker.bid), _price(ticker.ask)
        last = _price(ticker.last)
        if bid is None or ask is None:
            last = last or _price(ticker.close)
            if last is None:
                raise BrokerTemporaryError(
                    f"IBKR sent no prices for {symbol} (market data subscription?)"
                )
            bid = ask = last
        return Quote(
            symbol=symbol,
            bid=bid,
            ask=ask,
            last=last or (bid + ask) / 2,
            at=utcnow(),
            delayed=ticker.marketDataType in _DELAYED_TYPES,
        )

    async def place_order(self, request: OrderRequest) -> OrderReport:
        """Send one order with ``orderRef`` = ``request.client_order_id``; an id IB already
        holds returns that order. MARKET is ``MKT`` (waits up to ``fill_timeout`` for the
        fill), LIMIT ``LMT``, STOP ``STP`` and TAKE_PROFIT ``MIT`` in the entry's OCA group
        (module docstring). ``stop_loss`` / ``take_profit`` on the request are not sent: the
        exit service places them after the fill.

        Raises:
            UnknownSymbolError, InvalidQuantityError, QuantityLimitError,
            OrderRejectedError, InsufficientMarginError (IB's codes, module docstring),
            BrokerTemporaryError (not connected; nothing was sent),
            BrokerAmbiguousError (the connection dropped with the order in flight).
        """
        if request.quantity <= 0:
            raise InvalidQuantityError(f"quantity must be positive, got {request.quantity}")
        trigger = request.order_type.is_trigger
        if request.order_type is OrderType.LIMIT and not (request.limit_price or 0) > 0:
            raise OrderRejectedError("a limit order needs a positive limit price")
        if trigger and not (request.trigger_price or 0) > 0:
            raise OrderRejectedError(
                f"a {request.order_type.value} order needs a positive trigger price"
            )
        spec = await self.spec(request.symbol)
        async with self._order_lock:
            existing = await self._find(request.client_order_id)
            if existing is not None:
                return await self._report(existing, request.symbol)
            quantity = floor_to_step(request.quantity, spec.size_step)
            if quantity < spec.min_size or quantity <= 0:
                raise InvalidQuantityError(
                    f"{plain(request.quantity)} {request.symbol} is below IBKR's minimum "
                    f"size {plain(spec.min_size)} (step {plain(spec.size_step)})"
                )
            reducing = request.reduce_only or trigger
            if not reducing:
                await self._check_caps(request, quantity, spec)
            hours = MarketHours.of(spec.hours, spec.time_zone, self._clock())
            if not (hours.is_open or reducing) and self.closed_policy is MarketClosedPolicy.BLOCK:
                raise OrderRejectedError(f"{request.symbol}: {hours.describe()}")
            order = self._order(request, quantity, spec)
            if not self._ib.isConnected():
                raise BrokerTemporaryError("IBKR is not connected; the order was not sent")
            trade = self._ib.placeOrder(spec.contract, order)
            # on a closed market IB holds the DAY order until the open: acknowledged is enough
            market = request.order_type is OrderType.MARKET and hours.is_open
            await self._settle(trade, until_done=market)
            if not self._ib.isConnected() and not trade.isDone():
                raise BrokerAmbiguousError(
                    f"IBKR connection lost with order {request.client_order_id} in flight; "
                    "it is reconciled by orderRef"
                )
            rejection = self._rejection(trade)
            if rejection is not None:
                raise rejection
            return await self._report(trade, request.symbol)

    async def get_order(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """The order whose ``orderRef`` is ``client_order_id`` (this session's trades, open
        orders, completed orders) with its fills (the trade's, else ``reqExecutionsAsync``);
        None when IB has none.

        Raises:
            BrokerTemporaryError: not connected.
        """
        trade = await self._find(client_order_id)
        return None if trade is None else await self._report(trade, symbol)

    async def close_position(
        self,
        symbol: str,
        client_order_id: str,
        quantity: Decimal | None = None,
        position_ref: str = "",
    ) -> OrderReport | None:
        """A market order against the position in ``symbol``: all of it or ``quantity``
        (capped at what is held). An id IB already holds returns that order; None when
        flat. ``position_ref`` is ignored (one position per contract and account).

        Raises:
            UnknownSymbolError, InvalidQuantityError, OrderRejectedError,
            BrokerTemporaryError, BrokerAmbiguousError.
        """
        if quantity is not None and quantity <= 0:
            raise InvalidQuantityError(f"quantity must be positive, got {quantity}")
        spec = await self.spec(symbol)
        existing = await self._find(client_order_id)
        if existing is not None:
            return await self._report(existing, symbol)
        held = sum(
            (
                dec_or_zero(item.position)
                for item in self._ib.portfolio()
                if item.contract.conId == spec.contract.conId
                and (not self.account_id or item.account == self.account_id)
            ),
            ZERO,
        )
        request = closing_request(symbol, client_order_id, held, quantity)
        return None if request is None else await self.place_order(request)

    async def cancel_order(self, client_order_id: str, symbol: str) -> OrderReport:
        """``cancelOrder`` the working order with this ``orderRef`` and wait for IB's answer:
        CANCELLED, or FILLED when it filled first. A final order is returned unchanged.

        Raises:
            OrderNotFoundError, BrokerTemporaryError.
        """
        trade = await self._find(client_order_id)
        if trade is None:
            raise OrderNotFoundError(f"IBKR has no order {client_order_id}")
        if not trade.isDone():
            self._ib.cancelOrder(trade.order)
            await self._settle(trade, until_done=True)
        return await self._report(trade, symbol)

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        """Working orders of every API client (``reqAllOpenOrdersAsync``), each with its
        ``orderRef`` as client order id (empty for orders placed in TWS)."""
        await self.connect()
        trades = await self._ib.reqAllOpenOrdersAsync()
        reports = []
        for trade in trades:
            if trade.isDone():
                continue
            name = self.symbol_of(trade.contract)
            if symbol is None or name == symbol:
                reports.append(await self._report(trade, name, with_executions=False))
        return reports

    async def exit_style(self, symbol: str) -> ExitStyle:
        """ORDERS: IB holds stop (STP) and take-profit (MIT) orders in one OCA group.
        Raises UnknownSymbolError."""
        await self.spec(symbol)
        return ExitStyle.ORDERS

    async def market_hours(self, symbol: str) -> MarketHours:
        """Whether ``symbol``'s market is in its regular trading hours now and when it opens
        (``liquidHours`` / ``timeZoneId`` of its contract details;
        :mod:`core.brokers.ibkr_hours`). Raises UnknownSymbolError."""
        spec = await self.spec(symbol)
        return MarketHours.of(spec.hours, spec.time_zone, self._clock())

    # --- helpers --------------------------------------------------------------------------

    def _translated(self, code: int, message: str, *, placing: bool = False) -> BrokerError:
        return translate_error(code, message, placing=placing) or BrokerTemporaryError(
            f"IB {code}: {message}"
        )

    async def _check_caps(
        self, request: OrderRequest, quantity: Decimal, spec: ContractSpec
    ) -> None:
        if self.max_order_quantity is not None and quantity > self.max_order_quantity:
            raise QuantityLimitError(
                f"quantity {plain(quantity)} exceeds the limit {plain(self.max_order_quantity)}"
            )
        if self.max_order_notional is not None:
            price = request.limit_price or (await self.quote(request.symbol)).last
            notional = quantity * price * spec.multiplier
            if notional > self.max_order_notional:
                raise QuantityLimitError(
                    f"notional {notional:.2f} exceeds the limit {self.max_order_notional:.2f}"
                )

    def _order(self, request: OrderRequest, quantity: Decimal, spec: ContractSpec) -> Any:
        """The ib_async Order for ``request`` (module docstring)."""
        order = self._lib.Order(
            action="BUY" if request.side is Side.BUY else "SELL",
            totalQuantity=float(quantity),
            orderType=_IB_TYPES[request.order_type],
            orderRef=request.client_order_id,
            tif="DAY",
            account=self.account_id,
        )
        if request.order_type is OrderType.LIMIT:
            assert request.limit_price is not None
            order.lmtPrice = float(_to_tick(request.limit_price, spec.tick))
        if request.order_type.is_trigger:
            assert request.trigger_price is not None
            order.auxPrice = float(_to_tick(request.trigger_price, spec.tick))
            order.tif = "GTC"
            match = _EXIT_ID.match(request.client_order_id)
            entry = match["entry"] if match else request.position_ref
            if entry:
                order.ocaGroup = f"{entry}-exits"
                order.ocaType = 1
        return order

    async def _settle(self, trade: Any, *, until_done: bool) -> None:
        """Wait until ``trade`` is done (``until_done``) or working at IB, the connection
        drops, or ``fill_timeout`` passes."""
        changed = asyncio.Event()

        def poke(*_: Any) -> None:
            changed.set()

        events = (trade.statusEvent, trade.fillEvent, trade.commissionReportEvent)
        for event in events:
            event += poke
        self._ib.disconnectedEvent += poke
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.fill_timeout
        try:
            while not self._settled(trade, until_done) and self._ib.isConnected():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except TimeoutError:
                    return
        finally:
            for event in events:
                event -= poke
            self._ib.disconnectedEvent -= poke

    @staticmethod
    def _settled(trade: Any, until_done: bool) -> bool:
        status = trade.orderStatus.status
        if status == _FILLED:
            filled = sum(f.execution.shares for f in trade.fills)
            return bool(filled >= trade.orderStatus.filled)
        return status in _DONE or (not until_done and status in _WORKING)

    def _rejection(self, trade: Any) -> BrokerError | None:
        """The error of an order IB refused (done, nothing filled, an error in its log)."""
        if trade.orderStatus.status not in (_CANCELLED | {_INACTIVE}) or trade.fills:
            return None
        errors = [entry for entry in trade.log if entry.errorCode]
        if not errors:
            return None
        return self._translated(errors[-1].errorCode, errors[-1].message, placing=True)

    async def _find(self, client_order_id: str) -> Any | None:
        """The trade whose ``orderRef`` is ``client_order_id``: this session's first, then
        IB's open and completed orders (the newest when several)."""
        await self.connect()
        found = [t for t in self._ib.trades() if t.order.orderRef == client_order_id]
        if not found:
            found = [
                t
                for t in await self._ib.reqAllOpenOrdersAsync()
                if t.order.orderRef == client_order_id
            ]
        if not found:
            found = [
                t
                for t in await self._ib.reqCompletedOrdersAsync(True)
                if t.order.orderRef == client_order_id
            ]
        if not found:
            return None
        return max(found, key=lambda t: (t.order.permId, t.order.orderId))

    async def _report(
        self, trade: Any, symbol: str, *, with_executions: bool = True
    ) -> OrderReport:
        """The OrderReport of an ib_async Trade; fills from the trade, or from
        ``reqExecutionsAsync`` by ``orderRef`` when the trade (a completed order after a
        restart) carries none."""
        order, status = trade.order, trade.orderStatus
        fills = list(trade.fills)
        if not fills and with_executions and (status.filled or status.status == _FILLED):
            fills = [
                f
                for f in await self._ib.reqExecutionsAsync()
                if f.execution.orderRef == order.orderRef
                and (not order.permId or f.execution.permId == order.permId)
            ]
        ours = tuple(self._fill(f, order.orderRef, symbol) for f in fills)
        filled = sum((f.quantity for f in ours), ZERO) or dec_or_zero(status.filled)
        average = (
            sum((f.quantity * f.price for f in ours), ZERO) / filled
            if ours and filled
            else _price(status.avgFillPrice)
        )
        fee = sum((f.fee for f in ours), ZERO)
        state = _state(status.status, filled, dec_or_zero(order.totalQuantity))
        reason = next((e.message for e in reversed(trade.log) if e.errorCode), "")
        order_type = _OUR_TYPES.get(order.orderType, OrderType.MARKET)
        return OrderReport(
            client_order_id=order.orderRef,
            symbol=symbol,
            side=Side.BUY if order.action == "BUY" else Side.SELL,
            quantity=dec_or_zero(order.totalQuantity),
            state=state,
            broker_order_id=str(order.permId or order.orderId),
            order_type=order_type,
            limit_price=_price(order.lmtPrice) if order_type is OrderType.LIMIT else None,
            filled_quantity=filled,
            average_price=average,
            fee=fee,
            fee_currency=ours[0].fee_currency if ours else "",
            fills=ours,
            reason=reason,
            trigger_price=_price(order.auxPrice) if order_type.is_trigger else None,
        )

    @staticmethod
    def _fill(fill: Any, client_order_id: str, symbol: str) -> Fill:
        execution, commission = fill.execution, fill.commissionReport
        return Fill(
            client_order_id=client_order_id,
            symbol=symbol,
            side=Side.BUY if execution.side == "BOT" else Side.SELL,
            quantity=dec_or_zero(execution.shares),
            price=dec_or_zero(execution.price),
            fee=dec_or_zero(commission.commission) if commission else ZERO,
            fee_currency=commission.currency if commission else "",
            at=fill.time,
            broker_fill_id=execution.execId,
        )


def _state(status: str, filled: Decimal, quantity: Decimal) -> OrderState:
    """OrderState of an IB status: Filled -> FILLED; Cancelled/ApiCancelled -> CANCELLED;
    Inactive -> FAILED (or CANCELLED after a partial fill); anything else -> OPEN."""
    if status == _FILLED or (quantity and filled >= quantity):
        return OrderState.FILLED
    if status in _CANCELLED:
        return OrderState.CANCELLED
    if status == _INACTIVE:
        return OrderState.CANCELLED if filled else OrderState.FAILED
    return OrderState.OPEN


def _price(value: object) -> Decimal | None:
    """A price from ib_async: None for nan, IB's unset double (1.7976931348623157e308),
    None, zero or a negative value (IB sends -1 for a missing tick)."""
    if value is None:
        return None
    number = float(str(value))
    if math.isnan(number) or number <= 0 or number >= 1e300:
        return None
    return Decimal(str(value))


def _positive(value: object, default: Decimal) -> Decimal:
    """``value`` as a Decimal when it is a positive number, else ``default``."""
    try:
        number = Decimal(str(value)) if value not in (None, "") else ZERO
    except ArithmeticError:
        return default
    return number if number > 0 else default


def _to_tick(price: Decimal, tick: Decimal) -> Decimal:
    """``price`` rounded half-up to a multiple of ``tick``."""
    return (price / tick).quantize(Decimal(1), ROUND_HALF_UP) * tick
