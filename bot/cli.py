"""``signaldesk``: the command line (typer).

Every command works on the configured database (``DATABASE_URL``) and broker (``BROKER``),
through the same services as the Telegram bot; the schema is brought to the latest
migration first. Errors print one line to stderr and exit non-zero (2 for a setting that
cannot be served, 1 otherwise); nothing is written when the input is bad. Numbers, ids and
text are read through :mod:`core.bounds`, like the webhook's and the chat's.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from core.domain import ExitStyle, OrderType, Side, Signal, SignalStatus
from core.errors import ConfigError, SignalDeskError

if TYPE_CHECKING:
    from core.app import Engine
    from core.config import Settings
    from core.marketdata.base import Instrument
    from core.services import Proposal

# The engine (SQLAlchemy, the models, the services, structlog) is imported inside the
# commands that use it: ``--help``, ``--version`` and a mistyped option answer without it.

__all__ = ["app", "main"]

app = typer.Typer(
    help="SignalDesk: a human-in-the-loop trading operator. Settings come from the "
    "environment and .env (see .env.example).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help and usage errors: rich's (a quarter of a second of imports) are
    # not worth it for a command that answers at once
    rich_markup_mode=None,
)

T = TypeVar("T")

MAX_LIST = 1000
"""The most signals or audit events one listing prints."""


def _print_version(value: bool) -> None:
    if value:
        import importlib.metadata

        typer.echo(f"signaldesk {importlib.metadata.version('signaldesk')}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Options that come before any command."""


@app.command()
def run() -> None:
    """Run the Telegram bot and every always-on duty, like python -m bot (needs
    TELEGRAM_BOT_TOKEN and TELEGRAM_OWNER_IDS; signaldesk demo needs neither)."""
    from bot.__main__ import main as bot_main

    raise typer.Exit(bot_main())


def _settings() -> Settings:
    from core.config import load_settings
    from core.logging import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, json=settings.log_json, secrets=settings.secrets())
    return settings


def _run(action: Callable[[Engine], Awaitable[T]]) -> T:
    """Build the engine, run ``action``, close it; a SignalDeskError exits 1 with its line."""
    settings = _checked(_settings)  # core.logging before the engine's imports (see there)
    from core.app import build_engine

    async def body() -> T:
        engine = await build_engine(settings)
        try:
            return await action(engine)
        finally:
            await engine.close()

    return _complete(body())


def _complete(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; a SignalDeskError becomes its one line on stderr (see :func:`_fail`)."""
    import asyncio

    try:
        return asyncio.run(work)
    except SignalDeskError as exc:
        _fail(exc)


def _fail(exc: SignalDeskError) -> NoReturn:
    """Print ``error: <line>`` to stderr and exit 2 for a ConfigError, else 1."""
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2 if isinstance(exc, ConfigError) else 1) from None


def _checked(parse: Callable[[], T]) -> T:
    """``parse()`` before any engine is built: its SignalDeskError exits via :func:`_fail`."""
    try:
        return parse()
    except SignalDeskError as exc:
        _fail(exc)


def _decimal(name: str, text: str | None) -> Decimal | None:
    """``text`` as a positive, storable Decimal (None stays None); see core.bounds."""
    from core import bounds

    return None if text is None else bounds.decimal_value(name, text)


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _price(value: Decimal | None, instrument: Instrument | None = None) -> str:
    """A price with ``instrument``'s tick decimals when given (ETH/BTC: 5), else guessed
    (:func:`core.marketdata.base.format_price`); ``-`` for none."""
    from core.marketdata.base import format_price

    return "-" if value is None else format_price(value, instrument)


async def _with_instruments(
    engine: Engine, work: Awaitable[T], symbols: Callable[[T], Iterable[str]]
) -> tuple[T, Mapping[str, Instrument]]:
    """``work``'s result and the listed instruments of its ``symbols`` (for printing
    prices with their precision; see :meth:`core.marketdata.search.SymbolSearch.known`)."""
    result = await work
    return result, await engine.symbols.known(symbols(result))


def _signal_line(signal: Signal, instrument: Instrument | None = None) -> str:
    """One signal; prices with ``instrument``'s tick decimals when given (ETH/BTC: 5)."""
    kind = (
        "market"
        if signal.order_type is OrderType.MARKET
        else f"limit {_price(signal.limit_price, instrument)}"
    )
    reason = f" ({signal.status_reason})" if signal.status_reason else ""
    return (
        f"#{signal.id:<4} {signal.status.value:<9} {signal.side.value:<4} {signal.quantity} "
        f"{signal.symbol} {kind}  ref {_price(signal.reference_price, instrument)}  "
        f"sl {_price(signal.stop_loss, instrument)}  tp {_price(signal.take_profit, instrument)}  "
        f"expires {signal.expires_at:%Y-%m-%d %H:%M} UTC{reason}"
    )


