"""Every text the bot shows, and the inline keyboards that go with them.

Messages use Telegram's HTML parse mode (the bot's default): every value that comes from
outside (notes, sources, reasons, user names, broker errors) goes through :func:`esc`.
Callback toasts (``answerCallbackQuery`` text) are plain text of at most 200 characters and
are never HTML-escaped. A message is at most 4096 characters (Bot API ``sendMessage``);
lists are cut to fit.

Numbers: prices keep at least two decimals and their own precision beyond that
(``43,120.50``, ``1.08345``), money has two decimals, quantities are shown as exact as they
are (``0.01``). Times are UTC.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal

from aiogram.types import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, User

from bot.callbacks import (
    CardAction,
    ConfirmAction,
    ConfirmCallback,
    NotifyCallback,
    OrderCallback,
    PositionCallback,
    SignalCallback,
    StrategyAction,
    StrategyCallback,
    fits,
)
from core.brokers.ibkr_hours import MarketHours
from core.config import BrokerName, DrawdownAction, MarketClosedPolicy, Settings
from core.db.types import canonical
from core.domain import (
    ZERO,
    Account,
    AuditEvent,
    ExitReason,
    ExitStyle,
    OrderReport,
    OrderType,
    Position,
    Side,
    Signal,
    SignalStatus,
    Trade,
    TradingState,
)
from core.marketdata.base import Instrument, format_price
from core.notify import NEVER_OFF, SETTABLE, Loudness, NoticeSettings, Topic, TradeExit
from core.services import Decision, OperatorStatus, StatusSummary
from core.services.gate import BREACH_MAX, GateState
from core.services.heartbeat import Heartbeat
from core.services.reports import MAX_DAYS, DailyReport, DailySummary, Performance, PnlReport
from core.services.risk import BreachLevel, FlattenReport, RiskFigures
from core.services.trades import SourceRecord
from core.services.trading import (
    CancelResult,
    ClosePlan,
    CloseReport,
    CloseResult,
    PositionView,
    RestingOrder,
)
from core.strategies.desk import InstanceStatus

__all__ = [
    "CLOSE_PERCENTS",
    "COMMANDS",
    "DEFAULT_HISTORY",
    "EDIT_TERMS",
    "MAX_CAPTION",
    "MAX_HISTORY",
    "MAX_MESSAGE",
    "MAX_TOAST",
    "RISK_CHOICES",
    "Card",
    "CardContext",
    "CommandSpec",
    "Page",
    "StrangerTally",
    "actor_name",
    "approvals_off",
    "approve_toast",
    "balance_text",
    "bot_commands",
    "cancel_result_text",
    "cancel_toast",
    "card",
    "chart_caption",
    "chart_failed",
    "chat_proposed",
    "close_prompt",
    "close_results_text",
    "confirm_cancelled",
    "confirm_expired",
    "confirm_keyboard",
    "confirm_prompt",
    "confirm_running",
    "confirm_taken",
    "conflict_toast",
    "daily_summary_text",
    "daily_text",
    "decided_toast",
    "drawdown_text",
    "edit_done",
    "edit_prompt",
    "edit_prompt_ref",
    "edit_toast",
    "error_line",
    "esc",
    "exit_place",
    "exits_line",
    "heartbeat_text",
    "help_text",
    "history_text",
    "inactive_button",
    "internal_error",
    "money",
    "no_orders",
    "no_pending",
    "no_position",
    "no_positions",
    "not_paused",
    "notify_keyboard",
    "notify_refused",
    "notify_set",
    "notify_text",
    "only_external",
    "orders_pages",
    "outcome",
    "paused_text",
    "pending_more",
    "performance_text",
    "pnl_text",
    "positions_pages",
    "price",
    "private_hint",
    "quantity",
    "refusal",
    "reject_toast",
    "resume_prompt",
    "resumed_text",
    "split_message",
    "stale_notice",
    "start_text",
    "status_text",
    "strangers_notice",
    "strategies_keyboard",
    "strategies_text",
    "strategy_ran",
    "strategy_toggled",
    "symbols_text",
    "text_notice",
    "trade_exit_text",
    "trades_text",
    "trading_line",
    "unknown_command",
    "usage",
]

MAX_MESSAGE = 4096
"""Bot API limit on a message's text, in characters."""
MAX_TOAST = 200
"""Bot API limit on ``answerCallbackQuery`` text, in characters."""
MAX_HISTORY = 25
"""Largest N of ``/history N`` (keeps the reply under :data:`MAX_MESSAGE`)."""
DEFAULT_HISTORY = 10
"""N of a bare ``/history``."""


# --- numbers and names -----------------------------------------------------------------


def esc(value: object) -> str:
    """``value`` as text safe inside an HTML-mode message."""
    return html.escape(str(value), quote=False)


#: A price with its instrument's tick decimals (see :func:`core.marketdata.base.format_price`).
price = format_price


def money(value: Decimal) -> str:
    """An amount of quote currency, two decimals: ``1,234.57``; sub-cent amounts keep
    their digits (``0.0004``) so a small fee is not shown as zero."""
    if ZERO < abs(value) < Decimal("0.01"):
        return format(canonical(value), "f")
    return f"{value:,.2f}"


def signed(value: Decimal) -> str:
    """An amount with its sign: ``+12.30``, ``-4.10``."""
    return ("+" if value >= 0 else "-") + money(abs(value))


def quantity(value: Decimal) -> str:
    """A quantity exactly as it is: ``0.01``, ``1,000``."""
    return format(canonical(value), ",f")


def _fee(amount: Decimal, currency: str) -> str:
    return f"fee {money(amount)} {currency}".rstrip()


def _pct(value: Decimal) -> str:
    return f"{value:.2f}%"


def _base_quote(symbol: str) -> tuple[str, str]:
    """``BTC/USDT`` -> (``BTC``, ``USDT``); ``BTC/USDT:USDT`` -> (``BTC``, ``USDT``); a
    symbol without ``/`` (MT5's ``EURUSD``) -> (``EURUSD``, ``""``)."""
    base, sep, rest = symbol.partition("/")
    return (base, rest.partition(":")[0]) if sep else (symbol, "")


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _hhmm(moment: datetime) -> str:
    return moment.strftime("%H:%M UTC")


def actor_name(user: User) -> str:
    """How an owner appears in the audit trail and on cards: ``@username``, else
    ``First Last (id)``."""
    return f"@{user.username}" if user.username else f"{user.full_name} ({user.id})"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _lines(header: str, lines: Sequence[str], footer: str = "") -> str:
    """``header``, every one of ``lines``, then ``footer``, one per line. Nothing is cut:
    a text longer than :data:`MAX_MESSAGE` is sent as several messages
    (:func:`split_message`)."""
    return "\n".join([header, *lines, *([footer] if footer else [])])


@dataclass(frozen=True, slots=True)
class Page:
    """One message of a long answer: HTML ``text`` (at most :data:`MAX_MESSAGE`
    characters) and the buttons that belong to what it shows."""

    text: str
    markup: InlineKeyboardMarkup | None = None


def _cut_point(line: str, limit: int) -> int:
    """Where to cut an overlong ``line`` at or before ``limit``: after the last space that
    is outside an HTML tag and an entity, else the last such character boundary."""
    cut = limit
    while cut > 0:
        inside_tag = line.rfind("<", 0, cut) > line.rfind(">", 0, cut)
        inside_entity = line.rfind("&", 0, cut) > line.rfind(";", 0, cut)
        if not inside_tag and not inside_entity:
            break
        cut -= 1
    space = line.rfind(" ", 0, cut)
    if space > cut // 2 and line.rfind("<", 0, space) <= line.rfind(">", 0, space):
        cut = space + 1
    return cut or limit


