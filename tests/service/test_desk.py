"""The desk's account control through the real services on the paper broker and the real
BTC/USDT replay, on SQLite and PostgreSQL: resting orders listed and cancelled, the pause's
cancel policy, close all and the drawdown flatten cancelling entries first, partial closes
with their exits re-placed, positions SignalDesk did not open, and bad input.

Prices (the replay's first candles): candle 0 closes at 113,666.68, so a market buy fills
at 113,689.42 and a sell at 113,643.94 (half the 2 bps spread plus 1 bp of slippage against
the taker, rounded to the tick);
candle 3's low is 112,380.00, the first to reach a buy limit at 112,500.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import col, func, select

from bot.sandbox.server import WAIT_SECONDS
from core.app import Engine
from core.config import DEFAULT_FEED_CSV
from core.db.models import AuditEventRow, FillRow, OrderRow, PaperOrderRow, PaperPositionRow
from core.domain import (
    ExitStyle,
    OrderState,
    OrderType,
    Position,
    Side,
    SignalStatus,
)
from core.errors import (
    BrokerAmbiguousError,
    InvalidInputError,
    NotFoundError,
    OrderRejectedError,
)
from core.marketdata.replay import load_candles
from core.services import Proposal
from core.services.gate import owns
from core.services.trading import CloseAmount, realized_pnl
from tests.conftest import Clock
from tests.support.duties import BTC, FLATTEN_AT_PEAK, Engines, alerts

#: A buy limit below the first candle that candle 3 (low 112,380.00) reaches.
LIMIT = Decimal(112500)


@pytest.fixture
async def engines(make_settings: Callable[..., Any], clock: Clock) -> AsyncIterator[Engines]:
    factory = Engines(make_settings, clock)
    yield factory
    await factory.close_all()


async def market_long(
    engine: Engine, quantity: str = "0.01", stop: str | None = None, target: str | None = None
) -> int:
    """A filled market long; with ``stop`` / ``target`` its exits rest at paper (the exit
    service places them when the entry fills)."""
    proposal = Proposal(
        "test",
        BTC,
        Side.BUY,
        Decimal(quantity),
        stop_loss=None if stop is None else Decimal(stop),
        take_profit=None if target is None else Decimal(target),
    )
    signal = await engine.signals.propose(proposal)
    decision = await engine.signals.approve(signal.id, "owner:1")
    assert decision.signal.status is SignalStatus.FILLED
    return signal.id


async def resting_buy(engine: Engine, limit: Decimal = LIMIT, quantity: str = "0.01") -> str:
    """Approve a buy limit below the market: it rests; returns its client order id."""
    proposal = Proposal(
        "test", BTC, Side.BUY, Decimal(quantity), order_type=OrderType.LIMIT, limit_price=limit
    )
    signal = await engine.signals.propose(proposal)
    decision = await engine.signals.approve(signal.id, "owner:1")
    assert decision.signal.status is SignalStatus.SUBMITTED
    assert decision.report is not None and decision.report.state is OrderState.OPEN
    return decision.report.client_order_id


async def resting_exits(engine: Engine) -> dict[str, Decimal]:
    """Client order id -> quantity of every protective exit resting at the venue."""
    return {
        o.report.client_order_id: o.report.quantity
        for o in await engine.trading.open_orders()
        if o.is_protective
    }


async def paper_state(engine: Engine, client_order_id: str) -> str:
    """The paper ledger's state of an order, after matching resting orders against the
    candles replayed so far (the ledger matches when the account is read)."""
    await engine.broker.positions()
    async with engine.db.session() as session:
        query = select(PaperOrderRow.state).where(
            col(PaperOrderRow.client_order_id) == client_order_id
        )
        return (await session.exec(query)).one()


async def order_rows(engine: Engine) -> int:
    async with engine.db.session() as session:
        return (await session.exec(select(func.count()).select_from(OrderRow))).one()


# --- resting orders and cancel ---------------------------------------------------------


async def test_a_cancelled_limit_never_fills_while_an_uncancelled_one_does(
    engine: Engine,
) -> None:
    cancelled = await resting_buy(engine)
    control = await resting_buy(engine)

    [first, second] = await engine.trading.open_orders()
    assert (first.report.client_order_id, first.purpose) == (cancelled, "open")
    assert first.is_entry and first.signal_id is not None and second.ours
    result = await engine.trading.cancel(cancelled, "owner:1")
    engine.feed.step(5)  # candle 3's low 112,380 reaches the 112,500 limit

    assert result.ok and result.report is not None
    assert result.report.state is OrderState.CANCELLED
    assert await paper_state(engine, cancelled) == "CANCELLED"
    assert await paper_state(engine, control) == "FILLED"  # the same limit did fill
    [position] = await engine.trading.positions()
    assert position.quantity == Decimal("0.01")  # the control's only
    signal = await engine.signals.get(first.signal_id)
    assert signal.status is SignalStatus.FAILED
    assert signal.status_reason == "cancelled by owner:1"
    async with engine.db.session() as session:
        row = (
            await session.exec(select(OrderRow).where(col(OrderRow.client_order_id) == cancelled))
        ).one()
        actions = (await session.exec(select(AuditEventRow.action))).all()
    assert row.state == "CANCELLED" and "cancel" in actions


async def test_cancelling_an_unknown_or_final_order_says_so_and_changes_nothing(
    engine: Engine,
) -> None:
    await market_long(engine)
    rows = await order_rows(engine)

    with pytest.raises(NotFoundError, match="no open order sdnope-s9"):
        await engine.trading.cancel("sdnope-s9", "owner:1")
    filled = (await engine.signals.order_for(1)).client_order_id  # type: ignore[union-attr]
    with pytest.raises(NotFoundError, match=f"no open order {filled}"):
        await engine.trading.cancel(filled, "owner:1")

    assert await order_rows(engine) == rows
    assert (await engine.signals.get(1)).status is SignalStatus.FILLED


# --- pause ----------------------------------------------------------------------------


@pytest.mark.parametrize("cancels", [True, False])
async def test_pause_cancels_resting_entries_by_the_setting_and_keeps_the_stop(
    engines: Engines, database_url: str, cancels: bool
) -> None:
    engine = await engines.start(database_url, pause_cancels_entries=cancels)
    await market_long(engine, stop="100000")
    [stop] = await resting_exits(engine)
    entry = await resting_buy(engine)

    await engine.trading.pause("lunch", "owner:1")
    cancelled = await engine.trading.after_pause("owner:1")

    resting = {o.report.client_order_id for o in await engine.trading.open_orders()}
    assert stop in resting
    if cancels:
        assert [c.client_order_id for c in cancelled] == [entry]
        assert resting == {stop}
        engine.feed.step(5)
        assert await paper_state(engine, entry) == "CANCELLED"
    else:
        assert cancelled == []
        assert resting == {stop, entry}


# --- close all and the flatten ---------------------------------------------------------


async def test_close_all_cancels_the_resting_entry_first_then_closes_and_cancels_the_stop(
    engine: Engine,
) -> None:
    await market_long(engine, stop="100000")
    [stop] = await resting_exits(engine)
    entry = await resting_buy(engine)

    report = await engine.trading.close_all("owner:1")
    engine.feed.step(5)

    assert report.ok
    assert [c.client_order_id for c in report.cancelled] == [entry]
    [close] = report.closes
    assert close.report is not None and close.report.average_price == Decimal("113643.94")
    # (113,643.94 - 113,689.42) x 0.01 = -0.4548, less the entry fee 1.1368942 and the
    # close's 0.01 x 113,643.94 x 0.001 = 1.1364394 (the trade record's net PnL)
    assert close.net_pnl == Decimal("-2.7281336")
    assert [c.client_order_id for c in report.exits_cancelled] == [stop]
    assert await paper_state(engine, entry) == "CANCELLED"
    assert await paper_state(engine, stop) == "CANCELLED"
    assert await engine.trading.positions() == []
    assert await engine.trading.open_orders() == []


def record_calls(
    engine: Engine, calls: list[str], *names: str, asked: asyncio.Event | None = None
) -> None:
    """Append each call of the broker methods ``names`` to ``calls`` (by name), and set
    ``asked`` when one is called."""
    for name in names:
        method = getattr(engine.broker, name)

        async def recorded(*args: Any, _method: Any = method, _name: str = name) -> Any:
            calls.append(_name)
            if asked is not None:
                asked.set()
            return await _method(*args)

        setattr(engine.broker, name, recorded)


async def test_close_all_reads_the_positions_while_it_lists_the_resting_orders(
    engine: Engine,
) -> None:
    await market_long(engine, stop="100000")
    broker = engine.broker
    open_orders = broker.open_orders
    calls: list[str] = []
    reading = asyncio.Event()
    record_calls(engine, calls, "positions", asked=reading)

    async def listed_once_positions_are_asked(symbol: str | None = None) -> Any:
        await asyncio.wait_for(reading.wait(), WAIT_SECONDS)  # fails if read after the list
        return await open_orders(symbol)

    broker.open_orders = listed_once_positions_are_asked  # type: ignore[method-assign]

    report = await engine.trading.close_all("owner:1")

    assert report.ok and [c.symbol for c in report.closes] == [BTC]
    assert calls == ["positions"]  # no entry was cancelled: read once
    assert await engine.trading.positions() == []


async def test_close_all_reads_the_positions_again_after_cancelling_an_entry(
    engine: Engine,
) -> None:
    await market_long(engine)
    await resting_buy(engine)
    calls: list[str] = []
    record_calls(engine, calls, "positions", "cancel_order")

    report = await engine.trading.close_all("owner:1")

    assert report.ok and len(report.cancelled) == 1 and len(report.closes) == 1
    # the entry might have filled before its cancel: the closes use the read after it
    assert calls == ["positions", "cancel_order", "positions"]


async def test_close_all_persists_every_close_first_then_sends_them_concurrently_bounded(
    engines: Engines, database_url: str
) -> None:
    symbols = [BTC, *(f"X{n}/USDT" for n in range(1, 6))]  # six positions, all BTC's candles
    engine = await engines.start(
        database_url,
        replay_files=dict.fromkeys(symbols[1:], DEFAULT_FEED_CSV),
        close_concurrency=3,
    )
    for symbol in symbols:
        signal = await engine.signals.propose(Proposal("test", symbol, Side.BUY, Decimal("0.01")))
        assert (
            await engine.signals.approve(signal.id, "owner:1")
        ).signal.status is SignalStatus.FILLED
    broker = engine.broker
    close_position, positions = broker.close_position, broker.positions
    calls: list[str] = []
    persisted: list[int] = []
    in_flight: list[str] = []
    three_at_once = asyncio.Event()

    async def counted_positions() -> list[Position]:
        calls.append("positions")
        return await positions()

    async def held_close(
        symbol: str, client_order_id: str, quantity: Decimal | None = None, ref: str = ""
    ) -> Any:
        async with engine.db.session() as session:
            query = select(func.count()).where(col(OrderRow.purpose) == "close")
            persisted.append((await session.exec(query)).one())
        in_flight.append(client_order_id)
        assert len(in_flight) <= 3  # CLOSE_CONCURRENCY
        if len(in_flight) == 3:
            three_at_once.set()
        await asyncio.wait_for(three_at_once.wait(), WAIT_SECONDS)  # fails if serialized
        in_flight.remove(client_order_id)
        return await close_position(symbol, client_order_id, quantity, ref)

    broker.positions = counted_positions  # type: ignore[method-assign]
    broker.close_position = held_close  # type: ignore[method-assign]

    report = await engine.trading.close_all("owner:1")

    assert report.ok and sorted(c.symbol for c in report.closes) == sorted(symbols)
    assert all(c.report is not None and c.net_pnl is not None for c in report.closes)
    assert calls == ["positions"]  # read once
    assert persisted == [6] * 6  # every close's row was committed before the first send
    assert await positions() == []
    async with engine.db.session() as session:
        states = (
            await session.exec(select(OrderRow.state).where(col(OrderRow.purpose) == "close"))
        ).all()
        audited = (
            await session.exec(select(func.count()).where(col(AuditEventRow.action) == "close"))
        ).one()
    assert list(states) == ["FILLED"] * 6 and audited == 6


def _the_crash_limit(engine: Engine, breach_step: int) -> Decimal:
    """A buy limit below every low up to the breach and 500 above a later low: it can only
    fill after the flatten, if the flatten left it resting."""
    candles = load_candles(engine.settings.feed_csv)
    now = engine.feed.index
    before = min(c.low for c in candles[now + 1 : now + breach_step + 1])
    later = min(c.low for c in candles[now + breach_step + 1 : now + breach_step + 900])
    assert later < before - 1000
    return (later + 500).quantize(Decimal(1))


async def test_the_drawdown_flatten_cancels_the_resting_entry_which_never_fills_after(
    engines: Engines, database_url: str, clock: Clock
) -> None:
    engine = await engines.start(
        database_url,
        **FLATTEN_AT_PEAK,
    )
    await market_long(engine, "0.075")
    limit = _the_crash_limit(engine, 103)
    entry = await resting_buy(engine, limit, "0.001")

    for _ in range(103):  # the max level is crossed at candle 103 after the peak
        engine.feed.step()
        clock.advance(10)
        await engine.risk.check()
    [report] = await alerts(engine, "Flatten results")
    engine.feed.step(900)  # well past the later low that reaches the limit

    assert "BTC/USDT entry order of signal" in report and f"{entry} cancelled" in report
    assert "BTC/USDT: sold 0.075 @ " in report and " after fees" in report
    assert "The account is flat." in report
    assert await paper_state(engine, entry) == "CANCELLED"
    assert await engine.trading.positions() == []


class ForeignBroker:
    """The paper broker, but its positions are reported as opened by hand (a position
    SignalDesk did not open, as a ccxt or MT5 adapter reports one)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = inner.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def positions(self) -> list[Position]:
        return [replace(p, opened_by_signaldesk=False) for p in await self._inner.positions()]


