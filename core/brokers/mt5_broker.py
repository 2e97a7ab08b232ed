"""The MetaTrader 5 adapter: SignalDesk's :class:`~core.brokers.base.Broker` on an MT5 terminal.

Built on MetaQuotes' ``MetaTrader5`` package (the ``mt5`` extra, Windows only), imported
when an :class:`Mt5Broker` is built, never when this module is imported. The package drives
a running terminal over IPC; its calls block and are not thread-safe, so every call runs
on one dedicated worker thread (a single-thread ``ThreadPoolExecutor``), in order.

Units: SignalDesk quantities are base units (EUR for ``EURUSD``, troy ounces for
``XAUUSD``); MT5 volumes are lots. ``volume = quantity / trade_contract_size``, rounded
down to ``volume_step`` and checked against ``volume_min``/``volume_max`` (``symbol_info``).
Prices are the symbol's quote currency; account figures and PnL are the account currency
(MT5 reports profit in the deposit currency). Times are UTC, with one caveat: MT5 stamps
deals with the trade server's clock, which many brokers run at UTC+2/+3, so fill times
read from the history can be off by that offset.

The rules this adapter follows, from MetaQuotes' documentation of the Python package
(``initialize``, ``login``, ``order_send``, ``positions_get``, ``orders_get``,
``history_orders_get``, ``history_deals_get``, ``last_error``) and of the trade server
return codes (``TRADE_RETCODE_*``):

- **Identity.** Every request carries ``magic`` = ``MT5_MAGIC`` and ``comment`` = the client
  order id (MT5 keeps at most 31 characters, so longer ids are refused before sending).
  Looking an order up is filtering ``orders_get`` (pending), ``history_orders_get`` and
  ``history_deals_get`` by that magic and comment. MT5 does not refuse a repeated comment,
  so ``place_order`` and ``close_position`` look the id up first and return what they find.
- **Filling.** ``type_filling`` follows the symbol's ``filling_mode`` flags
  (``SYMBOL_FILLING_FOK`` = 1, ``SYMBOL_FILLING_IOC`` = 2): FOK if allowed, else IOC, else
  ``ORDER_FILLING_RETURN``.
- **Return codes.** ``TRADE_RETCODE_DONE`` (10009), ``PLACED`` (10008) and ``DONE_PARTIAL``
  (10010) succeed; so does ``NO_CHANGES`` (10025) for a ``TRADE_ACTION_SLTP`` (the levels
  asked for are already set). ``REQUOTE`` (10004), ``PRICE_CHANGED`` (10020), ``PRICE_OFF``
  (10021) and ``TOO_MANY_REQUESTS`` (10024) mean the server executed nothing:
  BrokerTemporaryError, safe to retry. ``TIMEOUT`` (10012), ``CONNECTION`` (10031) and a
  ``None`` result (the terminal lost the answer; ``last_error()`` says why) may hide an
  executed deal: BrokerAmbiguousError, reconciled with :meth:`Mt5Broker.get_order` (for a
  ``TRADE_ACTION_SLTP`` the ticket is read back at once instead: the level is there, or
  BrokerTemporaryError). ``NO_MONEY`` (10019) is InsufficientMarginError,
  ``INVALID_VOLUME`` (10014) InvalidQuantityError, any other code OrderRejectedError naming
  the code's constant and the server's comment.
- **Positions** (``positions_get``). A hedging account (``account_info().margin_mode ==
  ACCOUNT_MARGIN_MODE_RETAIL_HEDGING``) is reported per ticket: ``position_ref`` is the
  client order id of the entry that opened it (the ticket's comment) for a ticket with our
  magic, ``ticket:<n>`` for any other, each with its own ``opened_by_signaldesk``. A netting
  account has one position per symbol, reported as such (``position_ref`` empty).
- **Closing** (``close_position``) sends opposite ``TRADE_ACTION_DEAL`` s with
  ``position=<ticket>``. With a ``position_ref`` exactly that ticket is closed (the entry's
  client order id names one of ours; ``ticket:<n>`` names any ticket explicitly); without
  one, only our tickets in the symbol, oldest first. A ticket with another magic is never
  closed unless ``ticket:<n>`` names it. Partial closes round down to ``volume_step``.
- **Protective exits are ATTACHED**: a stop loss and take profit live on the position
  ticket as its ``sl`` / ``tp``, and the trade server closes the ticket when one trades. The
  port maps onto them so (the exit service relies on exactly this):

  * ``place_order`` of a STOP (``trigger_price=X``, ``reduce_only``,
    ``position_ref=<entry id>``, client order id ``<entry id>-sl<n>``) sets the ticket's
    ``sl`` to X with ``TRADE_ACTION_SLTP`` and keeps its ``tp``; a TAKE_PROFIT
    (``<entry id>-tp<n>``) sets ``tp`` and keeps ``sl``. The report is OPEN with the
    trigger price. Placing again under a new id moves the level (trailing); the old id is
    never cancelled. The ticket and the kind are parsed from the client order id, so they
    are known after a restart; nothing about the exit is stored at the broker beyond the
    level itself. The request's quantity is not used: a level covers the whole ticket (on
    a netting account, the symbol's whole position).
  * ``get_order(<exit id>)``: OPEN while the ticket is open with that level set
    (CANCELLED when the level is 0); once the ticket is closed, FILLED with the closing
    deal(s) as fills (price, volume, commission and fee) when a deal with ``reason``
    ``DEAL_REASON_SL`` (a ``-sl`` id) or ``DEAL_REASON_TP`` (a ``-tp`` id) closed it, else
    CANCELLED. None when no ticket was opened by the entry id.
  * ``cancel_order(<exit id>)`` sets that level to 0 if the ticket is still open; the
    answer is CANCELLED (FILLED if the level traded first).
  * Entry orders never carry ``sl`` / ``tp``: the exit service attaches them after the
    fill, the same path on every venue.

  Pending (limit) orders are cancelled with ``TRADE_ACTION_REMOVE``; ``open_orders``
  lists ``orders_get`` (the attached levels are not orders and are not listed).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from core.brokers._numbers import dec_or_zero, floor_to_step, from_epoch_ms, plain
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
    UnknownSymbolError,
)

if TYPE_CHECKING:
    from pydantic import SecretStr

    from core.config import Settings

__all__ = ["MAX_COMMENT_LENGTH", "UNAVAILABLE_MESSAGE", "Mt5Broker"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: Raised (as BrokerUnavailableError) when the MetaTrader5 package cannot be imported.
UNAVAILABLE_MESSAGE = "BROKER=mt5 needs Windows and the mt5 extra: pip install 'signaldesk[mt5]'"

#: MT5 keeps at most this many characters of an order's comment (the client order id).
MAX_COMMENT_LENGTH = 31

# SYMBOL_FILLING_MODE flags (MQL5 "Symbol properties"); the Python package does not export them.
_SYMBOL_FILLING_FOK = 1
_SYMBOL_FILLING_IOC = 2

_SUCCESS = frozenset({"TRADE_RETCODE_DONE", "TRADE_RETCODE_PLACED", "TRADE_RETCODE_DONE_PARTIAL"})
_RETRYABLE = frozenset(
    {
        "TRADE_RETCODE_REQUOTE",
        "TRADE_RETCODE_PRICE_CHANGED",
        "TRADE_RETCODE_PRICE_OFF",
        "TRADE_RETCODE_TOO_MANY_REQUESTS",
    }
)
_AMBIGUOUS = frozenset({"TRADE_RETCODE_TIMEOUT", "TRADE_RETCODE_CONNECTION"})
#: Also a success for a TRADE_ACTION_SLTP: the levels asked for are already set.
_NO_CHANGES = "TRADE_RETCODE_NO_CHANGES"

#: An exit's client order id: ``<entry client order id>-sl<n>`` or ``-tp<n>``.
_EXIT_ID = re.compile(r"^(?P<entry>.+)-(?P<kind>sl|tp)(?P<n>\d+)$")
#: A position_ref naming a ticket explicitly.
_TICKET_REF = re.compile(r"^ticket:(?P<ticket>\d+)$")

# last_error() codes (the package's RES_* constants).
_RES_S_OK = 1
_RES_E_INVALID_PARAMS = -2
_RES_E_AUTH_FAILED = -6
_RES_E_IPC = -10000  # RES_E_INTERNAL_FAIL and the IPC failures below it


def _import_mt5() -> Any:
    """The ``MetaTrader5`` module; BrokerUnavailableError when it cannot be imported."""
    try:
        import MetaTrader5
    except ImportError as exc:
        raise BrokerUnavailableError(UNAVAILABLE_MESSAGE) from exc
    return MetaTrader5


class Mt5Broker:
    """A :class:`~core.brokers.base.Broker` on a MetaTrader 5 terminal (see the module
    docstring for units and rules).

    Args:
        module: the ``MetaTrader5`` module to use; imported when None (tests pass a fake).
        login, password, server: the trading account (``MT5_LOGIN``, ``MT5_PASSWORD``,
            ``MT5_SERVER``); without ``login`` the terminal's current account is used.
        path: ``terminal64.exe`` to start (``MT5_PATH``); None finds the installed one.
        magic: the expert id stamped on every request (``MT5_MAGIC``).
        deviation: the largest accepted slippage of a market order, in points.
        history_lookback: how far back :meth:`get_order` searches the history.
        call_timeout: seconds to wait for one terminal call; longer is BrokerAmbiguousError
            for an order, BrokerTemporaryError for a read.

    Raises:
        BrokerUnavailableError: ``module`` is None and MetaTrader5 cannot be imported.
    """

    name = "mt5"

    def __init__(
        self,
        *,
        module: Any = None,
        login: int | None = None,
        password: SecretStr | None = None,
        server: str | None = None,
        path: str | None = None,
        magic: int = 20251121,
        deviation: int = 20,
        history_lookback: timedelta = timedelta(days=30),
        call_timeout: float = 30.0,
    ) -> None:
        self._mt5 = module if module is not None else _import_mt5()
        self._login = login
        self._password = password
        self._server = server
        self._path = path
        self.magic = magic
        self.deviation = deviation
        self.history_lookback = history_lookback
        self.call_timeout = call_timeout
        self._retcode_names = {
            getattr(self._mt5, name): name
            for name in dir(self._mt5)
            if name.startswith("TRADE_RETCODE_")
        }
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mt5")
        self._closed = False
        # Only the worker thread reads or writes these three.
        self._connected = False
        self._currency = ""
        self._hedging = False

    @property
    def hedging(self) -> bool:
        """True on a hedging account (one position per ticket, ``account_info().margin_mode
        == ACCOUNT_MARGIN_MODE_RETAIL_HEDGING``); False on a netting one and until the
        first connection, which learns it (reading a bool the worker thread wrote is safe)."""
        return self._hedging

    @classmethod
    def from_settings(cls, settings: Settings) -> Mt5Broker:
        """A broker configured by the ``MT5_*`` settings (``MAX_ORDER_*`` are the
        pre-trade gate's, :mod:`core.services.gate`).

        Raises:
            BrokerUnavailableError: the MetaTrader5 package is not installed (or not Windows).
        """
        return cls(
            login=settings.mt5_login,
            password=settings.mt5_password,
            server=settings.mt5_server,
            path=settings.mt5_path,
            magic=settings.mt5_magic,
            deviation=settings.mt5_deviation,
        )

    # --- the port -------------------------------------------------------------------------

    async def account(self) -> Account:
        """``account_info()``: balance, equity, margin in the deposit currency.

        Raises:
            BrokerTemporaryError (terminal unreachable), BrokerPermanentError (login refused).
        """
        return await self._run(self._account_sync, "read the account")

    async def positions(self) -> list[Position]:
        """``positions_get()`` netted per symbol, in base units, marked at
        ``price_current``. ``unrealized_pnl`` is the tickets' ``profit`` (deposit
        currency); ``opened_by_signaldesk`` is True when every ticket carries our magic.
        A symbol whose tickets net to zero (hedged flat) is left out.

        Raises:
            BrokerTemporaryError, BrokerPermanentError.
        """
        return await self._run(self._positions_sync, "read positions")

    async def quote(self, symbol: str) -> Quote:
        """``symbol_info_tick(symbol)``; ``last`` is the mid where the symbol has no last
        trade price (forex). ``at`` is when the tick was read (tick times are server time).

        Raises:
            UnknownSymbolError, BrokerTemporaryError (no quotes, terminal unreachable).
        """
        return await self._run(lambda: self._quote_sync(symbol), f"read the {symbol} quote")

    async def place_order(self, request: OrderRequest) -> OrderReport:
        """``order_send`` one deal (market) or pending order (limit) under
        ``request.client_order_id``; an id already at the broker returns that order.

        Market orders go at the current ask (buy) or bid (sell) with ``deviation``; limit
        orders as ``ORDER_TYPE_BUY_LIMIT``/``SELL_LIMIT`` at the limit rounded to the
        symbol's digits. A request's ``stop_loss`` / ``take_profit`` are not sent. STOP and
        TAKE_PROFIT set the ``sl`` / ``tp`` of the entry's ticket (the ATTACHED mapping of
        the module docstring); one for a ticket already closed answers that exit's report.

        Raises:
            OrderRejectedError (id longer than 31 characters; an exit id that is not
            ``<entry id>-sl<n>`` / ``-tp<n>`` for its type, or without a positive trigger
            price, or whose entry opened no position; refused by the server, e.g.
            ``TRADE_RETCODE_INVALID_STOPS`` for a level on the wrong side of the price),
            UnknownSymbolError, InvalidQuantityError, InsufficientMarginError,
            BrokerTemporaryError (nothing executed; retry is safe),
            BrokerAmbiguousError (may have executed: reconcile with :meth:`get_order`).
        """
        if request.order_type.is_trigger:
            return await self._run(
                lambda: self._place_exit_sync(request),
                f"place exit {request.client_order_id}",
                placing=True,
            )
        _check_client_order_id(request.client_order_id)
        return await self._run(
            lambda: self._place_sync(request),
            f"place order {request.client_order_id}",
            placing=True,
        )

    async def get_order(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """The order(s) with our magic and this comment: pending ones from ``orders_get``,
        done ones from ``history_orders_get`` and their deals from ``history_deals_get``
        (over :attr:`history_lookback`, to a day ahead for server clocks ahead of UTC);
        deals with our magic and comment if the orders have left the history. None when
        there is none. Several orders under one id (a close of several tickets) are
        reported as one. An exit id (``<entry id>-sl<n>`` / ``-tp<n>``) whose entry opened
        a ticket is reported from the ticket (OPEN, FILLED or CANCELLED: see the module
        docstring).

        Raises:
            UnknownSymbolError, BrokerTemporaryError, BrokerPermanentError.
        """
        return await self._run(
            lambda: self._get_sync(client_order_id, symbol),
            f"look up order {client_order_id}",
        )

    async def cancel_order(self, client_order_id: str, symbol: str) -> OrderReport:
        """Cancel by client order id and return the final report.

        An exit id: its level (``sl`` or ``tp``) is set to 0 on the ticket if it is still
        open (``TRADE_ACTION_SLTP``, the other level kept); CANCELLED, or FILLED when the
        level traded first. A pending order with our magic and this comment:
        ``TRADE_ACTION_REMOVE``; CANCELLED, or its report if it filled first. An order
        that is already final is returned as it is.

        Raises:
            OrderNotFoundError (nothing under this id), UnknownSymbolError,
            OrderRejectedError (the server refused), BrokerTemporaryError,
            BrokerAmbiguousError (the terminal lost the answer: look it up again).
        """
        return await self._run(
            lambda: self._cancel_sync(client_order_id, symbol),
            f"cancel order {client_order_id}",
            placing=True,
        )

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        """Pending orders from ``orders_get`` (all symbols, or ``symbol``), OPEN; the
        client order id is the comment for orders with our magic, empty for others.
        Attached ``sl`` / ``tp`` levels are not orders and are not listed.

        Raises:
            UnknownSymbolError, BrokerTemporaryError, BrokerPermanentError.
        """
        return await self._run(lambda: self._open_orders_sync(symbol), "list pending orders")

    async def exit_style(self, symbol: str) -> ExitStyle:
        """ATTACHED: MT5 holds stop loss and take profit on the position ticket.

        Raises:
            UnknownSymbolError, BrokerTemporaryError.
        """

        def check() -> ExitStyle:
            self._ensure_connected()
            self._symbol(symbol)
            return ExitStyle.ATTACHED

        return await self._run(check, f"read symbol {symbol}")

    async def close_position(
        self,
        symbol: str,
        client_order_id: str,
        quantity: Decimal | None = None,
        position_ref: str = "",
    ) -> OrderReport | None:
        """Close tickets in ``symbol`` (the rule of the module docstring): the one
        ``position_ref`` names, else our tickets, oldest first; all of their volume, or
        ``quantity`` base units (rounded down to ``volume_step``, capped at what they
        hold). One opposite ``TRADE_ACTION_DEAL`` with ``position=<ticket>`` per ticket,
        all under ``client_order_id``.

        Returns one report for all of them (side of the first close, summed quantities,
        every deal as a fill); None when there is nothing of ours (or nothing named) to
        close. If a later ticket fails after an earlier one closed, raises
        BrokerAmbiguousError (the done part is found by :meth:`get_order`).

        Raises:
            like :meth:`place_order`; InvalidQuantityError when ``quantity`` is not positive
            or rounds below the minimum volume.
        """
        _check_client_order_id(client_order_id)
        return await self._run(
            lambda: self._close_sync(symbol, client_order_id, quantity, position_ref),
            f"close {symbol}",
            placing=True,
        )

    async def close(self) -> None:
        """``shutdown()`` the terminal connection and stop the worker thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._run(self._shutdown_sync, "shut down")
        finally:
            self._executor.shutdown(wait=False)

    # --- the worker thread ----------------------------------------------------------------

    async def _run(self, work: Callable[[], T], what: str, *, placing: bool = False) -> T:
        """Run ``work`` on the MT5 thread, waiting at most :attr:`call_timeout`."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, work)
        try:
            return await asyncio.wait_for(future, self.call_timeout)
        except TimeoutError as exc:
            text = f"the MT5 terminal did not answer within {self.call_timeout:g}s to {what}"
            if placing:
                raise BrokerAmbiguousError(
                    f"{text}; the order may or may not exist: reconcile it by client order id"
                ) from exc
            raise BrokerTemporaryError(text) from exc

    def _ensure_connected(self) -> None:
        """``initialize(path=...)`` then ``login(...)`` once; again after an IPC failure."""
        if self._connected:
            return
        mt5 = self._mt5
        ok = mt5.initialize(path=self._path) if self._path else mt5.initialize()
        if not ok:
            code, message = mt5.last_error()
            text = f"MT5 initialize() failed ({code}, {message!r})"
            if code == _RES_E_AUTH_FAILED:
                raise BrokerPermanentError(f"{text}: check MT5_LOGIN, MT5_PASSWORD, MT5_SERVER")
            raise BrokerTemporaryError(
                f"{text}: is the terminal installed and running? MT5_PATH can name terminal64.exe"
            )
        if self._login is not None:
            credentials: dict[str, Any] = {}
            if self._password is not None:
                credentials["password"] = self._password.get_secret_value()
            if self._server is not None:
                credentials["server"] = self._server
            if not mt5.login(self._login, **credentials):
                code, message = mt5.last_error()
                mt5.shutdown()
                text = f"MT5 login to account {self._login} on {self._server} failed "
                text += f"({code}, {message!r})"
                if code <= _RES_E_IPC:
                    raise BrokerTemporaryError(text)
                raise BrokerPermanentError(f"{text}: check MT5_LOGIN, MT5_PASSWORD, MT5_SERVER")
        info = mt5.account_info()
        self._currency = info.currency if info is not None else ""
        self._hedging = info is not None and info.margin_mode == getattr(
            mt5, "ACCOUNT_MARGIN_MODE_RETAIL_HEDGING", 2
        )
        self._connected = True
        log.info("mt5_connected", login=self._login, server=self._server)

    def _failure(self, what: str) -> BrokerTemporaryError:
        """The error for a call that answered None: ``last_error()``, and reconnect next
        time if the IPC link failed."""
        code, message = self._mt5.last_error()
        if code <= _RES_E_IPC:
            self._connected = False
        return BrokerTemporaryError(f"MT5 could not {what} ({code}, {message!r})")

    def _rows(self, result: Sequence[Any] | None, what: str) -> Sequence[Any]:
        """A ``*_get`` answer; None is an empty answer when ``last_error()`` is success."""
        if result is not None:
            return result
        if self._mt5.last_error()[0] == _RES_S_OK:
            return ()
        raise self._failure(what)

    def _shutdown_sync(self) -> None:
        if self._connected:
            self._mt5.shutdown()
            self._connected = False

    def _account_sync(self) -> Account:
        self._ensure_connected()
        info = self._mt5.account_info()
        if info is None:
            raise self._failure("read the account")
        return Account(
            balance=dec_or_zero(info.balance),
            equity=dec_or_zero(info.equity),
            margin=dec_or_zero(info.margin),
            currency=info.currency,
        )

    def _positions_sync(self) -> list[Position]:
        self._ensure_connected()
        tickets = self._rows(self._mt5.positions_get(), "read positions")
        if self._hedging:  # ours first within a symbol, then by ticket
            ordered = sorted(tickets, key=lambda t: (t.symbol, t.magic != self.magic, t.ticket))
            return [self._ticket_position(t) for t in ordered]
        by_symbol: dict[str, list[Any]] = {}
        for ticket in tickets:
            by_symbol.setdefault(ticket.symbol, []).append(ticket)
        positions = []
        for symbol, group in sorted(by_symbol.items()):
            contract = dec_or_zero(self._symbol(symbol).trade_contract_size)
            signed = [(self._signed_volume(t) * contract, t) for t in group]
            quantity = sum((q for q, _ in signed), ZERO)
            if quantity == 0:
                continue
            net_side = [(abs(q), t) for q, t in signed if (q > 0) == (quantity > 0)]
            held = sum((q for q, _ in net_side), ZERO)
            positions.append(
                Position(
                    symbol=symbol,
                    quantity=quantity,
                    average_entry=sum((q * dec_or_zero(t.price_open) for q, t in net_side), ZERO)
                    / held,
                    mark_price=dec_or_zero(net_side[0][1].price_current),
                    unrealized_pnl=sum((dec_or_zero(t.profit) for t in group), ZERO),
                    opened_by_signaldesk=all(t.magic == self.magic for t in group),
                )
            )
        return positions

    def _ticket_position(self, ticket: Any) -> Position:
        """One hedging ticket as a Position (``position_ref`` as in the module docstring)."""
        contract = dec_or_zero(self._symbol(ticket.symbol).trade_contract_size)
        ours = ticket.magic == self.magic
        return Position(
            symbol=ticket.symbol,
            quantity=self._signed_volume(ticket) * contract,
            average_entry=dec_or_zero(ticket.price_open),
            mark_price=dec_or_zero(ticket.price_current),
            unrealized_pnl=dec_or_zero(ticket.profit),
            opened_by_signaldesk=ours,
            position_ref=ticket.comment if ours and ticket.comment else f"ticket:{ticket.ticket}",
        )

    def _quote_sync(self, symbol: str) -> Quote:
        self._ensure_connected()
        self._symbol(symbol)
        tick = self._tick(symbol)
        bid, ask = dec_or_zero(tick.bid), dec_or_zero(tick.ask)
        last = dec_or_zero(tick.last) or (bid + ask) / 2
        return Quote(symbol=symbol, bid=bid, ask=ask, last=last, at=utcnow())

    def _place_sync(self, request: OrderRequest) -> OrderReport:
        self._ensure_connected()
        mt5 = self._mt5
        info = self._symbol(request.symbol)
        existing = self._find_sync(request.client_order_id, request.symbol)
        if existing is not None:
            log.info("order_already_at_broker", client_order_id=request.client_order_id)
            return existing
        volume = self._volume(info, request.quantity)
        buy = request.side is Side.BUY
        if request.order_type is OrderType.LIMIT:
            if request.limit_price is None or request.limit_price <= 0:
                raise OrderRejectedError("a limit order needs a positive limit price")
            price = _round_price(request.limit_price, info.digits)
            action = mt5.TRADE_ACTION_PENDING
            kind = mt5.ORDER_TYPE_BUY_LIMIT if buy else mt5.ORDER_TYPE_SELL_LIMIT
        else:
            tick = self._tick(request.symbol)
            price = dec_or_zero(tick.ask if buy else tick.bid)
            action = mt5.TRADE_ACTION_DEAL
            kind = mt5.ORDER_TYPE_BUY if buy else mt5.ORDER_TYPE_SELL
        order: dict[str, Any] = {
            "action": action,
            "symbol": request.symbol,
            "volume": float(volume),
            "type": kind,
            "price": float(price),
            "deviation": self.deviation,
            "magic": self.magic,
            "comment": request.client_order_id,
            "type_time": mt5.ORDER_TIME_GTC,
            "type_filling": self._filling(info),
        }
        return self._send(order, request.client_order_id, info)

    def _close_sync(
        self, symbol: str, client_order_id: str, quantity: Decimal | None, position_ref: str
    ) -> OrderReport | None:
        self._ensure_connected()
        mt5 = self._mt5
        info = self._symbol(symbol)
        if quantity is not None and quantity <= 0:
            raise InvalidQuantityError(f"quantity must be positive, got {plain(quantity)}")
        existing = self._find_sync(client_order_id, symbol)
        if existing is not None:
            return existing
        if position_ref:
            named, _ = self._resolve_ticket(symbol, position_ref)
            tickets = [named] if named is not None else []
        else:
            held = self._rows(mt5.positions_get(symbol=symbol), f"read the {symbol} positions")
            tickets = sorted(
                (t for t in held if t.magic == self.magic), key=lambda t: (t.time_msc, t.ticket)
            )
        if not tickets:
            return None
        plan = self._close_plan(info, tickets, quantity)
        reports: list[OrderReport] = []
        for ticket, volume in plan:
            tick = self._tick(symbol)
            sell = ticket.type == mt5.POSITION_TYPE_BUY
            order = {
                "action": mt5.TRADE_ACTION_DEAL,
                "symbol": symbol,
                "volume": float(volume),
                "type": mt5.ORDER_TYPE_SELL if sell else mt5.ORDER_TYPE_BUY,
                "position": ticket.ticket,
                "price": tick.bid if sell else tick.ask,
                "deviation": self.deviation,
                "magic": self.magic,
                "comment": client_order_id,
                "type_time": mt5.ORDER_TIME_GTC,
                "type_filling": self._filling(info),
            }
            try:
                reports.append(self._send(order, client_order_id, info))
            except BrokerError as exc:
                if not reports:
                    raise
                raise BrokerAmbiguousError(
                    f"closed {len(reports)} of {len(plan)} {symbol} tickets under "
                    f"{client_order_id}, then: {exc}"
                ) from exc
        return _merge(reports)

    def _close_plan(
        self, info: Any, tickets: Sequence[Any], quantity: Decimal | None
    ) -> list[tuple[Any, Decimal]]:
        """``(ticket, lots)`` to close: every ticket's volume, or ``quantity`` base units
        rounded down to ``volume_step`` and taken from the tickets in order."""
        volumes = [(t, dec_or_zero(t.volume)) for t in tickets]
        if quantity is None:
            return volumes
        contract = dec_or_zero(info.trade_contract_size)
        step, minimum = dec_or_zero(info.volume_step), dec_or_zero(info.volume_min)
        held = sum((v for _, v in volumes), ZERO)
        lots = min(floor_to_step(quantity / contract, step), held).normalize()
        if lots < minimum:
            raise InvalidQuantityError(
                f"closing {plain(quantity)} of {info.name} is {plain(quantity / contract)} "
                f"lots, below the minimum volume of {plain(minimum)} lots "
                f"({plain(minimum * contract)} units; volume step {plain(step)} lots)"
            )
        plan = []
        for ticket, volume in volumes:
            if lots <= 0:
                break
            take = min(volume, lots)
            plan.append((ticket, take))
            lots -= take
        return plan

    def _resolve_ticket(self, symbol: str, ref: str) -> tuple[Any | None, int | None]:
        """``(open ticket or None, position id or None)`` for a ``position_ref``:
        ``ticket:<n>`` names any ticket; an entry's client order id names the ticket it
        opened (an open ticket of ours with that comment, else the position of our entry
        deal with that comment in the history)."""
        mt5 = self._mt5
        named = _TICKET_REF.match(ref)
        if named:
            number = int(named["ticket"])
            rows = self._rows(mt5.positions_get(ticket=number), f"read ticket {number}")
            found = next((t for t in rows if t.symbol == symbol), None)
            return found, number
        held = self._rows(mt5.positions_get(symbol=symbol), f"read the {symbol} positions")
        found = next((t for t in held if t.magic == self.magic and t.comment == ref), None)
        if found is not None:
            return found, found.ticket
        now = datetime.now(UTC)
        deals = self._rows(
            mt5.history_deals_get(
                now - self.history_lookback, now + timedelta(days=1), group=symbol
            ),
            "read the deal history",
        )
        entries = (mt5.DEAL_ENTRY_IN, mt5.DEAL_ENTRY_INOUT)
        opening = next(
            (d for d in deals if self._ours(ref)(d) and d.entry in entries and d.symbol == symbol),
            None,
        )
        if opening is None:
            return None, None
        found = next((t for t in held if t.ticket == opening.position_id), None)
        return found, opening.position_id

    def _find_sync(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """The look-up behind :meth:`get_order` (runs on the worker thread)."""
        self._ensure_connected()
        mt5 = self._mt5
        info = self._symbol(symbol)
        ours = self._ours(client_order_id)
        pending = [o for o in self._rows(mt5.orders_get(symbol=symbol), "read orders") if ours(o)]
        now = datetime.now(UTC)
        since, until = now - self.history_lookback, now + timedelta(days=1)
        done = [
            o
            for o in self._rows(
                mt5.history_orders_get(since, until, group=symbol), "read the order history"
            )
            if ours(o)
        ]
        deals = self._rows(
            mt5.history_deals_get(since, until, group=symbol), "read the deal history"
        )
        orders = sorted([*done, *pending], key=lambda o: o.time_setup_msc)
        if orders:
            tickets = {o.ticket for o in orders}
            mine = [d for d in deals if d.order in tickets]
        else:
            mine = [d for d in deals if ours(d)]
            if not mine:
                return None
        contract = dec_or_zero(info.trade_contract_size)
        fills = tuple(self._fill(d, client_order_id, contract) for d in mine)
        return self._order_report(client_order_id, symbol, orders, bool(pending), fills, contract)

    def _get_sync(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """The look-up behind :meth:`get_order`: an exit id first, then the orders."""
        self._ensure_connected()
        exit_id = _EXIT_ID.match(client_order_id)
        if exit_id:
            info = self._symbol(symbol)
            position, position_id = self._resolve_ticket(symbol, exit_id["entry"])
            if position_id is not None:
                kind = exit_id["kind"]
                return self._exit_report(client_order_id, symbol, kind, position, position_id, info)
        return self._find_sync(client_order_id, symbol)

    def _place_exit_sync(self, request: OrderRequest) -> OrderReport:
        """STOP / TAKE_PROFIT: set the ticket's ``sl`` / ``tp`` (the module docstring)."""
        self._ensure_connected()
        cid, symbol = request.client_order_id, request.symbol
        info = self._symbol(symbol)
        kind = "sl" if request.order_type is OrderType.STOP else "tp"
        exit_id = _EXIT_ID.match(cid)
        if exit_id is None or exit_id["kind"] != kind:
            raise OrderRejectedError(
                f"a {request.order_type.value} on MT5 needs a client order id "
                f"'<entry id>-{kind}<n>' naming the entry whose ticket holds it, got {cid!r}"
            )
        entry = exit_id["entry"]
        if request.position_ref and request.position_ref != entry:
            raise OrderRejectedError(
                f"exit {cid} names entry {entry!r} but position_ref is {request.position_ref!r}"
            )
        if request.trigger_price is None or request.trigger_price <= 0:
            raise OrderRejectedError(f"exit {cid} needs a positive trigger price")
        position, position_id = self._resolve_ticket(symbol, entry)
        if position_id is None:
            raise OrderRejectedError(f"MT5 has no {symbol} position opened by {entry}")
        if position is None:  # closed already: what became of this exit
            return self._exit_report(cid, symbol, kind, None, position_id, info)
        level = _round_price(request.trigger_price, info.digits)
        self._set_level(cid, position, kind, level, info)
        return self._exit_report(cid, symbol, kind, position, position_id, info, level=level)

    def _set_level(self, cid: str, position: Any, kind: str, level: Decimal, info: Any) -> None:
        """``TRADE_ACTION_SLTP`` on ``position`` with its ``kind`` level at ``level`` (0
        removes it), the other level kept. A lost answer is settled by reading the ticket
        back: the level is there, or BrokerTemporaryError (nothing changed)."""
        mt5 = self._mt5
        sl = float(level) if kind == "sl" else position.sl
        tp = float(level) if kind == "tp" else position.tp
        request = {
            "action": mt5.TRADE_ACTION_SLTP,
            "symbol": position.symbol,
            "position": position.ticket,
            "sl": sl,
            "tp": tp,
            "magic": self.magic,
        }
        try:
            self._order_send(request, cid, ok=frozenset({_NO_CHANGES}))
        except BrokerAmbiguousError:
            rows = self._rows(mt5.positions_get(ticket=position.ticket), "read the ticket back")
            now = next(iter(rows), None)
            if now is not None and _round_price(
                dec_or_zero(getattr(now, kind)), info.digits
            ) == _round_price(level, info.digits):
                return
            raise BrokerTemporaryError(
                f"MT5 did not confirm the {kind} of ticket {position.ticket} for {cid} and the "
                "ticket does not show it: nothing changed, safe to retry"
            ) from None

    def _exit_report(
        self,
        cid: str,
        symbol: str,
        kind: str,
        position: Any | None,
        position_id: int,
        info: Any,
        *,
        level: Decimal | None = None,
    ) -> OrderReport:
        """An attached exit's report (the module docstring's rules)."""
        mt5 = self._mt5
        contract = dec_or_zero(info.trade_contract_size)
        order_type = OrderType.STOP if kind == "sl" else OrderType.TAKE_PROFIT
        if position is not None:
            current = level if level is not None else dec_or_zero(getattr(position, kind))
            long = position.type == mt5.POSITION_TYPE_BUY
            return OrderReport(
                client_order_id=cid,
                symbol=symbol,
                side=Side.SELL if long else Side.BUY,
                quantity=dec_or_zero(position.volume) * contract,
                state=OrderState.OPEN if current else OrderState.CANCELLED,
                broker_order_id=str(position.ticket),
                order_type=order_type,
                trigger_price=current or None,
                fee_currency=self._currency,
            )
        deals = self._rows(
            mt5.history_deals_get(position=position_id), f"read the deals of {position_id}"
        )
        reason = mt5.DEAL_REASON_SL if kind == "sl" else mt5.DEAL_REASON_TP
        hit = [d for d in deals if d.entry != mt5.DEAL_ENTRY_IN and d.reason == reason]
        opened = [d for d in deals if d.entry == mt5.DEAL_ENTRY_IN]
        fills = tuple(self._fill(d, cid, contract) for d in hit)
        if fills:
            side = fills[0].side
        elif opened:
            side = Side.SELL if opened[0].type == mt5.DEAL_TYPE_BUY else Side.BUY
        else:
            side = Side.SELL
        quantity = sum((dec_or_zero(d.volume) for d in hit or opened), ZERO) * contract
        return OrderReport(
            client_order_id=cid,
            symbol=symbol,
            side=side,
            quantity=quantity,
            state=OrderState.FILLED if fills else OrderState.CANCELLED,
            broker_order_id=str(position_id),
            order_type=order_type,
            filled_quantity=sum((f.quantity for f in fills), ZERO),
            average_price=_average(fills),
            fee=sum((f.fee for f in fills), ZERO),
            fee_currency=self._currency,
            fills=fills,
            reason="" if fills else f"ticket {position_id} closed without its {kind}",
        )

    def _cancel_sync(self, client_order_id: str, symbol: str) -> OrderReport:
        """The work behind :meth:`cancel_order`."""
        self._ensure_connected()
        mt5 = self._mt5
        info = self._symbol(symbol)
        exit_id = _EXIT_ID.match(client_order_id)
        if exit_id:
            kind = exit_id["kind"]
            position, position_id = self._resolve_ticket(symbol, exit_id["entry"])
            if position_id is not None:
                if position is not None and getattr(position, kind):
                    self._set_level(client_order_id, position, kind, ZERO, info)
                    position, position_id = self._resolve_ticket(symbol, exit_id["entry"])
                return self._exit_report(
                    client_order_id, symbol, kind, position, position_id or 0, info
                )
        ours = self._ours(client_order_id)
        pending = [o for o in self._rows(mt5.orders_get(symbol=symbol), "read orders") if ours(o)]
        for order in pending:
            request = {"action": mt5.TRADE_ACTION_REMOVE, "order": order.ticket}
            try:
                self._order_send(request, client_order_id)
            except OrderRejectedError:
                still = self._rows(mt5.orders_get(ticket=order.ticket), "read the order back")
                if still:
                    raise
        found = self._find_sync(client_order_id, symbol)
        if found is None:
            raise OrderNotFoundError(f"MT5 has no order {client_order_id} in {symbol}")
        return found

    def _open_orders_sync(self, symbol: str | None) -> list[OrderReport]:
        self._ensure_connected()
        mt5 = self._mt5
        if symbol is not None:
            self._symbol(symbol)
        rows = mt5.orders_get(symbol=symbol) if symbol is not None else mt5.orders_get()
        reports = []
        for order in self._rows(rows, "read orders"):
            contract = dec_or_zero(self._symbol(order.symbol).trade_contract_size)
            limit = order.type in (mt5.ORDER_TYPE_BUY_LIMIT, mt5.ORDER_TYPE_SELL_LIMIT)
            stop = order.type in (mt5.ORDER_TYPE_BUY_STOP, mt5.ORDER_TYPE_SELL_STOP)
            price = dec_or_zero(order.price_open)
            reports.append(
                OrderReport(
                    client_order_id=order.comment if order.magic == self.magic else "",
                    symbol=order.symbol,
                    side=Side.BUY if order.type % 2 == 0 else Side.SELL,
                    quantity=dec_or_zero(order.volume_current) * contract,
                    state=OrderState.OPEN,
                    broker_order_id=str(order.ticket),
                    order_type=OrderType.LIMIT
                    if limit
                    else OrderType.STOP
                    if stop
                    else OrderType.MARKET,
                    limit_price=price if limit else None,
                    trigger_price=price if stop else None,
                    fee_currency=self._currency,
                )
            )
        return reports

    def _send(self, order: Mapping[str, Any], client_order_id: str, info: Any) -> OrderReport:
        """``order_send`` (the return-code rules of the module docstring) and the report."""
        result, name = self._order_send(order, client_order_id)
        return self._result_report(result, order, client_order_id, info, name)

    def _order_send(
        self,
        order: Mapping[str, Any],
        client_order_id: str,
        *,
        ok: frozenset[str] = frozenset(),
    ) -> tuple[Any, str]:
        """``order_send`` and the return-code rules of the module docstring: the result
        and its code's name on success (``ok`` names further codes that count as one)."""
        mt5 = self._mt5
        log.info(
            "order_sending",
            client_order_id=client_order_id,
            symbol=order.get("symbol", ""),
            action=order["action"],
            volume=order.get("volume"),
            type=order.get("type"),
        )
        result = mt5.order_send(dict(order))
        if result is None:
            code, message = mt5.last_error()
            if code == _RES_E_INVALID_PARAMS:
                raise OrderRejectedError(
                    f"the MT5 terminal refused order {client_order_id} ({code}, {message!r})"
                )
            if code <= _RES_E_IPC:
                self._connected = False
            raise BrokerAmbiguousError(
                f"order_send returned no result for {client_order_id} ({code}, {message!r}); "
                "the order may or may not exist: reconcile it by client order id"
            )
        name = self._retcode_names.get(result.retcode, "unknown return code")
        text = f"MT5 {name} ({result.retcode}) for order {client_order_id}: {result.comment!r}"
        if name in _SUCCESS or name in ok:
            return result, name
        if name in _RETRYABLE:
            raise BrokerTemporaryError(f"{text}; the server executed nothing, safe to retry")
        if name in _AMBIGUOUS:
            raise BrokerAmbiguousError(
                f"{text}; the order may or may not exist: reconcile it by client order id"
            )
        if name == "TRADE_RETCODE_NO_MONEY":
            raise InsufficientMarginError(text)
        if name == "TRADE_RETCODE_INVALID_VOLUME":
            raise InvalidQuantityError(text)
        raise OrderRejectedError(text)

    def _result_report(
        self, result: Any, order: Mapping[str, Any], client_order_id: str, info: Any, name: str
    ) -> OrderReport:
        """The report of a successful ``order_send``: OPEN for a placed pending order,
        else FILLED with the deal (read by ticket for its commission and time)."""
        mt5 = self._mt5
        contract = dec_or_zero(info.trade_contract_size)
        side = (
            Side.BUY
            if order["type"] in (mt5.ORDER_TYPE_BUY, mt5.ORDER_TYPE_BUY_LIMIT)
            else Side.SELL
        )
        pending = order["action"] == mt5.TRADE_ACTION_PENDING
        report = OrderReport(
            client_order_id=client_order_id,
            symbol=order["symbol"],
            side=side,
            quantity=dec_or_zero(order["volume"]) * contract,
            state=OrderState.OPEN if pending else OrderState.FILLED,
            broker_order_id=str(result.order),
            order_type=OrderType.LIMIT if pending else OrderType.MARKET,
            limit_price=dec_or_zero(order["price"]) if pending else None,
        )
        if pending:
            return report
        deals = mt5.history_deals_get(ticket=result.deal) if result.deal else None
        if deals:
            fills = tuple(self._fill(d, client_order_id, contract) for d in deals)
        else:
            fills = (
                Fill(
                    client_order_id=client_order_id,
                    symbol=order["symbol"],
                    side=side,
                    quantity=dec_or_zero(result.volume) * contract,
                    price=dec_or_zero(result.price),
                    fee=ZERO,
                    fee_currency=self._currency,
                    at=utcnow(),
                    broker_fill_id=str(result.deal),
                ),
            )
        filled = sum((f.quantity for f in fills), ZERO)
        reason = ""
        if name == "TRADE_RETCODE_DONE_PARTIAL":
            reason = f"partly filled ({name}): {plain(filled)} of {plain(report.quantity)}"
        return OrderReport(
            client_order_id=client_order_id,
            symbol=report.symbol,
            side=side,
            quantity=report.quantity,
            state=OrderState.FILLED,
            broker_order_id=report.broker_order_id,
            filled_quantity=filled,
            average_price=_average(fills),
            fee=sum((f.fee for f in fills), ZERO),
            fee_currency=self._currency,
            fills=fills,
            reason=reason,
        )

    def _order_report(
        self,
        client_order_id: str,
        symbol: str,
        orders: Sequence[Any],
        pending: bool,
        fills: tuple[Fill, ...],
        contract: Decimal,
    ) -> OrderReport:
        """One report for the orders (and deals) found under one client order id."""
        mt5 = self._mt5
        first = orders[0] if orders else None
        filled = sum((f.quantity for f in fills), ZERO)
        if pending:
            state = OrderState.OPEN
        elif filled > 0:
            state = OrderState.FILLED
        elif first is not None and all(o.state == mt5.ORDER_STATE_REJECTED for o in orders):
            state = OrderState.FAILED
        elif first is not None:
            state = OrderState.CANCELLED
        else:
            state = OrderState.FILLED
        if first is not None:
            side = Side.BUY if first.type % 2 == 0 else Side.SELL  # ORDER_TYPE_BUY* are even
            quantity = sum((dec_or_zero(o.volume_initial) for o in orders), ZERO) * contract
            limit = first.type in (mt5.ORDER_TYPE_BUY_LIMIT, mt5.ORDER_TYPE_SELL_LIMIT)
            broker_id = ",".join(str(o.ticket) for o in orders)
            limit_price = dec_or_zero(first.price_open) if limit else None
        else:
            side, quantity, limit, limit_price = fills[0].side, filled, False, None
            broker_id = ""
        return OrderReport(
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            state=state,
            broker_order_id=broker_id,
            order_type=OrderType.LIMIT if limit else OrderType.MARKET,
            limit_price=limit_price,
            filled_quantity=filled,
            average_price=_average(fills),
            fee=sum((f.fee for f in fills), ZERO),
            fee_currency=self._currency,
            fills=fills,
        )

    def _fill(self, deal: Any, client_order_id: str, contract: Decimal) -> Fill:
        """A fill of a ``TradeDeal``; its fee is the deal's commission and fee (MT5 books
        costs as negative numbers) in the deposit currency."""
        return Fill(
            client_order_id=client_order_id,
            symbol=deal.symbol,
            side=Side.BUY if deal.type == self._mt5.DEAL_TYPE_BUY else Side.SELL,
            quantity=dec_or_zero(deal.volume) * contract,
            price=dec_or_zero(deal.price),
            fee=-(dec_or_zero(deal.commission) + dec_or_zero(deal.fee)),
            fee_currency=self._currency,
            at=from_epoch_ms(deal.time_msc) or utcnow(),
            broker_fill_id=str(deal.ticket),
        )

    def _symbol(self, symbol: str) -> Any:
        """``symbol_info(symbol)``, shown in Market Watch (``symbol_select``) if hidden."""
        mt5 = self._mt5
        info = mt5.symbol_info(symbol)
        if info is None:
            code, message = mt5.last_error()
            if code <= _RES_E_IPC:
                raise self._failure(f"read symbol {symbol}")
            raise UnknownSymbolError(
                f"the MT5 terminal has no symbol {symbol!r} ({code}, {message!r}); use the "
                "name the broker gives it (for example EURUSD.m)"
            )
        if not info.visible:
            if not mt5.symbol_select(symbol, True):
                raise self._failure(f"show {symbol} in Market Watch")
            info = mt5.symbol_info(symbol) or info
        return info

    def _tick(self, symbol: str) -> Any:
        tick = self._mt5.symbol_info_tick(symbol)
        if tick is None:
            raise self._failure(f"read the {symbol} price")
        if not tick.bid or not tick.ask:
            raise BrokerTemporaryError(f"MT5 has no {symbol} price right now (market closed?)")
        return tick

    def _signed_volume(self, ticket: Any) -> Decimal:
        volume = dec_or_zero(ticket.volume)
        return volume if ticket.type == self._mt5.POSITION_TYPE_BUY else -volume

    def _volume(self, info: Any, quantity: Decimal) -> Decimal:
        """Lots for ``quantity`` base units, down to ``volume_step``, within the limits."""
        name = info.name
        if quantity <= 0:
            raise InvalidQuantityError(f"quantity must be positive, got {plain(quantity)}")
        contract = dec_or_zero(info.trade_contract_size)
        step = dec_or_zero(info.volume_step)
        minimum, maximum = dec_or_zero(info.volume_min), dec_or_zero(info.volume_max)
        lots = floor_to_step(quantity / contract, step).normalize()
        if lots < minimum:
            raise InvalidQuantityError(
                f"quantity {plain(quantity)} of {name} is {plain(quantity / contract)} lots, "
                f"below the minimum volume of {plain(minimum)} lots "
                f"({plain(minimum * contract)} units; volume step {plain(step)} lots)"
            )
        if lots > maximum:
            raise InvalidQuantityError(
                f"quantity {plain(quantity)} of {name} is {plain(lots)} lots, above the "
                f"maximum volume of {plain(maximum)} lots"
            )
        return lots

    def _filling(self, info: Any) -> int:
        """FOK if the symbol allows it, else IOC, else RETURN (``filling_mode`` flags)."""
        flags = int(info.filling_mode)
        if flags & _SYMBOL_FILLING_FOK:
            return int(self._mt5.ORDER_FILLING_FOK)
        if flags & _SYMBOL_FILLING_IOC:
            return int(self._mt5.ORDER_FILLING_IOC)
        return int(self._mt5.ORDER_FILLING_RETURN)

    def _ours(self, client_order_id: str) -> Callable[[Any], bool]:
        """A filter for orders and deals with our magic and this comment."""
        return lambda row: row.magic == self.magic and row.comment == client_order_id