@app.command()
def migrate() -> None:
    """Bring the database schema to the latest migration (alembic upgrade head)."""
    from core.db.engine import upgrade_schema

    settings = _settings()
    _complete(upgrade_schema(settings.database_url))
    typer.echo("database is at the latest migration")


@app.command(context_settings={"ignore_unknown_options": True})
def propose(
    symbol: Annotated[
        str, typer.Argument(help="symbol, any unambiguous spelling: BTC/USDT, btcusdt, BTC-USDT")
    ],
    side: Annotated[Side, typer.Argument(help="buy or sell")],
    quantity: Annotated[str, typer.Argument(help="base quantity, e.g. 0.01 (BTC)")],
    sl: Annotated[str | None, typer.Option(help="stop loss price (quote currency)")] = None,
    tp: Annotated[str | None, typer.Option(help="take profit price (quote currency)")] = None,
    limit: Annotated[
        str | None, typer.Option(help="limit price (quote); without it a market order")
    ] = None,
    note: Annotated[str, typer.Option(help="free text shown on the card")] = "",
    trail: Annotated[
        str | None, typer.Option(help="trailing stop distance, percent of the best price")
    ] = None,
    breakeven_r: Annotated[
        str | None, typer.Option(help="move the stop to the entry at this profit, in R")
    ] = None,
) -> None:
    """Propose a trade; it waits as PROPOSED for an owner's approval (card in Telegram)."""
    from core import bounds
    from core.services import Proposal

    proposal = _checked(
        lambda: Proposal(
            source="cli",
            symbol=bounds.clean_text("symbol", symbol.strip(), 32),
            side=side,
            quantity=_decimal("quantity", quantity) or Decimal(0),
            order_type=OrderType.LIMIT if limit else OrderType.MARKET,
            limit_price=_decimal("limit", limit),
            stop_loss=_decimal("sl", sl),
            take_profit=_decimal("tp", tp),
            note=bounds.clean_text("note", note, 500),
            trail_pct=_decimal("trail", trail),
            breakeven_at_r=_decimal("breakeven-r", breakeven_r),
        )
    )
    signal, instrument = _run(lambda engine: _propose_resolved(engine, proposal))
    typer.echo(_signal_line(signal, instrument))


async def _propose_resolved(engine: Engine, proposal: Proposal) -> tuple[Signal, Instrument]:
    """Propose with the symbol normalised through the symbol search (``btcusdt`` ->
    ``BTC/USDT``; an ambiguous spelling raises with the candidates); the signal and its
    instrument (for printing prices with its precision)."""
    symbol = await engine.symbols.resolve(proposal.symbol)
    signal = await engine.signals.propose(replace(proposal, symbol=symbol))
    return signal, await engine.symbols.instrument(symbol)


@app.command()
def signals(
    all_: Annotated[bool, typer.Option("--all", help="every state, not only pending")] = False,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_LIST, help="at most this many, newest first")
    ] = 20,
) -> None:
    """List pending signals (or, with --all, recent signals in every state)."""
    statuses = None if all_ else [SignalStatus.PROPOSED]
    found, known = _run(
        lambda engine: _with_instruments(
            engine, engine.signals.recent(statuses, limit), lambda s: (i.symbol for i in s)
        )
    )
    for signal in found:
        typer.echo(_signal_line(signal, known.get(signal.symbol)))
    if not found:
        typer.echo("no signals" if all_ else "no pending signals")