def split_message(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """``text`` as messages of at most ``limit`` characters (Bot API ``sendMessage``: 4096),
    split at line boundaries; a single line longer than ``limit`` is cut between words,
    never inside an HTML tag or entity (``&amp;``). Returns ``[text]`` when it fits and
    never an empty message."""
    if len(text) <= limit:
        return [text]
    out: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:
            cut = _cut_point(line, limit)
            if current:
                out.append(current)
                current = ""
            out.append(line[:cut])
            line = line[cut:]
        joined = f"{current}\n{line}" if current else line
        if len(joined) > limit:
            out.append(current)
            joined = line
        current = joined
    if current.strip():
        out.append(current)
    return [chunk for chunk in out if chunk.strip()]


def _paged(header: str, rows: Sequence[str], footer: str = "") -> list[list[int]]:
    """The indices of ``rows`` on each message of a ``header`` / rows / ``footer`` list,
    each message within :data:`MAX_MESSAGE` (rows are kept whole; the header opens the
    first message and the footer closes the last)."""
    pages: list[list[int]] = [[]]
    size = len(header)
    for index, row in enumerate(rows):
        if size + 1 + len(row) > MAX_MESSAGE - 1 - len(footer) and pages[-1]:
            pages.append([])
            size = 0
        pages[-1].append(index)
        size += len(row) + 1
    return pages


def _pages(
    header: str,
    rows: Sequence[str],
    footer: str,
    keyboard: Callable[[Sequence[int]], InlineKeyboardMarkup | None],
) -> list[Page]:
    """``rows`` as :class:`Page` s (see :func:`_paged`); ``keyboard`` makes the buttons of
    the rows a page shows, so each button sits under the message that names its row."""
    chunks = _paged(header, rows, footer)
    out = []
    for number, chunk in enumerate(chunks):
        head = [header] if number == 0 else []
        foot = [footer] if footer and number == len(chunks) - 1 else []
        text = "\n".join([*head, *(rows[i] for i in chunk), *foot])
        out.append(Page(text, keyboard(chunk)))
    return out


# --- signal cards ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Card:
    """A signal card: HTML ``text`` and its keyboard (``None`` once decided: an edit
    without ``reply_markup`` removes the buttons)."""

    text: str
    markup: InlineKeyboardMarkup | None


#: The risk buttons of a pending card with a stop loss, percent of equity.
RISK_CHOICES = ("0.5", "1", "2")


def _card_keyboard(signal: Signal, approvals: bool = True) -> InlineKeyboardMarkup:
    """Approve / Reject, then the edits: half / double the size, or risk 0.5 % / 1 % / 2 % of
    equity when a stop loss is set, and Edit (asks for a reply). Without ``approvals``
    (trading paused or breached) only Reject: the owner may still clear the card. Every
    button carries the card version it was rendered with."""

    def button(text: str, action: CardAction, arg: str = "") -> InlineKeyboardButton:
        data = SignalCallback(
            action=action, signal_id=signal.id, version=signal.card_version, arg=arg
        ).pack()
        return InlineKeyboardButton(text=text, callback_data=data)

    if not approvals:
        return InlineKeyboardMarkup(inline_keyboard=[[button("❌ Reject", CardAction.REJECT)]])
    if signal.stop_loss is not None:
        sizes = [button(f"Risk {pct}%", CardAction.RISK, pct) for pct in RISK_CHOICES]
    else:
        sizes = [button("½×", CardAction.HALF), button("2×", CardAction.DOUBLE)]
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [button("✅ Approve", CardAction.APPROVE), button("❌ Reject", CardAction.REJECT)],
            [*sizes, button("✏️ Edit", CardAction.EDIT)],
        ]
    )


def outcome(
    signal: Signal, report: OrderReport | None, instrument: Instrument | None = None
) -> str:
    """The signal's state as one plain-text line ("" while PROPOSED), e.g.
    ``Filled 0.01 BTC @ 43,120.50 (fee 0.43 USDT)``, ``Rejected by @ada at 12:03 UTC``,
    ``Blocked: paused``, ``Blocked: price moved 1.4% (limit 1.0%)``, ``Expired``; prices
    with the ``instrument``'s precision when given (see :func:`price`)."""
    base, quote = _base_quote(signal.symbol)
    who = signal.decided_by or "the owner"
    reason = signal.status_reason
    match signal.status:
        case SignalStatus.PROPOSED:
            return ""
        case SignalStatus.FILLED if report is not None and report.average_price is not None:
            filled = report.filled_quantity or report.quantity
            fee = _fee(report.fee, report.fee_currency or quote)
            at = price(report.average_price, instrument)
            return f"Filled {quantity(filled)} {base} @ {at} ({fee})"
        case SignalStatus.FILLED:
            return f"Filled {quantity(signal.quantity)} {base}"
        case SignalStatus.APPROVED:
            return f"Approved by {who}, sending the order"
        case SignalStatus.SUBMITTED if signal.order_type is OrderType.LIMIT:
            return f"Order resting at the limit {price(signal.limit_price or ZERO, instrument)}"
        case SignalStatus.SUBMITTED:
            return "Order sent, waiting for the broker"
        case SignalStatus.REJECTED:
            at = f" at {_hhmm(signal.decided_at)}" if signal.decided_at else ""
            return f"Rejected by {who}{at}"
        case SignalStatus.BLOCKED:
            return f"Blocked: {reason}"
        case SignalStatus.EXPIRED:
            return "Expired"
        case SignalStatus.CANCELLED:
            return f"Cancelled by {who}" + (f": {reason}" if reason else "")
        case SignalStatus.FAILED:
            return f"Failed: {reason or 'the broker refused the order'}"
        case SignalStatus.UNKNOWN:
            return "Outcome unknown, reconciling with the broker"
    return signal.status.value.title()  # pragma: no cover - every status is matched above


_OUTCOME_MARK = {
    SignalStatus.FILLED: "✅",
    SignalStatus.APPROVED: "⏳",
    SignalStatus.SUBMITTED: "📨",
    SignalStatus.REJECTED: "❌",
    SignalStatus.BLOCKED: "⛔",
    SignalStatus.EXPIRED: "⌛",
    SignalStatus.CANCELLED: "🚫",
    SignalStatus.FAILED: "⚠️",
    SignalStatus.UNKNOWN: "❓",
}


MAX_CAPTION = 1024
"""Telegram's limit on a photo caption (Bot API ``sendPhoto``): a card fits it."""


@dataclass(frozen=True, slots=True)
class CardContext:
    """What a card shows beyond the signal: ``now`` (UTC) for the relative expiry,
    ``zone`` to print times in (``DISPLAY_TIMEZONE``), ``position`` the signed net base
    quantity held in the signal's symbol before it (positive long, negative short; ``None``
    when unknown), ``record`` the source's track record (``None``: not shown),
    ``instrument`` the symbol's, for the precision of its prices (``None``: guessed),
    ``market`` its market hours where the broker keeps them (IBKR; ``None``: always open)
    with ``closed_policy``, what an approval does while it is closed, and ``delayed``: the
    quote that prices the card is delayed (:attr:`core.domain.Quote.delayed`);
    ``trading`` the gate's trading state now (``None``: active)."""

    now: datetime
    zone: tzinfo = UTC
    position: Decimal | None = None
    record: SourceRecord | None = None
    instrument: Instrument | None = None
    market: MarketHours | None = None
    closed_policy: MarketClosedPolicy = MarketClosedPolicy.BLOCK
    delayed: bool = False
    trading: GateState | None = None


def approvals_off(state: GateState | None) -> str:
    """Why a pending card takes no approval now, as its line ("" while trading is
    ACTIVE): ``🛑 Drawdown breach — approvals off until /resume``, ``⏸ Paused (news) —
    approvals off until /resume``, ``↘️ Reducing only — approvals off until /resume``."""
    if state is None or state.trading_state is TradingState.ACTIVE:
        return ""
    if state.breach_level == BREACH_MAX:
        words = "🛑 Drawdown breach"
    elif state.trading_state is TradingState.REDUCING:
        words = "↘️ Reducing only"
    else:
        words = "⏸ Paused" + (
            f" ({esc(_clip(state.pause_reason, 80))})" if state.pause_reason else ""
        )
    return f"<b>{words} — approvals off until /resume</b>"


def _signed_pct(value: Decimal) -> str:
    return f"{value:+.2f}%"


def _in(seconds: float) -> str:
    """``in 4 min``, ``in 2 h 5 min``, ``in 40 s``; ``now`` once past."""
    if seconds <= 0:
        return "now"
    if seconds < 60:
        return f"in {int(seconds)} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"in {minutes} min"
    return f"in {minutes // 60} h {minutes % 60} min"


def _effect(side: Side, qty: Decimal, held: Decimal, base: str) -> tuple[str, bool]:
    """What an order of ``qty`` on ``side`` does to a net position of ``held`` (signed):
    ``(line, reduces)``; ``reduces`` when it only makes the position smaller."""
    after = held + (qty if side is Side.BUY else -qty)
    unit = f" {esc(base)}" if base else ""

    def pos(q: Decimal) -> str:
        return "flat" if q == 0 else f"{'long' if q > 0 else 'short'} {quantity(abs(q))}{unit}"

    if held == 0:
        return f"Opens {pos(after)}", False
    if (held > 0) == (after > 0) and after != 0 and abs(after) > abs(held):
        return f"Adds to {pos(held)} → {pos(after)}", False
    if after == 0 or ((held > 0) == (after > 0) and abs(after) < abs(held)):
        return f"Reduces {pos(held)} → {pos(after)}", True
    return f"Reverses {pos(held)} → {pos(after)}", False


def _market_line(context: CardContext) -> str:
    """``🌙 Market closed, opens in 2 h (Mon 15:30 CET): approved, it rests as a DAY order
    until the open`` (or ``approval is refused until the open``); "" when the market is
    open or keeps no hours."""
    hours = context.market
    if hours is None or hours.is_open:
        return ""
    said = hours.describe()
    line = f"🌙 {said[:1].upper()}{said[1:]}"
    if hours.opens_at is not None:
        local = hours.opens_at.astimezone(context.zone)
        line += f" ({local:%a %H:%M} {_zone_name(local)})"
    if context.closed_policy is MarketClosedPolicy.DAY_ORDER:
        return f"{line}: approved, it rests as a DAY order until the open"
    return f"{line}: approval is refused until the open"


def _record_line(record: SourceRecord, unit: str) -> str:
    """``★ 12 approved · 58% won of 10 · avg +0.40R · +123.45 USDT`` (nothing closed yet:
    the count of approvals only)."""
    if not record.approved:
        return "★ no track record yet"
    parts = [f"★ {record.approved} approved"]
    if record.win_rate is not None:
        parts.append(f"{record.win_rate * 100:.0f}% won of {record.closed}")
        if record.average_r is not None:
            parts.append(f"avg {record.average_r:+.2f}R")
        parts.append(f"{signed(record.net_pnl)}{unit}")
    return " · ".join(parts)