def _check_client_order_id(client_order_id: str) -> None:
    if len(client_order_id) > MAX_COMMENT_LENGTH:
        raise OrderRejectedError(
            f"client order id {client_order_id!r} has {len(client_order_id)} characters; "
            f"MT5 keeps at most {MAX_COMMENT_LENGTH} in an order's comment"
        )


def _round_price(price: Decimal, digits: int) -> Decimal:
    return price.quantize(Decimal(1).scaleb(-int(digits)))


def _average(fills: Iterable[Fill]) -> Decimal | None:
    """The quantity-weighted average price of ``fills``; None without any."""
    fills = list(fills)
    total = sum((f.quantity for f in fills), ZERO)
    if total == 0:
        return None
    return sum((f.quantity * f.price for f in fills), ZERO) / total


def _merge(reports: Sequence[OrderReport]) -> OrderReport:
    """One report for the closes of several tickets under one client order id."""
    first = reports[0]
    fills = tuple(f for r in reports for f in r.fills)
    return OrderReport(
        client_order_id=first.client_order_id,
        symbol=first.symbol,
        side=first.side,
        quantity=sum((r.quantity for r in reports), ZERO),
        state=first.state,
        broker_order_id=",".join(r.broker_order_id for r in reports),
        filled_quantity=sum((r.filled_quantity for r in reports), ZERO),
        average_price=_average(fills),
        fee=sum((r.fee for r in reports), ZERO),
        fee_currency=first.fee_currency,
        fills=fills,
        reason="; ".join(r.reason for r in reports if r.reason),
    )
