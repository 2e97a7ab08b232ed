"""A local fake of Binance's spot REST API, for offline tests that run ccxt's real code.

ccxt talks to it over real HTTP on 127.0.0.1, so its request signing, response parsing and
error mapping (Binance's JSON error bodies included) all run as they would against
Binance. A ready :class:`~core.brokers.ccxt_broker.CcxtBroker` comes from the fake::

    from tests.support import binance_fake

    async with binance_fake.running() as fake:
        broker = fake.broker()                      # closed when the block ends
        await broker.place_order(OrderRequest("id-1", "BTC/USDT", Side.BUY, Decimal("0.01")))
        fake.set_price("BTC/USDT", "61000")
        fake.fail_next("POST", "/api/v3/order", *binance_fake.INSUFFICIENT_BALANCE)
        fake.stall_next("POST", "/api/v3/order", 1.0, process=True)   # order made, answer lost
        fake.before_next("DELETE", "/api/v3/order", lambda: ...)       # a race, made exact

Served (the shapes of Binance's spot API, ``/api/v3``): ``GET /time``, ``GET /exchangeInfo``
(``PRICE_FILTER``, ``LOT_SIZE``, ``MARKET_LOT_SIZE``, ``NOTIONAL`` filters),
``GET /ticker/24hr``, ``GET /ticker/price``, ``GET /ticker/bookTicker``, and the signed
``GET /account``, ``POST /order`` (ACK/RESULT/FULL answers), ``GET /order`` (by
``orderId`` or ``origClientOrderId``), ``DELETE /order`` (cancel a resting order; ``-2011
Unknown order sent.`` for an unknown or final one), ``GET /openOrders`` and
``GET /myTrades``. Signed endpoints want the ``X-MBX-APIKEY`` header to be :data:`API_KEY`
and a ``signature`` parameter (any value). Markets: BTC, ETH, SOL and BNB against USDT.

USDⓈ-M perpetuals (``/fapi``, for ``market_type="swap"`` brokers; see :class:`_UsdmFutures`):
``GET /fapi/v1/exchangeInfo``, ``/fapi/v1/ticker/24hr``, and the signed
``/fapi/v1/leverageBracket``, ``/fapi/v3/positionRisk``, ``/fapi/v3/account``,
``POST``/``GET``/``DELETE /fapi/v1/order`` (market orders, ``reduceOnly``, partial
reduce-only closes; conditional types answer ``-4120``, as Binance does since they moved to
the Algo Order API), ``GET /fapi/v1/openOrders``, ``/fapi/v1/userTrades``, and the Algo
Order API for ``STOP_MARKET`` / ``TAKE_PROFIT_MARKET`` orders: ``POST``/``GET``/``DELETE
/fapi/v1/algoOrder`` (by ``clientAlgoId`` or ``algoId``) and ``GET /fapi/v1/openAlgoOrders``.
A resting algo order triggers when :meth:`BinanceFake.set_price` moves the last price
through its trigger (a sell stop at or below it, a sell take profit at or above it; the
reverse for buys): it places a reduce-only market order (``actualOrderId``) that fills at
the new last price, which is the trigger when the price moved to it and beyond it when the
price gapped, capped at the position held, ``EXPIRED`` when there is none to reduce.
Triggering one never cancels another (Binance does not either).

Spot matching: a market order fills at once at the ask (buy) or bid (sell); a limit order fills
at the ask/bid when marketable, else rests ``NEW`` with its funds locked. The taker
commission (:attr:`BinanceFake.commission`, 0.1 %) is charged in the asset received, as
Binance does without BNB. Order checks, in Binance's order: unknown symbol (``-1121``),
``LOT_SIZE``, ``PRICE_FILTER``, ``NOTIONAL`` (``-1013``), duplicate open client id
(:data:`DUPLICATE_ORDER`) and balance (``-2010``). On USDⓈ-M a client id that an open order
or algo order holds answers :data:`DUPLICATE_CLIENT_ID` (``-4116``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import SecretStr

if TYPE_CHECKING:
    from core.brokers.ccxt_broker import CcxtBroker

__all__ = [
    "API_KEY",
    "BAD_API_KEY",
    "DEFAULT_SYMBOLS",
    "DUPLICATE_CLIENT_ID",
    "DUPLICATE_ORDER",
    "INSUFFICIENT_BALANCE",
    "INTERNAL_ERROR",
    "MIN_NOTIONAL_FAILURE",
    "ORDER_DOES_NOT_EXIST",
    "RATE_LIMITED",
    "SECRET",
    "UNKNOWN_ORDER",
    "BinanceFake",
    "SymbolSpec",
    "running",
]

API_KEY = "fake-binance-api-key"
SECRET = "fake-binance-secret"

# Binance's error answers as (HTTP status, code, msg), for fail_next(method, path, *error).
INSUFFICIENT_BALANCE = (400, -2010, "Account has insufficient balance for requested action.")
MIN_NOTIONAL_FAILURE = (400, -1013, "Filter failure: NOTIONAL")
ORDER_DOES_NOT_EXIST = (400, -2013, "Order does not exist.")
UNKNOWN_ORDER = (400, -2011, "Unknown order sent.")
DUPLICATE_ORDER = (400, -2010, "Duplicate order sent.")
DUPLICATE_CLIENT_ID = (400, -4116, "ClientOrderId is duplicated.")
BAD_API_KEY = (401, -2015, "Invalid API-key, IP, or permissions for action.")
RATE_LIMITED = (
    429,
    -1003,
    "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute. "
    "Please use the websocket for live updates to avoid polling the API.",
)
INTERNAL_ERROR = (503, -1001, "Internal error; unable to process your request. Please try again.")


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """One spot market as ``/api/v3/exchangeInfo`` lists it; sizes in base units, prices
    and notionals in quote currency."""

    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal

    @property
    def symbol(self) -> str:
        """Binance's id, e.g. ``BTCUSDT``."""
        return self.base + self.quote