class RefusingBroker(ForeignBroker):
    """The paper broker refusing every close (a market closed, a venue rule)."""

    async def positions(self) -> list[Position]:
        return list(await self._inner.positions())

    async def close_position(self, *args: Any, **kwargs: Any) -> None:
        raise OrderRejectedError("market closed")


async def test_a_refused_close_keeps_the_stop_resting_and_is_reported(engine: Engine) -> None:
    await market_long(engine, stop="100000")
    [stop] = await resting_exits(engine)
    engine.trading.broker = RefusingBroker(engine.broker)  # type: ignore[assignment]

    report = await engine.trading.close_all("owner:1")

    assert not report.ok
    [close] = report.closes
    assert close.error == "market closed" and close.report is None
    assert report.exits_cancelled == ()
    assert [o.report.client_order_id for o in await engine.trading.open_orders()] == [stop]
    async with engine.db.session() as session:
        states = (
            await session.exec(select(OrderRow.state).where(col(OrderRow.purpose) == "close"))
        ).all()
    assert states == ["FAILED"]


class RefusingOneBroker(ForeignBroker):
    """The paper broker refusing the close of one symbol (``refused``)."""

    def __init__(self, inner: Any, refused: str) -> None:
        super().__init__(inner)
        self.refused = refused

    async def positions(self) -> list[Position]:
        return list(await self._inner.positions())

    async def close_position(self, symbol: str, *args: Any, **kwargs: Any) -> Any:
        if symbol == self.refused:
            raise OrderRejectedError("market closed")
        return await self._inner.close_position(symbol, *args, **kwargs)


