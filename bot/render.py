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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from aiogram.types import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, User

from bot.callbacks import CardAction, ConfirmAction, ConfirmCallback, SignalCallback
from core.config import BrokerName, DrawdownAction, Settings
from core.db.types import canonical
from core.domain import (
    ZERO,
    Account,
    AuditEvent,
    OrderReport,
    OrderType,
    Position,
    Side,
    Signal,
    SignalStatus,
)
from core.services import CloseResult, Decision, OperatorStatus, StatusSummary
from core.services.heartbeat import Heartbeat
from core.services.risk import BreachLevel, RiskFigures

__all__ = [
    "COMMANDS",
    "DEFAULT_HISTORY",
    "MAX_HISTORY",
    "MAX_MESSAGE",
    "MAX_TOAST",
    "Card",
    "CommandSpec",
    "StrangerTally",
    "actor_name",
    "approve_toast",
    "balance_text",
    "bot_commands",
    "card",
    "close_results_text",
    "confirm_cancelled",
    "confirm_expired",
    "confirm_keyboard",
    "confirm_prompt",
    "confirm_running",
    "confirm_taken",
    "conflict_toast",
    "drawdown_text",
    "error_line",
    "esc",
    "heartbeat_text",
    "help_text",
    "history_text",
    "inactive_button",
    "internal_error",
    "money",
    "no_pending",
    "no_position",
    "no_positions",
    "not_paused",
    "outcome",
    "paused_text",
    "pending_more",
    "positions_text",
    "price",
    "private_hint",
    "quantity",
    "refusal",
    "reject_toast",
    "resume_prompt",
    "resumed_text",
    "stale_notice",
    "start_text",
    "status_text",
    "strangers_notice",
    "text_notice",
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


def _decimals(value: Decimal) -> int:
    exponent = canonical(value).as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def price(value: Decimal) -> str:
    """A price with thousands separators and at least two decimals: ``43,120.50``."""
    return f"{value:,.{max(2, _decimals(value))}f}"


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
    """``header``, then as many ``lines`` as fit in one message, then ``footer``."""
    out = [header]
    budget = MAX_MESSAGE - len(header) - len(footer) - 40
    for index, line in enumerate(lines):
        budget -= len(line) + 1
        if budget < 0:
            out.append(f"… and {len(lines) - index} more")
            break
        out.append(line)
    if footer:
        out.append(footer)
    return "\n".join(out)


# --- signal cards ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Card:
    """A signal card: HTML ``text`` and its keyboard (``None`` once decided: an edit
    without ``reply_markup`` removes the buttons)."""

    text: str
    markup: InlineKeyboardMarkup | None


def _card_keyboard(signal_id: int) -> InlineKeyboardMarkup:
    def button(text: str, action: CardAction) -> InlineKeyboardButton:
        data = SignalCallback(action=action, signal_id=signal_id).pack()
        return InlineKeyboardButton(text=text, callback_data=data)

    return InlineKeyboardMarkup(
        inline_keyboard=[
            [button("✅ Approve", CardAction.APPROVE), button("❌ Reject", CardAction.REJECT)]
        ]
    )


def outcome(signal: Signal, report: OrderReport | None) -> str:
    """The signal's state as one plain-text line ("" while PROPOSED), e.g.
    ``Filled 0.01 BTC @ 43,120.50 (fee 0.43 USDT)``, ``Rejected by @ada at 12:03 UTC``,
    ``Blocked: paused``, ``Blocked: price moved 1.4% (limit 1.0%)``, ``Expired``."""
    base, quote = _base_quote(signal.symbol)
    who = signal.decided_by or "the owner"
    reason = signal.status_reason
    match signal.status:
        case SignalStatus.PROPOSED:
            return ""
        case SignalStatus.FILLED if report is not None and report.average_price is not None:
            filled = report.filled_quantity or report.quantity
            fee = _fee(report.fee, report.fee_currency or quote)
            return f"Filled {quantity(filled)} {base} @ {price(report.average_price)} ({fee})"
        case SignalStatus.FILLED:
            return f"Filled {quantity(signal.quantity)} {base}"
        case SignalStatus.APPROVED:
            return f"Approved by {who}, sending the order"
        case SignalStatus.SUBMITTED if signal.order_type is OrderType.LIMIT:
            return f"Order resting at the limit {price(signal.limit_price or ZERO)}"
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


def card(signal: Signal, report: OrderReport | None, account: Account | None) -> Card:
    """The card of ``signal``: symbol, side, quantity, order type and limit, stop loss and
    take profit, reference price, risk (quote currency, and % of ``account`` equity when the
    account is in the quote currency) where a stop loss is given, source, note, expiry, and
    the outcome once decided. Approve/Reject buttons only while PROPOSED."""
    quote = _base_quote(signal.symbol)[1]
    unit = f" {quote}" if quote else ""
    side = "🟢 BUY" if signal.side is Side.BUY else "🔴 SELL"
    lines = [
        f"<b>{side} {quantity(signal.quantity)} {esc(signal.symbol)}</b> · signal #{signal.id}"
    ]
    if signal.order_type is OrderType.LIMIT and signal.limit_price is not None:
        lines.append(f"Order: limit @ {price(signal.limit_price)}{unit}")
    else:
        lines.append("Order: market")
    stop = price(signal.stop_loss) if signal.stop_loss is not None else "none"
    take = price(signal.take_profit) if signal.take_profit is not None else "none"
    lines.append(f"Stop loss: {stop} · Take profit: {take}")
    lines.append(f"Reference price: {price(signal.reference_price)}{unit}")
    risk = signal.risk
    if risk is not None:
        share = ""
        same_currency = account is not None and quote in ("", account.currency)
        if account is not None and same_currency and account.equity > 0:
            share = f" ({_pct(risk / account.equity * 100)} of equity)"
        lines.append(f"Risk: {money(risk)}{unit}{share}")
    lines.append(f"Source: {esc(signal.source)}")
    if signal.note:
        lines.append(f"Note: {esc(signal.note)}")
    lines.append(f"Expires: {_utc(signal.expires_at)}")
    status = outcome(signal, report)
    if status:
        lines.append(f"\n<b>{_OUTCOME_MARK.get(signal.status, '')} {esc(status)}</b>")
        return Card(_clip("\n".join(lines), MAX_MESSAGE), None)
    return Card(_clip("\n".join(lines), MAX_MESSAGE), _card_keyboard(signal.id))


def approve_toast(decision: Decision) -> str:
    """The toast after an Approve tap: the outcome line (``Filled ...``, ``Blocked: ...``)."""
    return _clip(outcome(decision.signal, decision.report) or "Approved", MAX_TOAST)


def reject_toast(signal: Signal) -> str:
    """The toast after a Reject tap."""
    return f"Rejected signal #{signal.id}"


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
    CommandSpec("positions", "Open positions and their PnL", "/positions"),
    CommandSpec("signals", "Pending signals with their buttons", "/signals"),
    CommandSpec("pause", "Block approvals: /pause [reason]", "/pause [reason]"),
    CommandSpec("resume", "Let approvals execute again", "/resume"),
    CommandSpec("closeall", "Close every position (asks to confirm)", "/closeall"),
    CommandSpec("close", "Close one position: /close SYMBOL", "/close SYMBOL"),
    CommandSpec("balance", "Balance, equity and margin", "/balance"),
    CommandSpec(
        "history",
        "Recent signals and outcomes: /history [N]",
        f"/history [N], N 1 to {MAX_HISTORY}",
    ),
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
    breach = {"max": " · ⛔ max level breached", "warn": " · ⚠️ warn level crossed"}
    lines.append(f"Drawdown: {shown} ({limits}){breach.get(op.breach_level, '')}")
    if op.paused:
        by = f" by {esc(op.paused_by)}" if op.paused_by else ""
        lines.append(f"Trading: ⏸ paused{by}: {esc(op.pause_reason)}")
    else:
        lines.append("Trading: ▶️ active")
    lines.append(
        f"Open positions: {len(summary.positions)} · pending signals: {summary.pending_signals}"
    )
    lines.append(f"Uptime: {_duration(uptime_seconds)}")
    lines.append(_last_heartbeat(last_heartbeat, now, settings.heartbeat_interval))
    return "\n".join(lines)


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
            "Trading: ⏸ paused" if f.paused else "Trading: ▶️ active",
        ]
    )