def card(
    signal: Signal,
    report: OrderReport | None,
    account: Account | None,
    trade: Trade | None = None,
    venue: str = "",
    context: CardContext | None = None,
) -> Card:
    """The card of ``signal`` in about 8 short lines that fit a photo caption
    (:data:`MAX_CAPTION`): side, quantity and symbol; the entry (market, or the limit) and
    its notional (quote currency); stop loss and take profit with their distance from the
    entry in % and the reward-to-risk ratio; the risk (quote currency, and % of
    ``account`` equity when the account is in the quote currency) where a stop loss is
    given and the order does not only reduce a position; with a ``context``: what the
    order does to the position (opens, adds to, reduces, reverses) and the position after
    it, the expiry relative to ``context.now`` and in ``context.zone``, and the source's
    track record (★), the instrument whose precision prices are printed with (else
    guessed), prices from delayed data, and a closed market (:func:`_market_line`); the
    note; once decided, the outcome, and with the ``trade`` it
    opened, where its exits live on ``venue`` (:func:`exits_line`). Approve/Reject
    buttons only while PROPOSED; while ``context.trading`` is not ACTIVE the card says
    approvals are off (:func:`approvals_off`) and keeps only Reject."""
    instrument = context.instrument if context is not None else None
    base, quote = _base_quote(signal.symbol)
    unit = f" {esc(quote)}" if quote else ""
    side = "🟢 BUY" if signal.side is Side.BUY else "🔴 SELL"
    lines = [
        f"<b>{side} {quantity(signal.quantity)} {esc(signal.symbol)}</b> · signal #{signal.id}"
    ]
    limit = signal.order_type is OrderType.LIMIT and signal.limit_price is not None
    entry = signal.limit_price if limit and signal.limit_price else signal.reference_price
    how = f"Limit {price(entry, instrument)}" if limit else f"Market ≈ {price(entry, instrument)}"
    lines.append(f"{how} · notional {money(signal.quantity * entry)}{unit}")
    if context is not None and context.delayed:
        lines.append("⏱ Priced on delayed data (15-20 min)")
    levels = []
    for name, level in (("SL", signal.stop_loss), ("TP", signal.take_profit)):
        if level is None:
            levels.append(f"no {name}")
        else:
            distance = (level - entry) / entry * 100 if entry else ZERO
            levels.append(f"{name} {price(level, instrument)} ({_signed_pct(distance)})")
    if signal.stop_loss is not None and signal.take_profit is not None:
        risk_per_unit = abs(entry - signal.stop_loss)
        if risk_per_unit > 0:
            levels.append(f"R:R {abs(signal.take_profit - entry) / risk_per_unit:.1f}")
    lines.append(" · ".join(levels))
    reduces = False
    effect = ""
    if context is not None and context.position is not None:
        effect, reduces = _effect(signal.side, signal.quantity, context.position, base)
    risk = signal.risk
    if reduces:
        lines.append("Risk: none added, it reduces the position")
    elif risk is not None:
        share = ""
        same_currency = account is not None and quote in ("", account.currency)
        if account is not None and same_currency and account.equity > 0:
            share = f" ({_pct(risk / account.equity * 100)} of equity)"
        lines.append(f"Risk: {money(risk)}{unit}{share}")
    else:
        lines.append("Risk: open-ended, no stop loss")
    if effect:
        lines.append(effect)
    source = f"Source: {esc(_clip(signal.source, 40))}"
    if context is not None and context.record is not None:
        source += " " + _record_line(context.record, unit)
    lines.append(source)
    if signal.note:
        lines.append(f"Note: {esc(_clip(signal.note, 200))}")
    status = outcome(signal, report, instrument)
    if context is not None and not status:
        left = (signal.expires_at - context.now).total_seconds()
        local = signal.expires_at.astimezone(context.zone)
        lines.append(f"Expires {_in(left)} ({local:%H:%M} {_zone_name(local)})")
        if market := _market_line(context):
            lines.append(market)
    elif not status:
        lines.append(f"Expires: {_utc(signal.expires_at)}")
    exits = exits_line(trade, venue, instrument) if trade is not None else ""
    if exits:
        lines.append(f"Exits: {esc(_clip(exits, 200))}")
    if status:
        lines.append(f"\n<b>{_OUTCOME_MARK.get(signal.status, '')} {esc(_clip(status, 300))}</b>")
        return Card(_fit_caption(lines), None)
    held = approvals_off(context.trading if context is not None else None)
    if held:
        lines.append(held)
    return Card(_fit_caption(lines), _card_keyboard(signal, approvals=not held))


def _zone_name(moment: datetime) -> str:
    return moment.tzname() or "UTC"


def _fit_caption(lines: list[str]) -> str:
    """``lines`` joined; the note goes first, then is cut, when the card would exceed a
    caption (:data:`MAX_CAPTION`, counted on the text with its tags: an upper bound)."""
    text = "\n".join(lines)
    if len(text) <= MAX_CAPTION:
        return text
    kept = [line for line in lines if not line.startswith("Note: ")]
    return "\n".join(kept)


def decided_toast(signal: Signal) -> str:
    """The toast of an Approve tap answered before the broker is called: ``Approved: order
    sent`` for a SUBMITTED signal, else its outcome line (``Blocked: paused``)."""
    if signal.status is SignalStatus.SUBMITTED:
        return "Approved: order sent"
    return _clip(outcome(signal, None) or "Approved", MAX_TOAST)


def approve_toast(decision: Decision) -> str:
    """The toast after an Approve tap: the outcome line (``Filled ...``, ``Blocked: ...``)."""
    return _clip(outcome(decision.signal, decision.report) or "Approved", MAX_TOAST)


def reject_toast(signal: Signal) -> str:
    """The toast after a Reject tap."""
    return f"Rejected signal #{signal.id}"


#: The edit prompt names its signal and card version; the reply handler reads them back.
_EDIT_REF = re.compile(r"^✏️ Edit signal #(\d+) \(card v(\d+)\)")
EDIT_TERMS = "qty 0.02 · risk 1% · sl 61000 · tp 66000 · limit 62500 · market"


def edit_prompt(signal: Signal) -> str:
    """The question after Edit: reply with the changes. Its first line is read back by
    :func:`edit_prompt_ref` from the replied-to message (no server-side state)."""
    return (
        f"✏️ Edit signal #{signal.id} (card v{signal.card_version}): "
        f"{esc(signal.side.value.upper())} {quantity(signal.quantity)} {esc(signal.symbol)}\n"
        f"Reply to this message with any of: {EDIT_TERMS}"
    )


def edit_prompt_ref(text: str) -> tuple[int, int] | None:
    """``(signal id, card version)`` of an :func:`edit_prompt` text, else None."""
    found = _EDIT_REF.match(text)
    return None if found is None else (int(found[1]), int(found[2]))


def edit_toast(signal: Signal) -> str:
    """The answer to an edit: the new terms in one line (the card follows)."""
    parts = [f"{signal.side.value.upper()} {quantity(signal.quantity)} {signal.symbol}"]
    if signal.limit_price is not None:
        parts.append(f"limit {price(signal.limit_price)}")
    if signal.stop_loss is not None:
        parts.append(f"sl {price(signal.stop_loss)}")
    if signal.take_profit is not None:
        parts.append(f"tp {price(signal.take_profit)}")
    return _clip(f"Signal #{signal.id} now: " + " · ".join(parts), MAX_TOAST)


def edit_done(signal: Signal) -> str:
    """The reply to an edit sent as a message."""
    return esc(edit_toast(signal)) + " (the card is updated)"


def chat_proposed(signal: Signal) -> str:
    """The reply to ``/buy`` / ``/sell``: the signal is proposed, its card is posted."""
    return (
        f"Proposed: {esc(signal.side.value.upper())} {quantity(signal.quantity)} "
        f"{esc(signal.symbol)} (#{signal.id}). Its card is posted; nothing executes "
        "without Approve."
    )


def conflict_toast(current: str) -> str:
    """The toast when another tap decided the signal first; ``current`` is its status."""
    return f"Already decided: {current.lower()}"


