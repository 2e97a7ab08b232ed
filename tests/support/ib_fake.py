"""A stateful fake of the ``ib_async.IB`` surface SignalDesk uses, for offline tests of
IbkrBroker and the IBKR market data.

No TWS or IB Gateway can run here. :class:`FakeGateway` plays TWS: an account, contracts,
prices, orders and executions, kept server-side. :class:`FakeIB` plays one ``ib_async.IB``
session against it, with the real method names and signatures (``connectAsync``,
``isConnected``, ``disconnect``, ``managedAccounts``, ``accountValues``, ``portfolio``,
``positions``, ``reqContractDetailsAsync``, ``qualifyContractsAsync``, ``placeOrder``,
``cancelOrder``, ``trades``, ``openTrades``, ``reqAllOpenOrdersAsync``,
``reqCompletedOrdersAsync``, ``reqExecutionsAsync``, ``fills``, ``reqTickersAsync``,
``reqHistoricalDataAsync``, ``reqMatchingSymbolsAsync``), the real events
(``errorEvent(reqId, errorCode, errorString, contract)``, ``disconnectedEvent``, a
Trade's ``statusEvent`` / ``fillEvent`` / ``commissionReportEvent``) and ib_async's own
data classes (``Trade``, ``Order``, ``OrderStatus``, ``Fill``, ``Execution``,
``CommissionReport``, ``PortfolioItem``, ``AccountValue``, ``ContractDetails``,
``Ticker``, ``BarData``, ``ContractDescription``), so field names cannot drift::

    async with ib_fake.running() as gateway:        # DU1234567, 100 000 USD, AAPL/ES/EUR.USD
        broker = gateway.broker()                   # an IbkrBroker on a new session
        gateway.set_price("AAPL", bid="229.90", ask="230.10")   # works resting orders
        gateway.reject_next(201, "Order rejected - reason: insufficient margin")
        gateway.drop_on_next_order()    # TWS takes the order, the session is cut before any answer

Behaviour, after ib_async's wrapper and IB's API documentation: ``placeOrder`` returns a
``Trade`` in ``PendingSubmit`` at once (as ib_async does); the gateway answers on the next
loop turn. ``MKT`` fills at the ask (buy) or bid (sell); ``LMT`` fills when marketable at
the better of limit and market, else rests ``Submitted``; ``STP`` (a sell stop triggers at
bid <= aux, a buy stop at ask >= aux) and ``MIT`` (a sell at bid >= aux, a buy at ask <= aux)
rest ``PreSubmitted`` and fill at market when triggered. A fill of an order in an OCA group
with ``ocaType`` 1 cancels the group's other working orders. Commission is 0.005 USD a
unit, at least 1 USD. An error (``reject_next``) ends the order ``Cancelled`` with a log
entry carrying the code (what ib_async's ``wrapper.error`` does) and emits ``errorEvent``;
``cancelOrder`` answers ``Cancelled`` with error 202, an unknown order with 10147.
``reqCompletedOrdersAsync`` returns new Trades without fills (IB sends none with completed
orders); ``reqExecutionsAsync`` returns every execution with its ``orderRef``.
``reqTickersAsync`` answers live prices (``marketDataType`` 1) for a subscribed instrument;
for one without a subscription (``_Instrument.subscribed`` False) delayed prices with the
type the session asked for (``reqMarketDataType(3)``), or no prices when it asked for none.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import ib_async
from eventkit import Event

from core.brokers.ibkr_broker import IbkrBroker
from core.brokers.ibkr_hours import parse_hours
from core.domain import utcnow

__all__ = ["FakeGateway", "FakeIB", "running"]

D = Decimal
ZERO = Decimal(0)
CASH = Decimal(100000)
ACCOUNT = "DU1234567"


@dataclass
class _Record:
    """One order as TWS holds it."""

    order_id: int
    perm_id: int
    client_id: int
    contract: Any
    order: Any
    status: str = "PendingSubmit"
    filled: Decimal = ZERO
    average: Decimal = ZERO
    fills: list[Any] = field(default_factory=list)
    log: list[Any] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in ib_async.OrderStatus.DoneStates


@dataclass
class _Instrument:
    details: Any
    bid: Decimal
    ask: Decimal
    bars: list[tuple[datetime, Decimal, Decimal, Decimal, Decimal]] = field(default_factory=list)
    subscribed: bool = True


class FakeGateway:
    """TWS / IB Gateway in memory (see the module docstring).

    Args:
        cash: the account's cash in ``currency``.
        clock: UTC now, for execution times.
    """

    def __init__(self, *, cash: Decimal = CASH, currency: str = "USD", clock: Any = utcnow) -> None:
        self.account = ACCOUNT
        self.currency = currency
        self.cash = cash
        self.clock = clock
        self.up = True
        self.instruments: dict[int, _Instrument] = {}
        self.records: list[_Record] = []
        self.executions: list[Any] = []
        self.holdings: dict[int, list[Decimal]] = {}  # conId -> [quantity, average per unit]
        self.realized: dict[int, Decimal] = {}
        self.sessions: list[FakeIB] = []
        self.brokers: list[IbkrBroker] = []
        self.placed = 0  # placeOrder calls that reached the gateway
        self._next_order_id = 1
        self._next_perm_id = 9000
        self._next_exec = 1
        self._rejects: list[tuple[int, str]] = []
        self._drop_next = False
        self.add(
            ib_async.Stock(
                "AAPL",
                "SMART",
                "USD",
                primaryExchange="NASDAQ",
                conId=265598,
                localSymbol="AAPL",
                tradingClass="NMS",
            ),
            "APPLE INC",
            tick="0.01",
            bid="229.90",
            ask="230.10",
        )
        self.add(
            ib_async.Future(
                "ES",
                "20261218",
                "CME",
                conId=649180695,
                multiplier="50",
                currency="USD",
                localSymbol="ESZ6",
                tradingClass="ES",
            ),
            "E-mini S&P 500",
            tick="0.25",
            bid="6050.00",
            ask="6050.25",
        )
        self.add(
            ib_async.Forex("EURUSD", conId=12087792, localSymbol="EUR.USD"),
            "European Monetary Union Euro",
            tick="0.00005",
            bid="1.08000",
            ask="1.08005",
            min_size="1",
            step="1",
        )

    # --- set-up ---------------------------------------------------------------------------

    def add(
        self,
        contract: Any,
        long_name: str,
        *,
        tick: str,
        bid: str,
        ask: str,
        min_size: str = "1",
        step: str = "1",
    ) -> None:
        """Register a contract with its details and a price."""
        if contract.secType == "STK":
            contract.exchange = "SMART"
        details = ib_async.ContractDetails(
            contract=contract,
            minTick=float(tick),
            longName=long_name,
            minSize=float(min_size),
            sizeIncrement=float(step),
            timeZoneId="US/Eastern",
        )
        self.instruments[contract.conId] = _Instrument(details, D(bid), D(ask))

    def instrument(self, symbol: str) -> _Instrument:
        """The instrument whose symbol (or local symbol) is ``symbol``."""
        for item in self.instruments.values():
            c = item.details.contract
            if symbol in (c.symbol, c.localSymbol):
                return item
        raise KeyError(symbol)

    def set_price(self, symbol: str, *, bid: str, ask: str) -> None:
        """Move the market of ``symbol``; resting orders it reaches fill, as at TWS."""
        item = self.instrument(symbol)
        item.bid, item.ask = D(bid), D(ask)
        for record in list(self.records):
            if not record.done and record.contract.conId == item.details.contract.conId:
                self._work(record)

    def set_hours(self, symbol: str, liquid_hours: str) -> None:
        """Give ``symbol`` regular trading hours (IB's ``liquidHours`` format, US/Eastern);
        outside them TWS holds market and limit orders ``PreSubmitted`` until the open."""
        self.instrument(symbol).details.liquidHours = liquid_hours

    def open_market(self, symbol: str) -> None:
        """Work the held orders of ``symbol`` again (call after moving the clock)."""
        self.set_price(
            symbol, bid=str(self.instrument(symbol).bid), ask=str(self.instrument(symbol).ask)
        )

    def reject_next(self, code: int, message: str) -> None:
        """The next order placed is refused with IB error ``code``."""
        self._rejects.append((code, message))

    def drop_on_next_order(self) -> None:
        """The next order reaches TWS and executes, but the session that sent it is cut
        before any answer arrives (a lost connection during ``placeOrder``)."""
        self._drop_next = True

    def session(self) -> FakeIB:
        """A new, not yet connected ``IB`` session."""
        ib = FakeIB(self)
        self.sessions.append(ib)
        return ib

    def broker(self, **overrides: Any) -> IbkrBroker:
        """An IbkrBroker on a new session (closed by :func:`running`)."""
        options: dict[str, Any] = {"fill_timeout": 5.0, "port": 4002, "clock": self.clock}
        options.update(overrides)
        broker = IbkrBroker(ib=self.session(), **options)
        self.brokers.append(broker)
        return broker

    def records_with_ref(self, order_ref: str) -> list[_Record]:
        """Every order TWS holds with this ``orderRef``."""
        return [r for r in self.records if r.order.orderRef == order_ref]

    # --- TWS ------------------------------------------------------------------------------

    def _place(self, session: FakeIB, contract: Any, order: Any) -> _Record:
        self.placed += 1
        record = _Record(
            order_id=order.orderId,
            perm_id=self._next_perm_id,
            client_id=session.client_id,
            contract=copy.copy(self._resolve(contract)),
            order=copy.copy(order),
        )
        record.order.permId = record.perm_id
        self._next_perm_id += 1
        self.records.append(record)
        if self._drop_next:
            self._drop_next = False
            session._cut()
        if self._rejects:
            code, message = self._rejects.pop(0)
            self._finish(record, "Cancelled", code, message)
            return record
        self._work(record)
        return record

    def _resolve(self, contract: Any) -> Any:
        item = self.instruments.get(contract.conId)
        if item is None:
            raise AssertionError(f"order for an unqualified contract {contract}")
        return item.details.contract

    def _work(self, record: _Record) -> None:
        """Fill, trigger or rest ``record`` at the current price."""
        item = self.instruments[record.contract.conId]
        kind = record.order.orderType
        details = item.details
        if (
            kind in ("MKT", "LMT")
            and details.liquidHours
            and not any(
                start <= self.clock() < end
                for start, end in parse_hours(details.liquidHours, details.timeZoneId)
            )
        ):
            if record.status != "PreSubmitted":
                record.status = "PreSubmitted"  # held until the open
                self._push(record)
            return
        buy = record.order.action == "BUY"
        market = item.ask if buy else item.bid
        price: Decimal | None = None
        if kind == "MKT":
            price = market
        elif kind == "LMT":
            limit = D(str(record.order.lmtPrice))
            if (buy and market <= limit) or (not buy and market >= limit):
                price = market
        elif kind in ("STP", "MIT"):
            aux = D(str(record.order.auxPrice))
            stop = kind == "STP"
            rising = buy == stop  # a buy stop and a sell MIT wait for the price to rise
            if (rising and market >= aux) or (not rising and market <= aux):
                price = market
        if price is None:
            status = "PreSubmitted" if kind in ("STP", "MIT") else "Submitted"
            if record.status != status:
                record.status = status
                self._push(record)
            return
        self._execute(record, price)

    def _execute(self, record: _Record, price: Decimal) -> None:
        quantity = D(str(record.order.totalQuantity)) - record.filled
        conid = record.contract.conId
        multiplier = D(record.contract.multiplier or 1)
        signed = quantity if record.order.action == "BUY" else -quantity
        held, average = self.holdings.get(conid, [D(0), D(0)])
        if held == 0 or (held > 0) == (signed > 0):
            new = held + signed
            average = (abs(held) * average + quantity * price) / abs(new)
        else:
            closed = min(abs(held), quantity)
            self.realized[conid] = self.realized.get(conid, D(0)) + closed * (
                price - average
            ) * multiplier * (1 if held > 0 else -1)
            new = held + signed
            average = D(0) if new == 0 else (average if (new > 0) == (held > 0) else price)
        self.holdings[conid] = [new, average]
        commission = max(D(1), quantity * D("0.005"))
        self.cash -= signed * price * multiplier + commission
        exec_id = f"0000e0d5.{self._next_exec:08d}.01.01"
        self._next_exec += 1
        now = self.clock()
        execution = ib_async.Execution(
            execId=exec_id,
            time=now,
            acctNumber=self.account,
            exchange="ISLAND",
            side="BOT" if signed > 0 else "SLD",
            shares=float(quantity),
            price=float(price),
            permId=record.perm_id,
            clientId=record.client_id,
            orderId=record.order_id,
            cumQty=float(record.filled + quantity),
            avgPrice=float(price),
            orderRef=record.order.orderRef,
        )
        report = ib_async.CommissionReport(
            execId=exec_id, commission=float(commission), currency=self.currency
        )
        fill = ib_async.Fill(record.contract, execution, report, now)
        self.executions.append(fill)
        record.fills.append(fill)
        record.filled += quantity
        record.average = price
        record.status = "Filled"
        self._push(record, fill)
        if record.order.ocaGroup and record.order.ocaType == 1:
            for other in self.records:
                if (
                    other is not record
                    and not other.done
                    and other.order.ocaGroup == record.order.ocaGroup
                ):
                    self._finish(other, "Cancelled", 202, "Order Canceled - reason:OCA group")

    def _finish(self, record: _Record, status: str, code: int, message: str) -> None:
        record.status = status
        entry = ib_async.TradeLogEntry(self.clock(), status, f"Error {code}: {message}", code)
        record.log.append(entry)
        self._push(record, entry=entry, error=(code, message))

    def _cancel(self, session: FakeIB, order: Any) -> None:
        record = next(
            (
                r
                for r in self.records
                if r.order_id == order.orderId and r.client_id == order.clientId
            ),
            None,
        )
        if record is None or record.done:
            session.errorEvent.emit(
                order.orderId,
                10147,
                f"OrderId {order.orderId} that needs to be cancelled is not found.",
                None,
            )
            return
        self._finish(record, "Cancelled", 202, "Order Canceled - reason:")

    def _push(
        self,
        record: _Record,
        fill: Any = None,
        *,
        entry: Any = None,
        error: tuple[int, str] | None = None,
    ) -> None:
        """Tell the connected session that placed ``record`` (or loaded it) what changed."""
        for session in self.sessions:
            trade = (
                session._trades.get(record.order_id)
                if session.client_id == record.client_id
                else None
            )
            if trade is None or not session.isConnected():
                continue
            trade.orderStatus.status = record.status
            trade.orderStatus.filled = float(record.filled)
            trade.orderStatus.remaining = float(D(str(record.order.totalQuantity)) - record.filled)
            trade.orderStatus.avgFillPrice = float(record.average)
            trade.order.permId = record.perm_id
            if entry is not None:
                trade.log.append(entry)
            if error is not None:
                session.errorEvent.emit(record.order_id, error[0], error[1], record.contract)
            if fill is not None:
                trade.fills.append(fill)
                trade.fillEvent.emit(trade, fill)
                trade.commissionReportEvent.emit(trade, fill, fill.commissionReport)
            trade.statusEvent.emit(trade)

    def _trade(self, record: _Record, *, with_fills: bool) -> Any:
        status = ib_async.OrderStatus(
            orderId=record.order_id,
            status=record.status,
            filled=float(record.filled),
            remaining=float(D(str(record.order.totalQuantity)) - record.filled),
            avgFillPrice=float(record.average),
            permId=record.perm_id,
        )
        return ib_async.Trade(
            copy.copy(record.contract),
            copy.copy(record.order),
            status,
            list(record.fills) if with_fills else [],
            list(record.log),
        )

    def _mark(self, conid: int) -> Decimal:
        item = self.instruments[conid]
        return (item.bid + item.ask) / 2


class FakeIB:
    """One ``ib_async.IB`` session on a :class:`FakeGateway` (see the module docstring)."""

    RaiseRequestErrors = False

    def __init__(self, gateway: FakeGateway) -> None:
        self.gateway = gateway
        self.client_id = 0
        self._connected = False
        self._trades: dict[int, Any] = {}
        self.errorEvent = Event("errorEvent")
        self.connectedEvent = Event("connectedEvent")
        self.disconnectedEvent = Event("disconnectedEvent")
        self.calls: list[str] = []
        self.market_data_type = 1

    # --- connection -----------------------------------------------------------------------

    async def connectAsync(
        self,
        host: str = "127.0.0.1",
        port: int = 7497,
        clientId: int = 1,
        timeout: float | None = 4,  # noqa: ASYNC109 - ib_async's signature
        readonly: bool = False,
        account: str = "",
        raiseSyncErrors: bool = False,
    ) -> FakeIB:
        self.calls.append("connectAsync")
        if not self.gateway.up:
            raise ConnectionRefusedError(61, "Connect call failed")
        self.client_id = int(clientId)
        self._connected = True
        # as at connect: this client's open orders arrive as trades
        for record in self.gateway.records:
            if record.client_id == self.client_id and not record.done:
                self._trades.setdefault(
                    record.order_id, self.gateway._trade(record, with_fills=True)
                )
        self.connectedEvent.emit()
        return self

    def isConnected(self) -> bool:
        return self._connected

    def disconnect(self) -> None:
        self.calls.append("disconnect")
        if self._connected:
            self._connected = False
            self.disconnectedEvent.emit()

    def _cut(self) -> None:
        """The socket dies: the session learns it on the next loop turn."""
        self._connected = False
        asyncio.get_running_loop().call_soon(self.disconnectedEvent.emit)

    def _need(self) -> None:
        if not self._connected:
            raise ConnectionError("Not connected")

    # --- account --------------------------------------------------------------------------

    def managedAccounts(self) -> list[str]:
        return [self.gateway.account]

    def accountValues(self, account: str = "") -> list[Any]:
        g = self.gateway
        value = sum(
            (
                q * g._mark(c) * D(g.instruments[c].details.contract.multiplier or 1)
                for c, (q, _) in g.holdings.items()
            ),
            D(0),
        )
        margin = sum(
            (
                abs(q) * g._mark(c) * D(g.instruments[c].details.contract.multiplier or 1) / 4
                for c, (q, _) in g.holdings.items()
            ),
            D(0),
        )

        def row(tag: str, amount: Decimal, currency: str) -> Any:
            return ib_async.AccountValue(g.account, tag, str(round(amount, 2)), currency, "")

        return [
            row("NetLiquidation", g.cash + value, g.currency),
            row("TotalCashValue", g.cash, g.currency),
            row("TotalCashValue", g.cash, "BASE"),
            row("MaintMarginReq", margin, g.currency),
            ib_async.AccountValue(g.account, "AccountType", "INDIVIDUAL", "", ""),
        ]

    def portfolio(self, account: str = "") -> list[Any]:
        g = self.gateway
        items = []
        for conid, (quantity, average) in g.holdings.items():
            if quantity == 0:
                continue
            contract = g.instruments[conid].details.contract
            multiplier = D(contract.multiplier or 1)
            mark = g._mark(conid)
            items.append(
                ib_async.PortfolioItem(
                    contract,
                    float(quantity),
                    float(mark),
                    float(quantity * mark * multiplier),
                    float(average * multiplier),
                    float((mark - average) * quantity * multiplier),
                    float(g.realized.get(conid, D(0))),
                    g.account,
                )
            )
        return items

    def positions(self, account: str = "") -> list[Any]:
        return [
            ib_async.Position(i.account, i.contract, i.position, i.averageCost)
            for i in self.portfolio(account)
        ]

    # --- contracts ------------------------------------------------------------------------

    async def reqContractDetailsAsync(self, contract: Any) -> list[Any]:
        self.calls.append("reqContractDetailsAsync")
        self._need()
        found = []
        for item in self.gateway.instruments.values():
            c = item.details.contract
            if contract.secType != c.secType or contract.symbol != c.symbol:
                continue
            if contract.secType == "CASH" and contract.currency != c.currency:
                continue
            if contract.primaryExchange and contract.primaryExchange != c.primaryExchange:
                continue
            if contract.secType == "FUT" and not c.lastTradeDateOrContractMonth.startswith(
                contract.lastTradeDateOrContractMonth
            ):
                continue
            if contract.secType == "FUT" and contract.exchange not in ("", c.exchange):
                continue
            found.append(copy.deepcopy(item.details))
        return found

    async def qualifyContractsAsync(self, *contracts: Any) -> list[Any]:
        results = []
        for contract in contracts:
            details = await self.reqContractDetailsAsync(contract)
            results.append(details[0].contract if len(details) == 1 else None)
        return results

    async def reqMatchingSymbolsAsync(self, pattern: str) -> list[Any]:
        self.calls.append("reqMatchingSymbolsAsync")
        self._need()
        return [
            ib_async.ContractDescription(
                contract=copy.copy(i.details.contract), derivativeSecTypes=[]
            )
            for i in self.gateway.instruments.values()
            if pattern.upper() in i.details.contract.symbol
            or pattern.upper() in i.details.longName.upper()
        ]

    # --- orders ---------------------------------------------------------------------------

    def placeOrder(self, contract: Any, order: Any) -> Any:
        self.calls.append("placeOrder")
        self._need()
        order.orderId = order.orderId or self.gateway._next_order_id
        self.gateway._next_order_id += 1
        order.clientId = self.client_id
        status = ib_async.OrderStatus(orderId=order.orderId, status="PendingSubmit")
        entry = ib_async.TradeLogEntry(self.gateway.clock(), "PendingSubmit")
        trade = ib_async.Trade(contract, order, status, [], [entry])
        self._trades[order.orderId] = trade
        asyncio.get_running_loop().call_soon(self.gateway._place, self, contract, order)
        return trade

    def cancelOrder(self, order: Any, manualCancelOrderTime: str = "") -> Any:
        self.calls.append("cancelOrder")
        self._need()
        trade = self._trades.get(order.orderId)
        if trade is not None and not trade.isDone():
            trade.orderStatus.status = "PendingCancel"
            trade.statusEvent.emit(trade)
        asyncio.get_running_loop().call_soon(self.gateway._cancel, self, order)
        return trade

    def trades(self) -> list[Any]:
        return list(self._trades.values())

    def openTrades(self) -> list[Any]:
        return [t for t in self._trades.values() if not t.isDone()]

    async def reqAllOpenOrdersAsync(self) -> list[Any]:
        self.calls.append("reqAllOpenOrdersAsync")
        self._need()
        result = []
        for record in self.gateway.records:
            if record.done or record.status == "PendingSubmit":
                continue
            own = self._trades.get(record.order_id) if record.client_id == self.client_id else None
            result.append(own or self.gateway._trade(record, with_fills=False))
        return result

    async def reqCompletedOrdersAsync(self, apiOnly: bool) -> list[Any]:
        self.calls.append("reqCompletedOrdersAsync")
        self._need()
        return [self.gateway._trade(r, with_fills=False) for r in self.gateway.records if r.done]

    async def reqExecutionsAsync(self, execFilter: Any = None) -> list[Any]:
        self.calls.append("reqExecutionsAsync")
        self._need()
        return list(self.gateway.executions)

    def fills(self) -> list[Any]:
        return list(self.gateway.executions)

    # --- market data ----------------------------------------------------------------------

    def reqMarketDataType(self, marketDataType: int) -> None:
        self.calls.append(f"reqMarketDataType({marketDataType})")
        self.market_data_type = marketDataType

    async def reqTickersAsync(self, *contracts: Any, regulatorySnapshot: bool = False) -> list[Any]:
        self.calls.append("reqTickersAsync")
        self._need()
        tickers = []
        # IB answers live data where the account has a subscription, else delayed data when
        # it was asked for (reqMarketDataType 3 or 4), else no prices
        delayed = self.market_data_type in (3, 4)
        for contract in contracts:
            item = self.gateway.instruments[contract.conId]
            data_type = 1 if item.subscribed else self.market_data_type
            ticker = ib_async.Ticker(contract=contract, marketDataType=data_type)
            if not (item.subscribed or delayed):
                tickers.append(ticker)
                continue
            # Ticker.__post_init__ resets the prices, so they are set after it (as ib_async's
            # wrapper does tick by tick)
            ticker.bid, ticker.ask = float(item.bid), float(item.ask)
            ticker.last = (
                math.nan if contract.secType == "CASH" else float((item.bid + item.ask) / 2)
            )
            ticker.close = float(item.bid)
            tickers.append(ticker)
        return tickers

    async def reqHistoricalDataAsync(
        self,
        contract: Any,
        endDateTime: Any,
        durationStr: str,
        barSizeSetting: str,
        whatToShow: str,
        useRTH: bool,
        formatDate: int = 1,
        keepUpToDate: bool = False,
        chartOptions: Any = (),
        timeout: float = 60,  # noqa: ASYNC109 - ib_async's signature
    ) -> list[Any]:
        self.calls.append("reqHistoricalDataAsync")
        self._need()
        item = self.gateway.instruments[contract.conId]
        return [
            ib_async.BarData(
                date=at, open=float(o), high=float(h), low=float(lo), close=float(c), volume=100.0
            )
            for at, o, h, lo, c in item.bars
        ]


def hourly_bars(
    start: datetime, closes: list[str]
) -> list[tuple[datetime, Decimal, Decimal, Decimal, Decimal]]:
    """Bars an hour apart from ``start`` (UTC) whose opens are the previous close."""
    bars = []
    previous = D(closes[0])
    for n, text in enumerate(closes):
        close = D(text)
        bars.append(
            (
                start.astimezone(UTC) + timedelta(hours=n),
                previous,
                max(previous, close),
                min(previous, close),
                close,
            )
        )
        previous = close
    return bars


@asynccontextmanager
async def running(**kwargs: Any) -> AsyncIterator[FakeGateway]:
    """A :class:`FakeGateway` (keyword arguments go to its constructor); the brokers it
    made are closed on exit."""
    gateway = FakeGateway(**kwargs)
    try:
        yield gateway
    finally:
        for broker in gateway.brokers:
            await broker.close()
