"""The ccxt adapter: SignalDesk's :class:`~core.brokers.base.Broker` on a crypto exchange.

Built on ``ccxt.async_support`` (the ``ccxt`` extra), which is imported when a
:class:`CcxtBroker` is built, never when this module is imported, so the default paper
path runs without ccxt installed.

Units: quantities are base units (BTC for ``BTC/USDT``; on derivatives ccxt's contracts
times the market's ``contractSize``), prices and notionals are quote currency, account
figures are in the account currency, times are UTC.

The rules this adapter follows, and where each comes from:

- **Markets** are loaded once (``load_markets``), lazily, under a lock. Amounts are rounded
  with ``amount_to_precision`` (Binance: down to the ``LOT_SIZE`` ``stepSize``) and limit
  and trigger prices with ``price_to_precision`` (``PRICE_FILTER`` ``tickSize``); the
  rounded order is checked against ``market["limits"]`` (``LOT_SIZE`` ``minQty``/``maxQty``
  and the ``NOTIONAL``/``MIN_NOTIONAL`` filter's minimum) *before* it is sent, so a refusal
  names the minimum instead of Binance's bare ``-1013 Filter failure: NOTIONAL``.
- **Orders** go out with ``create_order(..., {"clientOrderId": id})``; on Binance spot that
  is ``POST /api/v3/order`` with ``newClientOrderId`` and ``newOrderRespType=FULL``, whose
  answer carries the fills. An order never carries attached stop loss / take profit
  parameters: protective exits are separate orders (below) or watched by SignalDesk.
- **Protective exits** (:meth:`CcxtBroker.exit_style`). ORDERS on a contract market whose
  exchange creates reduce-only stop-loss and take-profit orders (ccxt's
  ``has["createStopLossOrder"]`` and ``has["createTakeProfitOrder"]``, and, where the
  market lists its order types as Binance does, ``STOP_MARKET`` and ``TAKE_PROFIT_MARKET``
  among them): a STOP is ``create_order(symbol, "market", side, amount, None,
  {"stopLossPrice": trigger, "reduceOnly": True, "clientOrderId": id})``, a TAKE_PROFIT
  the same with ``takeProfitPrice``. On Binance USDⓈ-M ccxt sends them to the Algo
  Order API (``POST /fapi/v1/algoOrder``, ``algoType=CONDITIONAL``, ``type=STOP_MARKET`` /
  ``TAKE_PROFIT_MARKET``, ``clientAlgoId``), where conditional orders live since Binance
  moved them there; they are read (``GET /fapi/v1/algoOrder``), listed
  (``GET /fapi/v1/openAlgoOrders``) and cancelled (``DELETE /fapi/v1/algoOrder``) with
  ccxt's ``trigger`` parameter. A triggered one names the market order it placed
  (``actualOrderId``), whose fills are the exit's fills. WATCHED everywhere else,
  spot included: a spot account has no position to reduce, so there is no reduce-only
  order, and Binance spot's ``STOP_LOSS`` and ``TAKE_PROFIT`` orders each lock the coins
  they would sell, so a stop and a take profit for the same coins cannot rest side by
  side (only as an OCO pair, which the port does not model). SignalDesk then watches the
  price and closes with a market order.
- **Exactly once.** Binance refuses a ``newClientOrderId`` only while an order with that id
  is *open*; a filled market order's id is accepted again. So ``place_order`` and
  ``close_position`` first look the id up (``fetch_order`` with Binance's
  ``origClientOrderId``, ``GET /api/v3/order``; on ORDERS markets also the trigger orders)
  and return the order found instead of sending a second one. A refusal *because* the id
  is taken (Binance ``-2010 Duplicate order sent.``, USDⓈ-M ``-4116 ClientOrderId is
  duplicated.``) means an order with that id may exist: it is ambiguous, not a rejection.
- **Errors** are translated at the boundary (``raise ... from exc``):

  ========================================  ==================================================
  ccxt exception                            SignalDesk error
  ========================================  ==================================================
  ``BadSymbol``                             :class:`UnknownSymbolError`
  a duplicate client order id refusal       :class:`BrokerAmbiguousError` while placing (the
  while placing (:data:`DUPLICATE_ID`)      first order may exist: reconcile by client id)
  ``InsufficientFunds``                     :class:`InsufficientMarginError`
  ``AuthenticationError``,                  :class:`BrokerPermanentError` naming the settings
  ``PermissionDenied``                      to check
  ``InvalidOrder``, other refusals          :class:`OrderRejectedError` (placing),
                                            :class:`BrokerPermanentError` (reading)
  ``OrderNotFound`` on a look-up            ``None`` (:class:`OrderNotFoundError` to cancel)
  ``RateLimitExceeded``, ``DDoSProtection``,  :class:`BrokerTemporaryError`: the exchange
  ``InvalidNonce``, ``OnMaintenance``       answered and did nothing
  connection refused, DNS failure           :class:`BrokerTemporaryError`: nothing was sent
  ``RequestTimeout`` while placing          :class:`BrokerAmbiguousError`
  other ``NetworkError``/``BadResponse``    :class:`BrokerAmbiguousError` while placing
  (5xx, connection dropped mid-answer)      (Binance documents 5xx as "execution status
                                            UNKNOWN"), :class:`BrokerTemporaryError` otherwise
  ========================================  ==================================================

- **Positions.** On derivatives (``CCXT_MARKET_TYPE`` swap/future) they come from
  ``fetch_positions``. A spot account has balances, not positions: each non-zero balance of
  a currency that has a spot market quoted in the account currency is reported as a long
  position marked at that market's ticker, its entry price from the account's own trades
  where they explain the balance (see :meth:`CcxtBroker.positions`).

ccxt venues do not tag positions with the program that opened them, so every position is
reported with ``opened_by_signaldesk=True``; run SignalDesk on a dedicated (sub-)account.
One position per symbol: ``position_ref`` is always empty and ignored.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from core.brokers._numbers import dec, dec_or_zero, from_epoch_ms, plain
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
    ConfigError,
    InsufficientMarginError,
    InvalidQuantityError,
    OrderNotFoundError,
    OrderRejectedError,
    UnknownSymbolError,
)

if TYPE_CHECKING:
    from pydantic import SecretStr

    from core.config import Settings

__all__ = [
    "DUPLICATE_ID",
    "UNAVAILABLE_MESSAGE",
    "CcxtBroker",
    "order_report",
    "spot_average_entry",
    "translate_error",
]

log = structlog.get_logger(__name__)

#: Raised (as BrokerUnavailableError) when ccxt is not installed.
UNAVAILABLE_MESSAGE = "BROKER=ccxt needs the ccxt extra: pip install 'signaldesk[ccxt]'"

#: ccxt's unified order statuses -> SignalDesk's order states.
_STATES: Mapping[str, OrderState] = {
    "open": OrderState.OPEN,
    "closed": OrderState.FILLED,
    "canceled": OrderState.CANCELLED,
    "cancelled": OrderState.CANCELLED,
    "expired": OrderState.CANCELLED,
    "rejected": OrderState.FAILED,
}

#: The ``fetch_order`` parameter that carries a client order id, where a venue reads
#: another name than ccxt's unified ``clientOrderId`` (Binance: ``origClientOrderId`` of
#: ``GET /api/v3/order``, ``/fapi/v1/order`` and ``/dapi/v1/order``).
_CLIENT_ID_LOOKUP_PARAM: Mapping[str, str] = {
    "binance": "origClientOrderId",
    "binanceus": "origClientOrderId",
    "binanceusdm": "origClientOrderId",
    "binancecoinm": "origClientOrderId",
}

_DERIVATIVE_TYPES = frozenset({"swap", "future"})

#: An exchange's refusal of an order *because its client order id is taken*, matched in
#: ccxt's message (which carries the exchange's answer): Binance spot ``-2010 Duplicate
#: order sent.`` (matched by text: ``-2010`` is also "insufficient balance"), Binance
#: USDⓈ-M ``-4116 ClientOrderId is duplicated.``, OKX ``51016``, Bybit ``110072`` /
#: ``170141`` / ``12141``, KuCoin ``126044`` (the codes of ccxt's exception tables).
DUPLICATE_ID = re.compile(
    r"Duplicate order sent|ClientOrderId is duplicated"
    r'|"(?:code|retCode|sCode)"\s*:\s*"?(?:-4116|51016|110072|170141|12141|126044)\b'
)

#: The ccxt ``create_order`` parameter that carries a trigger order's level.
_TRIGGER_PARAM: Mapping[OrderType, str] = {
    OrderType.STOP: "stopLossPrice",
    OrderType.TAKE_PROFIT: "takeProfitPrice",
}

#: Order types a market must list (``market["info"]["orderTypes"]``, where it lists them)
#: for SignalDesk to place its exits there as reduce-only trigger orders.
_TRIGGER_ORDER_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET")

#: The most trades one ``fetch_my_trades`` call asks for (Binance's maximum page).
_TRADES_PAGE = 1000


def _import_ccxt() -> tuple[Any, Any]:
    """``(ccxt.async_support, ccxt.base.errors)``; BrokerUnavailableError without the extra."""
    try:
        import ccxt.async_support as ccxt_async
        from ccxt.base import errors
    except ImportError as exc:
        raise BrokerUnavailableError(UNAVAILABLE_MESSAGE) from exc
    return ccxt_async, errors


def _brief(exc: BaseException) -> str:
    """One line naming the ccxt exception and its (truncated) message; never a secret:
    ccxt messages carry the exchange's answer and the URL, not the keys."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


