"""A stateful fake of MetaQuotes' ``MetaTrader5`` package, for offline tests of Mt5Broker.

The real package runs only on Windows next to a terminal; this one keeps an account, its
symbols, positions, orders and deals in memory and answers with the real function names,
constant names and values, and namedtuples with the real field names. A ready
:class:`~core.brokers.mt5_broker.Mt5Broker` comes from the fake::

    from tests.support import mt5_fake

    async with mt5_fake.running() as fake:          # hedging USD account, 10 000 balance
        broker = fake.broker()                      # closed when the block ends
        await broker.place_order(OrderRequest("id-1", "EURUSD", Side.BUY, Decimal(10000)))
        fake.set_tick("EURUSD", bid="1.09000", ask="1.09010")
        fake.reject_next(mt5_fake.TRADE_RETCODE_REQUOTE)          # next order_send
        fake.lose_next(execute=True)            # deal done, order_send answers None
        fake.set_tick("EURUSD", bid="1.07", ask="1.0701")   # a long's sl at 1.07 closes it

``fake.module`` is the module object (``sys.modules["MetaTrader5"] = fake.module`` works
too); ``fake.calls`` records ``(function name, thread id)`` of every call.

Behaviour, after the documentation of ``order_send`` and the trade server return codes:
``TRADE_ACTION_DEAL`` executes at once at the ask (buy) or bid (sell) if ``price`` is
within ``deviation`` points (else ``TRADE_RETCODE_REQUOTE``); ``volume`` must lie in
``[volume_min, volume_max]`` on the ``volume_step`` grid (else ``INVALID_VOLUME``);
``type_filling`` must be allowed by the symbol's ``filling_mode`` flags (FOK needs flag 1,
IOC flag 2, RETURN no flag; else ``INVALID_FILL``); opening needs free margin
(``volume x contract x price / leverage``, else ``NO_MONEY``). A hedging account opens a
ticket per deal and ``position=<ticket>`` closes that ticket; a netting account keeps one
position per symbol. ``TRADE_ACTION_PENDING`` limit orders rest (``TRADE_RETCODE_PLACED``);
``TRADE_ACTION_REMOVE`` deletes one. ``TRADE_ACTION_SLTP`` sets a position's ``sl``/``tp``
(validated against the price; ``NO_CHANGES`` when they are already set), and
:meth:`FakeTerminal.set_tick` closes the positions whose level it reaches with a deal of
``reason`` ``DEAL_REASON_SL`` / ``DEAL_REASON_TP``, as the trade server does.
Comments are cut to 31 characters as MT5 does. ``symbol_info_tick`` answers only for
symbols shown in Market Watch (``symbol_select``). Note that the real package has no
``SYMBOL_FILLING_*`` constants; they are module constants here, not on ``fake.module``.
"""

from __future__ import annotations

import fnmatch
import itertools
import threading
import time
import types
from collections import namedtuple
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

if TYPE_CHECKING:
    from core.brokers.mt5_broker import Mt5Broker

# --- constants (names and values of the MetaTrader5 package) ------------------------------

TRADE_ACTION_DEAL = 1
TRADE_ACTION_PENDING = 5
TRADE_ACTION_SLTP = 6
TRADE_ACTION_MODIFY = 7
TRADE_ACTION_REMOVE = 8
TRADE_ACTION_CLOSE_BY = 10

ORDER_TYPE_BUY = 0
ORDER_TYPE_SELL = 1
ORDER_TYPE_BUY_LIMIT = 2
ORDER_TYPE_SELL_LIMIT = 3
ORDER_TYPE_BUY_STOP = 4
ORDER_TYPE_SELL_STOP = 5
ORDER_TYPE_BUY_STOP_LIMIT = 6
ORDER_TYPE_SELL_STOP_LIMIT = 7
ORDER_TYPE_CLOSE_BY = 8

ORDER_FILLING_FOK = 0
ORDER_FILLING_IOC = 1
ORDER_FILLING_RETURN = 2
ORDER_FILLING_BOC = 3

ORDER_TIME_GTC = 0
ORDER_TIME_DAY = 1
ORDER_TIME_SPECIFIED = 2
ORDER_TIME_SPECIFIED_DAY = 3

ORDER_STATE_STARTED = 0
ORDER_STATE_PLACED = 1
ORDER_STATE_CANCELED = 2
ORDER_STATE_PARTIAL = 3
ORDER_STATE_FILLED = 4
ORDER_STATE_REJECTED = 5
ORDER_STATE_EXPIRED = 6

ORDER_REASON_CLIENT = 0
ORDER_REASON_MOBILE = 1
ORDER_REASON_WEB = 2
ORDER_REASON_EXPERT = 3
ORDER_REASON_SL = 4
ORDER_REASON_TP = 5
ORDER_REASON_SO = 6

DEAL_REASON_CLIENT = 0
DEAL_REASON_MOBILE = 1
DEAL_REASON_WEB = 2
DEAL_REASON_EXPERT = 3
DEAL_REASON_SL = 4
DEAL_REASON_TP = 5
DEAL_REASON_SO = 6
DEAL_REASON_ROLLOVER = 7
DEAL_REASON_VMARGIN = 8
DEAL_REASON_SPLIT = 9

POSITION_REASON_CLIENT = 0
POSITION_REASON_MOBILE = 1
POSITION_REASON_WEB = 2
POSITION_REASON_EXPERT = 3

DEAL_TYPE_BUY = 0
DEAL_TYPE_SELL = 1
DEAL_ENTRY_IN = 0
DEAL_ENTRY_OUT = 1
DEAL_ENTRY_INOUT = 2
DEAL_ENTRY_OUT_BY = 3

POSITION_TYPE_BUY = 0
POSITION_TYPE_SELL = 1

ACCOUNT_MARGIN_MODE_RETAIL_NETTING = 0
ACCOUNT_MARGIN_MODE_EXCHANGE = 1
ACCOUNT_MARGIN_MODE_RETAIL_HEDGING = 2
ACCOUNT_TRADE_MODE_DEMO = 0

SYMBOL_TRADE_EXECUTION_MARKET = 2
SYMBOL_TRADE_MODE_FULL = 4