async def three_stopped_longs(engines: Engines, database_url: str) -> tuple[Engine, dict[str, str]]:
    """An engine holding filled longs in BTC/USDT, X1/USDT and X2/USDT (all on BTC's
    candles), each with its stop resting at paper; the stops' client order ids by symbol."""
    symbols = [BTC, "X1/USDT", "X2/USDT"]
    engine = await engines.start(
        database_url, replay_files=dict.fromkeys(symbols[1:], DEFAULT_FEED_CSV)
    )
    for symbol in symbols:
        proposal = Proposal("test", symbol, Side.BUY, Decimal("0.01"), stop_loss=Decimal(100000))
        signal = await engine.signals.propose(proposal)
        assert (
            await engine.signals.approve(signal.id, "owner:1")
        ).signal.status is SignalStatus.FILLED
    stops = {o.report.symbol: o.report.client_order_id for o in await engine.trading.open_orders()}
    assert sorted(stops) == sorted(symbols)
    return engine, stops


async def test_close_all_with_one_close_refused_records_every_other_fill_in_its_trade(
    engines: Engines, database_url: str
) -> None:
    engine, stops = await three_stopped_longs(engines, database_url)
    engine.trading.broker = RefusingOneBroker(engine.broker, "X1/USDT")  # type: ignore[assignment]

    report = await engine.trading.close_all("owner:1")

    closes = {c.symbol: c for c in report.closes}
    assert closes["X1/USDT"].error == "market closed" and closes["X1/USDT"].report is None
    for symbol in (BTC, "X2/USDT"):
        assert closes[symbol].ok and closes[symbol].net_pnl is not None
    # the two fills closed their trades (one recording) and the exit service cancelled
    # their stops; the refused position keeps its trade and its stop
    assert [t.symbol for t in await engine.trades.open_trades()] == ["X1/USDT"]
    assert sorted(c.client_order_id for c in report.exits_cancelled) == sorted(
        stops[s] for s in (BTC, "X2/USDT")
    )
    assert [o.report.client_order_id for o in await engine.trading.open_orders()] == [
        stops["X1/USDT"]
    ]
    assert [p.symbol for p in await engine.trading.positions()] == ["X1/USDT"]