# --- commands --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One bot command: its name, the ``setMyCommands`` description and its usage line."""

    name: str
    description: str
    usage: str


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("start", "What this bot does", "/start"),
    CommandSpec("help", "The commands", "/help"),
    CommandSpec("status", "Mode, equity, drawdown, pause, uptime", "/status"),
    CommandSpec("drawdown", "Drawdown and daily loss against the limits", "/drawdown"),
    CommandSpec("heartbeat", "Send a heartbeat now", "/heartbeat"),
    CommandSpec("positions", "Open positions, PnL, stops, with Close buttons", "/positions"),
    CommandSpec("orders", "Resting orders, with Cancel buttons", "/orders"),
    CommandSpec("signals", "Pending signals with their buttons", "/signals"),
    CommandSpec("pause", "Block approvals: /pause [reason]", "/pause [reason]"),
    CommandSpec("resume", "Let approvals execute again", "/resume"),
    CommandSpec("closeall", "Close every position (asks to confirm)", "/closeall"),
    CommandSpec(
        "close",
        "Close a position or part of it: /close SYMBOL [PERCENT|QUANTITY]",
        "/close SYMBOL [PERCENT|QUANTITY]",
    ),
    CommandSpec("balance", "Balance, equity and margin", "/balance"),
    CommandSpec(
        "history",
        "Recent signals and outcomes: /history [N]",
        f"/history [N], N 1 to {MAX_HISTORY}",
    ),
    CommandSpec(
        "buy",
        "Propose a buy: /buy SYMBOL QTY|risk 1% [sl X] [tp Y] [limit Z]",
        "/buy SYMBOL QTY|risk N% [sl PRICE] [tp PRICE] [limit PRICE]",
    ),
    CommandSpec(
        "sell",
        "Propose a sell: /sell SYMBOL QTY|risk 1% [sl X] [tp Y] [limit Z]",
        "/sell SYMBOL QTY|risk N% [sl PRICE] [tp PRICE] [limit PRICE]",
    ),
    CommandSpec(
        "pnl",
        "Realized and unrealized PnL, fees, win rate: /pnl [day|week|month|all]",
        "/pnl [day|week|month|all]",
    ),
    CommandSpec(
        "daily",
        "Day by day: trades, PnL, fees, equity: /daily [N]",
        f"/daily [N], N 1 to {MAX_DAYS}",
    ),
    CommandSpec("performance", "Results per symbol and per source", "/performance"),
    CommandSpec("trades", "The trade journal: /trades [N]", f"/trades [N], N 1 to {MAX_HISTORY}"),
    CommandSpec("signal", "One signal's lineage: /signal ID", "/signal ID"),
    CommandSpec("symbols", "Find a market's symbol: /symbols QUERY", "/symbols QUERY"),
    CommandSpec("chart", "A chart now: /chart SYMBOL [TIMEFRAME]", "/chart SYMBOL [TIMEFRAME]"),
    CommandSpec("strategies", "Strategy instances, pause and resume", "/strategies"),
    CommandSpec("run", "Run a strategy instance now: /run NAME", "/run NAME"),
    CommandSpec("notify", "Which messages ring, stay silent or are off", "/notify"),
)
_SPECS = {spec.name: spec for spec in COMMANDS}


def bot_commands() -> list[BotCommand]:
    """The menu registered with ``setMyCommands``."""
    return [BotCommand(command=s.name, description=s.description) for s in COMMANDS]


def help_text() -> str:
    """``/help``: one line per command."""
    return "\n".join(
        ["<b>Commands</b>"] + [f"{esc(s.usage)} · {esc(s.description)}" for s in COMMANDS]
    )


def start_text(user: User) -> str:
    """``/start``: what the bot is, then the commands."""
    return (
        f"Hello {esc(user.first_name)}. SignalDesk posts trade signals here as cards: "
        "tap <b>Approve</b> to execute one, <b>Reject</b> to drop it.\n\n" + help_text()
    )


def usage(command: str) -> str:
    """The one-line usage reply for a command called with bad arguments."""
    spec = _SPECS[command]
    purpose = spec.description.split(":")[0]
    return f"Usage: {esc(spec.usage)} — {esc(purpose[0].lower() + purpose[1:])}"


def unknown_command(command: str) -> str:
    """The one-line reply to a command the bot does not have."""
    return f"Unknown command /{esc(command)}. Send /help for the list."


def inactive_button() -> str:
    """The toast for a button the bot no longer knows (from an older version)."""
    return "This button is no longer active"


def private_hint() -> str:
    """The reply to plain text in a private chat."""
    return "I only understand commands. Send /help for the list."


def error_line(error: Exception) -> str:
    """A :class:`~core.errors.SignalDeskError` as the one-line reply."""
    return f"⚠️ {esc(error)}"


def internal_error() -> str:
    """The reply when a command failed unexpectedly (the details are in the logs)."""
    return "⚠️ Something went wrong; the details are in the bot's log."


def _mode(settings: Settings) -> str:
    if settings.broker is BrokerName.PAPER:
        return "paper"
    if settings.broker is BrokerName.CCXT and settings.ccxt_sandbox:
        return "live (testnet)"
    return "live"


def _duration(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes}m"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m"


def _ago(seconds: float) -> str:
    return f"{max(int(seconds), 0)} s ago" if seconds < 60 else f"{_duration(seconds)} ago"