TRADE_RETCODE_REQUOTE = 10004
TRADE_RETCODE_REJECT = 10006
TRADE_RETCODE_CANCEL = 10007
TRADE_RETCODE_PLACED = 10008
TRADE_RETCODE_DONE = 10009
TRADE_RETCODE_DONE_PARTIAL = 10010
TRADE_RETCODE_ERROR = 10011
TRADE_RETCODE_TIMEOUT = 10012
TRADE_RETCODE_INVALID = 10013
TRADE_RETCODE_INVALID_VOLUME = 10014
TRADE_RETCODE_INVALID_PRICE = 10015
TRADE_RETCODE_INVALID_STOPS = 10016
TRADE_RETCODE_TRADE_DISABLED = 10017
TRADE_RETCODE_MARKET_CLOSED = 10018
TRADE_RETCODE_NO_MONEY = 10019
TRADE_RETCODE_PRICE_CHANGED = 10020
TRADE_RETCODE_PRICE_OFF = 10021
TRADE_RETCODE_INVALID_EXPIRATION = 10022
TRADE_RETCODE_ORDER_CHANGED = 10023
TRADE_RETCODE_TOO_MANY_REQUESTS = 10024
TRADE_RETCODE_NO_CHANGES = 10025
TRADE_RETCODE_SERVER_DISABLES_AT = 10026
TRADE_RETCODE_CLIENT_DISABLES_AT = 10027
TRADE_RETCODE_LOCKED = 10028
TRADE_RETCODE_FROZEN = 10029
TRADE_RETCODE_INVALID_FILL = 10030
TRADE_RETCODE_CONNECTION = 10031
TRADE_RETCODE_ONLY_REAL = 10032
TRADE_RETCODE_LIMIT_ORDERS = 10033
TRADE_RETCODE_LIMIT_VOLUME = 10034
TRADE_RETCODE_INVALID_ORDER = 10035
TRADE_RETCODE_POSITION_CLOSED = 10036
TRADE_RETCODE_INVALID_CLOSE_VOLUME = 10038
TRADE_RETCODE_CLOSE_ORDER_EXIST = 10039
TRADE_RETCODE_LIMIT_POSITIONS = 10040
TRADE_RETCODE_REJECT_CANCEL = 10041
TRADE_RETCODE_LONG_ONLY = 10042
TRADE_RETCODE_SHORT_ONLY = 10043
TRADE_RETCODE_CLOSE_ONLY = 10044
TRADE_RETCODE_FIFO_CLOSE = 10045
TRADE_RETCODE_HEDGE_PROHIBITED = 10046

RES_S_OK = 1
RES_E_FAIL = -1
RES_E_INVALID_PARAMS = -2
RES_E_NO_MEMORY = -3
RES_E_NOT_FOUND = -4
RES_E_INVALID_VERSION = -5
RES_E_AUTH_FAILED = -6
RES_E_UNSUPPORTED = -7
RES_E_AUTO_TRADING_DISABLED = -8
RES_E_INTERNAL_FAIL = -10000
RES_E_INTERNAL_FAIL_SEND = -10001
RES_E_INTERNAL_FAIL_RECEIVE = -10002
RES_E_INTERNAL_FAIL_INIT = -10003
RES_E_INTERNAL_FAIL_CONNECT = -10004
RES_E_INTERNAL_FAIL_TIMEOUT = -10005

_PREFIXES = ("TRADE_", "ORDER_", "DEAL_", "POSITION_", "ACCOUNT_", "SYMBOL_", "RES_")
_CONSTANTS = {name: value for name, value in dict(globals()).items() if name.startswith(_PREFIXES)}

#: SYMBOL_FILLING_MODE flags (MQL5); not exported by the real package.
SYMBOL_FILLING_FOK = 1
SYMBOL_FILLING_IOC = 2

# --- result types (the real namedtuples' field names) -------------------------------------

AccountInfo = namedtuple(
    "AccountInfo",
    "login trade_mode leverage limit_orders margin_so_mode trade_allowed trade_expert "
    "margin_mode currency_digits fifo_close balance credit profit equity margin margin_free "
    "margin_level margin_so_call margin_so_so margin_initial margin_maintenance assets "
    "liabilities commission_blocked name server currency company",
)
SymbolInfo = namedtuple(
    "SymbolInfo",
    "custom chart_mode select visible session_deals session_buy_orders session_sell_orders "
    "volume volumehigh volumelow time digits spread spread_float ticks_bookdepth "
    "trade_calc_mode trade_mode start_time expiration_time trade_stops_level "
    "trade_freeze_level trade_exemode swap_mode swap_rollover3days margin_hedged_use_leg "
    "expiration_mode filling_mode order_mode order_gtc_mode option_mode option_right bid "
    "bidhigh bidlow ask askhigh asklow last lasthigh lastlow volume_real volumehigh_real "
    "volumelow_real option_strike point trade_tick_value trade_tick_value_profit "
    "trade_tick_value_loss trade_tick_size trade_contract_size trade_accrued_interest "
    "trade_face_value trade_liquidity_rate volume_min volume_max volume_step volume_limit "
    "swap_long swap_short margin_initial margin_maintenance session_volume session_turnover "
    "session_interest session_buy_orders_volume session_sell_orders_volume session_open "
    "session_close session_aw session_price_settlement session_price_limit_min "
    "session_price_limit_max margin_hedged price_change price_volatility price_theoretical "
    "price_greeks_delta price_greeks_theta price_greeks_gamma price_greeks_vega "
    "price_greeks_rho price_greeks_omega price_sensitivity basis category currency_base "
    "currency_profit currency_margin bank description exchange formula isin name page path",
)
Tick = namedtuple("Tick", "time bid ask last volume time_msc flags volume_real")
TradePosition = namedtuple(
    "TradePosition",
    "ticket time time_msc time_update time_update_msc type magic identifier reason volume "
    "price_open sl tp price_current swap profit symbol comment external_id",
)
TradeOrder = namedtuple(
    "TradeOrder",
    "ticket time_setup time_setup_msc time_done time_done_msc time_expiration type type_time "
    "type_filling state magic position_id position_by_id reason volume_initial "
    "volume_current price_open sl tp price_current price_stoplimit symbol comment external_id",
)
TradeDeal = namedtuple(
    "TradeDeal",
    "ticket order time time_msc type entry magic position_id reason volume price commission "
    "swap profit fee symbol comment external_id",
)
TradeRequest = namedtuple(
    "TradeRequest",
    "action magic order symbol volume price stoplimit sl tp deviation type type_filling "
    "type_time expiration comment position position_by",
)
OrderSendResult = namedtuple(
    "OrderSendResult",
    "retcode deal order volume price bid ask comment request_id retcode_external request",
)