async def test_close_all_cancels_the_stops_together_and_one_refused_cancel_spares_the_rest(
    engines: Engines, database_url: str
) -> None:
    engine, stops = await three_stopped_longs(engines, database_url)
    paper = engine.broker.inner
    cancel = paper.cancel_order

    async def refusing_cancel(client_order_id: str, symbol: str) -> Any:
        if client_order_id == stops["X1/USDT"]:
            raise OrderRejectedError("the venue is busy")
        return await cancel(client_order_id, symbol)

    paper.cancel_order = refusing_cancel

    report = await engine.trading.close_all("owner:1")

    assert all(c.ok for c in report.closes) and await engine.trades.open_trades() == []
    assert sorted(c.client_order_id for c in report.exits_cancelled) == sorted(
        stops[s] for s in (BTC, "X2/USDT")
    )
    assert [o.report.client_order_id for o in await engine.trading.open_orders()] == [
        stops["X1/USDT"]
    ]


async def test_reports_reducing_one_trade_in_one_recording_apply_in_turn_each_fill_once(
    engine: Engine, clock: Clock
) -> None:
    await market_long(engine, "0.03")
    [trade] = await engine.trades.open_trades()
    async with engine.db.session() as session:
        session.add_all(
            OrderRow(
                client_order_id=cid,
                purpose="close",
                trade_id=trade.id,
                symbol=BTC,
                side=Side.SELL.value,
                quantity=Decimal("0.01"),
                order_type="market",
                state=OrderState.SUBMITTED.value,
                reduce_only=True,
                created_at=clock(),
                updated_at=clock(),
            )
            for cid in ("close-1", "close-2")
        )
    first, second = await asyncio.gather(
        engine.broker.close_position(BTC, "close-1", Decimal("0.01")),
        engine.broker.close_position(BTC, "close-2", Decimal("0.01")),
    )
    assert first is not None and second is not None

    await engine.trading.record_reports([first, second, first], "owner:1")  # one twice

    reduced = await engine.trades.trade(trade.id)
    assert reduced.quantity_open == Decimal("0.01")
    async with engine.db.session() as session:
        fills = (
            await session.exec(
                select(FillRow.client_order_id).where(col(FillRow.trade_id) == trade.id)
            )
        ).all()
    assert sorted(c for c in fills if c.startswith("close")) == ["close-1", "close-2"]
    # 0.02 sold at 113,643.94 out of a long entered at 113,689.42: 0.02 x -45.48
    assert reduced.realized_pnl == Decimal("-0.9096")