def _every(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


def _last_heartbeat(at: datetime | None, now: datetime, interval: int) -> str:
    every = f"every {_every(interval)}"
    if at is None:
        return f"Last heartbeat: none yet ({every})"
    ago = _ago((now - at).total_seconds())
    return f"Last heartbeat: {at:%Y-%m-%d %H:%M:%S} UTC ({ago}; {every})"


def status_text(
    summary: StatusSummary,
    settings: Settings,
    uptime_seconds: float,
    last_heartbeat: datetime | None,
    now: datetime,
) -> str:
    """``/status``: mode and broker, equity, drawdown against the limits, pause state,
    open positions, pending signals, the bot's uptime and when the last heartbeat went
    out (UTC, and how long before ``now``)."""
    op = summary.operator
    lines = ["<b>SignalDesk status</b>", f"Mode: {_mode(settings)} · broker {esc(summary.broker)}"]
    account = summary.account
    if account is not None:
        lines.append(
            f"Equity: {money(account.equity)} {esc(account.currency)}"
            f" (balance {money(account.balance)})"
        )
    else:
        lines.append(f"Broker unreachable: {esc(summary.broker_error)}")
    limits = f"warn {settings.drawdown_warn_pct}%, max {settings.drawdown_max_pct}%"
    drawdown = summary.drawdown_pct
    shown = _pct(drawdown) if drawdown is not None else "n/a"
    breach = {
        BreachLevel.MAX: " · ⛔ max level breached",
        BreachLevel.WARN: " · ⚠️ warn level crossed",
    }
    lines.append(f"Drawdown: {shown} ({limits}){breach.get(BreachLevel(op.breach_level), '')}")
    lines.append(trading_line(op.trading_state, op.paused_by, op.pause_reason))
    lines.append(
        f"Open positions: {len(summary.positions)} · pending signals: {summary.pending_signals}"
    )
    lines.append(f"Uptime: {_duration(uptime_seconds)}")
    lines.append(_last_heartbeat(last_heartbeat, now, settings.heartbeat_interval))
    return "\n".join(lines)


_TRADING_WORDS = {
    TradingState.ACTIVE: "▶️ active",
    TradingState.REDUCING: "↘️ reducing only (closes and exits pass, nothing new)",
    TradingState.HALTED: "⏸ paused",
}


def trading_line(state: TradingState, by: str = "", reason: str = "") -> str:
    """``Trading: ▶️ active``, ``Trading: ⏸ paused by ada: news`` (HALTED, by a pause or a
    drawdown breach) or the REDUCING words: the gate's trading state for ``/status`` and
    ``/drawdown``."""
    line = f"Trading: {_TRADING_WORDS[state]}"
    if state is not TradingState.ACTIVE:
        line += (f" by {esc(by)}" if by else "") + (f": {esc(reason)}" if reason else "")
    return line


_ACTION_WORDS = {
    DrawdownAction.ALERT: "alert only",
    DrawdownAction.PAUSE: "pause trading",
    DrawdownAction.FLATTEN: "pause and close every position",
}


def _limit(value: Decimal) -> str:
    return f"{format(canonical(value), 'f')}%"


def drawdown_text(figures: RiskFigures) -> str:
    """``/drawdown``: equity, drawdown from the peak and daily loss from the day's start
    against their limits, the action at the max level, the guard's level and the pause."""
    f, lim = figures, figures.limits
    cur = esc(f.currency)
    rearm = _limit(max(lim.warn_pct - lim.hysteresis_pct, ZERO))
    since = f" since {_utc(f.breach_at)}" if f.breach_at is not None else ""
    guard = {
        BreachLevel.NONE: "✅ within limits",
        BreachLevel.WARN: f"⚠️ warn level reached{since}",
        BreachLevel.MAX: f"⛔ max level breached{since}: approvals are blocked until an "
        "owner sends /resume",
    }[f.level]
    return "\n".join(
        [
            "<b>Drawdown guard</b>",
            f"Equity: {money(f.equity)} {cur}",
            f"Drawdown: {_pct(f.drawdown_pct)} from the peak {money(f.peak_equity)} {cur} "
            f"(warn {_limit(lim.warn_pct)}, re-armed below {rearm}; max {_limit(lim.max_pct)})",
            f"Daily loss: {_pct(f.daily_loss_pct)} from {money(f.day_start_equity)} {cur} at "
            f"the start of {esc(f.day_start_date)} UTC (max {_limit(lim.daily_loss_max_pct)})",
            f"At the max level: {_ACTION_WORDS[lim.action]}",
            f"Guard: {guard}",
            trading_line(f.trading_state),
        ]
    )


def heartbeat_text(heartbeat: Heartbeat) -> str:
    """A heartbeat (its plain-text lines) as an HTML-mode message: ``/heartbeat``'s reply
    in a chat other than the one heartbeats go to."""
    return esc(heartbeat.text())


def _side_word(position: Position) -> str:
    return "long" if position.side is Side.BUY else "short"


def _view_lines(v: PositionView, broker: str, instrument: Instrument | None) -> str:
    p = v.position
    ticket = f" [{esc(p.position_ref)}]" if p.position_ref else ""
    head = (
        f"<b>{esc(p.symbol)}</b>{ticket} {_side_word(p)} {quantity(v.quantity)} · entry "
        f"{price(v.entry, instrument)} · mark {price(p.mark_price, instrument)} · "
        f"uPnL {signed(v.unrealized_pnl)}"
    )
    if v.external:
        return head + "\n  external: not opened by SignalDesk; close all leaves it alone"
    stop = price(v.stop_loss, instrument) if v.stop_loss is not None else "none"
    take = price(v.take_profit, instrument) if v.take_profit is not None else "none"
    where = f" · {exit_place(v.exit_style, broker)}" if v.exit_style is not None else ""
    return head + f"\n  stop loss {stop} · take profit {take}{where}"


def positions_pages(
    views: Sequence[PositionView],
    broker: str,
    instruments: Mapping[str, Instrument] | None = None,
) -> list[Page]:
    """``/positions``: per position its side, quantity, entry (from our own fills), mark,
    unrealized PnL, the live stop loss and take profit and where they live (``broker`` is
    the broker's name), external positions marked; then the totals (PnL in each
    position's quote currency). Every position is shown: a long list is several messages,
    each with Close 25 % / 50 % / 100 % buttons (each press asks to confirm) under the
    positions it names. Prices with the precision of the symbol's instrument in
    ``instruments`` (by symbol), else guessed."""
    if not views:
        return [Page(no_positions())]
    known = instruments or {}
    rows = [_view_lines(v, broker, known.get(v.position.symbol)) for v in views]
    total = sum((v.unrealized_pnl for v in views), ZERO)
    notional = sum((v.position.notional for v in views), ZERO)
    footer = f"Total: uPnL {signed(total)} · notional {money(notional)}"
    header = f"<b>Open positions ({len(views)})</b>"
    many = len(views) > 1
    return _pages(
        header, rows, footer, lambda shown: _close_buttons([views[i] for i in shown], many)
    )


#: The Close buttons under each position of ``/positions``, in percent.
CLOSE_PERCENTS = (25, 50, 100)


def _close_buttons(views: Sequence[PositionView], many: bool) -> InlineKeyboardMarkup | None:
    rows = []
    for v in views:
        p = v.position
        row = []
        for percent in CLOSE_PERCENTS:
            data = PositionCallback(symbol=p.symbol, ref=p.position_ref, percent=percent)
            if fits(data):
                label = f"{p.symbol} {percent}%" if many else f"Close {percent}%"
                row.append(InlineKeyboardButton(text=label, callback_data=data.pack()))
        if row:
            rows.append(row)
    return InlineKeyboardMarkup(inline_keyboard=rows) if rows else None


def no_positions() -> str:
    """The reply when there is nothing open."""
    return "No open positions."


def no_position(symbol: str) -> str:
    """The reply to ``/close SYMBOL`` when that position is flat."""
    return f"No open position in {esc(symbol)}."


def balance_text(account: Account) -> str:
    """``/balance``: balance, equity, margin in use and free margin."""
    c = esc(account.currency)
    return "\n".join(
        [
            "<b>Balance</b>",
            f"Balance: {money(account.balance)} {c}",
            f"Equity: {money(account.equity)} {c}",
            f"Margin in use: {money(account.margin)} {c}",
            f"Free margin: {money(account.free_margin)} {c}",
        ]
    )


def history_text(events: Sequence[AuditEvent]) -> str:
    """``/history``: audit events, newest first: time, signal, transition, actor, reason."""
    if not events:
        return "No history yet."
    rows = []
    for e in events:
        what = f"#{e.signal_id} " if e.signal_id is not None else ""
        if e.to_status and e.to_status != e.from_status:  # an edit keeps PROPOSED
            move = (
                f"{e.from_status.lower()} → {e.to_status.lower()}"
                if e.from_status
                else e.to_status.lower()
            )
        else:
            move = e.action
        clip = 300 if e.action == "lineage" else 80  # lineage: why it was proposed
        reason = f" · {esc(_clip(e.reason, clip))}" if e.reason else ""
        rows.append(f"{e.at.strftime('%m-%d %H:%M')} {what}{esc(move)} · {esc(e.actor)}{reason}")
    return _lines(f"<b>History (last {len(events)}, UTC)</b>", rows)


def signal_text(signal: Signal, events: Sequence[AuditEvent], trade: Trade | None) -> str:
    """``/signal ID``: the lineage of one signal: what was proposed (terms, reference
    price, source, note), then its audit events oldest first (proposal inputs, edits, the
    decision, the order's states), then the trade it opened (journal line: entry, exit,
    net PnL, R, time held, exit reason)."""
    side = signal.side.value.upper()
    head = [
        f"<b>Signal #{signal.id}</b> · {side} {quantity(signal.quantity)} {esc(signal.symbol)}"
        f" · {esc(signal.status.value.lower())}",
        f"Source: {esc(signal.source)} · reference {price(signal.reference_price)}"
        + (f" · limit {price(signal.limit_price)}" if signal.limit_price is not None else "")
        + (f" · sl {price(signal.stop_loss)}" if signal.stop_loss is not None else "")
        + (f" · tp {price(signal.take_profit)}" if signal.take_profit is not None else ""),
    ]
    if signal.note:
        head.append(f"Note: {esc(_clip(signal.note, 300))}")
    steps = history_text(list(reversed(events))).split("\n", 1)[-1]
    tail = f"Trade: {_journal_line(trade)}" if trade is not None else "No trade."
    return _clip("\n".join([*head, steps, tail]), MAX_MESSAGE)


def no_pending() -> str:
    """``/signals`` with nothing waiting."""
    return "No pending signals."


def pending_more(count: int) -> str:
    """``/signals`` when more are pending than it shows."""
    return f"… and {count} more pending. Decide these first, then send /signals again."


def paused_text(operator: OperatorStatus, cancelled: Sequence[CancelResult] = ()) -> str:
    """The reply to ``/pause``, with the resting entry orders it cancelled
    (``PAUSE_CANCELS_ENTRIES``); protective exits stay."""
    text = (
        f"⏸ Paused: {esc(operator.pause_reason)} (by {esc(operator.paused_by)}). "
        "Approvals are blocked until /resume."
    )
    if not cancelled:
        return text
    return _lines(
        text, [esc(_cancel_line(c)) for c in cancelled], "Stop loss and take profit orders stay."
    )


def not_paused() -> str:
    """The reply to ``/resume`` when nothing is paused."""
    return "Not paused: approved signals already execute."


def resumed_text() -> str:
    """The reply to ``/resume`` (or its confirmation)."""
    return "▶️ Resumed. Approved signals execute again."


# --- confirmations ---------------------------------------------------------------------


def confirm_keyboard(
    action: ConfirmAction, symbol: str, issued: int, amount: str = "", ref: str = ""
) -> InlineKeyboardMarkup:
    """[Confirm] [Cancel] for a destructive command asked at Unix time ``issued``;
    ``amount`` and ``ref`` (a CLOSE's part and ticket) travel in the button."""
    part = f"{esc(amount)} of " if amount else ""
    label = {
        ConfirmAction.CLOSE_ALL: "✅ Close all",
        ConfirmAction.CLOSE: f"✅ Close {part}{symbol}",
        ConfirmAction.RESUME: "✅ Resume",
    }[action]
    go = ConfirmCallback(action=action, symbol=symbol, issued=issued, amount=amount, ref=ref)
    no = ConfirmCallback(action=ConfirmAction.CANCEL, symbol=symbol, issued=issued)
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text=label, callback_data=go.pack()),
                InlineKeyboardButton(text="✖️ Cancel", callback_data=no.pack()),
            ]
        ]
    )


def _position_plain(p: Position) -> str:
    held = quantity(abs(p.quantity))
    return f"{p.symbol} {_side_word(p)} {held} (uPnL {signed(p.unrealized_pnl)})"


def _position_line(p: Position) -> str:
    return esc(_position_plain(p))


def _untouched_plain(p: Position) -> str:
    return f"{_position_plain(p)}: external, left untouched"


def _untouched_line(p: Position) -> str:
    return esc(_untouched_plain(p))


def confirm_prompt(
    views: Sequence[PositionView], entries: Sequence[RestingOrder], ttl_seconds: int
) -> str:
    """The question before ``/closeall``: the positions it closes, those it leaves alone
    because SignalDesk did not open them, and the resting entry orders it cancels first."""
    mine = [v.position for v in views if not v.external]
    what = "this position" if len(mine) == 1 else f"all {len(mine)} positions"
    rows = [_position_line(p) for p in mine]
    rows += [_untouched_line(v.position) for v in views if v.external]
    if entries:
        noun = "order is" if len(entries) == 1 else "orders are"
        rows.append(f"First {len(entries)} resting entry {noun} cancelled:")
        rows += [_order_line(o) for o in entries]
    if mine:
        head = f"Close {what} SignalDesk opened at market?"
    else:
        head = "Cancel the resting entry orders? No position SignalDesk opened is open."
    return _lines(head, rows, f"This button expires in {ttl_seconds} s.")


def only_external(views: Sequence[PositionView]) -> str:
    """``/closeall`` when every open position is one SignalDesk did not open (and no entry
    order rests): nothing to do, and why."""
    return _lines(
        "Nothing to close: SignalDesk opened none of these.",
        [_untouched_line(v.position) for v in views],
        "Close one by hand with its buttons under /positions.",
    )


def close_prompt(plan: ClosePlan, ttl_seconds: int) -> str:
    """The question before ``/close`` (or a Close button): each position and how much of
    it closes, and the matching positions left alone."""
    rows = []
    for p, part in plan.targets:
        amount = "all of it" if part is None else f"{quantity(part)} of it"
        rows.append(f"{_position_line(p)}: close {amount}")
    rows += [_untouched_line(p) for p in plan.left_open]
    what = "this position" if len(plan.targets) == 1 else f"these {len(plan.targets)} positions"
    amount = plan.amount.text()
    head = f"Close {esc(amount)} of {what} at market?" if amount else f"Close {what} at market?"
    return _lines(head, rows, f"This button expires in {ttl_seconds} s.")