def heartbeat_text(heartbeat: Heartbeat) -> str:
    """A heartbeat (its plain-text lines) as an HTML-mode message: ``/heartbeat``'s reply
    in a chat other than the one heartbeats go to."""
    return text_notice(heartbeat.text())


def positions_text(positions: Sequence[Position]) -> str:
    """``/positions``: symbol, side, quantity, entry, mark and unrealized PnL per position,
    then the totals (PnL in each position's quote currency)."""
    if not positions:
        return no_positions()
    rows = []
    total = ZERO
    notional = ZERO
    for p in positions:
        side = "long" if p.side is Side.BUY else "short"
        foreign = "" if p.opened_by_signaldesk else " (not opened by SignalDesk)"
        rows.append(
            f"<b>{esc(p.symbol)}</b> {side} {quantity(abs(p.quantity))} · entry "
            f"{price(p.average_entry)} · mark {price(p.mark_price)} · uPnL "
            f"{signed(p.unrealized_pnl)}{foreign}"
        )
        total += p.unrealized_pnl
        notional += p.notional
    footer = f"Total: uPnL {signed(total)} · notional {money(notional)}"
    return _lines(f"<b>Open positions ({len(positions)})</b>", rows, footer)


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
        if e.to_status:
            move = (
                f"{e.from_status.lower()} → {e.to_status.lower()}"
                if e.from_status
                else e.to_status.lower()
            )
        else:
            move = e.action
        reason = f" · {esc(_clip(e.reason, 80))}" if e.reason else ""
        rows.append(f"{e.at.strftime('%m-%d %H:%M')} {what}{esc(move)} · {esc(e.actor)}{reason}")
    return _lines(f"<b>History (last {len(events)}, UTC)</b>", rows)