DEFAULT_SYMBOLS = (
    SymbolSpec(
        "BTC",
        "USDT",
        Decimal("0.01"),
        Decimal("0.00001"),
        Decimal("0.00001"),
        Decimal(9000),
        Decimal(5),
    ),
    SymbolSpec(
        "ETH",
        "USDT",
        Decimal("0.01"),
        Decimal("0.0001"),
        Decimal("0.0001"),
        Decimal(9000),
        Decimal(5),
    ),
    SymbolSpec(
        "SOL",
        "USDT",
        Decimal("0.01"),
        Decimal("0.001"),
        Decimal("0.001"),
        Decimal(90000),
        Decimal(5),
    ),
    SymbolSpec(
        "BNB",
        "USDT",
        Decimal("0.01"),
        Decimal("0.001"),
        Decimal("0.001"),
        Decimal(90000),
        Decimal(5),
    ),
)

#: USDⓈ-M perpetuals (``/fapi/v1/exchangeInfo``): BTCUSDT, ETHUSDT and SOLUSDT, 100, 20 and
#: 5 USDT minimum notional (reduce-only orders exempt, as on Binance).
DEFAULT_PERPETUALS = (
    SymbolSpec(
        "BTC",
        "USDT",
        Decimal("0.10"),
        Decimal("0.001"),
        Decimal("0.001"),
        Decimal(1000),
        Decimal(100),
    ),
    SymbolSpec(
        "ETH",
        "USDT",
        Decimal("0.01"),
        Decimal("0.001"),
        Decimal("0.001"),
        Decimal(10000),
        Decimal(20),
    ),
    SymbolSpec(
        "SOL",
        "USDT",
        Decimal("0.01"),
        Decimal("1"),
        Decimal("1"),
        Decimal(100000),
        Decimal(5),
    ),
)


@dataclass(slots=True)
class _Fault:
    """An injected behaviour for the next request to one endpoint."""

    error: tuple[int, int, str] | None = None
    stall: float = 0.0
    process: bool = False
    before: Callable[[], None] | None = None


@dataclass(slots=True)
class _Order:
    spec: SymbolSpec
    order_id: int
    client_order_id: str
    side: str
    type: str
    quantity: Decimal
    price: Decimal
    time_in_force: str
    created_ms: int
    status: str = "NEW"
    executed: Decimal = Decimal(0)
    quote_executed: Decimal = Decimal(0)
    updated_ms: int = 0
    fills: list[dict[str, Any]] = field(default_factory=list)
    reduce_only: bool = False


@dataclass(slots=True)
class _AlgoOrder:
    """A USDⓈ-M conditional order of the Algo Order API (``STOP_MARKET`` /
    ``TAKE_PROFIT_MARKET``)."""

    spec: SymbolSpec
    algo_id: int
    client_algo_id: str
    side: str
    order_type: str
    quantity: Decimal
    trigger_price: Decimal
    reduce_only: bool
    created_ms: int
    status: str = "NEW"
    updated_ms: int = 0
    trigger_ms: int = 0
    actual_order_id: int | None = None

    def triggers_at(self, last: Decimal) -> bool:
        """True when ``last`` is at or through the trigger (Binance's CONTRACT_PRICE)."""
        stop = self.order_type == "STOP_MARKET"
        if (self.side == "SELL") == stop:  # a sell stop or a buy take profit: price falls
            return last <= self.trigger_price
        return last >= self.trigger_price


class _BinanceError(Exception):
    def __init__(self, error: tuple[int, int, str]) -> None:
        super().__init__(error[2])
        self.error = error


def _fmt(value: Decimal) -> str:
    """Binance prints amounts and prices with 8 decimals."""
    return f"{value:.8f}"