def resume_prompt(operator: OperatorStatus, ttl_seconds: int) -> str:
    """The question before resuming after a max drawdown breach."""
    return (
        f"The max drawdown level was breached ({esc(operator.pause_reason) or 'paused'}). "
        f"Resume trading anyway? This button expires in {ttl_seconds} s."
    )


def confirm_expired(command: str) -> str:
    """The prompt's final text when its button was pressed too late."""
    return f"⌛ This confirmation expired. Send /{esc(command)} again."


def confirm_taken() -> str:
    """The toast when a confirmation was already used (a second tap, a second owner)."""
    return "Already confirmed"


def confirm_cancelled() -> str:
    """The prompt's final text after Cancel."""
    return "✖️ Cancelled. Nothing was changed."


def confirm_running(action: ConfirmAction, actor: str) -> str:
    """The prompt's text once its action was confirmed and runs (its result follows as a
    message from the outbox: :func:`close_results_text`, :func:`resumed_text`)."""
    doing = {
        ConfirmAction.CLOSE_ALL: "Closing",
        ConfirmAction.CLOSE: "Closing",
        ConfirmAction.RESUME: "Resuming",
    }.get(action, "Running")
    return f"⏳ {doing}, confirmed by {esc(actor)}… The result follows in a message."


def _cancel_line(c: CancelResult) -> str:
    """One cancel's outcome, plain text (escape it for an HTML message)."""
    if c.error:
        return f"⚠️ {c.client_order_id} ({c.symbol}): cancel failed: {c.error}"
    what = "entry order" if c.purpose == "open" else c.purpose.replace("_", " ") + " order"
    signal = f" of signal #{c.signal_id}" if c.signal_id is not None else ""
    if c.report is not None and c.report.state.value == "FILLED":
        return f"❗ {c.symbol} {what}{signal} {c.client_order_id} filled before the cancel"
    return f"🚫 {c.symbol} {what}{signal} {c.client_order_id} cancelled"


def _close_line(r: CloseResult, instrument: Instrument | None = None) -> str:
    """One close's outcome, plain text."""
    if r.error:
        return f"⚠️ {r.symbol}: failed: {r.error}"
    if r.report is None:
        return f"➖ {r.symbol}: nothing to close"
    rep = r.report
    verb = "sold" if rep.side is Side.SELL else "bought"
    at = f" @ {price(rep.average_price, instrument)}" if rep.average_price is not None else ""
    filled = quantity(rep.filled_quantity or rep.quantity)
    fee = _fee(rep.fee, rep.fee_currency)
    so_far = " so far" if r.partial else ""
    pnl = f" · net PnL{so_far} {signed(r.net_pnl)} after fees" if r.net_pnl is not None else ""
    rest = " · the rest stays open" if r.partial else ""
    return f"✅ {r.symbol}: {verb} {filled}{at} ({fee}){pnl}{rest}"


def _close_report_rows(
    report: CloseReport, instruments: Mapping[str, Instrument] | None = None
) -> list[str]:
    """A close report's lines, plain text: the resting entry orders cancelled first, each
    close with its fill (with the precision of the symbol's instrument in
    ``instruments``, else guessed) and net PnL (quote, after fees, from the trade record),
    the protective exits cancelled after, and the positions left untouched because
    SignalDesk did not open them."""
    known = instruments or {}
    rows = [f"⚠️ Could not read positions: {report.error}"] if report.error else []
    rows += [_cancel_line(c) for c in report.cancelled]
    rows += [_close_line(r, known.get(r.symbol)) for r in report.closes]
    rows += [_cancel_line(c) for c in report.exits_cancelled]
    rows += [f"⏸ {_untouched_plain(p)}" for p in report.left_open]
    return rows


def _net_footer(report: CloseReport) -> str:
    """The total net PnL line when more than one close has a figure."""
    pnl = [c.net_pnl for c in report.closes if c.net_pnl is not None]
    return f"Net PnL after fees: {signed(report.net_pnl)}" if len(pnl) > 1 else ""


def close_results_text(
    report: CloseReport, actor: str, instruments: Mapping[str, Instrument] | None = None
) -> str:
    """What a close did, as plain text (an outbox report: the deliverer escapes it): the
    lines of :func:`_close_report_rows` and the total net PnL after fees."""
    rows = _close_report_rows(report, instruments)
    if not rows:
        return f"Nothing to close (confirmed by {actor})."
    return _lines(f"Close results (confirmed by {actor})", rows, _net_footer(report))


def flatten_text(flatten: FlattenReport) -> str:
    """The drawdown flatten's alert, plain text (the deliverer escapes it): the close
    report's lines (:func:`_close_report_rows`), then whether the account is flat, what
    is still open, or that it could not be confirmed."""
    report = flatten.report
    if flatten.unconfirmed:
        end = (
            f"⚠️ Could not confirm the account is flat ({flatten.unconfirmed}). "
            "Check the broker and /positions."
        )
    elif flatten.still_open:
        listed = ", ".join(f"{p.symbol} {quantity(p.quantity)}" for p in flatten.still_open)
        end = f"⚠️ STILL OPEN: {listed}. Close by hand or retry /closeall."
    elif report.left_open:
        end = "Everything SignalDesk opened is closed."
    else:
        end = "The account is flat."
    rows = _close_report_rows(report) or ["No open positions."]
    footer = "\n".join(line for line in (_net_footer(report), end) if line)
    return _lines("Flatten results (drawdown limit)", rows, footer)


# --- resting orders --------------------------------------------------------------------


def _order_line(o: RestingOrder, instrument: Instrument | None = None) -> str:
    r = o.report
    kind = r.order_type.value.replace("_", " ")
    level = r.trigger_price if r.order_type.is_trigger else r.limit_price
    at = f" @ {price(level, instrument)}" if level is not None else ""
    if o.is_entry:
        role = f"entry of signal #{o.signal_id}" if o.signal_id is not None else "entry"
    elif o.ours:
        role = o.purpose.replace("_", " ")
        role += f" of trade #{o.trade_id}" if o.trade_id is not None else ""
    else:
        role = "not placed by SignalDesk"
    cid = esc(r.client_order_id) if r.client_order_id else esc(r.broker_order_id)
    return (
        f"<b>{esc(r.symbol)}</b> {r.side.value} {quantity(r.quantity)} {kind}{at} · "
        f"{role} · <code>{cid}</code>"
    )


def orders_pages(
    orders: Sequence[RestingOrder], instruments: Mapping[str, Instrument] | None = None
) -> list[Page]:
    """``/orders``: each resting order: symbol, side, quantity, type and level, what it is
    (a signal's entry, a trade's stop loss or take profit, not ours) and its client order
    id. Every order is shown: a long list is several messages, each with a Cancel button
    per order of ours it names (orders SignalDesk did not place get none). Levels with the
    precision of the symbol's instrument in ``instruments``, else guessed."""
    if not orders:
        return [Page(no_orders())]
    header = f"<b>Resting orders ({len(orders)})</b>"
    known = instruments or {}
    rows = [_order_line(o, known.get(o.report.symbol)) for o in orders]
    return _pages(header, rows, "", lambda shown: _cancel_buttons([orders[i] for i in shown]))


def _cancel_buttons(orders: Sequence[RestingOrder]) -> InlineKeyboardMarkup | None:
    rows = []
    for o in orders:
        data = OrderCallback(cid=o.report.client_order_id)
        if o.ours and fits(data):
            label = f"🚫 Cancel {o.report.symbol} {o.report.order_type.value.replace('_', ' ')}"
            rows.append([InlineKeyboardButton(text=label, callback_data=data.pack())])
    return InlineKeyboardMarkup(inline_keyboard=rows) if rows else None


def no_orders() -> str:
    """``/orders`` with nothing resting."""
    return "No resting orders."


def cancel_result_text(result: CancelResult, actor: str) -> str:
    """The reply after a Cancel button or ``signaldesk cancel``."""
    return f"{esc(_cancel_line(result))} (by {esc(actor)})"


def cancel_toast(result: CancelResult) -> str:
    """The toast after a Cancel press (plain text)."""
    if result.error:
        return _clip(f"Cancel failed: {result.error}", MAX_TOAST)
    if result.report is not None and result.report.state.value == "FILLED":
        return "It filled before the cancel"
    return "Cancelled"


# --- notification settings (/notify) ------------------------------------------------------

_TOPIC_WORDS = {
    Topic.CARD: "Cards",
    Topic.FILL: "Fills",
    Topic.EXIT: "Exits",
    Topic.WARNING: "Warnings",
    Topic.HEARTBEAT: "Heartbeats",
    Topic.DAILY_SUMMARY: "Daily summary",
    Topic.ALERT: "Drawdown alerts",
}
_LEVEL_MARKS = {Loudness.LOUD: "🔔", Loudness.SILENT: "🔕", Loudness.OFF: "🚫"}