@app.command()
def approve(signal_id: Annotated[int, typer.Argument(help="signal id, from `signals`")]) -> None:
    """Approve a pending signal: re-check it, then execute it through the broker."""
    from core import bounds

    signal_id = _checked(lambda: bounds.signal_id(signal_id))
    decision, known = _run(
        lambda engine: _with_instruments(
            engine, engine.signals.approve(signal_id, "cli"), lambda d: [d.signal.symbol]
        )
    )
    instrument = known.get(decision.signal.symbol)
    typer.echo(_signal_line(decision.signal, instrument))
    report = decision.report
    if report is not None and report.average_price is not None:
        typer.echo(
            f"filled {report.filled_quantity} {report.symbol} "
            f"@ {_price(report.average_price, instrument)}"
            f" (fee {report.fee} {report.fee_currency}), order {report.client_order_id}"
        )
    if decision.signal.status not in (SignalStatus.FILLED, SignalStatus.SUBMITTED):
        raise typer.Exit(1)


@app.command()
def reject(
    signal_id: Annotated[int, typer.Argument(help="signal id, from `signals`")],
    reason: Annotated[str, typer.Option(help="why, kept in the audit trail")] = "",
) -> None:
    """Reject a pending signal."""
    from core import bounds

    signal_id = _checked(lambda: bounds.signal_id(signal_id))
    reason = _checked(lambda: bounds.clean_text("reason", reason, 500))
    signal, known = _run(
        lambda engine: _with_instruments(
            engine, engine.signals.reject(signal_id, "cli", reason), lambda s: [s.symbol]
        )
    )
    typer.echo(_signal_line(signal, known.get(signal.symbol)))


@app.command()
def history(
    limit: Annotated[
        int, typer.Argument(min=1, max=MAX_LIST, help="how many audit events, newest first")
    ] = 20,
) -> None:
    """The audit trail: who moved which signal from which state to which, when and why."""
    for event in _run(lambda engine: engine.signals.history(limit)):
        subject = f"#{event.signal_id}" if event.signal_id is not None else "-"
        move = f"{event.from_status or '-'} -> {event.to_status}" if event.to_status else ""
        reason = f"  ({event.reason})" if event.reason else ""
        typer.echo(
            f"{event.at:%Y-%m-%d %H:%M:%S} UTC  {event.actor:<12} {event.action:<10} "
            f"{subject:<5} {move}{reason}"
        )


_EXITS = {
    ExitStyle.ORDERS: "orders at the venue",
    ExitStyle.ATTACHED: "on the ticket",
    ExitStyle.WATCHED: "watched by SignalDesk",
}


@app.command()
def positions() -> None:
    """Open positions: entry from our own fills, mark, unrealized PnL (quote currency),
    stop loss, take profit and where they live; external positions marked."""
    found, known = _run(
        lambda engine: _with_instruments(
            engine, engine.trading.book(), lambda views: (v.position.symbol for v in views)
        )
    )
    for v in found:
        p = v.position
        instrument = known.get(p.symbol)
        ref = f" [{p.position_ref}]" if p.position_ref else ""
        line = (
            f"{p.symbol + ref:<10} {'long' if p.quantity > 0 else 'short':<5} {v.quantity} "
            f"entry {_price(v.entry, instrument)}  mark {_price(p.mark_price, instrument)}  "
            f"uPnL {v.unrealized_pnl:+,.2f}"
        )
        if v.external:
            line += "  external: not opened by SignalDesk"
        else:
            where = f" ({_EXITS[v.exit_style]})" if v.exit_style is not None else ""
            stop, take = _price(v.stop_loss, instrument), _price(v.take_profit, instrument)
            line += f"  sl {stop}  tp {take}{where}"
        typer.echo(line)
    if not found:
        typer.echo("no open positions")


@app.command()
def orders() -> None:
    """Resting orders at the venue: client order id, symbol, side, quantity, type and
    level, and what each is (a signal's entry, a stop loss, not ours)."""
    found, known = _run(
        lambda engine: _with_instruments(
            engine, engine.trading.open_orders(), lambda orders: (o.report.symbol for o in orders)
        )
    )
    for o in found:
        r = o.report
        level = r.trigger_price if r.order_type.is_trigger else r.limit_price
        what = "entry" if o.is_entry else o.purpose.replace("_", " ")
        what = what or "not placed by SignalDesk"
        if o.signal_id is not None:
            what += f" of signal #{o.signal_id}"
        typer.echo(
            f"{r.client_order_id or r.broker_order_id:<20} {r.symbol:<10} {r.side.value:<4} "
            f"{r.quantity} {r.order_type.value} @ {_price(level, known.get(r.symbol))}  {what}"
        )
    if not found:
        typer.echo("no resting orders")