@pytest.mark.parametrize("flatten_external", [False, True])
async def test_an_external_position_is_left_by_close_all_and_closed_by_the_flatten_when_asked(
    engines: Engines, database_url: str, flatten_external: bool
) -> None:
    engine = await engines.start(database_url, flatten_external=flatten_external)
    await market_long(engine)
    foreign = ForeignBroker(engine.broker)
    engine.trading.broker = foreign  # type: ignore[assignment]
    engine.risk._broker = foreign  # type: ignore[assignment]
    [view] = await engine.trading.book()
    assert view.external and not owns(view.position)

    report = await engine.trading.close_all("owner:1")
    assert report.closes == () and [p.symbol for p in report.left_open] == [BTC]
    assert len(await engine.trading.positions()) == 1

    await engine.risk._flatten()  # the max-level action, as the breach runs it

    [text] = await alerts(engine, "Flatten results")
    if flatten_external:
        assert await engine.trading.positions() == []
        assert "BTC/USDT: sold 0.01" in text and "The account is flat." in text
    else:
        assert len(await engine.trading.positions()) == 1
        assert "BTC/USDT long 0.01" in text and "external, left untouched" in text
        assert "Everything SignalDesk opened is closed." in text


# --- partial closes --------------------------------------------------------------------


async def test_half_a_long_closes_then_the_rest_and_the_realized_pnl_adds_up(
    engine: Engine,
) -> None:
    signal_id = await market_long(engine, "0.02", stop="100000", target="130000")
    before = await resting_exits(engine)

    half = await engine.trading.close(BTC, CloseAmount.parse("50%"), "owner:1")
    [position] = await engine.trading.positions()
    resized = await resting_exits(engine)
    trade = await engine.trading.trades.for_signal(signal_id)
    engine.feed.step(2)  # candle 2 closes at 112,693.15: sold 2 bps lower at 112,670.61
    rest = await engine.trading.close("btcusdt", CloseAmount.parse(""), "owner:1")

    [first] = half.closes
    assert first.partial and first.report is not None
    assert first.report.filled_quantity == Decimal("0.01")
    assert position.quantity == Decimal("0.01")
    # the trade and its exits halve: stop and target re-placed for the 0.01 left under
    # the next ids (the exit service), the old ones cancelled
    assert trade is not None and trade.quantity_open == Decimal("0.01")
    assert sorted(before.values()) == [Decimal("0.02")] * 2
    assert sorted(resized) == sorted(cid[:-1] + "2" for cid in before)
    assert set(resized.values()) == {Decimal("0.01")}
    assert half.exits_cancelled == ()  # resized, not ended
    [second] = rest.closes
    assert not second.partial and second.report is not None
    assert second.report.average_price == Decimal("112670.61")
    assert sorted(c.client_order_id for c in rest.exits_cancelled) == sorted(resized)
    # by hand: (113,643.94 - 113,689.42) x 0.01 + (112,670.61 - 113,689.42) x 0.01
    closed = await engine.trading.trades.for_signal(signal_id)
    assert closed is not None and closed.realized_pnl == Decimal("-10.6429")  # the record
    # net so far after the half: -0.4548 less the entry fee 0.02 x 113,689.42 x 0.001 =
    # 2.2737884 and the close's 0.01 x 113,643.94 x 0.001 = 1.1364394
    assert first.net_pnl == Decimal("-3.8650278")
    # after the rest: -10.6429 less 2.2737884 + 1.1364394 + 0.01 x 112,670.61 x 0.001
    # (1.1267061) = 4.5369339: the trade's net PnL, as its exit message says
    assert second.net_pnl == Decimal("-15.1798339") == closed.net_pnl
    async with engine.db.session() as session:
        ledger = await session.get(PaperPositionRow, BTC)
    assert ledger is not None and ledger.realized_pnl == Decimal("-10.6429")  # paper agrees
    assert await engine.trading.positions() == []
    assert await engine.trading.open_orders() == []