def _missing(name: str) -> tuple[int, int, str]:
    """Binance's answer to a request without a mandatory parameter."""
    return (400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _binance_id(symbol: str) -> str:
    """``BTCUSDT`` for ``BTC/USDT`` or ``BTCUSDT``."""
    return symbol.replace("/", "")


class _UsdmFutures:
    """Binance USDⓈ-M futures (``/fapi``) for ccxt's ``swap`` markets: a one-way-mode
    account in USDT with one signed position per symbol, cross margin at :attr:`leverage`,
    a 0.05 % taker fee and realized PnL booked to the wallet when a position shrinks."""

    def __init__(self, exchange: BinanceFake, wallet: Decimal, symbols: tuple[SymbolSpec, ...]):
        self.exchange = exchange
        self.specs = {spec.symbol: spec for spec in symbols}
        self.wallet = wallet
        self.leverage = 20
        self.commission = Decimal("0.0005")
        self.positions: dict[str, tuple[Decimal, Decimal]] = {}  # symbol -> (amount, entry)
        self.orders: dict[int, _Order] = {}
        self.algo_orders: dict[int, _AlgoOrder] = {}

    def routes(self, params: Mapping[str, str]) -> tuple[dict[Any, Any], dict[Any, Any]]:
        """``(public, signed)`` handlers by ``(method, path)``."""
        public = {
            ("GET", "/fapi/v1/time"): lambda: {"serverTime": _now_ms()},
            ("GET", "/fapi/v1/exchangeInfo"): self._exchange_info,
            ("GET", "/fapi/v1/ticker/24hr"): lambda: self._tickers(params),
        }
        signed = {
            ("GET", "/fapi/v1/leverageBracket"): self._leverage_brackets,
            ("GET", "/fapi/v3/positionRisk"): self._position_risk,
            ("GET", "/fapi/v3/account"): self._account,
            ("POST", "/fapi/v1/order"): self._new_order,
            ("GET", "/fapi/v1/order"): self._query_order,
            ("DELETE", "/fapi/v1/order"): self._cancel_order,
            ("GET", "/fapi/v1/openOrders"): self._open_orders,
            ("GET", "/fapi/v1/userTrades"): self._user_trades,
            ("POST", "/fapi/v1/algoOrder"): self._new_algo_order,
            ("GET", "/fapi/v1/algoOrder"): self._query_algo_order,
            ("DELETE", "/fapi/v1/algoOrder"): self._cancel_algo_order,
            ("GET", "/fapi/v1/openAlgoOrders"): self._open_algo_orders,
        }
        return public, signed

    def trigger(self, symbol: str) -> None:
        """Trigger the resting algo orders of ``symbol`` that its last price has reached,
        each once, in the order they were placed."""
        last = self._mark(symbol)
        for algo in list(self.algo_orders.values()):
            if algo.spec.symbol != symbol or algo.status != "NEW" or not algo.triggers_at(last):
                continue
            held = self.positions.get(symbol, (Decimal(0), Decimal(0)))[0]
            reducible = held < 0 if algo.side == "BUY" else held > 0
            quantity = min(algo.quantity, abs(held)) if reducible else algo.quantity
            order = self._order(algo.spec, f"algo{algo.algo_id}", algo.side, quantity, True)
            if reducible:
                self._execute(order, last)
            else:
                order.status = "EXPIRED"  # a reduce-only order with nothing to reduce
            now = _now_ms()
            algo.status, algo.actual_order_id = "FINISHED", order.order_id
            algo.trigger_ms = algo.updated_ms = now

    def _spec(self, symbol: str) -> SymbolSpec:
        spec = self.specs.get(symbol)
        if spec is None:
            raise _BinanceError((400, -1121, "Invalid symbol."))
        return spec

    def _mark(self, symbol: str) -> Decimal:
        return self.exchange.books[symbol][2]

    def _unrealized(self, symbol: str) -> Decimal:
        amount, entry = self.positions[symbol]
        return (self._mark(symbol) - entry) * amount

    def _initial_margin(self, symbol: str) -> Decimal:
        return abs(self.positions[symbol][0]) * self._mark(symbol) / self.leverage

    def _exchange_info(self) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": _now_ms(),
            "futuresType": "U_MARGINED",
            "rateLimits": [],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": [self._symbol_info(spec) for spec in self.specs.values()],
        }

    @staticmethod
    def _symbol_info(spec: SymbolSpec) -> dict[str, Any]:
        return {
            "symbol": spec.symbol,
            "pair": spec.symbol,
            "contractType": "PERPETUAL",
            "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000,
            "status": "TRADING",
            "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000",
            "baseAsset": spec.base,
            "quoteAsset": spec.quote,
            "marginAsset": spec.quote,
            "pricePrecision": 2,
            "quantityPrecision": 3,
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "underlyingSubType": ["PoW"],
            "triggerProtect": "0.0500",
            "liquidationFee": "0.012500",
            "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": str(spec.tick_size),
                    "maxPrice": "4529764",
                    "tickSize": str(spec.tick_size),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": str(spec.min_qty),
                    "maxQty": str(spec.max_qty),
                    "stepSize": str(spec.step_size),
                },
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": str(spec.min_qty),
                    "maxQty": str(spec.max_qty),
                    "stepSize": str(spec.step_size),
                },
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MIN_NOTIONAL", "notional": str(spec.min_notional)},
                {
                    "filterType": "PERCENT_PRICE",
                    "multiplierUp": "1.0500",
                    "multiplierDown": "0.9500",
                    "multiplierDecimal": "4",
                },
            ],
            "orderTypes": [
                "LIMIT",
                "MARKET",
                "STOP",
                "STOP_MARKET",
                "TAKE_PROFIT",
                "TAKE_PROFIT_MARKET",
                "TRAILING_STOP_MARKET",
            ],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }

    def _tickers(self, params: Mapping[str, str]) -> Any:
        specs = [self._spec(params["symbol"])] if "symbol" in params else self.specs.values()
        now = _now_ms()
        tickers = [
            {
                "symbol": spec.symbol,
                "priceChange": "0.00",
                "priceChangePercent": "0.000",
                "weightedAvgPrice": str(self._mark(spec.symbol)),
                "lastPrice": str(self._mark(spec.symbol)),
                "lastQty": "0.010",
                "openPrice": str(self._mark(spec.symbol)),
                "highPrice": str(self._mark(spec.symbol)),
                "lowPrice": str(self._mark(spec.symbol)),
                "volume": "1000.000",
                "quoteVolume": "60000000.00",
                "openTime": now - 86_400_000,
                "closeTime": now,
                "firstId": 1,
                "lastId": 1000,
                "count": 1000,
            }
            for spec in specs
        ]
        return tickers[0] if "symbol" in params else tickers

    def _leverage_brackets(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        bracket = {
            "bracket": 1,
            "initialLeverage": 125,
            "notionalCap": 50000,
            "notionalFloor": 0,
            "maintMarginRatio": 0.004,
            "cum": 0.0,
        }
        return [{"symbol": symbol, "brackets": [bracket]} for symbol in self.specs]

    def _position_risk(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        rows = []
        for symbol, (amount, entry) in sorted(self.positions.items()):
            if amount == 0 or params.get("symbol") not in (None, symbol):
                continue
            margin = self._initial_margin(symbol)
            rows.append(
                {
                    "symbol": symbol,
                    "positionSide": "BOTH",
                    "positionAmt": str(amount),
                    "entryPrice": str(entry),
                    "breakEvenPrice": str(entry),
                    "markPrice": str(self._mark(symbol)),
                    "unRealizedProfit": str(self._unrealized(symbol)),
                    "liquidationPrice": "0",
                    "isolatedMargin": "0",
                    "notional": str(amount * self._mark(symbol)),
                    "marginAsset": "USDT",
                    "isolatedWallet": "0",
                    "initialMargin": str(margin),
                    "maintMargin": str(margin / 10),
                    "positionInitialMargin": str(margin),
                    "openOrderInitialMargin": "0",
                    "adl": 1,
                    "bidNotional": "0",
                    "askNotional": "0",
                    "updateTime": _now_ms(),
                }
            )
        return rows

    def _totals(self) -> tuple[Decimal, Decimal]:
        """``(unrealized PnL, initial margin)`` over the open positions."""
        open_symbols = [s for s, (amount, _) in self.positions.items() if amount != 0]
        unrealized = sum((self._unrealized(s) for s in open_symbols), Decimal(0))
        margin = sum((self._initial_margin(s) for s in open_symbols), Decimal(0))
        return unrealized, margin

    def _account(self, params: Mapping[str, str]) -> dict[str, Any]:
        unrealized, margin = self._totals()
        equity = self.wallet + unrealized
        asset = {
            "asset": "USDT",
            "walletBalance": str(self.wallet),
            "unrealizedProfit": str(unrealized),
            "marginBalance": str(equity),
            "maintMargin": str(margin / 10),
            "initialMargin": str(margin),
            "positionInitialMargin": str(margin),
            "openOrderInitialMargin": "0",
            "crossWalletBalance": str(self.wallet),
            "crossUnPnl": str(unrealized),
            "availableBalance": str(equity - margin),
            "maxWithdrawAmount": str(equity - margin),
            "updateTime": _now_ms(),
        }
        return {
            "totalInitialMargin": str(margin),
            "totalMaintMargin": str(margin / 10),
            "totalWalletBalance": str(self.wallet),
            "totalUnrealizedProfit": str(unrealized),
            "totalMarginBalance": str(equity),
            "totalPositionInitialMargin": str(margin),
            "totalOpenOrderInitialMargin": "0",
            "totalCrossWalletBalance": str(self.wallet),
            "totalCrossUnPnl": str(unrealized),
            "availableBalance": str(equity - margin),
            "maxWithdrawAmount": str(equity - margin),
            "assets": [asset],
            "positions": [],
        }

    def _new_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        spec = self._spec(params.get("symbol", ""))
        if params.get("type") in ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"):
            raise _BinanceError(
                (
                    400,
                    -4120,
                    "Order type not supported for this endpoint. Please use the Algo Order "
                    "API endpoints instead.",
                )
            )
        if params.get("type") != "MARKET":
            raise _BinanceError((400, -1116, "Invalid orderType."))
        quantity = self._quantity(spec, params)
        buy = params.get("side") == "BUY"
        reduce_only = params.get("reduceOnly", "false").lower() == "true"
        bid, ask, _ = self.exchange.books[spec.symbol]
        price = ask if buy else bid
        held, _ = self.positions.get(spec.symbol, (Decimal(0), Decimal(0)))
        if reduce_only and (held == 0 or (held > 0) == buy or quantity > abs(held)):
            raise _BinanceError((400, -2022, "ReduceOnly Order is rejected."))
        if not reduce_only and quantity * price < spec.min_notional:
            raise _BinanceError(
                (
                    400,
                    -4164,
                    f"Order's notional must be no smaller than {spec.min_notional} (unless you "
                    "choose reduce only).",
                )
            )
        opening = held == 0 or (held > 0) == buy
        unrealized, margin = self._totals()
        if opening and quantity * price / self.leverage > self.wallet + unrealized - margin:
            raise _BinanceError((400, -2019, "Margin is insufficient."))
        client_id = self._client_id(params.get("newClientOrderId"))
        order = self._order(spec, client_id, params["side"], quantity, reduce_only)
        self._execute(order, price)
        answer = self._order_json(order)
        answer.pop("time")
        return answer

    def _quantity(self, spec: SymbolSpec, params: Mapping[str, str]) -> Decimal:
        if "quantity" not in params:
            raise _BinanceError(_missing("quantity"))
        quantity = Decimal(params["quantity"])
        if quantity < spec.min_qty or quantity > spec.max_qty or quantity % spec.step_size:
            raise _BinanceError(
                (400, -1111, "Precision is over the maximum defined for this asset.")
            )
        return quantity

    def _client_id(self, wanted: str | None) -> str:
        """``wanted``, refused with -4116 while an open order or algo order holds it."""
        if wanted and (
            any(o.client_order_id == wanted and o.status == "NEW" for o in self.orders.values())
            or any(
                a.client_algo_id == wanted and a.status == "NEW" for a in self.algo_orders.values()
            )
        ):
            raise _BinanceError(DUPLICATE_CLIENT_ID)
        return wanted or f"fake{self.exchange._next_order_id + 1}"

    def _order(
        self, spec: SymbolSpec, client_id: str, side: str, quantity: Decimal, reduce_only: bool
    ) -> _Order:
        now = _now_ms()
        order = _Order(
            spec=spec,
            order_id=self.exchange.new_order_id(),
            client_order_id=client_id,
            side=side,
            type="MARKET",
            quantity=quantity,
            price=Decimal(0),
            time_in_force="GTC",
            created_ms=now,
            updated_ms=now,
            reduce_only=reduce_only,
        )
        self.orders[order.order_id] = order
        return order

    def _execute(self, order: _Order, price: Decimal) -> None:
        """Fill ``order`` at ``price``: move the position, book realized PnL and the fee."""
        spec, quantity, buy = order.spec, order.quantity, order.side == "BUY"
        held, entry = self.positions.get(spec.symbol, (Decimal(0), Decimal(0)))
        signed = quantity if buy else -quantity
        opening = held == 0 or (held > 0) == buy
        realized = Decimal(0)
        after = held + signed
        if opening:
            entry = (abs(held) * entry + quantity * price) / abs(after)
        else:
            closed = min(quantity, abs(held))
            realized = closed * (price - entry) * (1 if held > 0 else -1)
            if after == 0:
                entry = Decimal(0)
            elif (after > 0) != (held > 0):
                entry = price
        self.positions[spec.symbol] = (after, entry)
        fee = quantity * price * self.commission
        self.wallet += realized - fee
        now = _now_ms()
        order.status, order.executed, order.quote_executed = "FILLED", quantity, quantity * price
        order.updated_ms = now
        order.fills.append(
            {
                "price": str(price),
                "qty": str(quantity),
                "commission": str(fee),
                "commissionAsset": "USDT",
                "tradeId": self.exchange.new_trade_id(),
                "time": now,
                "realizedPnl": str(realized),
            }
        )

    def _cancel_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        order = self._find_order(params)
        if order is None or order.status != "NEW":
            raise _BinanceError(UNKNOWN_ORDER)
        order.status, order.updated_ms = "CANCELED", _now_ms()
        return self._order_json(order)

    def _open_orders(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        wanted = self._spec(params["symbol"]) if "symbol" in params else None
        return [
            self._order_json(o)
            for o in self.orders.values()
            if o.status == "NEW" and wanted in (None, o.spec)
        ]

    def _new_algo_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        spec = self._spec(params.get("symbol", ""))
        if params.get("algoType") != "CONDITIONAL":
            raise _BinanceError((400, -1116, "Invalid algoType."))
        kind = params.get("type", "")
        if kind not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise _BinanceError((400, -1116, "Invalid orderType."))
        if "triggerPrice" not in params:
            raise _BinanceError(_missing("triggerPrice"))
        trigger = Decimal(params["triggerPrice"])
        if trigger <= 0 or trigger % spec.tick_size:
            raise _BinanceError(
                (400, -1111, "Precision is over the maximum defined for this asset.")
            )
        quantity = self._quantity(spec, params)
        client_id = self._client_id(params.get("clientAlgoId"))
        now = _now_ms()
        algo = _AlgoOrder(
            spec=spec,
            algo_id=self.exchange.new_order_id(),
            client_algo_id=client_id,
            side=params.get("side", ""),
            order_type=kind,
            quantity=quantity,
            trigger_price=trigger,
            reduce_only=params.get("reduceOnly", "false").lower() == "true",
            created_ms=now,
            updated_ms=now,
        )
        if algo.triggers_at(self._mark(spec.symbol)):
            raise _BinanceError((400, -2021, "Order would immediately trigger."))
        self.algo_orders[algo.algo_id] = algo
        return self._algo_json(algo)

    def _find_algo(self, params: Mapping[str, str]) -> _AlgoOrder | None:
        spec = self._spec(params.get("symbol", ""))
        found = [
            a
            for a in self.algo_orders.values()
            if a.spec is spec
            and (
                a.client_algo_id == params.get("clientAlgoId")
                or str(a.algo_id) == params.get("algoId")
            )
        ]
        return found[-1] if found else None

    def _query_algo_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        algo = self._find_algo(params)
        if algo is None:
            raise _BinanceError(ORDER_DOES_NOT_EXIST)
        return self._algo_json(algo)

    def _cancel_algo_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        algo = self._find_algo(params)
        if algo is None or algo.status != "NEW":
            raise _BinanceError(UNKNOWN_ORDER)
        algo.status, algo.updated_ms = "CANCELED", _now_ms()
        return {
            "algoId": algo.algo_id,
            "clientAlgoId": algo.client_algo_id,
            "code": "200",
            "msg": "success",
        }

    def _open_algo_orders(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        wanted = self._spec(params["symbol"]) if "symbol" in params else None
        return [
            self._algo_json(a)
            for a in self.algo_orders.values()
            if a.status == "NEW" and wanted in (None, a.spec)
        ]

    def _algo_json(self, algo: _AlgoOrder) -> dict[str, Any]:
        actual = self.orders.get(algo.actual_order_id or 0)
        average = actual.quote_executed / actual.executed if actual and actual.executed else 0
        return {
            "algoId": algo.algo_id,
            "clientAlgoId": algo.client_algo_id,
            "algoType": "CONDITIONAL",
            "orderType": algo.order_type,
            "symbol": algo.spec.symbol,
            "side": algo.side,
            "positionSide": "BOTH",
            "timeInForce": "GTC",
            "quantity": str(algo.quantity),
            "algoStatus": algo.status,
            "actualOrderId": str(algo.actual_order_id or ""),
            "actualPrice": str(average),
            "triggerPrice": str(algo.trigger_price),
            "price": "0",
            "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": "CONTRACT_PRICE",
            "priceMatch": "NONE",
            "closePosition": False,
            "priceProtect": False,
            "reduceOnly": algo.reduce_only,
            "createTime": algo.created_ms,
            "updateTime": algo.updated_ms,
            "triggerTime": algo.trigger_ms,
            "goodTillDate": 0,
        }

    def _find_order(self, params: Mapping[str, str]) -> _Order | None:
        """The latest order of ``symbol`` with ``origClientOrderId`` or ``orderId``."""
        spec = self._spec(params.get("symbol", ""))
        wanted = params.get("origClientOrderId")
        found = [
            o
            for o in self.orders.values()
            if o.spec is spec
            and (o.client_order_id == wanted or str(o.order_id) == params.get("orderId"))
        ]
        return found[-1] if found else None

    def _query_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        order = self._find_order(params)
        if order is None:
            raise _BinanceError(ORDER_DOES_NOT_EXIST)
        return self._order_json(order)

    def _user_trades(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        spec = self._spec(params.get("symbol", ""))
        return [
            {
                "buyer": order.side == "BUY",
                "commission": fill["commission"],
                "commissionAsset": "USDT",
                "id": fill["tradeId"],
                "maker": False,
                "orderId": order.order_id,
                "price": fill["price"],
                "qty": fill["qty"],
                "quoteQty": str(Decimal(fill["price"]) * Decimal(fill["qty"])),
                "realizedPnl": fill["realizedPnl"],
                "side": order.side,
                "positionSide": "BOTH",
                "symbol": spec.symbol,
                "time": fill["time"],
            }
            for order in self.orders.values()
            if order.spec is spec
            and str(order.order_id) == params.get("orderId", str(order.order_id))
            for fill in order.fills
            if fill["time"] >= int(params.get("startTime", 0))
        ]

    @staticmethod
    def _order_json(order: _Order) -> dict[str, Any]:
        average = order.quote_executed / order.executed if order.executed else Decimal(0)
        return {
            "orderId": order.order_id,
            "symbol": order.spec.symbol,
            "status": order.status,
            "clientOrderId": order.client_order_id,
            "price": "0",
            "avgPrice": str(average),
            "origQty": str(order.quantity),
            "executedQty": str(order.executed),
            "cumQty": str(order.executed),
            "cumQuote": str(order.quote_executed),
            "timeInForce": order.time_in_force,
            "type": order.type,
            "reduceOnly": order.reduce_only,
            "closePosition": False,
            "side": order.side,
            "positionSide": "BOTH",
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": order.type,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "time": order.created_ms,
            "updateTime": order.updated_ms,
        }


class BinanceFake:
    """The fake exchange: state, scenario switches and the aiohttp server.

    Args:
        balances: starting free balances by asset (default 10 000 USDT).
        prices: last price by symbol (``"BTC/USDT"`` or ``"BTCUSDT"``); bid and ask are one
            tick either side.
        symbols: the markets listed (default BTCUSDT and ETHUSDT).

    Attributes:
        free, locked: balances by asset (Decimal); tests may set them.
        requests: ``(method, path, params)`` of every request served, in order.
        commission: taker fee rate.
    """

    def __init__(
        self,
        *,
        balances: Mapping[str, Decimal | str | int] | None = None,
        prices: Mapping[str, Decimal | str | int] | None = None,
        symbols: tuple[SymbolSpec, ...] = DEFAULT_SYMBOLS,
        futures_wallet: Decimal | str | int = 10000,
        perpetuals: tuple[SymbolSpec, ...] = DEFAULT_PERPETUALS,
    ) -> None:
        self.specs = {spec.symbol: spec for spec in symbols}
        self.free: dict[str, Decimal] = {}
        self.locked: dict[str, Decimal] = {}
        for spec in symbols:
            for asset in (spec.base, spec.quote):
                self.free.setdefault(asset, Decimal(0))
                self.locked.setdefault(asset, Decimal(0))
        for asset, amount in (balances or {"USDT": 10000}).items():
            self.free[asset] = Decimal(str(amount))
            self.locked.setdefault(asset, Decimal(0))
        self.books: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
        defaults = {"BTCUSDT": 60000, "ETHUSDT": 3000, "SOLUSDT": 150, "BNBUSDT": 600}
        for symbol in self.specs:
            self.set_price(symbol, defaults.get(symbol, 100))
        for symbol, price in (prices or {}).items():
            self.set_price(symbol, price)
        self.commission = Decimal("0.001")
        self.orders: dict[int, _Order] = {}
        self.futures = _UsdmFutures(self, Decimal(str(futures_wallet)), perpetuals)
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._faults: dict[tuple[str, str], list[_Fault]] = {}
        self._next_order_id = 4_000_000
        self._next_trade_id = 900_000
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._brokers: list[CcxtBroker] = []
        self.base_url = ""

    # --- scenario switches ----------------------------------------------------------------

    def set_price(self, symbol: str, last: Decimal | str | int) -> None:
        """Set ``symbol``'s last price; bid and ask are one tick below and above. USDⓈ-M
        algo orders that the new price reaches trigger (see the module docstring)."""
        spec = self.specs[_binance_id(symbol)]
        price = Decimal(str(last))
        self.books[spec.symbol] = (price - spec.tick_size, price + spec.tick_size, price)
        if hasattr(self, "futures"):
            self.futures.trigger(spec.symbol)

    def fail_next(self, method: str, path: str, status: int, code: int, msg: str) -> None:
        """Answer the next ``method path`` request with Binance's error body
        ``{"code": code, "msg": msg}`` and HTTP ``status``, without processing it."""
        self._faults.setdefault((method, path), []).append(_Fault(error=(status, code, msg)))

    def stall_next(self, method: str, path: str, seconds: float, *, process: bool) -> None:
        """Hold the next ``method path`` request for ``seconds`` (make it longer than the
        client's timeout). ``process=False``: it is then dropped unprocessed (lost on the
        way in). ``process=True``: it is processed first (an order is created and filled)
        and only the answer is held (lost on the way out)."""
        fault = _Fault(stall=seconds, process=process)
        self._faults.setdefault((method, path), []).append(fault)

    def before_next(self, method: str, path: str, action: Callable[[], None]) -> None:
        """Run ``action()`` when the next ``method path`` request arrives, then serve it as
        usual: something that happens at the exchange between a client's look-up and its
        request (an order triggering just before its cancel)."""
        self._faults.setdefault((method, path), []).append(_Fault(before=action))

    def new_order_id(self) -> int:
        """The next order id (spot and futures share the sequence)."""
        self._next_order_id += 1
        return self._next_order_id

    def new_trade_id(self) -> int:
        """The next trade id."""
        self._next_trade_id += 1
        return self._next_trade_id

    def order_by_client_id(self, client_order_id: str) -> _Order | None:
        """The latest order with this client id, or None."""
        found = [o for o in self.orders.values() if o.client_order_id == client_order_id]
        return found[-1] if found else None

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def api_urls(self) -> dict[str, str]:
        """The ``urls["api"]`` entries that point ccxt's binance spot (``public``,
        ``private``) and USDⓈ-M (``fapi*``) APIs at this server."""
        urls = {
            "public": f"{self.base_url}/api/v3",
            "private": f"{self.base_url}/api/v3",
            "v1": f"{self.base_url}/api/v1",
        }
        for version in ("", "V2", "V3"):
            number = {"": "1", "V2": "2", "V3": "3"}[version]
            for side in ("Public", "Private"):
                urls[f"fapi{side}{version}"] = f"{self.base_url}/fapi/v{number}"
        return urls

    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port; sets :attr:`base_url`."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets = self._runner.addresses
        host, port = sockets[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Close the brokers made by :meth:`broker`, release stalled requests, stop."""
        for broker in self._brokers:
            await broker.close()
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def broker(
        self,
        *,
        timeout_ms: int = 3000,
        api_key: str = API_KEY,
        market_type: str = "spot",
        **overrides: Any,
    ) -> CcxtBroker:
        """A :class:`CcxtBroker` (binance, testnet mode) pointed at this server, on spot or,
        with ``market_type="swap"``, on the USDⓈ-M perpetuals; ccxt's rate limiter stays on
        with a 1 ms interval. Keyword ``overrides`` go to the constructor
        (``market_type=...``, ``config=...``)."""
        from core.brokers.ccxt_broker import CcxtBroker

        config = {
            "timeout": timeout_ms,
            "rateLimit": 1,
            "timeout_on_exit": 0,  # ccxt waits 250 ms on close for TLS; plain HTTP here
            # one market family per broker, and no sapi currency list on load
            "options": {
                "fetchMarkets": {"types": ["spot" if market_type == "spot" else "linear"]},
                "fetchCurrencies": False,
            },
        }
        kwargs: dict[str, Any] = {
            "api_key": SecretStr(api_key),
            "secret": SecretStr(SECRET),
            "sandbox": True,
            "market_type": market_type,
            "account_currency": "USDT",
            "api_urls": self.api_urls,
            "config": config,
            **overrides,
        }
        broker = CcxtBroker("binance", **kwargs)
        self._brokers.append(broker)
        return broker

    # --- HTTP -----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        path = request.path
        self.requests.append((request.method, path, params))
        queue = self._faults.get((request.method, path))
        fault = queue.pop(0) if queue else None
        if fault is not None and fault.before is not None:
            fault.before()
            fault = None
        if fault is not None and fault.error is not None:
            return self._error(fault.error)
        if fault is not None and not fault.process:
            await self._stall(fault.stall)
            return self._error(INTERNAL_ERROR)
        try:
            body = self._route(request.method, path, params, request.headers)
        except _BinanceError as exc:
            return self._error(exc.error)
        if fault is not None:
            await self._stall(fault.stall)
        return web.json_response(body)

    async def _stall(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    @staticmethod
    def _error(error: tuple[int, int, str]) -> web.Response:
        status, code, msg = error
        return web.json_response({"code": code, "msg": msg}, status=status)

    def _route(
        self, method: str, path: str, params: dict[str, str], headers: Mapping[str, str]
    ) -> Any:
        public = {
            ("GET", "/api/v3/time"): lambda: {"serverTime": _now_ms()},
            ("GET", "/api/v3/exchangeInfo"): self._exchange_info,
            ("GET", "/api/v3/ticker/24hr"): lambda: self._tickers(params, self._ticker_24hr),
            ("GET", "/api/v3/ticker/price"): lambda: self._tickers(params, self._ticker_price),
            ("GET", "/api/v3/ticker/bookTicker"): lambda: self._tickers(params, self._book),
        }
        signed = {
            ("GET", "/api/v3/account"): self._account,
            ("POST", "/api/v3/order"): self._new_order,
            ("GET", "/api/v3/order"): self._query_order,
            ("DELETE", "/api/v3/order"): self._cancel_order,
            ("GET", "/api/v3/openOrders"): self._open_orders,
            ("GET", "/api/v3/myTrades"): self._my_trades,
        }
        futures_public, futures_signed = self.futures.routes(params)
        public.update(futures_public)
        signed.update(futures_signed)
        if (method, path) in public:
            return public[(method, path)]()
        if (method, path) not in signed:
            raise _BinanceError((404, -1000, f"fake Binance does not serve {method} {path}"))
        if headers.get("X-MBX-APIKEY") != API_KEY:
            raise _BinanceError(BAD_API_KEY)
        for name in ("timestamp", "signature"):
            if not params.get(name):
                raise _BinanceError(_missing(name))
        return signed[(method, path)](params)

    # --- public endpoints -----------------------------------------------------------------

    def _exchange_info(self) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": _now_ms(),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            ],
            "exchangeFilters": [],
            "symbols": [self._symbol_info(spec) for spec in self.specs.values()],
        }

    @staticmethod
    def _symbol_info(spec: SymbolSpec) -> dict[str, Any]:
        return {
            "symbol": spec.symbol,
            "status": "TRADING",
            "baseAsset": spec.base,
            "baseAssetPrecision": 8,
            "quoteAsset": spec.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": [
                "LIMIT",
                "LIMIT_MAKER",
                "MARKET",
                "STOP_LOSS",
                "STOP_LOSS_LIMIT",
                "TAKE_PROFIT",
                "TAKE_PROFIT_LIMIT",
            ],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": _fmt(spec.tick_size),
                    "maxPrice": "1000000.00000000",
                    "tickSize": _fmt(spec.tick_size),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": _fmt(spec.min_qty),
                    "maxQty": _fmt(spec.max_qty),
                    "stepSize": _fmt(spec.step_size),
                },
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": "0.00000000",
                    "maxQty": _fmt(spec.max_qty),
                    "stepSize": "0.00000000",
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": _fmt(spec.min_notional),
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    def _tickers(self, params: Mapping[str, str], render: Any) -> Any:
        if "symbol" in params:
            return render(self._spec(params["symbol"]))
        wanted = json.loads(params["symbols"]) if "symbols" in params else list(self.specs)
        return [render(self._spec(symbol)) for symbol in wanted]

    def _ticker_24hr(self, spec: SymbolSpec) -> dict[str, Any]:
        bid, ask, last = self.books[spec.symbol]
        now = _now_ms()
        return {
            "symbol": spec.symbol,
            "priceChange": "0.00000000",
            "priceChangePercent": "0.000",
            "weightedAvgPrice": _fmt(last),
            "prevClosePrice": _fmt(last),
            "lastPrice": _fmt(last),
            "lastQty": "0.01000000",
            "bidPrice": _fmt(bid),
            "bidQty": "1.50000000",
            "askPrice": _fmt(ask),
            "askQty": "2.00000000",
            "openPrice": _fmt(last),
            "highPrice": _fmt(last),
            "lowPrice": _fmt(last),
            "volume": "1000.00000000",
            "quoteVolume": _fmt(last * 1000),
            "openTime": now - 86_400_000,
            "closeTime": now,
            "firstId": 1,
            "lastId": 1000,
            "count": 1000,
        }

    def _ticker_price(self, spec: SymbolSpec) -> dict[str, Any]:
        return {"symbol": spec.symbol, "price": _fmt(self.books[spec.symbol][2])}

    def _book(self, spec: SymbolSpec) -> dict[str, Any]:
        bid, ask, _ = self.books[spec.symbol]
        return {
            "symbol": spec.symbol,
            "bidPrice": _fmt(bid),
            "bidQty": "1.50000000",
            "askPrice": _fmt(ask),
            "askQty": "2.00000000",
        }

    # --- signed endpoints -----------------------------------------------------------------

    def _account(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {
            "makerCommission": 10,
            "takerCommission": 10,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": _fmt(self.commission),
                "taker": _fmt(self.commission),
                "buyer": "0.00000000",
                "seller": "0.00000000",
            },
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": _now_ms(),
            "accountType": "SPOT",
            "balances": [
                {"asset": asset, "free": _fmt(free), "locked": _fmt(self.locked[asset])}
                for asset, free in sorted(self.free.items())
            ],
            "permissions": ["SPOT"],
            "uid": 354937868,
        }

    def _new_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        spec = self._spec(params.get("symbol", ""))
        side, kind = params.get("side", ""), params.get("type", "")
        if "quantity" not in params:
            raise _BinanceError(_missing("quantity"))
        quantity = Decimal(params["quantity"])
        bid, ask, last = self.books[spec.symbol]
        if (
            quantity < spec.min_qty
            or quantity > spec.max_qty
            or (quantity - spec.min_qty) % spec.step_size != 0
        ):
            raise _BinanceError((400, -1013, "Filter failure: LOT_SIZE"))
        if kind == "LIMIT":
            price = Decimal(params["price"])
            if price <= 0 or price % spec.tick_size != 0:
                raise _BinanceError((400, -1013, "Filter failure: PRICE_FILTER"))
        elif kind == "MARKET":
            price = last
        else:
            raise _BinanceError((400, -1116, "Invalid orderType."))
        if quantity * price < spec.min_notional:
            raise _BinanceError(MIN_NOTIONAL_FAILURE)
        order_id = self.new_order_id()
        client_id = params.get("newClientOrderId") or f"fake{order_id}"
        if any(
            o.client_order_id == client_id and o.status in ("NEW", "PARTIALLY_FILLED")
            for o in self.orders.values()
        ):
            raise _BinanceError(DUPLICATE_ORDER)
        marketable = kind == "MARKET" or (price >= ask if side == "BUY" else price <= bid)
        fill_price = (ask if side == "BUY" else bid) if marketable else price
        if side == "BUY":
            asset, needed = spec.quote, quantity * fill_price
        else:
            asset, needed = spec.base, quantity
        if self.free.get(asset, Decimal(0)) < needed:
            raise _BinanceError(INSUFFICIENT_BALANCE)
        now = _now_ms()
        order = _Order(
            spec=spec,
            order_id=order_id,
            client_order_id=client_id,
            side=side,
            type=kind,
            quantity=quantity,
            price=price if kind == "LIMIT" else Decimal(0),
            time_in_force=params.get("timeInForce", "GTC"),
            created_ms=now,
            updated_ms=now,
        )
        self.orders[order.order_id] = order
        if marketable:
            self._fill(order, fill_price)
        else:
            self.free[asset] -= needed
            self.locked[asset] += needed
        answer = self._order_json(order)
        answer["transactTime"] = order.updated_ms  # a market order's: its fill's time
        kind_of_answer = params.get("newOrderRespType", "FULL")
        if kind_of_answer == "ACK":
            keys = ("symbol", "orderId", "orderListId", "clientOrderId", "transactTime")
            return {k: answer[k] for k in keys}
        if kind_of_answer == "FULL":
            answer["fills"] = [
                {k: f[k] for k in ("price", "qty", "commission", "commissionAsset", "tradeId")}
                for f in order.fills
            ]
        for key in ("time", "updateTime", "isWorking", "stopPrice", "icebergQty"):
            answer.pop(key)
        return answer

    def _fill(self, order: _Order, price: Decimal) -> None:
        spec, quantity = order.spec, order.quantity
        quote_qty = quantity * price
        if order.side == "BUY":
            commission, commission_asset = quantity * self.commission, spec.base
            self.free[spec.quote] -= quote_qty
            self.free[spec.base] += quantity - commission
        else:
            commission, commission_asset = quote_qty * self.commission, spec.quote
            self.free[spec.base] -= quantity
            self.free[spec.quote] += quote_qty - commission
        order.executed, order.quote_executed = quantity, quote_qty
        order.status, order.updated_ms = "FILLED", _now_ms()
        order.fills.append(
            {
                "price": _fmt(price),
                "qty": _fmt(quantity),
                "commission": _fmt(commission),
                "commissionAsset": commission_asset,
                "tradeId": self.new_trade_id(),
                "time": order.updated_ms,
            }
        )

    def _query_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        spec = self._spec(params.get("symbol", ""))
        if "orderId" in params:
            order = self.orders.get(int(params["orderId"]))
        else:
            order = self.order_by_client_id(params.get("origClientOrderId", ""))
        if order is None or order.spec is not spec:
            raise _BinanceError(ORDER_DOES_NOT_EXIST)
        return self._order_json(order)

    def _cancel_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        spec = self._spec(params.get("symbol", ""))
        if "orderId" in params:
            order = self.orders.get(int(params["orderId"]))
        else:
            order = self.order_by_client_id(params.get("origClientOrderId", ""))
        if order is None or order.spec is not spec or order.status not in ("NEW",):
            raise _BinanceError(UNKNOWN_ORDER)
        if order.side == "BUY":
            asset, locked = spec.quote, order.quantity * order.price
        else:
            asset, locked = spec.base, order.quantity
        self.locked[asset] -= locked
        self.free[asset] += locked
        order.status, order.updated_ms = "CANCELED", _now_ms()
        answer = self._order_json(order)
        answer["origClientOrderId"] = order.client_order_id
        answer["transactTime"] = order.updated_ms
        for key in ("time", "updateTime", "isWorking", "workingTime", "stopPrice", "icebergQty"):
            answer.pop(key)
        return answer

    def _open_orders(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        wanted = self._spec(params["symbol"]) if "symbol" in params else None
        return [
            self._order_json(o)
            for o in self.orders.values()
            if o.status == "NEW" and wanted in (None, o.spec)
        ]

    def _my_trades(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        spec = self._spec(params.get("symbol", ""))
        wanted = int(params["orderId"]) if "orderId" in params else None
        trades = []
        for order in self.orders.values():
            if order.spec is not spec or wanted not in (None, order.order_id):
                continue
            for fill in order.fills:
                if fill["time"] < int(params.get("startTime", 0)):
                    continue
                price, qty = Decimal(fill["price"]), Decimal(fill["qty"])
                trades.append(
                    {
                        "symbol": spec.symbol,
                        "id": fill["tradeId"],
                        "orderId": order.order_id,
                        "orderListId": -1,
                        "price": fill["price"],
                        "qty": fill["qty"],
                        "quoteQty": _fmt(price * qty),
                        "commission": fill["commission"],
                        "commissionAsset": fill["commissionAsset"],
                        "time": fill["time"],
                        "isBuyer": order.side == "BUY",
                        "isMaker": False,
                        "isBestMatch": True,
                    }
                )
        return trades

    def _order_json(self, order: _Order) -> dict[str, Any]:
        return {
            "symbol": order.spec.symbol,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "price": _fmt(order.price),
            "origQty": _fmt(order.quantity),
            "executedQty": _fmt(order.executed),
            "cummulativeQuoteQty": _fmt(order.quote_executed),
            "status": order.status,
            "timeInForce": order.time_in_force,
            "type": order.type,
            "side": order.side,
            "stopPrice": "0.00000000",
            "icebergQty": "0.00000000",
            "time": order.created_ms,
            "updateTime": order.updated_ms,
            "isWorking": True,
            "workingTime": order.created_ms,
            "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def _spec(self, symbol: str) -> SymbolSpec:
        spec = self.specs.get(symbol)
        if spec is None:
            raise _BinanceError((400, -1121, "Invalid symbol."))
        return spec


@asynccontextmanager
async def running(**kwargs: Any) -> AsyncIterator[BinanceFake]:
    """A started :class:`BinanceFake` (keyword arguments go to its constructor); its
    brokers are closed and the server stopped on exit."""
    fake = BinanceFake(**kwargs)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