def no_pending() -> str:
    """``/signals`` with nothing waiting."""
    return "No pending signals."


def pending_more(count: int) -> str:
    """``/signals`` when more are pending than it shows."""
    return f"… and {count} more pending. Decide these first, then send /signals again."


def paused_text(operator: OperatorStatus) -> str:
    """The reply to ``/pause``."""
    return (
        f"⏸ Paused: {esc(operator.pause_reason)} (by {esc(operator.paused_by)}). "
        "Approvals are blocked until /resume."
    )


def not_paused() -> str:
    """The reply to ``/resume`` when nothing is paused."""
    return "Not paused: approved signals already execute."


def resumed_text() -> str:
    """The reply to ``/resume`` (or its confirmation)."""
    return "▶️ Resumed. Approved signals execute again."


# --- confirmations ---------------------------------------------------------------------


def confirm_keyboard(action: ConfirmAction, symbol: str, issued: int) -> InlineKeyboardMarkup:
    """[Confirm] [Cancel] for a destructive command asked at Unix time ``issued``."""
    label = {
        ConfirmAction.CLOSE_ALL: "✅ Close all",
        ConfirmAction.CLOSE: f"✅ Close {symbol}",
        ConfirmAction.RESUME: "✅ Resume",
    }[action]
    go = ConfirmCallback(action=action, symbol=symbol, issued=issued).pack()
    no = ConfirmCallback(action=ConfirmAction.CANCEL, symbol=symbol, issued=issued).pack()
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text=label, callback_data=go),
                InlineKeyboardButton(text="✖️ Cancel", callback_data=no),
            ]
        ]
    )


def _position_line(p: Position) -> str:
    side = "long" if p.side is Side.BUY else "short"
    return f"{esc(p.symbol)} {side} {quantity(abs(p.quantity))} (uPnL {signed(p.unrealized_pnl)})"


def confirm_prompt(positions: Sequence[Position], ttl_seconds: int) -> str:
    """The question before closing ``positions`` (all of them, or the one of ``/close``)."""
    what = "this position" if len(positions) == 1 else f"all {len(positions)} positions"
    return _lines(
        f"Close {what} at market?",
        [_position_line(p) for p in positions],
        f"This button expires in {ttl_seconds} s.",
    )


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


def close_results_text(results: Sequence[CloseResult], actor: str) -> str:
    """Each position's close result: the fill, nothing to close, or the error. Plain text
    (an outbox report: the deliverer escapes it)."""
    rows = []
    for r in results:
        if r.error:
            rows.append(f"⚠️ {r.symbol}: failed: {r.error}")
        elif r.report is None:
            rows.append(f"➖ {r.symbol}: nothing to close")
        else:
            rep = r.report
            verb = "sold" if rep.side is Side.SELL else "bought"
            at = f" @ {price(rep.average_price)}" if rep.average_price is not None else ""
            filled = quantity(rep.filled_quantity or rep.quantity)
            fee = _fee(rep.fee, rep.fee_currency)
            rows.append(f"✅ {r.symbol}: {verb} {filled}{at} ({fee})")
    if not rows:
        return f"Nothing to close (confirmed by {actor})."
    return _lines(f"Close results (confirmed by {actor})", rows)


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


def text_notice(text: str) -> str:
    """An engine notification (plain text from the outbox) as an HTML-mode message."""
    return _clip(esc(text), MAX_MESSAGE)