BAD_CLOSES = [
    ("BTC/USDT", "0", InvalidInputError, "the amount must be above zero, got 0"),
    ("BTC/USDT", "250%", InvalidInputError, "at most 100% of a position can be closed"),
    ("BTC/USDT", "-1", InvalidInputError, "the amount must be above zero, got -1"),
    ("BTC/USDT", "half", InvalidInputError, "'half' is not an amount"),
    ("BTC/USDT", "0.5", InvalidInputError, "BTC/USDT: cannot close 0.5, the position holds 0.01"),
    ("NOPE", "", NotFoundError, "no open position in NOPE"),
]


@pytest.mark.parametrize(("symbol", "amount", "error", "message"), BAD_CLOSES)
async def test_bad_close_input_names_what_is_wrong_and_changes_nothing(
    engine: Engine, symbol: str, amount: str, error: type[Exception], message: str
) -> None:
    await market_long(engine)
    rows = await order_rows(engine)

    with pytest.raises(error) as raised:
        await engine.trading.close(symbol, CloseAmount.parse(amount), "owner:1")

    assert message in str(raised.value)
    assert await order_rows(engine) == rows
    [position] = await engine.trading.positions()
    assert position.quantity == Decimal("0.01")


def test_realized_pnl_of_a_short_gains_when_the_price_falls() -> None:
    from core.domain import OrderReport

    report = OrderReport(
        "c", BTC, Side.BUY, Decimal(2), OrderState.FILLED,
        filled_quantity=Decimal(2), average_price=Decimal(90),
    )  # fmt: skip
    assert realized_pnl(Decimal(-2), Decimal(100), report) == Decimal(20)
    assert realized_pnl(Decimal(2), Decimal(100), report) == Decimal(-20)