def notify_text(settings: NoticeSettings) -> str:
    """``/notify``: each topic's level, what can never be off, and the quiet hours."""
    lines = [
        f"{_LEVEL_MARKS[settings.level(t)]} {_TOPIC_WORDS[t]}: {settings.level(t)}"
        for t in SETTABLE
    ]
    quiet = settings.quiet
    hours = (
        f"Quiet hours {quiet} ({esc(settings.zone)}): routine messages are silent, "
        "drawdown alerts and other alerts still ring."
        if quiet is not None
        else "No quiet hours (set QUIET_HOURS, e.g. 23:00-07:00)."
    )
    return _lines(
        "<b>Notifications</b>",
        lines,
        "\nCards and drawdown alerts can be silenced, never switched off. " + hours,
    )


def notify_keyboard(settings: NoticeSettings) -> InlineKeyboardMarkup:
    """One row per topic with a button per level it can take (no Off for cards and
    drawdown alerts); the current level is ticked."""
    rows = []
    for topic in SETTABLE:
        levels = [
            level for level in Loudness if level is not Loudness.OFF or topic not in NEVER_OFF
        ]
        rows.append(
            [
                InlineKeyboardButton(
                    text=("✓ " if settings.level(topic) is level else "")
                    + f"{_TOPIC_WORDS[topic]}: {level}",
                    callback_data=NotifyCallback(topic=topic, level=level).pack(),
                )
                for level in levels
            ]
        )
    return InlineKeyboardMarkup(inline_keyboard=rows)


def notify_set(topic: Topic, level: Loudness) -> str:
    """The toast after a ``/notify`` press."""
    return f"{_TOPIC_WORDS[topic]}: {level}"


def notify_refused(error: Exception) -> str:
    """The toast when a ``/notify`` press is refused (a forged Off for an alert)."""
    return _clip(f"⚠️ {error}", MAX_TOAST)


# --- authorization and housekeeping notices (plain text for the outbox) ----------------


def refusal() -> str:
    """The toast or reply a stranger gets."""
    return "Not allowed"


@dataclass(frozen=True, slots=True)
class StrangerTally:
    """What one stranger tried during a notice period: ``attempts`` commands or presses,
    the ``last`` of them (e.g. ``sent /closeall``), from ``chat_id``."""

    user: User | None
    chat_id: int | None
    attempts: int
    last: str


def _stranger(user: User | None, chat_id: int | None) -> str:
    who = "an unknown sender"
    if user is not None:
        handle = f" @{user.username}" if user.username else ""
        who = f"{user.full_name}{handle} (id {user.id})"
    where = f" in chat {chat_id}" if chat_id is not None else ""
    return f"{who}{where}"


def strangers_notice(tallies: Sequence[StrangerTally], more_strangers: int = 0) -> str:
    """The owners' one notice per period about strangers' commands and button presses
    (plain text): one stranger's one attempt in a line, else a count and a line each
    (the 10 most insistent; ``more_strangers`` were not even tallied one by one)."""
    if len(tallies) == 1 and tallies[0].attempts == 1 and not more_strangers:
        only = tallies[0]
        return (
            f"🚫 Refused {_stranger(only.user, only.chat_id)}: {_clip(only.last, 100)}. "
            "Nothing was done."
        )
    ranked = sorted(tallies, key=lambda t: -t.attempts)
    strangers = len(tallies) + more_strangers
    attempts = sum(t.attempts for t in tallies)
    lines = [
        f"{_stranger(t.user, t.chat_id)}: {t.attempts}×, last {_clip(t.last, 60)}"
        for t in ranked[:10]
    ]
    if strangers > len(lines):
        lines.append(f"… and {strangers - len(lines)} more")
    noun = "stranger" if strangers == 1 else "strangers"
    tried = f"{attempts} times" if not more_strangers else f"more than {attempts} times"
    return "\n".join([f"🚫 {strangers} {noun} tried {tried}; nothing was done:", *lines])


def stale_notice(commands: Sequence[str], max_age_seconds: int) -> str:
    """The one message about commands skipped because they were older than the limit."""
    listed = ", ".join(_clip(c, 40) for c in commands[:10])
    more = f" and {len(commands) - 10} more" if len(commands) > 10 else ""
    noun = "command" if len(commands) == 1 else "commands"
    return (
        f"Skipped {len(commands)} {noun} sent while the bot was offline (older than "
        f"{max_age_seconds} s): {listed}{more}. Send again what you still want."
    )


# --- trades and their exits --------------------------------------------------------------


def _venue_label(venue: str) -> str:
    """``paper`` -> ``paper``; ``ccxt:binance`` -> ``Binance``; ``mt5`` -> ``MT5``."""
    if venue.startswith("ccxt:"):
        return venue.partition(":")[2].capitalize()
    return "MT5" if venue.lower() == "mt5" else venue


def exit_place(style: ExitStyle | str, venue: str) -> str:
    """Where an exit lives, as a phrase: ``at paper``, ``at Binance`` (orders at the
    venue), ``on the MT5 ticket`` (attached), ``watched by SignalDesk``."""
    style = ExitStyle(style) if style else ExitStyle.WATCHED
    if style is ExitStyle.WATCHED:
        return "watched by SignalDesk"
    if style is ExitStyle.ATTACHED:
        return f"on the {_venue_label(venue)} ticket"
    return f"at {_venue_label(venue)}"


def exits_line(trade: Trade, venue: str, instrument: Instrument | None = None) -> str:
    """The trade's live exits and where they live, plain text: ``Stop 116,000.00 at paper
    · Take profit 117,100.00 at paper · trailing 1.5%`` (prices with the ``instrument``'s
    precision when given); "" when it has none."""
    place = exit_place(trade.exit_style, venue)
    parts = []
    if trade.stop_loss is not None:
        parts.append(f"Stop {price(trade.stop_loss, instrument)} {place}")
    if trade.take_profit is not None:
        parts.append(f"Take profit {price(trade.take_profit, instrument)} {place}")
    if trade.trail_pct is not None:
        parts.append(f"trailing {canonical(trade.trail_pct)}%")
    if trade.breakeven_at_r is not None:
        parts.append(f"break-even at {canonical(trade.breakeven_at_r)} R")
    return " · ".join(parts)


_EXIT_WORDS = {
    ExitReason.STOP_LOSS: "🛑 Stop loss",
    ExitReason.TAKE_PROFIT: "🎯 Take profit",
    ExitReason.TRAILING_STOP: "🪜 Trailing stop",
    ExitReason.MANUAL_CLOSE: "✋ Closed by the owner",
    ExitReason.CLOSE_ALL: "✋ Close all",
    ExitReason.DRAWDOWN_FLATTEN: "🚨 Drawdown flatten",
    ExitReason.REVERSED: "🔁 Reversed by an opposite entry",
    ExitReason.RECONCILED: "🔎 Found closed at the broker",
}


def _short_price(value: Decimal, instrument: Instrument | None) -> str:
    """An average price with the ``instrument``'s precision; without one, to at most 8
    decimals (averages carry more digits than a tick)."""
    if instrument is not None:
        return price(value, instrument)
    return price(canonical(value.quantize(Decimal("1e-8"))))


def trade_exit_text(exit_: TradeExit, venue: str = "", instrument: Instrument | None = None) -> str:
    """The exit message of a trade: why, symbol and side, the quantity, entry -> exit
    (with the ``instrument``'s precision when given), realized PnL after fees in quote
    currency and in R, fees, how long it was held, and where the exit lived (on
    ``venue``). A partial exit says what is left."""
    base, quote = _base_quote(exit_.symbol)
    unit = f" {exit_.currency or quote}".rstrip()
    direction = "long" if exit_.side is Side.BUY else "short"
    head = _EXIT_WORDS.get(exit_.reason, exit_.reason.value)
    if exit_.closed:
        what = f"{esc(exit_.symbol)} {direction} closed"
        size = f"{quantity(exit_.quantity)} {esc(base)}"
        moved = (
            f"entry {_short_price(exit_.average_entry, instrument)} → "
            f"exit {_short_price(exit_.average_exit, instrument)}"
        )
        pnl_label = "PnL"
    else:
        what = f"{esc(exit_.symbol)} {direction} partly closed"
        size = (
            f"{quantity(exit_.closed_quantity)} of {quantity(exit_.quantity)} {esc(base)} "
            f"({quantity(exit_.quantity_open)} left)"
        )
        moved = (
            f"entry {_short_price(exit_.average_entry, instrument)} → "
            f"exit {_short_price(exit_.exit_price, instrument)}"
        )
        pnl_label = "Realized so far"
    r = exit_.r_multiple
    in_r = f" ({'+' if r >= 0 else '-'}{abs(r):.2f} R)" if r is not None else ""
    held = _duration((exit_.at - exit_.opened_at).total_seconds())
    lines = [
        f"<b>{head} · {what}</b>",
        f"{size}: {moved}",
        f"{pnl_label}: {signed(exit_.net_pnl)}{esc(unit)}{in_r} · "
        f"fees {money(exit_.fees)}{esc(unit)}",
        f"Held {held} · trade #{exit_.trade_id}"
        + (f" · exit {esc(exit_place(exit_.exit_style, venue))}" if exit_.exit_style else ""),
    ]
    return _clip("\n".join(lines), MAX_MESSAGE)


def text_notice(text: str) -> list[str]:
    """An engine notification (plain text from the outbox) as HTML-mode messages: one, or
    several when it is longer than :data:`MAX_MESSAGE` (:func:`split_message`)."""
    return split_message(esc(text))


# --- markets and strategies ------------------------------------------------------------

#: ``/symbols`` lists at most this many markets.
MAX_SYMBOLS = 15