@app.command()
def cancel(
    client_order_id: Annotated[str, typer.Argument(help="client order id, from `orders`")],
) -> None:
    """Cancel one of our resting orders; a cancelled entry fails its signal."""
    result = _run(lambda engine: engine.trading.cancel(client_order_id, "cli"))
    if result.error:
        typer.echo(f"error: cancel {client_order_id} failed: {result.error}", err=True)
        raise typer.Exit(1)
    assert result.report is not None
    typer.echo(f"{client_order_id} {result.symbol}: {result.report.state.value.lower()}")


@app.command()
def status() -> None:
    """Broker, account, drawdown, pause state and pending signals."""
    summary = _run(lambda engine: engine.trading.status())
    typer.echo(f"broker     {summary.broker}")
    if summary.account is not None:
        a = summary.account
        typer.echo(f"balance    {_money(a.balance)} {a.currency}")
        typer.echo(f"equity     {_money(a.equity)} {a.currency}")
        typer.echo(f"margin     {_money(a.margin)} {a.currency}")
    else:
        typer.echo(f"account    unavailable: {summary.broker_error}")
    drawdown = summary.drawdown_pct
    typer.echo(f"drawdown   {'-' if drawdown is None else f'{drawdown:.2f}%'}")
    operator = summary.operator
    why = f" ({operator.pause_reason})" if operator.paused and operator.pause_reason else ""
    typer.echo(f"trading    {operator.trading_state.value}{why}")
    typer.echo(f"positions  {len(summary.positions)} open")
    typer.echo(f"pending    {summary.pending_signals} signal(s)")


@app.command()
def symbols(
    query: Annotated[str, typer.Argument(help="part of a symbol, base or quote: eth, btcusdt")],
) -> None:
    """Search the market data's symbols (cached in the database, SYMBOLS_TTL_SECONDS):
    symbol, type, base/quote, minimum quantity and price tick."""
    found = _run(lambda engine: engine.symbols.search(query, limit=50))
    for item in found:
        typer.echo(
            f"{item.symbol:<16} {item.kind:<6} {item.base}/{item.quote:<8} "
            f"min {format(item.min_quantity.normalize(), 'f'):<12} "
            f"tick {format(item.price_tick.normalize(), 'f')}"
        )
    if not found:
        typer.echo(f"no symbol like {query}")


@app.command()
def engine() -> None:
    """Run the always-on duties without Telegram (scheduler: heartbeat, drawdown guard,
    expiry, reconciliation, strategy; the webhook on $PORT when set) until Ctrl-C. Its
    messages wait in the outbox for a bot process to deliver them."""
    settings = _settings()  # core.logging before the engine's imports (see there)
    from core.runner import run_engine

    _complete(run_engine(settings))


@app.command()
def demo(
    autopilot: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="run headless: a scripted owner approves and rejects N cards through the "
            "sandbox, then print a summary and exit",
        ),
    ] = None,
) -> None:
    """The whole product on the embedded defaults, no token or account needed: the sandbox
    Telegram server with a web chat page, the bot, the paper broker on the real BTC/USDT
    replay and a demo signal source. Prints the web chat's URL."""
    settings = _settings()  # core.logging before the bot's imports (see there)
    from bot.demo import run_demo

    raise typer.Exit(_complete(run_demo(settings, autopilot)))


def main() -> None:
    """Entry point of the ``signaldesk`` script."""
    try:
        app()
    except SignalDeskError as exc:  # a ConfigError raised while reading settings
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2 if isinstance(exc, ConfigError) else 1) from None
    finally:
        # The interpreter's exit runs the cyclic collector over every object the imports
        # made (~100,000: SQLAlchemy, pydantic, the models), a sixth of a second for
        # nothing; frozen, they are only released. atexit handlers and flushes still run.
        gc.freeze()