# --- the book ------------------------------------------------------------------------


class SpotLikeBroker(ForeignBroker):
    """The paper broker reporting positions the way ccxt spot does: from the balance,
    entry = mark (so the unrealized PnL it reports is 0 whatever the move)."""

    async def positions(self) -> list[Position]:
        return [
            replace(p, average_entry=p.mark_price, unrealized_pnl=Decimal(0))
            for p in await self._inner.positions()
        ]


async def test_the_book_takes_entry_and_levels_from_the_trade_record_not_the_balance(
    engine: Engine,
) -> None:
    await market_long(engine, stop="100000", target="130000")
    engine.trading.broker = SpotLikeBroker(engine.broker)  # type: ignore[assignment]
    engine.feed.step(2)  # candle 2 closes at 112,693.15

    [view] = await engine.trading.book()

    assert view.position.average_entry == Decimal("112693.15")  # what the venue says
    assert view.entry == Decimal("113689.42") and not view.external  # our fill
    assert view.unrealized_pnl == (Decimal("112693.15") - Decimal("113689.42")) * Decimal("0.01")
    assert (view.stop_loss, view.take_profit) == (Decimal(100000), Decimal(130000))
    assert view.exit_style is ExitStyle.ORDERS
    report = await engine.trading.close_all("owner:1")
    # from our entry: (112,670.61 - 113,689.42) x 0.01 = -10.1881, less the fees
    # 1.1368942 + 1.1267061
    assert report.closes[0].net_pnl == Decimal("-12.4517003")


class AmbiguousBroker(RefusingBroker):
    """The paper broker whose close requests time out before reaching it."""

    async def close_position(self, *args: Any, **kwargs: Any) -> None:
        raise BrokerAmbiguousError("timed out")


async def test_a_partial_close_of_unknown_outcome_is_resubmitted_as_the_same_part(
    engine: Engine, clock: Clock
) -> None:
    await market_long(engine, "0.02")
    engine.trading.broker = AmbiguousBroker(engine.broker)  # type: ignore[assignment]

    report = await engine.trading.close(BTC, CloseAmount.parse("50%"), "owner:1")
    engine.trading.broker = engine.broker  # the venue answers again
    clock.advance(600)
    await engine.reconciler.run()

    assert report.closes[0].error == "outcome unknown, reconciling: timed out"
    [position] = await engine.trading.positions()
    assert position.quantity == Decimal("0.01")  # half, not the whole position