def symbols_text(query: str, found: Sequence[Instrument], source: str) -> str:
    """``/symbols QUERY``: symbol, type, base/quote, minimum quantity and price tick."""
    if not found:
        return f"No market like {esc(query)} at {esc(source)}."
    rows = [
        f"<code>{esc(i.symbol)}</code> · {esc(i.kind)} · {esc(i.base)}/{esc(i.quote)} · "
        f"min {quantity(i.min_quantity)} · tick {quantity(i.price_tick)}"
        for i in found[:MAX_SYMBOLS]
    ]
    more = (
        f"… and {len(found) - MAX_SYMBOLS} more: narrow the search."
        if len(found) > MAX_SYMBOLS
        else ""
    )
    return _lines(f"<b>Markets like {esc(query)} at {esc(source)}</b>", rows, more)


def _when_text(moment: datetime | None) -> str:
    return "never" if moment is None else _utc(moment)


def strategies_text(statuses: Sequence[InstanceStatus]) -> str:
    """``/strategies``: each instance with its schedule, state, last run, last signal and
    next run (UTC)."""
    if not statuses:
        return "No strategy instances. List them in STRATEGIES_FILE (see the README)."
    blocks = []
    for s in statuses:
        spec = s.spec
        state = (
            "⏸ paused" + (f" by {esc(s.paused_by)}" if s.paused_by else "")
            if s.paused
            else ("off (enabled = false)" if not spec.enabled else "▶️ active")
        )
        last_signal = (
            f"#{s.last_signal_id} at {_utc(s.last_signal_at)}"
            if s.last_signal_id is not None and s.last_signal_at is not None
            else "none"
        )
        next_run = "—" if s.paused or not spec.enabled else _when_text(s.next_run_at)
        blocks.append(
            f"<b>{esc(spec.name)}</b> · {esc(spec.kind)} · {esc(', '.join(spec.symbols))} · "
            f"{esc(spec.timeframe)} · {esc(spec.schedule)} · risk {spec.risk_pct}%\n"
            f"{state} · last run {_when_text(s.last_run_at)} · last signal {last_signal}"
            f" · next run {next_run}"
        )
    return "<b>Strategies</b>\n" + "\n\n".join(blocks)


def strategies_keyboard(statuses: Sequence[InstanceStatus]) -> InlineKeyboardMarkup | None:
    """One Pause or Resume button per enabled instance."""
    rows = []
    for s in statuses:
        if not s.spec.enabled:
            continue
        action = StrategyAction.RESUME if s.paused else StrategyAction.PAUSE
        label = ("▶️ Resume " if s.paused else "⏸ Pause ") + s.spec.name
        data = StrategyCallback(action=action, name=s.spec.name).pack()
        rows.append([InlineKeyboardButton(text=label, callback_data=data)])
    return InlineKeyboardMarkup(inline_keyboard=rows) if rows else None


def strategy_toggled(status: InstanceStatus) -> str:
    """The toast after a Pause or Resume press."""
    verb = "paused" if status.paused else "resumed"
    return f"{status.spec.name} {verb}"


def strategy_ran(name: str, proposed: int) -> str:
    """The reply to ``/run NAME`` (the cards follow as usual)."""
    if proposed == 0:
        return f"Ran {esc(name)}: nothing to propose on the latest candle."
    return f"Ran {esc(name)}: {proposed} signal{'s' if proposed != 1 else ''} proposed."


# --- results -------------------------------------------------------------------------


def _r(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}R"


def pnl_text(report: PnlReport) -> str:
    """``/pnl``: the closed trades of the report's period (``day``: since local midnight,
    ``week``: 7 days, ``month``: 30 days, ``all``) with realized PnL before and after fees,
    the win rate, profit factor, best and worst trade, average R, the open positions'
    unrealized PnL now and the max drawdown of the period's equity curve ("no equity
    history yet" without snapshots). Money in the report's currency (quote currency)."""
    stats, unit = report.stats, _unit(report.currency)
    lines = [f"<b>PnL · {esc(report.period)}</b>"]
    if stats.trades == 0:
        lines.append("No closed trades in this period.")
    else:
        win_rate = _pct((stats.win_rate or ZERO) * 100)
        factor = "n/a" if stats.profit_factor is None else f"{stats.profit_factor:.2f}"
        lines += [
            f"Realized: {signed(stats.net_pnl)}{unit} after {money(stats.fees)}{unit} fees "
            f"({signed(stats.realized_pnl)} before)",
            f"Trades: {stats.trades} · won {stats.wins} ({win_rate}) · profit factor {factor}",
            f"Best: {signed(stats.best or ZERO)} · worst: {signed(stats.worst or ZERO)} · "
            f"average {_r(stats.average_r)}",
        ]
    lines.append(f"Unrealized (open positions): {signed(report.unrealized)}{unit}")
    if report.max_drawdown_pct is None:
        lines.append("Max drawdown: no equity history yet")
    else:
        lines.append(f"Max drawdown: {_pct(report.max_drawdown_pct)}")
    return "\n".join(lines)


def _unit(currency: str) -> str:
    return f" {esc(currency)}" if currency else ""


def daily_text(report: DailyReport, zone: tzinfo) -> str:
    """``/daily``: one row per local day (newest first) in a monospaced table: the date in
    ``zone``, trades closed, their net PnL and fees (the report's quote currency) and the
    equity at the day's end ("-" before the first equity snapshot)."""
    table = [("Date", "Trades", "Net PnL", "Fees", "Equity")]
    for row in report.rows:
        equity = "-" if row.equity is None else money(row.equity)
        table.append(
            (
                row.day.strftime("%m-%d"),
                str(row.trades),
                signed(row.net_pnl),
                money(row.fees),
                equity,
            )
        )
    head = f"<b>Daily · last {len(report.rows)} days</b> ({esc(zone)}{_unit(report.currency)})"
    return f"{head}\n<pre>{esc(_table(table))}</pre>"


def _table(rows: Sequence[Sequence[str]]) -> str:
    """``rows`` as aligned columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]))]
    return "\n".join(
        " ".join(
            cell.ljust(widths[n]) if n == 0 else cell.rjust(widths[n]) for n, cell in enumerate(row)
        ).rstrip()
        for row in rows
    )


def performance_text(performance: Performance) -> str:
    """``/performance``: closed trades per symbol and per signal source, best net PnL
    first: trades, win rate, net PnL (quote currency) and average R, in monospaced
    tables."""
    if not performance.by_symbol:
        return "No closed trades yet."
    parts = [f"<b>Performance</b>{_unit(performance.currency)}"]
    for title, rows in (("Symbol", performance.by_symbol), ("Source", performance.by_source)):
        table = [(title, "Trades", "Win", "Net PnL", "Avg R")]
        table += [
            (
                _clip(r.name, 16),
                str(r.trades),
                f"{r.win_rate * 100:.0f}%",
                signed(r.net_pnl),
                _r(r.average_r),
            )
            for r in rows
        ]
        parts.append(f"<pre>{esc(_table(table))}</pre>")
    return "\n".join(parts)


def daily_summary_text(summary: DailySummary) -> str:
    """The daily summary message: the local day's closed trades (count, wins, net PnL
    after fees, fees), equity and unrealized PnL now (left out when the broker did not
    answer)."""
    stats, unit = summary.stats, _unit(summary.currency)
    lines = [f"🗓 <b>Daily summary · {summary.day.isoformat()}</b> ({esc(summary.zone)})"]
    if stats.trades == 0:
        lines.append("No trades closed today.")
    else:
        lines.append(
            f"Closed {stats.trades} · won {stats.wins} · net {signed(stats.net_pnl)}{unit}"
            f" after {money(stats.fees)}{unit} fees"
        )
    if summary.equity is not None:
        lines.append(f"Equity: {money(summary.equity)}{unit}")
    if summary.unrealized is not None:
        lines.append(f"Unrealized (open positions): {signed(summary.unrealized)}{unit}")
    return "\n".join(lines)


def chart_caption(symbol: str, timeframe: str) -> str:
    """The caption of a ``/chart`` photo."""
    return f"<b>{esc(symbol)}</b> · {esc(timeframe)}"


def chart_failed(symbol: str, timeframe: str) -> str:
    """The answer to ``/chart`` when the chart could not be drawn."""
    return f"⚠️ The chart of {esc(symbol)} {esc(timeframe)} could not be drawn; try again later."


def _journal_line(t: Trade) -> str:
    side = "long" if t.side is Side.BUY else "short"
    head = f"#{t.id} {esc(t.symbol)} {side} {quantity(t.quantity)} @ {price(t.average_entry)}"
    if t.closed_at is None:
        return f"{head} · open"
    held = _duration((t.closed_at - t.opened_at).total_seconds())
    reason = t.exit_reason.value.replace("_", " ") if t.exit_reason else ""
    exit_price = price(t.average_exit) if t.average_exit is not None else "?"
    return f"{head} → {exit_price} · {signed(t.net_pnl)} · {_r(t.r_multiple)} · {held}" + (
        f" · {esc(reason)}" if reason else ""
    )


def trades_text(trades: Sequence[Trade]) -> str:
    """``/trades``: the journal, newest first, one line per trade: entry, exit, net PnL
    (quote, after fees), R multiple, time held and exit reason. Every trade asked for is
    listed: a long journal is sent as several messages (:func:`split_message`)."""
    if not trades:
        return "No trades yet."
    return "\n".join(["<b>Trades</b> (newest first)", *(_journal_line(t) for t in trades)])