_MESSAGES = {
    TRADE_RETCODE_REQUOTE: "Requote",
    TRADE_RETCODE_PLACED: "Request placed",
    TRADE_RETCODE_DONE: "Request executed",
    TRADE_RETCODE_TIMEOUT: "Request canceled by timeout",
    TRADE_RETCODE_INVALID: "Invalid request",
    TRADE_RETCODE_INVALID_VOLUME: "Invalid volume",
    TRADE_RETCODE_INVALID_PRICE: "Invalid price",
    TRADE_RETCODE_MARKET_CLOSED: "Market closed",
    TRADE_RETCODE_NO_MONEY: "No money",
    TRADE_RETCODE_INVALID_FILL: "Unsupported filling mode",
    TRADE_RETCODE_CONNECTION: "No connection",
    TRADE_RETCODE_POSITION_CLOSED: "Position closed",
    TRADE_RETCODE_INVALID_CLOSE_VOLUME: "Invalid close volume",
    TRADE_RETCODE_INVALID_STOPS: "Invalid stops",
    TRADE_RETCODE_NO_CHANGES: "No changes in request",
    TRADE_RETCODE_INVALID_ORDER: "Invalid or prohibited order type",
}

_SUCCESS = (1, "Success")
_NO_IPC = (RES_E_INTERNAL_FAIL_CONNECT, "No IPC connection")


@dataclass(slots=True)
class SymbolSpec:
    """One symbol of the fake terminal; volumes in lots, prices in the profit currency."""

    name: str
    digits: int
    contract_size: float
    volume_min: float
    volume_max: float
    volume_step: float
    filling_mode: int
    bid: float
    ask: float
    currency_base: str
    currency_profit: str
    visible: bool = True
    commission_per_lot: float = 0.0

    @property
    def point(self) -> float:
        """The smallest price change, 10 ** -digits."""
        return round(10.0**-self.digits, self.digits)


def default_symbols() -> list[SymbolSpec]:
    """EURUSD (FOK or IOC, 3.5 USD commission per lot), XAUUSD (IOC only, hidden from
    Market Watch), US500 (no FOK/IOC flag: RETURN) and BTCUSD (a crypto CFD of one coin
    per lot, for scenarios shared with the crypto brokers)."""
    return [
        SymbolSpec(
            "EURUSD",
            5,
            100000.0,
            0.01,
            100.0,
            0.01,
            SYMBOL_FILLING_FOK | SYMBOL_FILLING_IOC,
            1.08500,
            1.08510,
            "EUR",
            "USD",
            commission_per_lot=3.5,
        ),
        SymbolSpec(
            "XAUUSD",
            2,
            100.0,
            0.01,
            50.0,
            0.01,
            SYMBOL_FILLING_IOC,
            2400.00,
            2400.30,
            "XAU",
            "USD",
            visible=False,
        ),
        SymbolSpec("US500", 1, 1.0, 0.1, 500.0, 0.1, 0, 5800.0, 5800.5, "USD", "USD"),
        SymbolSpec(
            "BTCUSD",
            2,
            1.0,
            0.01,
            100.0,
            0.01,
            SYMBOL_FILLING_FOK | SYMBOL_FILLING_IOC,
            59999.50,
            60000.50,
            "BTC",
            "USD",
        ),
    ]


@dataclass(slots=True)
class _Script:
    """What the next ``order_send`` does instead of the normal flow."""

    execute: bool
    retcode: int | None = None
    comment: str = ""
    error: tuple[int, str] | None = None


@dataclass(slots=True)
class _Position:
    ticket: int
    symbol: str
    type: int
    volume: float
    price_open: float
    magic: int
    comment: str
    time_ms: int
    sl: float = 0.0
    tp: float = 0.0


@dataclass(slots=True)
class _Order:
    ticket: int
    symbol: str
    type: int
    state: int
    volume_initial: float
    volume_current: float
    price_open: float
    magic: int
    comment: str
    type_filling: int
    time_setup_ms: int
    time_done_ms: int = 0
    position_id: int = 0
    sl: float = 0.0
    tp: float = 0.0
    reason: int = ORDER_REASON_EXPERT


@dataclass(slots=True)
class _Deal:
    ticket: int
    order: int
    time_ms: int
    type: int
    entry: int
    magic: int
    position_id: int
    volume: float
    price: float
    commission: float
    profit: float
    symbol: str
    comment: str
    reason: int = DEAL_REASON_EXPERT


