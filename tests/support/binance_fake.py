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

Served (the shapes of Binance's spot API, ``/api/v3``): ``GET /time``, ``GET /exchangeInfo``
(``PRICE_FILTER``, ``LOT_SIZE``, ``MARKET_LOT_SIZE``, ``NOTIONAL`` filters),
``GET /ticker/24hr``, ``GET /ticker/price``, ``GET /ticker/bookTicker``, and the signed
``GET /account``, ``POST /order`` (ACK/RESULT/FULL answers), ``GET /order`` (by
``orderId`` or ``origClientOrderId``) and ``GET /myTrades``. Signed endpoints want the
``X-MBX-APIKEY`` header to be :data:`API_KEY` and a ``signature`` parameter (any value).

Matching: a market order fills at once at the ask (buy) or bid (sell); a limit order fills
at the ask/bid when marketable, else rests ``NEW`` with its funds locked. The taker
commission (:attr:`BinanceFake.commission`, 0.1 %) is charged in the asset received, as
Binance does without BNB. Order checks, in Binance's order: unknown symbol (``-1121``),
``LOT_SIZE``, ``PRICE_FILTER``, ``NOTIONAL`` (``-1013``), duplicate open client id and
balance (``-2010``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
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
    "INSUFFICIENT_BALANCE",
    "INTERNAL_ERROR",
    "MIN_NOTIONAL_FAILURE",
    "ORDER_DOES_NOT_EXIST",
    "RATE_LIMITED",
    "SECRET",
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
)


@dataclass(slots=True)
class _Fault:
    """An injected behaviour for the next request to one endpoint."""

    error: tuple[int, int, str] | None = None
    stall: float = 0.0
    process: bool = False


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
        defaults = {"BTCUSDT": 60000, "ETHUSDT": 3000}
        for symbol in self.specs:
            self.set_price(symbol, defaults.get(symbol, 100))
        for symbol, price in (prices or {}).items():
            self.set_price(symbol, price)
        self.commission = Decimal("0.001")
        self.orders: dict[int, _Order] = {}
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
        """Set ``symbol``'s last price; bid and ask are one tick below and above."""
        spec = self.specs[_binance_id(symbol)]
        price = Decimal(str(last))
        self.books[spec.symbol] = (price - spec.tick_size, price + spec.tick_size, price)

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

    def order_by_client_id(self, client_order_id: str) -> _Order | None:
        """The latest order with this client id, or None."""
        found = [o for o in self.orders.values() if o.client_order_id == client_order_id]
        return found[-1] if found else None

    def posted_orders(self) -> int:
        """How many ``POST /api/v3/order`` requests were served."""
        return sum(
            1 for method, path, _ in self.requests if (method, path) == ("POST", "/api/v3/order")
        )

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def api_urls(self) -> dict[str, str]:
        """The ``urls["api"]`` entries that point ccxt's binance spot API at this server."""
        return {
            "public": f"{self.base_url}/api/v3",
            "private": f"{self.base_url}/api/v3",
            "v1": f"{self.base_url}/api/v1",
        }

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
        **overrides: Any,
    ) -> CcxtBroker:
        """A :class:`CcxtBroker` (binance, spot, testnet mode) pointed at this server; ccxt's
        rate limiter stays on with a 1 ms interval. Keyword ``overrides`` go to the
        constructor (``max_order_quantity=...``)."""
        from core.brokers.ccxt_broker import CcxtBroker

        config = {
            "timeout": timeout_ms,
            "rateLimit": 1,
            "timeout_on_exit": 0,  # ccxt waits 250 ms on close for TLS; plain HTTP here
            # spot only: no USDⓈ-M/COIN-M exchangeInfo, no sapi currency list on load
            "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
        }
        kwargs: dict[str, Any] = {
            "api_key": SecretStr(api_key),
            "secret": SecretStr(SECRET),
            "sandbox": True,
            "market_type": "spot",
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
        if (method, path) in public:
            return public[(method, path)]()
        signed = {
            ("GET", "/api/v3/account"): self._account,
            ("POST", "/api/v3/order"): self._new_order,
            ("GET", "/api/v3/order"): self._query_order,
            ("GET", "/api/v3/myTrades"): self._my_trades,
        }
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
        client_id = params.get("newClientOrderId") or f"fake{self._next_order_id}"
        if any(
            o.client_order_id == client_id and o.status in ("NEW", "PARTIALLY_FILLED")
            for o in self.orders.values()
        ):
            raise _BinanceError((400, -2010, "Duplicate order sent."))
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
            order_id=self._next_order_id,
            client_order_id=client_id,
            side=side,
            type=kind,
            quantity=quantity,
            price=price if kind == "LIMIT" else Decimal(0),
            time_in_force=params.get("timeInForce", "GTC"),
            created_ms=now,
            updated_ms=now,
        )
        self._next_order_id += 1
        self.orders[order.order_id] = order
        if marketable:
            self._fill(order, fill_price)
        else:
            self.free[asset] -= needed
            self.locked[asset] += needed
        answer = self._order_json(order)
        answer["transactTime"] = now
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
                "tradeId": self._next_trade_id,
                "time": order.updated_ms,
            }
        )
        self._next_trade_id += 1

    def _query_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        spec = self._spec(params.get("symbol", ""))
        if "orderId" in params:
            order = self.orders.get(int(params["orderId"]))
        else:
            order = self.order_by_client_id(params.get("origClientOrderId", ""))
        if order is None or order.spec is not spec:
            raise _BinanceError(ORDER_DOES_NOT_EXIST)
        return self._order_json(order)

    def _my_trades(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        spec = self._spec(params.get("symbol", ""))
        wanted = int(params["orderId"]) if "orderId" in params else None
        trades = []
        for order in self.orders.values():
            if order.spec is not spec or wanted not in (None, order.order_id):
                continue
            for fill in order.fills:
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