@dataclass(frozen=True, slots=True)
class _Sized:
    """An order amount after rounding: ``amount`` as ccxt takes it (contracts on
    derivatives, base units on spot) and ``quantity`` in base units."""

    amount: str
    quantity: Decimal


class CcxtBroker:
    """A :class:`~core.brokers.base.Broker` on one ccxt exchange (see the module docstring).

    Args:
        exchange_id: ccxt's id of the exchange (``CCXT_EXCHANGE``), e.g. ``"binance"``.
        api_key, secret, password: credentials (``CCXT_API_KEY``, ``CCXT_SECRET``,
            ``CCXT_PASSWORD``); revealed only to build the ccxt client, never logged.
        sandbox: trade on the exchange's testnet (``set_sandbox_mode(True)``).
        market_type: ``"spot"``, ``"swap"`` or ``"future"`` (ccxt's ``defaultType``).
        account_currency: the currency account figures and spot positions are valued in.
        api_urls: entries that replace the exchange's ``urls["api"]`` entries (after the
            sandbox switch); tests point ``public``/``private`` at a local server with it.
        config: extra ccxt constructor config (``timeout`` in ms, ``rateLimit``,
            ``options``), merged over SignalDesk's (``enableRateLimit: True``).
        exchange: a ready ccxt exchange to use instead of building one (``exchange_id``,
            the credentials, ``sandbox``, ``api_urls`` and ``config`` are then ignored).

    Raises:
        BrokerUnavailableError: ccxt is not installed.
        ConfigError: ccxt does not know ``exchange_id``, or it has no testnet while
            ``sandbox`` is on.
    """

    def __init__(
        self,
        exchange_id: str = "binance",
        *,
        api_key: SecretStr | None = None,
        secret: SecretStr | None = None,
        password: SecretStr | None = None,
        sandbox: bool = True,
        market_type: str = "spot",
        account_currency: str = "USDT",
        api_urls: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | None = None,
        exchange: Any = None,
    ) -> None:
        ccxt_async, self._errors = _import_ccxt()
        if exchange is None:
            credentials = {
                name: value.get_secret_value()
                for name, value in (("apiKey", api_key), ("secret", secret), ("password", password))
                if value is not None
            }
            exchange = self._build_exchange(
                ccxt_async,
                exchange_id,
                credentials=credentials,
                sandbox=sandbox,
                market_type=market_type,
                api_urls=api_urls or {},
                config=config or {},
            )
        self._exchange = exchange
        self.name = f"ccxt:{exchange.id}"
        self.account_currency = account_currency
        self._market_type = market_type
        self._derivatives = market_type in _DERIVATIVE_TYPES
        self._markets_lock = asyncio.Lock()
        self._markets_loaded = False

    @classmethod
    def from_settings(cls, settings: Settings) -> CcxtBroker:
        """A broker configured by the ``CCXT_*`` settings (``MAX_ORDER_*`` are the
        pre-trade gate's, :mod:`core.services.gate`).

        The account currency is the quote currency of ``FEED_SYMBOL`` (USDT for
        ``BTC/USDT``), the market SignalDesk watches.
        """
        return cls(
            settings.ccxt_exchange,
            api_key=settings.ccxt_api_key,
            secret=settings.ccxt_secret,
            password=settings.ccxt_password,
            sandbox=settings.ccxt_sandbox,
            market_type=settings.ccxt_market_type,
            account_currency=settings.ccxt_account_currency,
            config=settings.ccxt_config,
        )

    @property
    def exchange(self) -> Any:
        """The ccxt exchange object (``urls``, ``options``, ``markets``), for diagnostics."""
        return self._exchange

    def _build_exchange(
        self,
        ccxt_async: Any,
        exchange_id: str,
        *,
        credentials: Mapping[str, str],
        sandbox: bool,
        market_type: str,
        api_urls: Mapping[str, str],
        config: Mapping[str, Any],
    ) -> Any:
        if exchange_id not in ccxt_async.exchanges:
            raise ConfigError(
                f"CCXT_EXCHANGE={exchange_id!r} is not an exchange ccxt knows "
                "(for example binance, bybit, okx, kraken)"
            )
        options = {"defaultType": market_type, **dict(config.get("options", {}))}
        params = {"enableRateLimit": True, **config, "options": options, **credentials}
        exchange = getattr(ccxt_async, exchange_id)(params)
        if sandbox:
            try:
                exchange.set_sandbox_mode(True)
            # NotSupported, or a TypeError where the exchange's urls["test"] is None (kraken)
            except (self._errors.NotSupported, TypeError) as exc:
                raise ConfigError(
                    f"{exchange_id} has no testnet in ccxt; set CCXT_SANDBOX=false to trade "
                    "on the live exchange"
                ) from exc
        if api_urls:
            exchange.urls["api"] = {**exchange.urls["api"], **api_urls}
        return exchange

    # --- reads ----------------------------------------------------------------------------

    async def quote(self, symbol: str) -> Quote:
        """Bid, ask and last from ``fetch_ticker`` (Binance spot: ``GET /api/v3/ticker/24hr``).

        Where a venue's ticker has no bid/ask (Binance USDⓈ-M), both are the last price.

        Raises:
            UnknownSymbolError, BrokerTemporaryError (no price, network), BrokerPermanentError.
        """
        market = await self._market(symbol)
        with self._boundary(f"fetch the {symbol} ticker"):
            ticker = await self._exchange.fetch_ticker(market["symbol"])
        return self._quote(symbol, ticker)

    async def positions(self) -> list[Position]:
        """Open positions, one per symbol, marked to the current price.

        Derivatives: ``fetch_positions``, net of long and short sides; quantity is
        ``contracts x contractSize`` base units.

        Spot: every non-zero balance (free + locked) of a currency ``C`` for which a spot
        market ``C/<account currency>`` exists, marked at that market's last price. Dust
        that the market's minimum size or value would refuse to sell is left out (it still
        counts in :meth:`account`'s equity). ``average_entry`` comes from the account's own
        trades in that market (``fetch_my_trades``, Binance ``GET /api/v3/myTrades``, the
        latest 1000, one call per held symbol): the average cost of the coins held, buys
        net of fees taken in the coin, sells taking out coins at the average so far, before
        fees. Where those trades do not explain the balance (coins deposited or
        transferred in, a history longer than one page, or the trades unreadable) the
        balance has no known cost: ``average_entry`` is then the mark and
        ``unrealized_pnl`` 0. SignalDesk's own trade record holds the entries of its
        trades either way.

        Raises:
            BrokerTemporaryError, BrokerPermanentError.
        """
        await self._load_markets()
        if self._derivatives:
            return await self._derivative_positions(None)
        totals, _, marks = await self._spot_book()
        positions = []
        for symbol, mark in sorted(marks.items()):
            market = self._exchange.market(symbol)
            quantity = totals[market["base"]]
            if self._is_dust(market, quantity, mark):
                continue
            entry = await self._spot_entry(market, quantity) or mark
            positions.append(
                Position(
                    symbol=symbol,
                    quantity=quantity,
                    average_entry=entry,
                    mark_price=mark,
                    unrealized_pnl=(mark - entry) * quantity,
                )
            )
        return positions

    async def account(self) -> Account:
        """Balance, equity and margin in the account currency.

        Spot (``fetch_balance``, Binance ``GET /api/v3/account``): balance is the account
        currency's balance, equity adds every other balance that has a market quoted in
        the account currency at its last price, margin is 0 (a cash account).

        Derivatives: equity is ``fetch_balance``'s total in the account currency (Binance
        USDⓈ-M: ``marginBalance``, wallet plus unrealized PnL), margin its ``used`` part,
        balance is equity minus the positions' unrealized PnL.

        Raises:
            BrokerTemporaryError, BrokerPermanentError.
        """
        await self._load_markets()
        currency = self.account_currency
        if self._derivatives:
            with self._boundary("fetch the balance"):
                balance = await self._exchange.fetch_balance()
            equity = dec_or_zero((balance.get("total") or {}).get(currency))
            margin = dec_or_zero((balance.get("used") or {}).get(currency))
            positions = await self._derivative_positions(None)
            unrealized = sum((p.unrealized_pnl for p in positions), ZERO)
            return Account(
                balance=equity - unrealized, equity=equity, margin=margin, currency=currency
            )
        totals, _, marks = await self._spot_book()
        cash = totals.get(currency, ZERO)
        held = sum(
            (totals[self._exchange.market(s)["base"]] * mark for s, mark in marks.items()), ZERO
        )
        return Account(balance=cash, equity=cash + held, margin=ZERO, currency=currency)

    async def get_order(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """The order with this client order id, or None when the exchange has none.

        ``fetch_order("", symbol, {<client id param>: client_order_id})`` (Binance:
        ``GET /api/v3/order?origClientOrderId=...``; ``-2013 Order does not exist.`` is
        ccxt's ``OrderNotFound``, answered here as None); on an ORDERS market (see
        :meth:`exit_style`) an id not found there is looked up among the trigger orders
        (ccxt's ``trigger`` parameter; Binance USDⓈ-M ``GET /fapi/v1/algoOrder``). An
        order with fills but no trades in the answer gets them from ``fetch_my_trades``
        (Binance ``GET /api/v3/myTrades``, ``/fapi/v1/userTrades``). A STOP or
        TAKE_PROFIT is OPEN while it rests and, once triggered, reports the market order
        it placed: FILLED with its fills (CANCELLED if that order found nothing to reduce).

        Raises:
            UnknownSymbolError, BrokerTemporaryError, BrokerPermanentError.
        """
        market = await self._market(symbol)
        found = await self._lookup(client_order_id, market)
        if found is None:
            return None
        order, trigger = found
        return await self._report(order, market, client_order_id, trigger=trigger)

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        """Resting orders, of one symbol or all: ``fetch_open_orders`` (Binance spot
        ``GET /api/v3/openOrders``; USDⓈ-M ``/fapi/v1/openOrders`` plus the trigger orders
        of ``/fapi/v1/openAlgoOrders``). Each report carries the order's client order id
        (the exchange's own id for orders placed elsewhere: ccxt cannot tell them apart)
        and, for STOP / TAKE_PROFIT, its trigger price. Without a symbol Binance weighs
        the call 10 (spot) to 40 (futures) times heavier; SignalDesk accepts that.

        Raises:
            UnknownSymbolError, BrokerTemporaryError, BrokerPermanentError.
        """
        await self._load_markets()
        market = await self._market(symbol) if symbol is not None else None
        unified = market["symbol"] if market is not None else None
        options = self._exchange.options.get("fetchOpenOrders")
        if unified is None and isinstance(options, dict):
            options["warnWithoutSymbol"] = False  # acknowledged: the heavier weight
        # without a symbol ccxt does not infer the market family: name it
        family = {"type": self._market_type} if unified is None else {}
        with self._boundary("list open orders"):
            raw = list(await self._exchange.fetch_open_orders(unified, None, None, family))
        if self._derivatives and (market is None or self._holds_trigger_orders(market)):
            with self._boundary("list open trigger orders"):
                raw += await self._exchange.fetch_open_orders(
                    unified, None, None, {**family, "trigger": True}
                )
        reports = []
        for order in raw:
            order_market = self._exchange.market(order["symbol"])
            reports.append(
                order_report(
                    order,
                    list(order.get("trades") or ()),
                    client_order_id=order.get("clientOrderId") or str(order.get("id") or ""),
                    contract_size=self._contract_size(order_market),
                )
            )
        return reports

    async def exit_style(self, symbol: str) -> ExitStyle:
        """ORDERS where ``symbol``'s market takes reduce-only stop-loss and take-profit
        trigger orders (Binance USDⓈ-M: ``STOP_MARKET`` / ``TAKE_PROFIT_MARKET``), WATCHED
        elsewhere, spot included (why: see the module docstring).

        Raises:
            UnknownSymbolError, BrokerTemporaryError, BrokerPermanentError.
        """
        market = await self._market(symbol)
        return ExitStyle.ORDERS if self._holds_trigger_orders(market) else ExitStyle.WATCHED

    # --- orders ---------------------------------------------------------------------------

    async def place_order(self, request: OrderRequest) -> OrderReport:
        """Send ``request`` as one order under its client order id (see the module
        docstring for the exactly-once look-up and the checks made before sending).

        A market order's minimum value is checked at the ask (buy) or bid (sell). A
        request's ``stop_loss`` / ``take_profit`` are not sent with it: exits are separate
        orders. STOP and TAKE_PROFIT (``trigger_price``) go out as reduce-only trigger
        orders on ORDERS markets (:meth:`exit_style`) and are refused elsewhere; they are
        exempt, on contracts, from the minimum value. SignalDesk's own ``MAX_ORDER_*``
        caps are the pre-trade gate's (:mod:`core.services.gate`), not checked here.

        Raises:
            UnknownSymbolError; InvalidQuantityError (not positive, rounds to zero, outside
            the market's size limits); OrderRejectedError (below the market's minimum
            value, a trigger order on a WATCHED market or without a positive trigger
            price, refused by the exchange); InsufficientMarginError;
            BrokerTemporaryError (nothing was placed);
            BrokerAmbiguousError (the order may exist: look it up by client order id).
        """
        market = await self._market(request.symbol)
        if request.order_type.is_trigger and not self._holds_trigger_orders(market):
            raise OrderRejectedError(
                f"{self.name} holds no reduce-only stop or take-profit orders for "
                f"{request.symbol}; its exits are watched by SignalDesk"
            )
        existing = await self.get_order(request.client_order_id, request.symbol)
        if existing is not None:
            log.info(
                "order_already_at_broker", client_order_id=request.client_order_id, broker=self.name
            )
            return existing
        if request.order_type.is_trigger:
            return await self._submit_trigger(market, request)
        return await self._submit(market, request)

    async def cancel_order(self, client_order_id: str, symbol: str) -> OrderReport:
        """Cancel the resting order with this client order id and return its final report.

        The order is looked up first (as :meth:`get_order`); one already final is returned
        as it is. Otherwise ``cancel_order("", symbol, {<client id param>: id})`` (Binance
        spot ``DELETE /api/v3/order?origClientOrderId=...``; trigger orders with ccxt's
        ``trigger`` parameter, USDⓈ-M ``DELETE /fapi/v1/algoOrder?clientAlgoId=...``), then
        the order is read again: CANCELLED, or FILLED with its fills when it filled or
        triggered before the cancel arrived (the exchange then answers ``-2011 Unknown
        order sent.``, ccxt's ``OrderNotFound``).

        Raises:
            OrderNotFoundError (no order with this id); UnknownSymbolError;
            BrokerTemporaryError (the cancel may not have happened, or the order still
            shows open after it: safe to retry); BrokerPermanentError.
        """
        market = await self._market(symbol)
        found = await self._lookup(client_order_id, market)
        if found is None:
            raise OrderNotFoundError(f"{self.name} has no order {client_order_id} in {symbol}")
        order, trigger = found
        if order.get("status") == "open":
            params: dict[str, Any] = {self._client_id_param(): client_order_id}
            if trigger:
                params["trigger"] = True
            log.info("order_cancelling", client_order_id=client_order_id, broker=self.name)
            try:
                await self._exchange.cancel_order("", market["symbol"], params)
            except self._errors.OrderNotFound:
                log.info("order_final_before_cancel", client_order_id=client_order_id)
            except self._errors.BaseError as exc:
                action = f"cancel order {client_order_id}"
                raise translate_error(exc, broker=self.name, action=action, placing=False) from exc
            order, trigger = await self._lookup(client_order_id, market) or found
            if order.get("status") == "open":
                raise BrokerTemporaryError(
                    f"{self.name} still shows order {client_order_id} open after cancelling "
                    "it; try again"
                )
        return await self._report(order, market, client_order_id, trigger=trigger)

    async def close_position(
        self,
        symbol: str,
        client_order_id: str,
        quantity: Decimal | None = None,
        position_ref: str = "",
    ) -> OrderReport | None:
        """Close ``symbol``'s position, all of it or ``quantity`` base units of it, with one
        market order under ``client_order_id``. ``position_ref`` is ignored (one position
        per symbol).

        Derivatives: a ``reduceOnly`` market order for the net position, or for
        ``quantity`` capped at it. Spot: a market sell of the base currency's *free*
        balance (amounts locked in open orders stay), or of ``quantity`` capped at it. The
        amount is rounded down to the market's size step. None when there is nothing to
        close (flat, or only unsellable dust). An id the exchange already holds returns
        that order.

        Raises:
            like :meth:`place_order`; InvalidQuantityError when ``quantity`` is not
            positive or rounds below the market's minimum size.
        """
        market = await self._market(symbol)
        if quantity is not None and quantity <= 0:
            raise InvalidQuantityError(f"quantity must be positive, got {plain(quantity)}")
        existing = await self.get_order(client_order_id, symbol)
        if existing is not None:
            return existing
        if self._derivatives:
            held = sum(
                (p.quantity for p in await self._derivative_positions([market["symbol"]])), ZERO
            )
            if held == 0:
                return None
            side = Side.SELL if held > 0 else Side.BUY
            amount = abs(held)
        else:
            _, free, _ = await self._spot_book(marks=False)
            amount = free.get(market["base"], ZERO)
            quote = await self.quote(symbol) if amount > 0 else None
            if quote is None or self._is_dust(market, amount, quote.bid):
                return None
            side = Side.SELL
        request = OrderRequest(
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            quantity=amount if quantity is None else min(quantity, amount),
            reduce_only=True,
        )
        return await self._submit(market, request)

    async def close(self) -> None:
        """Close the exchange's HTTP session (``exchange.close()``)."""
        await self._exchange.close()

    # --- internals ------------------------------------------------------------------------

    async def _load_markets(self) -> None:
        """``load_markets`` once, under a lock (concurrent first calls wait for one load)."""
        if self._markets_loaded:
            return
        async with self._markets_lock:
            if not self._markets_loaded:
                with self._boundary("load the markets"):
                    await self._exchange.load_markets()
                self._markets_loaded = True

    async def _market(self, symbol: str) -> Any:
        """ccxt's market structure for ``symbol``; UnknownSymbolError when not traded."""
        await self._load_markets()
        with self._boundary(f"find market {symbol}"):
            return self._exchange.market(symbol)

    async def _submit(self, market: Any, request: OrderRequest) -> OrderReport:
        """Round, check and send ``request`` (its id is known not to exist yet)."""
        sized = self._sized(market, request.quantity)
        if request.order_type is OrderType.LIMIT:
            price = self._limit_price(market, request.limit_price)
        else:
            quote = await self.quote(request.symbol)
            price = quote.ask if request.side is Side.BUY else quote.bid
        self._check_value(market, sized.quantity, price, reducing=request.reduce_only)
        params: dict[str, Any] = {"clientOrderId": request.client_order_id}
        if request.reduce_only and market.get("contract"):
            params["reduceOnly"] = True
        limit = str(price) if request.order_type is OrderType.LIMIT else None
        return await self._create(market, request, sized, limit, params)

    async def _submit_trigger(self, market: Any, request: OrderRequest) -> OrderReport:
        """Send a STOP or TAKE_PROFIT as a reduce-only trigger market order (its id is known
        not to exist yet; the market is known to hold trigger orders)."""
        if request.trigger_price is None or request.trigger_price <= 0:
            raise OrderRejectedError(
                f"a {request.order_type.value} order needs a positive trigger price"
            )
        sized = self._sized(market, request.quantity)
        with self._boundary("round the trigger price", placing=True):
            trigger = self._exchange.price_to_precision(
                market["symbol"], str(request.trigger_price)
            )
        params: dict[str, Any] = {
            "clientOrderId": request.client_order_id,
            "reduceOnly": True,
            _TRIGGER_PARAM[request.order_type]: trigger,
        }
        return await self._create(market, request, sized, None, params)

    async def _create(
        self,
        market: Any,
        request: OrderRequest,
        sized: _Sized,
        limit: str | None,
        params: Mapping[str, Any],
    ) -> OrderReport:
        """``create_order`` (a trigger order goes as a ``market`` order with its trigger
        param) and the report of the answer."""
        kind = "market" if request.order_type.is_trigger else request.order_type.value
        log.info(
            "order_sending",
            client_order_id=request.client_order_id,
            broker=self.name,
            symbol=request.symbol,
            side=request.side.value,
            amount=sized.amount,
            type=request.order_type.value,
        )
        with self._boundary(f"place order {request.client_order_id}", placing=True):
            order = await self._exchange.create_order(
                market["symbol"], kind, request.side.value, sized.amount, limit, dict(params)
            )
        trigger = request.order_type.is_trigger
        return await self._report(order, market, request.client_order_id, trigger=trigger)

    def _client_id_param(self) -> str:
        """The ``fetch_order``/``cancel_order`` parameter that carries a client order id."""
        return _CLIENT_ID_LOOKUP_PARAM.get(self._exchange.id, "clientOrderId")

    def _holds_trigger_orders(self, market: Any) -> bool:
        """True where the exchange holds reduce-only STOP / TAKE_PROFIT orders for
        ``market`` (the rule of the module docstring)."""
        has = self._exchange.has
        if not market.get("contract") or market.get("inverse"):
            return False
        if not (has.get("createStopLossOrder") and has.get("createTakeProfitOrder")):
            return False
        listed = (market.get("info") or {}).get("orderTypes")
        return listed is None or all(kind in listed for kind in _TRIGGER_ORDER_TYPES)

    async def _lookup(self, client_order_id: str, market: Any) -> tuple[Any, bool] | None:
        """``(ccxt order, is a trigger order)`` for this client order id, or None: the
        plain orders first, then, on ORDERS markets, the trigger orders."""
        order = await self._fetch_by_client_id(client_order_id, market, trigger=False)
        if order is not None:
            return order, False
        if self._holds_trigger_orders(market):
            order = await self._fetch_by_client_id(client_order_id, market, trigger=True)
            if order is not None:
                return order, True
        return None

    async def _fetch_by_client_id(
        self, client_order_id: str, market: Any, *, trigger: bool
    ) -> Any | None:
        params: dict[str, Any] = {self._client_id_param(): client_order_id}
        if trigger:
            params["trigger"] = True
        try:
            return await self._exchange.fetch_order("", market["symbol"], params)
        except self._errors.OrderNotFound:
            return None
        except self._errors.BaseError as exc:
            action = f"look up order {client_order_id}"
            raise translate_error(exc, broker=self.name, action=action, placing=False) from exc

    async def _spot_entry(self, market: Any, held: Decimal) -> Decimal | None:
        """The average cost of ``held`` base units from the account's own trades in
        ``market`` (the rule of :meth:`positions`); None when they do not explain it."""
        if not self._exchange.has.get("fetchMyTrades"):
            return None
        try:
            with self._boundary(f"read the {market['symbol']} trades"):
                trades = await self._exchange.fetch_my_trades(market["symbol"], None, _TRADES_PAGE)
        except BrokerError as exc:
            log.warning("spot_entry_unread", symbol=market["symbol"], error=str(exc))
            return None
        if len(trades) >= _TRADES_PAGE:
            return None  # older trades missing: the walk would not start flat
        step = dec((market.get("precision") or {}).get("amount")) or ZERO
        return spot_average_entry(trades, market["base"], held, step)

    def _sized(self, market: Any, quantity: Decimal, *, check_max: bool = True) -> _Sized:
        """Round ``quantity`` (base units) down to the market's amount step and check it
        against the market's minimum (and, with ``check_max``, maximum) size."""
        symbol, base = market["symbol"], market["base"]
        if quantity <= 0:
            raise InvalidQuantityError(f"quantity must be positive, got {plain(quantity)} {base}")
        size = self._contract_size(market)
        try:
            amount = self._exchange.amount_to_precision(symbol, str(quantity / size))
        except self._errors.InvalidOrder as exc:
            step = dec(market["precision"].get("amount"))
            raise InvalidQuantityError(
                f"quantity {plain(quantity)} {base} rounds to zero at {symbol}'s size step of "
                f"{plain(step * size) if step is not None else '?'} {base}"
            ) from exc
        rounded = Decimal(amount) * size
        limits = market["limits"]["amount"]
        minimum, maximum = dec(limits.get("min")), dec(limits.get("max"))
        if minimum is not None and rounded < minimum * size:
            raise InvalidQuantityError(
                f"quantity {plain(rounded)} {base} is below {symbol}'s minimum order size of "
                f"{plain(minimum * size)} {base}"
            )
        if check_max and maximum is not None and rounded > maximum * size:
            raise InvalidQuantityError(
                f"quantity {plain(rounded)} {base} is above {symbol}'s maximum order size of "
                f"{plain(maximum * size)} {base}"
            )
        return _Sized(amount=amount, quantity=rounded)

    def _limit_price(self, market: Any, limit_price: Decimal | None) -> Decimal:
        """``limit_price`` rounded to the market's tick (``price_to_precision``)."""
        if limit_price is None or limit_price <= 0:
            raise OrderRejectedError("a limit order needs a positive limit price")
        with self._boundary("round the limit price", placing=True):
            return Decimal(self._exchange.price_to_precision(market["symbol"], str(limit_price)))

    def _check_value(
        self,
        market: Any,
        quantity: Decimal,
        price: Decimal,
        *,
        reducing: bool = False,
    ) -> None:
        """Check ``quantity x price`` against the market's minimum value (Binance
        ``NOTIONAL``/``MIN_NOTIONAL``).

        A reducing order on a contract market is exempt from the minimum, as Binance
        USDⓈ-M exempts reduce-only orders (``-4164 ... unless you choose reduce only``), so
        a small remaining position can always be closed.
        """
        symbol, quote = market["symbol"], market["quote"]
        value = quantity * price
        minimum = dec(market["limits"]["cost"].get("min"))
        exempt = reducing and bool(market.get("contract"))
        if minimum is not None and value < minimum and not exempt:
            raise OrderRejectedError(
                f"order value {plain(value)} {quote} ({plain(quantity)} at {plain(price)}) is "
                f"below {symbol}'s minimum order value of {plain(minimum)} {quote}"
            )

    def _is_dust(self, market: Any, quantity: Decimal, price: Decimal) -> bool:
        """True when a sell of ``quantity`` at ``price`` would be refused as too small."""
        try:
            sized = self._sized(market, quantity, check_max=False)
            self._check_value(market, sized.quantity, price)
        except (InvalidQuantityError, OrderRejectedError):
            return True
        return False

    @staticmethod
    def _contract_size(market: Any) -> Decimal:
        """Base units per ccxt amount unit: ``contractSize`` on derivatives, 1 on spot."""
        if not market.get("contract"):
            return Decimal(1)
        if market.get("inverse"):
            raise OrderRejectedError(
                f"{market['symbol']} is an inverse contract; SignalDesk trades linear ones"
            )
        return dec(market.get("contractSize")) or Decimal(1)

    async def _spot_book(
        self, *, marks: bool = True
    ) -> tuple[dict[str, Decimal], dict[str, Decimal], dict[str, Decimal]]:
        """``(total by currency, free by currency, last price by symbol)`` of a spot
        account; the prices cover each held currency's market in the account currency."""
        with self._boundary("fetch the balance"):
            balance = await self._exchange.fetch_balance()
        totals = {code: dec_or_zero(v) for code, v in (balance.get("total") or {}).items()}
        free = {code: dec_or_zero(v) for code, v in (balance.get("free") or {}).items()}
        if not marks:
            return totals, free, {}
        symbols = [
            symbol
            for code, amount in totals.items()
            if amount > 0
            and code != self.account_currency
            and (symbol := f"{code}/{self.account_currency}") in self._exchange.markets
            and self._exchange.markets[symbol].get("spot")
        ]
        return totals, free, await self._last_prices(symbols)

    async def _last_prices(self, symbols: Sequence[str]) -> dict[str, Decimal]:
        """Last price of each symbol: one ``fetch_tickers`` call where the venue has it."""
        if not symbols:
            return {}
        if self._exchange.has.get("fetchTickers"):
            with self._boundary("fetch tickers"):
                tickers = await self._exchange.fetch_tickers(list(symbols))
        else:
            tickers = {}
            for symbol in symbols:
                with self._boundary(f"fetch the {symbol} ticker"):
                    tickers[symbol] = await self._exchange.fetch_ticker(symbol)
        return {symbol: self._quote(symbol, tickers[symbol]).last for symbol in symbols}

    async def _derivative_positions(self, symbols: list[str] | None) -> list[Position]:
        """``fetch_positions``, netted per symbol, in base units."""
        with self._boundary("fetch positions"):
            raw = await self._exchange.fetch_positions(symbols)
        net: dict[str, list[Any]] = {}
        for entry in raw:
            if dec_or_zero(entry.get("contracts")) != 0:
                net.setdefault(entry["symbol"], []).append(entry)
        positions = []
        for symbol, entries in sorted(net.items()):
            size = self._contract_size(self._exchange.market(symbol))
            signed = [
                (
                    _signed_contracts(e) * size,
                    dec_or_zero(e.get("entryPrice")),
                )
                for e in entries
            ]
            quantity = sum((q for q, _ in signed), ZERO)
            if quantity == 0:
                continue
            same_side = [(q, p) for q, p in signed if (q > 0) == (quantity > 0)]
            held = sum((abs(q) for q, _ in same_side), ZERO)
            entry_price = sum((abs(q) * p for q, p in same_side), ZERO) / held
            mark = dec(entries[0].get("markPrice"))
            if mark is None:
                mark = (await self.quote(symbol)).last
            positions.append(
                Position(
                    symbol=symbol,
                    quantity=quantity,
                    average_entry=entry_price,
                    mark_price=mark,
                    realized_pnl=sum((dec_or_zero(e.get("realizedPnl")) for e in entries), ZERO),
                    unrealized_pnl=sum(
                        (dec_or_zero(e.get("unrealizedPnl")) for e in entries), ZERO
                    ),
                )
            )
        return positions

    async def _report(
        self,
        order: Any,
        market: Any,
        client_order_id: str,
        note: str = "",
        *,
        trigger: bool = False,
    ) -> OrderReport:
        """:func:`order_report` of a ccxt order. When the order has fills but the answer
        carried no trades (Binance ``GET /api/v3/order``), they are read with
        ``fetch_my_trades`` from the order's time on, kept where ``trade["order"]`` is the
        order's id. A triggered trigger order that names the order it placed
        (``info["actualOrderId"]``, Binance's Algo Order API) reports that order's status,
        amounts and fills under its own id, type and trigger price. Failing to read them
        never fails the report: the order's own figures stand, and the reason says the
        fills are missing."""
        notes = [note] if note else []
        actual = str((order.get("info") or {}).get("actualOrderId") or "")
        if trigger and actual and order.get("status") != "open":
            try:
                with self._boundary(f"read the order placed by {client_order_id}"):
                    placed = await self._exchange.fetch_order(actual, market["symbol"])
                order = {
                    **order,
                    **{
                        key: placed.get(key)
                        for key in ("status", "filled", "average", "cost", "trades", "timestamp")
                    },
                    "lastTradeTimestamp": placed.get("lastTradeTimestamp"),
                }
            except BrokerError as exc:
                log.warning("order_fills_unread", client_order_id=client_order_id, error=str(exc))
                notes.append(f"the order it placed was not read: {exc}")
        trades = list(order.get("trades") or ())
        fills_of = actual or str(order.get("id") or "")
        if (
            not trades
            and dec_or_zero(order.get("filled")) > 0
            and fills_of
            and self._exchange.has.get("fetchMyTrades")
        ):
            try:
                with self._boundary(f"read the fills of order {client_order_id}"):
                    raw = await self._exchange.fetch_my_trades(
                        market["symbol"], order.get("timestamp")
                    )
                trades = [t for t in raw if str(t.get("order")) == fills_of]
            except BrokerError as exc:
                log.warning("order_fills_unread", client_order_id=client_order_id, error=str(exc))
                notes.append(f"fills not read: {exc}")
        return order_report(
            order,
            trades,
            client_order_id=client_order_id,
            contract_size=self._contract_size(market),
            note="; ".join(notes),
        )

    def _quote(self, symbol: str, ticker: Mapping[str, Any]) -> Quote:
        last = dec(ticker.get("last")) or dec(ticker.get("close"))
        bid, ask = dec(ticker.get("bid")), dec(ticker.get("ask"))
        if last is None and bid is not None and ask is not None:
            last = (bid + ask) / 2
        if last is None:
            raise BrokerTemporaryError(f"{self.name} has no price for {symbol} right now")
        return Quote(
            symbol=symbol,
            bid=bid or last,
            ask=ask or last,
            last=last,
            at=from_epoch_ms(ticker.get("timestamp")) or utcnow(),
        )

    @contextmanager
    def _boundary(self, action: str, *, placing: bool = False) -> Iterator[None]:
        """Translate ccxt exceptions raised inside the block (see the module docstring)."""
        try:
            yield
        except self._errors.BaseError as exc:
            raise translate_error(exc, broker=self.name, action=action, placing=placing) from exc


def translate_error(exc: BaseException, *, broker: str, action: str, placing: bool) -> BrokerError:
    """SignalDesk's error for a ccxt exception (the table in the module docstring; pure).

    Args:
        exc: an instance of ``ccxt.BaseError``.
        broker: the broker's name, for the message ("ccxt:binance").
        action: what was being done, completing "could not ...".
        placing: the request was an order placement, where a lost answer is ambiguous.
    """
    _, errors = _import_ccxt()
    text = f"{broker} could not {action}: {_brief(exc)}"
    if isinstance(exc, errors.BadSymbol):
        return UnknownSymbolError(text)
    if placing and DUPLICATE_ID.search(str(exc)):
        return BrokerAmbiguousError(
            f"{text}; the exchange already holds this client order id, so an order may "
            "exist: reconcile it by client order id"
        )
    if isinstance(exc, errors.InsufficientFunds):
        return InsufficientMarginError(text)
    if isinstance(exc, errors.AuthenticationError):
        return BrokerPermanentError(
            f"{broker} refused the API key ({type(exc).__name__}) when trying to {action}: "
            "check CCXT_API_KEY, CCXT_SECRET and CCXT_PASSWORD, that the key may trade and "
            "allows this IP, and CCXT_SANDBOX (testnet keys work only on the testnet). "
            f"{_brief(exc)}"
        )
    if isinstance(exc, errors.InvalidOrder):
        return OrderRejectedError(text)
    answered_no = (
        errors.RateLimitExceeded,
        errors.DDoSProtection,
        errors.InvalidNonce,
        errors.OnMaintenance,
    )
    if isinstance(exc, answered_no) or _never_sent(exc):
        return BrokerTemporaryError(f"{text} (nothing was done; safe to retry)")
    # a transport failure after sending: ccxt's NetworkError/BadResponse family, or an
    # ExchangeError raised from an aiohttp error (a broken answer body)
    in_flight = isinstance(exc, errors.OperationFailed) or (
        isinstance(exc, errors.ExchangeError) and exc.__cause__ is not None
    )
    if placing and in_flight:
        return BrokerAmbiguousError(
            f"{text}; the order may or may not exist: reconcile it by client order id"
        )
    if in_flight:
        return BrokerTemporaryError(text)
    if placing:
        return OrderRejectedError(text)
    return BrokerPermanentError(text)


def _never_sent(exc: BaseException) -> bool:
    """True when ccxt's transport error happened before the request left: DNS failure or
    a refused connection (aiohttp's ``ClientConnectorError``, an ``OSError`` at connect)."""
    return isinstance(exc.__cause__, socket.gaierror | aiohttp.ClientConnectorError)


def _signed_contracts(entry: Mapping[str, Any]) -> Decimal:
    """A ccxt position's ``contracts``, negative for ``side == "short"``."""
    contracts = dec_or_zero(entry.get("contracts"))
    return -contracts if entry.get("side") == "short" else contracts


def order_report(
    order: Mapping[str, Any],
    trades: Sequence[Mapping[str, Any]],
    *,
    client_order_id: str,
    contract_size: Decimal = Decimal(1),
    note: str = "",
) -> OrderReport:
    """SignalDesk's report of a ccxt unified order structure and its trades (pure).

    ``status`` open/closed/canceled/expired/rejected -> OPEN/FILLED/CANCELLED/CANCELLED/
    FAILED (no status -> SUBMITTED); amounts times ``contract_size`` give base units; each
    trade becomes a :class:`~core.domain.Fill`. The report's fee is the sum of the fees in
    the first fee currency met (each fill keeps its own).
    """
    symbol = order["symbol"]
    side = Side(order["side"])
    state = _STATES.get(order.get("status") or "", OrderState.SUBMITTED)
    order_time = from_epoch_ms(order.get("lastTradeTimestamp")) or from_epoch_ms(
        order.get("timestamp")
    )
    fills = tuple(
        _fill(trade, client_order_id, symbol, side, contract_size, order_time) for trade in trades
    )
    filled = dec_or_zero(order.get("filled")) * contract_size
    if filled == 0 and fills:
        filled = sum((f.quantity for f in fills), ZERO)
    average = dec(order.get("average"))
    if average is None and filled > 0:
        cost = dec(order.get("cost"))
        if cost:
            average = cost / filled
        elif fills:
            average = sum((f.quantity * f.price for f in fills), ZERO) / filled
    if fills:
        fee_currency = next((f.fee_currency for f in fills if f.fee_currency), "")
        fee = sum((f.fee for f in fills if f.fee_currency == fee_currency), ZERO)
    else:
        raw_fee = order.get("fee") or {}
        fee, fee_currency = dec_or_zero(raw_fee.get("cost")), raw_fee.get("currency") or ""
    trigger_price = dec(order.get("triggerPrice")) or dec(order.get("stopLossPrice"))
    if order.get("takeProfitPrice"):
        order_type = OrderType.TAKE_PROFIT
        trigger_price = dec(order.get("takeProfitPrice"))
    elif trigger_price:
        order_type = OrderType.STOP
    elif order.get("type") == "limit":
        order_type = OrderType.LIMIT
    else:
        order_type = OrderType.MARKET
    reasons = [note] if note else []
    if state is OrderState.FAILED:
        reasons.insert(0, "rejected by the exchange")
    return OrderReport(
        client_order_id=order.get("clientOrderId") or client_order_id,
        symbol=symbol,
        side=side,
        quantity=dec_or_zero(order.get("amount")) * contract_size,
        state=state,
        broker_order_id=str(order.get("id") or ""),
        order_type=order_type,
        limit_price=dec(order.get("price")) if order_type is OrderType.LIMIT else None,
        filled_quantity=filled,
        average_price=average,
        fee=fee,
        fee_currency=fee_currency,
        fills=fills,
        reason="; ".join(reasons),
        trigger_price=trigger_price or None,
    )


def spot_average_entry(
    trades: Sequence[Mapping[str, Any]], base: str, held: Decimal, step: Decimal
) -> Decimal | None:
    """The average entry (quote per base unit) of ``held`` base units bought through
    ``trades`` (ccxt trade structures, oldest first; pure).

    Average cost: a buy adds its amount less any fee taken in ``base`` at its price; a
    sell takes coins out at the running average (its own price does not change the
    entry). None when the trades do not explain the holding: a sell of more than was
    bought (older trades missing), or ``held`` more than one size ``step`` above what the
    trades leave (coins deposited or transferred in).
    """
    quantity, cost = ZERO, ZERO
    for trade in trades:
        amount, price = dec_or_zero(trade.get("amount")), dec_or_zero(trade.get("price"))
        if trade.get("side") == "buy":
            fee = trade.get("fee") or {}
            if fee.get("currency") == base:
                amount -= dec_or_zero(fee.get("cost"))
            quantity += amount
            cost += amount * price
        else:
            if amount > quantity:
                return None
            cost -= cost * amount / quantity if quantity else ZERO
            quantity -= amount
    if quantity <= 0 or held > quantity + step:
        return None
    return cost / quantity


def _fill(
    trade: Mapping[str, Any],
    client_order_id: str,
    symbol: str,
    side: Side,
    contract_size: Decimal,
    order_time: datetime | None,
) -> Fill:
    fee = trade.get("fee") or {}
    return Fill(
        client_order_id=client_order_id,
        symbol=symbol,
        side=Side(trade.get("side") or side),
        quantity=dec_or_zero(trade.get("amount")) * contract_size,
        price=dec_or_zero(trade.get("price")),
        fee=dec_or_zero(fee.get("cost")),
        fee_currency=fee.get("currency") or "",
        at=from_epoch_ms(trade.get("timestamp")) or order_time or utcnow(),
        broker_fill_id=str(trade.get("id") or ""),
    )