@dataclass
class FakeTerminal:
    """The fake terminal and trade server (see the module docstring).

    Args:
        hedging: a hedging account (a ticket per deal) or a netting one.
        balance: starting balance in ``currency``.
        leverage: margin = volume x contract x price / leverage.
        server_offset_hours: the trade server's clock ahead of UTC (stamps on orders/deals).
        symbols: the symbols the terminal knows.
    """

    hedging: bool = True
    balance: float = 10000.0
    currency: str = "USD"
    leverage: int = 100
    login_number: int = 5012345
    password: str = "fake-mt5-password"
    server: str = "MetaQuotes-Demo"
    server_offset_hours: float = 0.0
    symbols: dict[str, SymbolSpec] = field(
        default_factory=lambda: {s.name: s for s in default_symbols()}
    )
    calls: list[tuple[str, int]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.initialized = False
        self.logged_in = False
        self.positions: dict[int, _Position] = {}
        self.orders: dict[int, _Order] = {}  # active (pending) orders
        self.history: dict[int, _Order] = {}
        self.deals: dict[int, _Deal] = {}
        self._tickets = itertools.count(50_000_001)
        self._request_ids = itertools.count(1)
        self._error: tuple[int, str] = _SUCCESS
        self._scripts: list[_Script | None] = []
        self._initialize_error: tuple[int, str] | None = None
        self._brokers: list[Mt5Broker] = []
        self.module = self._build_module()

    # --- scenario switches ----------------------------------------------------------------

    def set_tick(self, symbol: str, *, bid: float | str, ask: float | str) -> None:
        """Move ``symbol``'s price. The server then closes each position of ``symbol``
        whose stop loss or take profit the new price reached (a long's at the bid, a
        short's at the ask: SL when it is at or beyond ``sl``, TP at or beyond ``tp``), at
        the new price, which is the level when the price moved to it and beyond it when
        the price gapped; the closing deal has ``reason`` ``DEAL_REASON_SL`` /
        ``DEAL_REASON_TP`` and the comment ``[sl <level>]`` / ``[tp <level>]``."""
        spec = self.symbols[symbol]
        spec.bid, spec.ask = float(bid), float(ask)
        for position in list(self.positions.values()):
            if position.symbol != symbol:
                continue
            buy = position.type == POSITION_TYPE_BUY
            price = spec.bid if buy else spec.ask
            sign = 1 if buy else -1
            if position.sl and (position.sl - price) * sign >= 0:
                self._stop_out(position, price, "sl", position.sl)
            elif position.tp and (price - position.tp) * sign >= 0:
                self._stop_out(position, price, "tp", position.tp)

    def _stop_out(self, position: _Position, price: float, kind: str, level: float) -> None:
        """The server closes ``position`` at ``price`` because its ``kind`` level traded."""
        spec = self.symbols[position.symbol]
        request = {
            "action": TRADE_ACTION_DEAL,
            "symbol": position.symbol,
            "volume": position.volume,
            "type": ORDER_TYPE_SELL if position.type == POSITION_TYPE_BUY else ORDER_TYPE_BUY,
            "position": position.ticket,
            "magic": position.magic,
            "comment": f"[{kind} {level:.{spec.digits}f}]",
        }
        buy = request["type"] == ORDER_TYPE_BUY
        result = self._deal(spec, request, buy, position.volume, price, position)
        reason = (
            (DEAL_REASON_SL, ORDER_REASON_SL) if kind == "sl" else (DEAL_REASON_TP, ORDER_REASON_TP)
        )
        self.deals[result.deal].reason, self.history[result.order].reason = reason

    def reject_next(
        self, retcode: int, comment: str = "", *, execute: bool = False, skip: int = 0
    ) -> None:
        """An ``order_send`` answers ``retcode``: the next one, or the one after ``skip``
        normal ones. With ``execute`` the request is carried out first anyway (a
        ``TRADE_RETCODE_TIMEOUT`` that hides a done deal)."""
        script = _Script(
            execute=execute, retcode=retcode, comment=comment or _MESSAGES.get(retcode, "")
        )
        self._scripts.extend([None] * skip + [script])

    def lose_next(
        self,
        *,
        execute: bool,
        error: tuple[int, str] = (RES_E_INTERNAL_FAIL_TIMEOUT, "IPC timeout"),
    ) -> None:
        """The next ``order_send`` answers None with ``last_error() == error``; with
        ``execute`` the deal is done first (the answer was lost on the way back)."""
        self._scripts.append(_Script(execute=execute, error=error))

    def fail_initialize(self, code: int, message: str) -> None:
        """The next ``initialize`` fails with ``last_error() == (code, message)``."""
        self._initialize_error = (code, message)

    def disconnect(self) -> None:
        """Drop the IPC link: calls answer None with ``(-10004, 'No IPC connection')``
        until the next ``initialize``."""
        self.initialized = False

    def open_position(
        self, symbol: str, *, buy: bool, volume: float, magic: int = 0, comment: str = ""
    ) -> int:
        """Open a position as if someone traded by hand (magic 0); returns its ticket."""
        spec = self.symbols[symbol]
        result = self._execute(
            {
                "action": TRADE_ACTION_DEAL,
                "symbol": symbol,
                "volume": volume,
                "type": ORDER_TYPE_BUY if buy else ORDER_TYPE_SELL,
                "price": spec.ask if buy else spec.bid,
                "magic": magic,
                "comment": comment,
                "type_filling": ORDER_FILLING_RETURN
                if spec.filling_mode == 0
                else (ORDER_FILLING_FOK if spec.filling_mode & 1 else ORDER_FILLING_IOC),
                "deviation": 0,
            }
        )
        assert result.retcode == TRADE_RETCODE_DONE, result
        return self.deals[result.deal].position_id

    def broker(self, **overrides: Any) -> Mt5Broker:
        """An :class:`Mt5Broker` on this fake's module, logged in to its account (2 s call
        timeout); keyword ``overrides`` go to the constructor."""
        from core.brokers.mt5_broker import Mt5Broker

        kwargs: dict[str, Any] = {
            "module": self.module,
            "login": self.login_number,
            "password": SecretStr(self.password),
            "server": self.server,
            "call_timeout": 2.0,
            **overrides,
        }
        broker = Mt5Broker(**kwargs)
        self._brokers.append(broker)
        return broker

    async def close_brokers(self) -> None:
        """Close the brokers made by :meth:`broker`."""
        for broker in self._brokers:
            await broker.close()

    # --- the module -----------------------------------------------------------------------

    def _build_module(self) -> types.ModuleType:
        module = types.ModuleType("MetaTrader5", "fake MetaTrader5 package (tests)")
        for name, value in _CONSTANTS.items():
            setattr(module, name, value)
        module.__version__ = "5.0.5120"
        module.__author__ = "SignalDesk tests"
        for name in (
            "initialize",
            "login",
            "shutdown",
            "last_error",
            "account_info",
            "symbol_info",
            "symbol_info_tick",
            "symbol_select",
            "positions_get",
            "orders_get",
            "history_orders_get",
            "history_deals_get",
            "order_send",
        ):
            setattr(module, name, self._recorded(name, getattr(self, f"_{name}")))
        return module

    def _recorded(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, threading.get_ident()))
            return function(*args, **kwargs)

        call.__name__ = name
        return call

    def _now_ms(self) -> int:
        """The trade server's clock in ms (UTC plus :attr:`server_offset_hours`)."""
        return int((time.time() + self.server_offset_hours * 3600) * 1000)

    def _ready(self) -> bool:
        if not self.initialized:
            self._error = _NO_IPC
            return False
        self._error = _SUCCESS
        return True

    # --- connection -----------------------------------------------------------------------

    def _initialize(
        self,
        path: str | None = None,
        *,
        login: int | None = None,
        password: str | None = None,
        server: str | None = None,
        timeout: int | None = None,
        portable: bool = False,
    ) -> bool:
        if self._initialize_error is not None:
            self._error, self._initialize_error = self._initialize_error, None
            return False
        self.initialized, self._error = True, _SUCCESS
        return login is None or self._login(login, password=password, server=server)

    def _login(
        self,
        login: int,
        password: str | None = None,
        server: str | None = None,
        timeout: int | None = None,
    ) -> bool:
        if not self._ready():
            return False
        if (login, password, server) != (self.login_number, self.password, self.server):
            self._error = (RES_E_AUTH_FAILED, "Terminal: Authorization failed")
            return False
        self.logged_in = True
        return True

    def _shutdown(self) -> None:
        self.initialized = self.logged_in = False

    def _last_error(self) -> tuple[int, str]:
        return self._error

    # --- reads ----------------------------------------------------------------------------

    def _account_info(self) -> Any:
        if not self._ready():
            return None
        profit = sum(self._profit(p) for p in self.positions.values())
        margin = sum(
            self._margin(p.symbol, p.volume, p.price_open) for p in self.positions.values()
        )
        equity = self.balance + profit
        return AccountInfo(
            login=self.login_number,
            trade_mode=ACCOUNT_TRADE_MODE_DEMO,
            leverage=self.leverage,
            limit_orders=200,
            margin_so_mode=0,
            trade_allowed=True,
            trade_expert=True,
            margin_mode=ACCOUNT_MARGIN_MODE_RETAIL_HEDGING
            if self.hedging
            else ACCOUNT_MARGIN_MODE_RETAIL_NETTING,
            currency_digits=2,
            fifo_close=False,
            balance=round(self.balance, 2),
            credit=0.0,
            profit=round(profit, 2),
            equity=round(equity, 2),
            margin=round(margin, 2),
            margin_free=round(equity - margin, 2),
            margin_level=round(equity / margin * 100, 2) if margin else 0.0,
            margin_so_call=50.0,
            margin_so_so=30.0,
            margin_initial=0.0,
            margin_maintenance=0.0,
            assets=0.0,
            liabilities=0.0,
            commission_blocked=0.0,
            name="SignalDesk Test",
            server=self.server,
            currency=self.currency,
            company="MetaQuotes Ltd.",
        )

    def _symbol_info(self, symbol: str) -> Any:
        if not self._ready():
            return None
        spec = self.symbols.get(symbol)
        if spec is None:
            self._error = (RES_E_NOT_FOUND, "Terminal: Not found")
            return None
        values: dict[str, Any] = dict.fromkeys(SymbolInfo._fields, 0)
        values.update(
            custom=False,
            select=spec.visible,
            visible=spec.visible,
            spread_float=True,
            margin_hedged_use_leg=False,
            time=self._now_ms() // 1000,
            digits=spec.digits,
            spread=round((spec.ask - spec.bid) / spec.point),
            trade_mode=SYMBOL_TRADE_MODE_FULL,
            trade_exemode=SYMBOL_TRADE_EXECUTION_MARKET,
            filling_mode=spec.filling_mode,
            bid=spec.bid,
            ask=spec.ask,
            point=spec.point,
            trade_tick_size=spec.point,
            trade_tick_value=spec.point * spec.contract_size,
            trade_contract_size=spec.contract_size,
            volume_min=spec.volume_min,
            volume_max=spec.volume_max,
            volume_step=spec.volume_step,
            currency_base=spec.currency_base,
            currency_profit=spec.currency_profit,
            currency_margin=spec.currency_base,
            bank="",
            description=spec.name,
            exchange="",
            formula="",
            isin="",
            name=spec.name,
            page="",
            path=f"Fake\\{spec.name}",
            category="",
            basis="",
        )
        return SymbolInfo(**values)

    def _symbol_select(self, symbol: str, enable: bool = True) -> bool:
        if not self._ready():
            return False
        spec = self.symbols.get(symbol)
        if spec is None:
            self._error = (RES_E_NOT_FOUND, "Terminal: Not found")
            return False
        spec.visible = enable
        return True

    def _symbol_info_tick(self, symbol: str) -> Any:
        if not self._ready():
            return None
        spec = self.symbols.get(symbol)
        if spec is None or not spec.visible:
            self._error = (RES_E_NOT_FOUND, "Terminal: Not found")
            return None
        now = self._now_ms()
        return Tick(
            time=now // 1000,
            bid=spec.bid,
            ask=spec.ask,
            last=0.0,
            volume=0,
            time_msc=now,
            flags=6,
            volume_real=0.0,
        )

    def _positions_get(
        self, symbol: str | None = None, group: str | None = None, ticket: int | None = None
    ) -> Any:
        if not self._ready():
            return None
        rows = [
            self._position_row(p)
            for p in self.positions.values()
            if _match(p.symbol, symbol, group) and ticket in (None, p.ticket)
        ]
        return tuple(rows)

    def _orders_get(
        self, symbol: str | None = None, group: str | None = None, ticket: int | None = None
    ) -> Any:
        if not self._ready():
            return None
        return tuple(
            self._order_row(o)
            for o in self.orders.values()
            if _match(o.symbol, symbol, group) and ticket in (None, o.ticket)
        )

    def _history_orders_get(
        self,
        date_from: datetime | int | None = None,
        date_to: datetime | int | None = None,
        *,
        group: str | None = None,
        ticket: int | None = None,
        position: int | None = None,
    ) -> Any:
        window = self._window(date_from, date_to, ticket, position)
        if window is None:
            return None
        return tuple(
            self._order_row(o)
            for o in self.history.values()
            if _match(o.symbol, None, group)
            and ticket in (None, o.ticket)
            and position in (None, o.position_id)
            and _in_window(o.time_setup_ms, window, ticket, position)
        )

    def _history_deals_get(
        self,
        date_from: datetime | int | None = None,
        date_to: datetime | int | None = None,
        *,
        group: str | None = None,
        ticket: int | None = None,
        position: int | None = None,
    ) -> Any:
        window = self._window(date_from, date_to, ticket, position)
        if window is None:
            return None
        return tuple(
            self._deal_row(d)
            for d in self.deals.values()
            if _match(d.symbol, None, group)
            and ticket in (None, d.ticket)
            and position in (None, d.position_id)
            and _in_window(d.time_ms, window, ticket, position)
        )

    def _window(
        self,
        date_from: datetime | int | None,
        date_to: datetime | int | None,
        ticket: int | None,
        position: int | None,
    ) -> tuple[float, float] | None:
        """The ``[from, to]`` seconds of a history query, compared with the server's
        clock as the real terminal does; None (and an error) for invalid arguments."""
        if not self._ready():
            return None
        if ticket is not None or position is not None:
            return (0.0, 0.0)
        if date_from is None or date_to is None:
            self._error = (RES_E_INVALID_PARAMS, "Invalid arguments")
            return None
        return (_seconds(date_from), _seconds(date_to))

    # --- trading --------------------------------------------------------------------------

    def _order_send(self, request: dict[str, Any]) -> Any:
        if not self._ready():
            return None
        self.requests.append(dict(request))
        script = self._scripts.pop(0) if self._scripts else None
        if script is not None and not script.execute:
            if script.error is not None:
                self._error = script.error
                return None
            assert script.retcode is not None
            return self._result(script.retcode, request, comment=script.comment)
        result = self._execute(request)
        if script is None:
            return result
        if script.error is not None:
            self._error = script.error
            return None
        assert script.retcode is not None
        return result._replace(retcode=script.retcode, comment=script.comment)

    def _execute(self, request: dict[str, Any]) -> Any:
        if request.get("action") == TRADE_ACTION_REMOVE:
            return self._remove(request)
        spec = self.symbols.get(request.get("symbol", ""))
        if spec is not None and request.get("action") == TRADE_ACTION_SLTP:
            return self._modify_position(spec, request)
        if spec is None or request.get("action") not in (TRADE_ACTION_DEAL, TRADE_ACTION_PENDING):
            return self._result(TRADE_RETCODE_INVALID, request)
        volume = float(request.get("volume", 0))
        steps = round((volume - spec.volume_min) / spec.volume_step, 6)
        if not spec.volume_min <= volume <= spec.volume_max or steps != int(steps):
            return self._result(TRADE_RETCODE_INVALID_VOLUME, request)
        kind = request.get("type")
        if not _filling_allowed(spec.filling_mode, request.get("type_filling")):
            return self._result(TRADE_RETCODE_INVALID_FILL, request)
        if request["action"] == TRADE_ACTION_PENDING:
            return self._place_pending(spec, request, volume)
        if kind not in (ORDER_TYPE_BUY, ORDER_TYPE_SELL):
            return self._result(TRADE_RETCODE_INVALID, request)
        buy = kind == ORDER_TYPE_BUY
        price = spec.ask if buy else spec.bid
        if (
            abs(float(request.get("price", 0)) - price)
            > int(request.get("deviation", 0)) * spec.point + 1e-9
        ):
            return self._result(TRADE_RETCODE_REQUOTE, request)
        closing = self._closing(spec, request, buy, volume)
        if isinstance(closing, int):
            return self._result(closing, request)
        if closing is None:
            equity = self.balance + sum(self._profit(p) for p in self.positions.values())
            used = sum(
                self._margin(p.symbol, p.volume, p.price_open) for p in self.positions.values()
            )
            if self._margin(spec.name, volume, price) > equity - used:
                return self._result(TRADE_RETCODE_NO_MONEY, request)
        return self._deal(spec, request, buy, volume, price, closing)

    def _closing(
        self, spec: SymbolSpec, request: dict[str, Any], buy: bool, volume: float
    ) -> _Position | int | None:
        """The position a deal reduces (netting: the symbol's opposite position; hedging:
        ``position=<ticket>``), None when it opens one, or an error retcode."""
        if self.hedging:
            ticket = request.get("position")
            if not ticket:
                return None
            position = self.positions.get(ticket)
            if position is None or position.symbol != spec.name:
                return TRADE_RETCODE_POSITION_CLOSED
            if (position.type == POSITION_TYPE_BUY) == buy or volume > position.volume + 1e-9:
                return TRADE_RETCODE_INVALID_CLOSE_VOLUME
            return position
        for position in self.positions.values():
            if position.symbol == spec.name:
                return None if (position.type == POSITION_TYPE_BUY) == buy else position
        return None

    def _deal(
        self,
        spec: SymbolSpec,
        request: dict[str, Any],
        buy: bool,
        volume: float,
        price: float,
        closing: _Position | None,
    ) -> Any:
        now = self._now_ms()
        order_ticket, deal_ticket = next(self._tickets), next(self._tickets)
        comment, magic = str(request.get("comment", ""))[:31], int(request.get("magic", 0))
        commission = -round(spec.commission_per_lot * volume, 2)
        profit = 0.0
        if closing is None:
            position_id = order_ticket
            if self.hedging or not any(p.symbol == spec.name for p in self.positions.values()):
                self.positions[position_id] = _Position(
                    ticket=position_id,
                    symbol=spec.name,
                    type=POSITION_TYPE_BUY if buy else POSITION_TYPE_SELL,
                    volume=volume,
                    price_open=price,
                    magic=magic,
                    comment=comment,
                    time_ms=now,
                    sl=float(request.get("sl", 0.0)),
                    tp=float(request.get("tp", 0.0)),
                )
            else:
                position = next(p for p in self.positions.values() if p.symbol == spec.name)
                position_id = position.ticket
                total = position.volume + volume
                position.price_open = (
                    position.price_open * position.volume + price * volume
                ) / total
                position.volume = round(total, 8)
            entry = DEAL_ENTRY_IN
        else:
            position_id = closing.ticket
            closed = min(volume, closing.volume)
            sign = 1 if closing.type == POSITION_TYPE_BUY else -1
            profit = round((price - closing.price_open) * closed * spec.contract_size * sign, 2)
            closing.volume = round(closing.volume - closed, 8)
            entry = DEAL_ENTRY_OUT
            if closing.volume <= 0:
                del self.positions[closing.ticket]
            rest = round(volume - closed, 8)
            if rest > 0:  # netting flip: the rest opens the other way
                entry = DEAL_ENTRY_INOUT
                self.positions[order_ticket] = _Position(
                    ticket=order_ticket,
                    symbol=spec.name,
                    type=POSITION_TYPE_BUY if buy else POSITION_TYPE_SELL,
                    volume=rest,
                    price_open=price,
                    magic=magic,
                    comment=comment,
                    time_ms=now,
                )
        self.balance += profit + commission
        self.history[order_ticket] = _Order(
            ticket=order_ticket,
            symbol=spec.name,
            type=request["type"],
            state=ORDER_STATE_FILLED,
            volume_initial=volume,
            volume_current=0.0,
            price_open=price,
            magic=magic,
            comment=comment,
            type_filling=int(request.get("type_filling", 0)),
            time_setup_ms=now,
            time_done_ms=now,
            position_id=position_id,
        )
        self.deals[deal_ticket] = _Deal(
            ticket=deal_ticket,
            order=order_ticket,
            time_ms=now,
            type=DEAL_TYPE_BUY if buy else DEAL_TYPE_SELL,
            entry=entry,
            magic=magic,
            position_id=position_id,
            volume=volume,
            price=price,
            commission=commission,
            profit=profit,
            symbol=spec.name,
            comment=comment,
        )
        return self._result(
            TRADE_RETCODE_DONE,
            request,
            deal=deal_ticket,
            order=order_ticket,
            volume=volume,
            price=price,
        )

    def _modify_position(self, spec: SymbolSpec, request: dict[str, Any]) -> Any:
        """``TRADE_ACTION_SLTP``: set the ``sl`` and ``tp`` of ``position=<ticket>`` (0
        removes a level). A long's stop must lie below the bid and its take profit above;
        a short's the reverse (else ``INVALID_STOPS``); the same levels again answer
        ``NO_CHANGES``."""
        position = self.positions.get(int(request.get("position", 0)))
        if position is None or position.symbol != spec.name:
            return self._result(TRADE_RETCODE_POSITION_CLOSED, request)
        sl, tp = float(request.get("sl", 0.0)), float(request.get("tp", 0.0))
        if position.type == POSITION_TYPE_BUY:
            valid = (not sl or sl < spec.bid) and (not tp or tp > spec.bid)
        else:
            valid = (not sl or sl > spec.ask) and (not tp or tp < spec.ask)
        if not valid:
            return self._result(TRADE_RETCODE_INVALID_STOPS, request)
        if (sl, tp) == (position.sl, position.tp):
            return self._result(TRADE_RETCODE_NO_CHANGES, request)
        position.sl, position.tp = sl, tp
        return self._result(TRADE_RETCODE_DONE, request)

    def _remove(self, request: dict[str, Any]) -> Any:
        """``TRADE_ACTION_REMOVE``: delete the pending order ``order=<ticket>``."""
        order = self.orders.pop(int(request.get("order", 0)), None)
        if order is None:
            return self._result(TRADE_RETCODE_INVALID_ORDER, request)
        order.state, order.time_done_ms = ORDER_STATE_CANCELED, self._now_ms()
        self.history[order.ticket] = order
        return self._result(TRADE_RETCODE_DONE, request, order=order.ticket)

    def _place_pending(self, spec: SymbolSpec, request: dict[str, Any], volume: float) -> Any:
        kind, price = request.get("type"), float(request.get("price", 0))
        if kind == ORDER_TYPE_BUY_LIMIT:
            valid = 0 < price < spec.ask
        elif kind == ORDER_TYPE_SELL_LIMIT:
            valid = price > spec.bid
        else:
            return self._result(TRADE_RETCODE_INVALID_ORDER, request)
        if not valid:
            return self._result(TRADE_RETCODE_INVALID_PRICE, request)
        ticket, now = next(self._tickets), self._now_ms()
        self.orders[ticket] = _Order(
            ticket=ticket,
            symbol=spec.name,
            type=kind,
            state=ORDER_STATE_PLACED,
            volume_initial=volume,
            volume_current=volume,
            price_open=price,
            magic=int(request.get("magic", 0)),
            comment=str(request.get("comment", ""))[:31],
            type_filling=int(request.get("type_filling", 0)),
            time_setup_ms=now,
        )
        return self._result(TRADE_RETCODE_PLACED, request, order=ticket, volume=volume, price=price)

    def _result(
        self,
        retcode: int,
        request: dict[str, Any],
        *,
        comment: str | None = None,
        deal: int = 0,
        order: int = 0,
        volume: float = 0.0,
        price: float = 0.0,
    ) -> Any:
        spec = self.symbols.get(request.get("symbol", ""))
        fields = dict.fromkeys(TradeRequest._fields, 0)
        fields.update({k: v for k, v in request.items() if k in fields})
        return OrderSendResult(
            retcode=retcode,
            deal=deal,
            order=order,
            volume=volume,
            price=price,
            bid=spec.bid if spec else 0.0,
            ask=spec.ask if spec else 0.0,
            comment=comment if comment is not None else _MESSAGES.get(retcode, "Rejected"),
            request_id=next(self._request_ids),
            retcode_external=0,
            request=TradeRequest(**fields),
        )

    # --- rows -----------------------------------------------------------------------------

    def _profit(self, position: _Position) -> float:
        spec = self.symbols[position.symbol]
        buy = position.type == POSITION_TYPE_BUY
        current = spec.bid if buy else spec.ask
        sign = 1 if buy else -1
        return (current - position.price_open) * position.volume * spec.contract_size * sign

    def _margin(self, symbol: str, volume: float, price: float) -> float:
        return volume * self.symbols[symbol].contract_size * price / self.leverage

    def _position_row(self, p: _Position) -> Any:
        spec = self.symbols[p.symbol]
        return TradePosition(
            ticket=p.ticket,
            time=p.time_ms // 1000,
            time_msc=p.time_ms,
            time_update=p.time_ms // 1000,
            time_update_msc=p.time_ms,
            type=p.type,
            magic=p.magic,
            identifier=p.ticket,
            reason=POSITION_REASON_EXPERT,
            volume=p.volume,
            price_open=p.price_open,
            sl=p.sl,
            tp=p.tp,
            price_current=spec.bid if p.type == POSITION_TYPE_BUY else spec.ask,
            swap=0.0,
            profit=round(self._profit(p), 2),
            symbol=p.symbol,
            comment=p.comment,
            external_id="",
        )

    def _order_row(self, o: _Order) -> Any:
        spec = self.symbols[o.symbol]
        return TradeOrder(
            ticket=o.ticket,
            time_setup=o.time_setup_ms // 1000,
            time_setup_msc=o.time_setup_ms,
            time_done=o.time_done_ms // 1000,
            time_done_msc=o.time_done_ms,
            time_expiration=0,
            type=o.type,
            type_time=ORDER_TIME_GTC,
            type_filling=o.type_filling,
            state=o.state,
            magic=o.magic,
            position_id=o.position_id,
            position_by_id=0,
            reason=o.reason,
            volume_initial=o.volume_initial,
            volume_current=o.volume_current,
            price_open=o.price_open,
            sl=o.sl,
            tp=o.tp,
            price_current=spec.bid,
            price_stoplimit=0.0,
            symbol=o.symbol,
            comment=o.comment,
            external_id="",
        )

    @staticmethod
    def _deal_row(d: _Deal) -> Any:
        return TradeDeal(
            ticket=d.ticket,
            order=d.order,
            time=d.time_ms // 1000,
            time_msc=d.time_ms,
            type=d.type,
            entry=d.entry,
            magic=d.magic,
            position_id=d.position_id,
            reason=d.reason,
            volume=d.volume,
            price=d.price,
            commission=d.commission,
            swap=0.0,
            profit=d.profit,
            fee=0.0,
            symbol=d.symbol,
            comment=d.comment,
            external_id="",
        )


def _match(name: str, symbol: str | None, group: str | None) -> bool:
    """``symbol=`` is an exact name; ``group=`` a wildcard pattern (``*USD*``)."""
    if symbol is not None and name != symbol:
        return False
    return group is None or fnmatch.fnmatchcase(name, group)


def _in_window(
    time_ms: int, window: tuple[float, float], ticket: int | None, position: int | None
) -> bool:
    """A ticket or position query ignores the dates; a date query keeps ``[from, to]``."""
    if ticket is not None or position is not None:
        return True
    return window[0] <= time_ms // 1000 <= window[1]


def _seconds(value: datetime | int) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def _filling_allowed(flags: int, filling: Any) -> bool:
    if filling == ORDER_FILLING_FOK:
        return bool(flags & SYMBOL_FILLING_FOK)
    if filling == ORDER_FILLING_IOC:
        return bool(flags & SYMBOL_FILLING_IOC)
    return filling == ORDER_FILLING_RETURN and flags == 0


@asynccontextmanager
async def running(**kwargs: Any) -> AsyncIterator[FakeTerminal]:
    """A :class:`FakeTerminal` (keyword arguments go to its constructor); the brokers it
    made are closed on exit."""
    fake = FakeTerminal(**kwargs)
    try:
        yield fake
    finally:
        await fake.close_brokers()


# --- market data (copy_rates_from_pos, symbols_get) -----------------------------------------
# Added for the MT5 market data; kept apart from the trading fake above.

#: The package's TIMEFRAME_* values.
TIMEFRAMES = {
    "TIMEFRAME_M1": 1,
    "TIMEFRAME_M5": 5,
    "TIMEFRAME_M15": 15,
    "TIMEFRAME_M30": 30,
    "TIMEFRAME_H1": 16385,
    "TIMEFRAME_H4": 16388,
    "TIMEFRAME_D1": 16408,
}


def add_market_data(
    terminal: FakeTerminal, bars: dict[str, list[tuple[int, float, float, float, float]]]
) -> None:
    """Give ``terminal``'s module ``copy_rates_from_pos`` and ``symbols_get``.

    ``bars`` maps a symbol to its bars, oldest first, as ``(time, open, high, low, close)``
    with ``time`` in epoch seconds (server time); the last one is the forming bar
    (position 0). Rates come back as rows with the package's field names (``time``,
    ``open``, ``high``, ``low``, ``close``, ``tick_volume``, ``spread``, ``real_volume``).
    """
    module = terminal.module
    for name, value in TIMEFRAMES.items():
        setattr(module, name, value)

    def copy_rates_from_pos(symbol: str, timeframe: int, start_pos: int, count: int) -> Any:
        if not terminal._ready():
            return None
        if symbol not in terminal.symbols or timeframe not in TIMEFRAMES.values():
            terminal._error = (RES_E_INVALID_PARAMS, "Invalid params")
            return None
        rows = bars.get(symbol, [])
        end = len(rows) - start_pos
        chosen = rows[max(end - count, 0) : max(end, 0)]
        return [
            {
                "time": t,
                "open": o,
                "high": h,
                "low": low,
                "close": c,
                "tick_volume": 100,
                "spread": 1,
                "real_volume": 0,
            }
            for t, o, h, low, c in chosen
        ]

    def symbols_get(group: str | None = None) -> Any:
        if not terminal._ready():
            return None
        return tuple(terminal._symbol_info(name) for name in terminal.symbols)

    module.copy_rates_from_pos = terminal._recorded("copy_rates_from_pos", copy_rates_from_pos)  # type: ignore[attr-defined]
    module.symbols_get = terminal._recorded("symbols_get", symbols_get)  # type: ignore[attr-defined]
