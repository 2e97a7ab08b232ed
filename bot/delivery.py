"""The outbox deliverer: engine messages from the ``outbox`` table to Telegram.

Core's :class:`~core.notify.OutboxNotifier` writes one :class:`~core.db.models.OutboxRow`
per notification (a signal card, a card update, a text) and commits it; this module sends
them to the card chat (``TELEGRAM_CHAT_ID``, else the first owner's private chat), and
signal cards also to every owner's private chat (``TELEGRAM_OWNER_IDS``: a private chat's
id is the user's id), once each:

- **Order.** Alerts (``priority`` 0) before routine rows (1), each in ``id`` order. A
  ``signal_update`` row waits while its signal's ``signal_card`` row is undelivered.
- **Loudness** is decided as each row is sent (:func:`core.notify.loudness` of the row's
  ``topic`` and ``priority`` with the owner's ``/notify`` levels and ``QUIET_HOURS`` at
  the deliverer's ``clock``): SILENT sends with ``disable_notification``; OFF marks the
  row delivered unsent (``last_error`` "off"); cards and alerts are never OFF. Edits of a
  posted card make no sound whatever the level (Telegram notifies new messages only).
- **Rows.** ``text`` -> ``sendMessage`` (a text over 4096 characters is several
  messages split at line boundaries);
  ``trade_exit`` -> ``sendMessage`` of :func:`bot.render.trade_exit_text` over the row's
  typed payload (:class:`core.notify.TradeExit`); ``flatten_report`` -> ``sendMessage``
  of :func:`bot.render.flatten_text` over its :class:`core.services.risk.FlattenReport`;
  cards and exit messages print prices with the precision of the symbol's instrument,
  looked up once per message in the engine's cached symbol listing
  (:meth:`~core.marketdata.search.SymbolSearch.known`; a symbol it does not list is
  printed with guessed decimals);
  ``signal_card`` and ``signal_update`` -> the card rendered from the signal's *current*
  state: ``editMessageText`` (a text card) or ``editMessageCaption`` (a photo card) of the
  posted card, skipped when this process's last edit already showed that card (the tap
  handler edits the tapped card first; a 400 "message is not modified" still counts as
  delivered), or, when the card was never posted or can no longer be edited,
  ``sendPhoto`` with its chart (rendered in a worker thread, :mod:`bot.chart`) and the card
  as caption, else ``sendMessage`` when no chart can be made; the posted message and its
  kind are recorded in ``signal_cards`` so later updates edit it with the right method.
  A ``signal_card`` row is first re-checked (``SignalService.recheck``: an account that
  changed since the proposal posts the card BLOCKED, without buttons), then posted to each
  card chat that has no copy yet (each copy is recorded as soon as it is posted, so a row
  retried after posting to two of three chats posts only to the third); a
  ``signal_update`` row edits every copy (a decision by one owner shows in every chat).
  A chat other than the main one that refuses (403, chat not found, the message) is
  skipped for that row and logged once; the main chat's refusal decides the row (the
  table below) after the other chats have their copy. Each copy is one more message
  under the row's rate-limit token: a handful of owners stays far below 30/s.
- **Limits** (Bot API FAQ): about one message per second per chat, 30 per second overall
  and, when the main chat is a group or supergroup (a negative id), 20 a minute in that
  group (:class:`DeliveryPolicy` sets each pace a little under Telegram's; aiolimiter).
  When a token must be waited for, the next row is chosen again after the wait, so an
  alert queued behind a burst of cards goes out with the next token.
- **Failures** (aiogram's exceptions; descriptions as the Bot API sends them):

  =============================================  =========================================
  Telegram answers                               the deliverer
  =============================================  =========================================
  429 with ``retry_after``                       sleeps ``retry_after``, sends the row again
  5xx, network error, 401, 404                   backs off (``backoff_initial`` doubling to
                                                 ``backoff_max``, cut short when polling sees
                                                 Telegram again), forever: not the row's fault
  400 with ``migrate_to_chat_id`` ("group chat   records the move (table ``chat_aliases``),
  was upgraded to a supergroup chat")            sends the row, and all later ones, there
  403 ("bot was blocked by the user", "bot was   keeps the row and retries with the long
  kicked..."), 400 "chat not found" or missing   backoff (``refused_initial`` to
  rights                                         ``refused_max``): an alert is worth waiting
                                                 for; logged once per row
  any other 400 or 413 (the message itself:      drops the row: ``delivered_at`` set with
  "message is too long", "can't parse            its ``last_error`` (kept for inspection,
  entities")                                     never deleted) and a log line, so one bad
                                                 row cannot block the queue
  =============================================  =========================================

  Order is kept: the row being retried blocks the rows behind it, so nothing is lost or
  overtaken while Telegram or the chat refuses.
- **Latency.** Woken at once by the in-process notifier (:meth:`OutboxDeliverer.wake` as
  ``OutboxNotifier.on_enqueue``) and polling every ``poll_interval`` seconds for rows
  written by other processes (the CLI, the webhook).
  It gives way to taps: while one is being decided it waits before it looks up its next
  row, before each attempt at a row, before each chat a card goes to and before it marks
  the row delivered (:mod:`bot.priority`; at most a second each, never inside a write
  transaction on SQLite).

**More than one process** (PostgreSQL): each delivering process claims the row it sends
with ``SELECT ... FOR UPDATE SKIP LOCKED`` in a transaction held until the row is marked
delivered, so no two processes send one row; the others skip it and take the next. A
process that dies mid-send releases its claim with its connection. On SQLite (one process)
rows are read without a claim, and no transaction is held across a send.

Delivery is at-least-once: a crash between a successful send and the commit that marks the
row repeats that one message after the restart.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import BufferedInputFile, Message
from aiogram.utils.backoff import Backoff, BackoffConfig
from aiolimiter import AsyncLimiter
from sqlalchemy import and_, exists, func, not_
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot import render
from bot.chart import DEFAULT_TIMEFRAME, ChartSpec, chart_png
from bot.link import TelegramLink
from bot.priority import Taps
from bot.render import Card, CardContext
from core.app import Engine
from core.brokers.base import MarketHoursSource
from core.config import MarketClosedPolicy
from core.db.engine import Database
from core.db.models import ChatAliasRow, OutboxRow, SignalCardRow
from core.domain import ZERO, Account, OrderReport, OrderType, Signal, SignalStatus, utcnow
from core.errors import BrokerError, SignalDeskError
from core.marketdata.base import MarketData
from core.notify import Loudness, NoticeKind, Priority, Topic, TradeExit, read_settings
from core.notify import loudness as decide_loudness
from core.services.reports import DailySummary
from core.services.risk import FlattenReport

__all__ = [
    "CardKind",
    "Cards",
    "ChartMaker",
    "DeliveryPolicy",
    "OutboxDeliverer",
    "Refusal",
    "classify",
    "edit_card",
    "is_not_modified",
    "kind_of",
    "record_migration",
    "resolve_chat",
]

log = structlog.get_logger(__name__)

#: Cards whose last edit :meth:`Cards.edit` remembers (the newest; a card edited longer
#: ago is edited again, at worst drawing one "message is not modified").
SHOWN_CARDS = 256


def is_not_modified(error: TelegramBadRequest) -> bool:
    """Whether Telegram refused an edit because nothing would change (the Bot API answers
    400 "message is not modified"); the message already shows what was wanted."""
    return "message is not modified" in error.message


class Refusal(enum.Enum):
    """How the deliverer treats a failed send (see the module docstring's table)."""

    RETRY_AFTER = "retry_after"  # 429: wait what Telegram says
    UNREACHABLE = "unreachable"  # 5xx, network, 401, 404: back off until Telegram is back
    MIGRATED = "migrated"  # the group became a supergroup: move the chat
    CHAT = "chat"  # the chat refuses for now (blocked, not found): long backoff
    MESSAGE = "message"  # the message itself is invalid: drop the row


#: 400 descriptions (lower case) that are about the chat, not the message: they can heal
#: (the bot is added back, given rights), so the row waits.
_CHAT_REFUSALS = (
    "chat not found",
    "group chat was deactivated",
    "not enough rights",
    "have no rights",
    "need administrator rights",
    "chat_write_forbidden",
    "peer_id_invalid",
    "user is deactivated",
)


def classify(error: TelegramAPIError) -> Refusal:
    """Sort a Bot API error into how the deliverer treats it (module docstring's table)."""
    if isinstance(error, TelegramRetryAfter):
        return Refusal.RETRY_AFTER
    if isinstance(error, TelegramMigrateToChat):
        return Refusal.MIGRATED
    if isinstance(
        error,
        TelegramServerError | TelegramNetworkError | TelegramUnauthorizedError | TelegramNotFound,
    ):
        return Refusal.UNREACHABLE
    if isinstance(error, TelegramForbiddenError):
        return Refusal.CHAT
    if isinstance(error, TelegramBadRequest) and any(
        phrase in error.message.lower() for phrase in _CHAT_REFUSALS
    ):
        return Refusal.CHAT
    return Refusal.MESSAGE


async def resolve_chat(db: Database, chat_id: int) -> int:
    """``chat_id``, or where it moved (following ``chat_aliases``; at most 5 hops)."""
    async with db.session() as session:
        for _ in range(5):
            alias = await session.get(ChatAliasRow, chat_id)
            if alias is None:
                break
            chat_id = alias.new_chat_id
    return chat_id


async def record_migration(db: Database, old_chat_id: int, new_chat_id: int) -> None:
    """Record that ``old_chat_id`` became ``new_chat_id`` (Bot API ``migrate_to_chat_id``)."""
    async with db.session() as session:
        alias = await session.get(ChatAliasRow, old_chat_id)
        if alias is None:
            session.add(ChatAliasRow(old_chat_id=old_chat_id, new_chat_id=new_chat_id))
        else:
            alias.new_chat_id = new_chat_id
            alias.migrated_at = utcnow()


class CardKind(enum.StrEnum):
    """How a card was posted (``signal_cards.kind``): the Bot API method that edits it."""

    TEXT = "text"  # sendMessage -> editMessageText
    PHOTO = "photo"  # sendPhoto with the card as caption -> editMessageCaption


async def edit_card(
    bot: Bot, chat_id: int, message_id: int, card: render.Card, kind: CardKind = CardKind.TEXT
) -> None:
    """Edit the card in place: ``editMessageText`` of a text card, ``editMessageCaption``
    of a photo card (the chart stays); "message is not modified" counts as success.

    Raises:
        TelegramAPIError: any other failure.
    """
    try:
        if kind is CardKind.PHOTO:
            await bot.edit_message_caption(
                caption=card.text, chat_id=chat_id, message_id=message_id, reply_markup=card.markup
            )
        else:
            await bot.edit_message_text(
                text=card.text, chat_id=chat_id, message_id=message_id, reply_markup=card.markup
            )
    except TelegramBadRequest as exc:
        if not is_not_modified(exc):
            raise


def kind_of(message: Message) -> CardKind:
    """Whether a posted card ``message`` is a photo card or a text card."""
    return CardKind.PHOTO if message.photo else CardKind.TEXT


async def _remember(
    session: AsyncSession,
    signal_id: int,
    chat_id: int,
    message_id: int,
    kind: CardKind = CardKind.TEXT,
) -> None:
    row = await session.get(SignalCardRow, (signal_id, chat_id))
    if row is None:
        session.add(
            SignalCardRow(
                signal_id=signal_id, chat_id=chat_id, message_id=message_id, kind=kind.value
            )
        )
    else:
        row.message_id = message_id
        row.kind = kind.value


_T = TypeVar("_T")

ChartMaker = Callable[[MarketData, ChartSpec], Awaitable[bytes | None]]
"""Makes a card's chart PNG (``None``: no chart); :func:`bot.chart.chart_png` by default."""


class Cards:
    """Renders signal cards (and their charts) from the engine's current state and
    remembers where each card was posted and how (table ``signal_cards``, one card per
    signal and chat). ``charts`` False sends text cards only; ``make_chart`` is the chart
    maker (tests inject a failing one); a chart not ready within ``chart_timeout`` seconds
    is given up and the text card is sent."""

    def __init__(
        self,
        engine: Engine,
        *,
        charts: bool = True,
        make_chart: ChartMaker = chart_png,
        chart_timeout: float = 10.0,
        taps: Taps | None = None,
    ) -> None:
        self._engine = engine
        #: The taps being decided: the deliverer gives way to them (:mod:`bot.priority`).
        self.taps = taps or Taps()
        self.charts = charts
        self.make_chart = make_chart
        self.chart_timeout = chart_timeout
        #: What this process's last edit of each card (chat id, message id) showed,
        #: the most recent last.
        self._shown: dict[tuple[int, int], Card] = {}
        self._edit_locks: dict[tuple[int, int], asyncio.Lock] = {}
        #: Each signal's last card rendered here, as the signal, the account and the
        #: context it was drawn with, the most recent last (:meth:`decided`,
        #: :meth:`pending`).
        self._drawn: dict[int, tuple[Signal, Account | None, CardContext]] = {}

    async def render(self, signal: Signal, report: OrderReport | None = None) -> render.Card:
        """The card of ``signal``. ``report`` is the order's report when the caller has it;
        otherwise a filled signal's recorded order is read (no other card shows it). Equity (for
        the risk %) is asked of the broker only when the signal has a stop loss; a broker
        failure just leaves the % out. A filled signal's card also says where its trade's exits
        live. Prices are printed with the precision of the symbol's instrument (the engine's
        cached listing).
        """
        engine = self._engine
        if report is None and signal.status is SignalStatus.FILLED:  # the fill's line
            report = await engine.signals.order_for(signal.id)
        account = None
        if signal.stop_loss is not None:
            with suppress(BrokerError):
                account = await engine.trading.account()
        trade = None
        if signal.status is SignalStatus.FILLED:
            trade = await engine.trades.for_signal(signal.id)
        context = await self._context(signal)
        self._drawn.pop(signal.id, None)
        self._drawn[signal.id] = (signal, account, context)
        while len(self._drawn) > SHOWN_CARDS:  # forget the longest ago
            del self._drawn[next(iter(self._drawn))]
        return render.card(signal, report, account, trade, engine.broker.name, context)

    async def decided(self, signal: Signal) -> Card:
        """The card of ``signal`` just decided (SUBMITTED or BLOCKED at the tap, before the
        broker answers), drawn while the order is on its way: the track record and the
        instrument come from the signal's last card rendered in this process (the one the
        owner tapped), as is the account its risk % was taken of, so the edit reads
        nothing; :meth:`render` when there is none. The final edit after the broker
        answered is a full :meth:`render`."""
        drawn = self._drawn.get(signal.id)
        if drawn is None:
            return await self.render(signal)
        _, account, known = drawn
        context = CardContext(
            now=self._engine.clock(),
            zone=known.zone,
            record=known.record,
            instrument=known.instrument,
            closed_policy=known.closed_policy,
        )
        return render.card(signal, None, account, None, self._engine.broker.name, context)

    def pending(self, signal_id: int, version: int) -> Signal | None:
        """The signal as its last card rendered here showed it, if that card was of a
        PROPOSED signal at card version ``version`` (the buttons the owner tapped); else
        None. Its terms are those of the signal while its version stays ``version``: every
        edit of a pending signal bumps it (see ``SignalService.approve``)."""
        drawn = self._drawn.get(signal_id)
        if drawn is None:
            return None
        signal = drawn[0]
        if signal.status is not SignalStatus.PROPOSED or signal.card_version != version:
            return None
        return signal

    async def _context(self, signal: Signal) -> CardContext:
        """The clock, display zone, the source's track record and the symbol's instrument
        (the engine's cached listing); while the signal is pending, also the position
        before it, whether the market data's quote is delayed, the market hours where the
        broker keeps them (a broker failure leaves each out) and the trading state (a
        pending card says when approvals are off)."""
        engine = self._engine
        position = market = None
        delayed = False
        hours = engine.broker if isinstance(engine.broker, MarketHoursSource) else None
        if signal.status is SignalStatus.PROPOSED:
            with suppress(BrokerError):
                held = await engine.trading.positions()
                position = sum((p.quantity for p in held if p.symbol == signal.symbol), ZERO)
            with suppress(BrokerError):
                delayed = (await engine.market.quote(signal.symbol)).delayed
            if hours is not None:
                with suppress(BrokerError):
                    market = await hours.market_hours(signal.symbol)
        known = await engine.symbols.known([signal.symbol])
        pending = signal.status is SignalStatus.PROPOSED
        return CardContext(
            now=engine.clock(),
            zone=engine.settings.display_zone,
            position=position,
            record=await engine.trades.source_record(signal.source),
            instrument=known.get(signal.symbol),
            market=market,
            closed_policy=hours.closed_policy if hours else MarketClosedPolicy.BLOCK,
            delayed=delayed,
            trading=await engine.trading.gate.state() if pending else None,
        )

    async def chart(self, signal: Signal) -> bytes | None:
        """The chart of ``signal``'s symbol with its entry, stop loss, take profit and the
        current price (``None`` when charts are off or it cannot be made)."""
        if not self.charts:
            return None
        limit = signal.order_type is OrderType.LIMIT and signal.limit_price is not None
        spec = ChartSpec(
            symbol=signal.symbol,
            timeframe=DEFAULT_TIMEFRAME,
            candles=(),
            entry=signal.limit_price if limit else signal.reference_price,
            stop_loss=signal.stop_loss,
            take_profit=signal.take_profit,
            side=signal.side,
        )
        try:
            async with asyncio.timeout(self.chart_timeout):
                return await self.make_chart(self._engine.market, spec)
        except TimeoutError:
            log.warning("chart.timed_out", signal=signal.id, seconds=self.chart_timeout)
        except Exception as exc:  # a picture never costs a card
            log.warning("chart.failed", signal=signal.id, error=repr(exc)[:200])
        return None

    async def post(
        self,
        bot: Bot,
        chat_id: int,
        signal: Signal,
        card: Card,
        *,
        silent: bool = False,
    ) -> tuple[Message, CardKind]:
        """Post ``card`` to ``chat_id``: ``sendPhoto`` with its chart and the card as
        caption, or ``sendMessage`` when no chart could be made (a card is never lost
        because of a picture). Raises aiogram's ``TelegramAPIError``."""
        png = await self.chart(signal) if card.markup is not None else None
        if png is not None:
            sent = await bot.send_photo(
                chat_id,
                BufferedInputFile(png, f"signal-{signal.id}.png"),
                caption=card.text,
                reply_markup=card.markup,
                disable_notification=silent,
            )
            return sent, CardKind.PHOTO
        sent = await bot.send_message(
            chat_id, card.text, reply_markup=card.markup, disable_notification=silent
        )
        return sent, CardKind.TEXT

    async def edit(
        self, bot: Bot, chat_id: int, message_id: int, card: Card, kind: CardKind = CardKind.TEXT
    ) -> None:
        """Edit a posted card to ``card`` (:func:`edit_card`), unless this process's last
        edit of it showed exactly ``card``: the tap handler and the outbox's card update
        both bring the card to the signal's new state, and the second would only draw
        Telegram's "message is not modified". Edits of one card run one at a time.

        Raises:
            TelegramAPIError: as :func:`edit_card`.
        """
        key = (chat_id, message_id)
        async with self._edit_locks.setdefault(key, asyncio.Lock()):
            if self._shown.get(key) == card:
                return
            await edit_card(bot, chat_id, message_id, card, kind)
            self._shown.pop(key, None)
            self._shown[key] = card
        while len(self._shown) > SHOWN_CARDS:  # forget the card edited longest ago
            oldest = next(iter(self._shown))
            del self._shown[oldest]
            lock = self._edit_locks.get(oldest)
            if lock is not None and not lock.locked():
                del self._edit_locks[oldest]

    async def remember(
        self, signal_id: int, chat_id: int, message_id: int, kind: CardKind = CardKind.TEXT
    ) -> None:
        """Record (or move) the signal's card in ``chat_id`` to ``message_id``."""
        async with self._engine.db.session() as session:
            await _remember(session, signal_id, chat_id, message_id, kind)


#: Seconds a stopping deliverer lets the row it is sending finish (:meth:`OutboxDeliverer.stop`).
STOP_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Pace and patience of the deliverer.

    Attributes:
        chat_interval: seconds between two messages to one chat (Telegram: about 1 s).
        global_per_second: messages per second over all chats (Telegram: about 30).
        group_per_minute: messages per minute to a group or supergroup (a chat whose id
            is negative, the Bot API's convention), on top of ``chat_interval``. The Bot
            API FAQ: "no more than 20 messages per minute in the same group"; 18 leaves a
            margin so that clock skew between the bot and Telegram never draws a 429.
        group_burst: messages that may go to a group at once before ``group_per_minute``
            paces them; kept under the 20 Telegram lets through at once, for the same
            margin. Owners' private copies of a card are not group messages.
        poll_interval: seconds between outbox scans for rows of other processes.
        backoff_initial: first wait (seconds) after a 5xx or network error; it doubles...
        backoff_max: ...up to this many seconds, and the row is retried forever.
        refused_initial: first wait (seconds) after the chat refused (bot blocked, chat
            not found); it doubles...
        refused_max: ...up to this many seconds, and the row is retried forever.
    """

    chat_interval: float = 1.0
    global_per_second: float = 30.0
    group_per_minute: float = 18.0
    group_burst: int = 10
    poll_interval: float = 0.5
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    refused_initial: float = 5.0
    refused_max: float = 300.0


class OutboxDeliverer:
    """Delivers the outbox to ``chat_id``, and signal cards also to each of
    ``owner_chats`` (the owners' private chats; a private chat's id is the user's id), see
    the module docstring for the rules.

    Run :meth:`run` as a task and cancel it to stop; wire :meth:`wake` to the notifier.
    ``chat_id`` should be resolved through :func:`resolve_chat` first; it changes when
    Telegram moves the chat. ``link`` (the bot session's :class:`TelegramLink`) cuts the
    outage backoff short when Telegram is back. :attr:`in_flight` is the id of the row
    being sent (retried), or ``None``. :attr:`clock` (UTC; the engine's) places a row in
    or out of ``QUIET_HOURS``; tests drive it.
    """

    def __init__(
        self,
        bot: Bot,
        engine: Engine,
        cards: Cards,
        chat_id: int,
        policy: DeliveryPolicy | None = None,
        link: TelegramLink | None = None,
        owner_chats: Sequence[int] = (),
    ) -> None:
        self._bot = bot
        self._engine = engine
        self._cards = cards
        self.chat_id = chat_id
        self.owner_chats = tuple(owner_chats)
        self._refusing: set[int] = set()  # owner chats whose refusal was logged
        self.policy = policy or DeliveryPolicy()
        self._link = link or TelegramLink()
        self.in_flight: int | None = None
        self.clock = engine.clock
        self._claimed: AsyncSession | None = None  # the claim's transaction (PostgreSQL)
        self._chat_limit = AsyncLimiter(1, self.policy.chat_interval)
        self._global_limit = AsyncLimiter(self.policy.global_per_second, 1.0)
        burst = self.policy.group_burst
        self._group_limit = AsyncLimiter(burst, burst * 60.0 / self.policy.group_per_minute)
        self._wake = asyncio.Event()
        self._stopping = False
        self._busy = False  # a row is being looked up, sent or recorded

    def wake(self) -> None:
        """Tell the deliverer a row was committed (``OutboxNotifier.on_enqueue``)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled or :meth:`stop`: drain the outbox, then sleep until woken
        or the poll interval passes. An unexpected error (a database hiccup) is logged and
        the row is tried again on the next round; it is never dropped."""
        while not self._stopping:
            self._wake.clear()
            try:
                while not self._stopping and await self.deliver_next():
                    pass
            except Exception:
                log.exception("outbox.round_failed")
            with suppress(TimeoutError):  # asyncio.timeout: 3.11's wait_for can eat a cancel
                async with asyncio.timeout(self.policy.poll_interval):
                    await self._wake.wait()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called: no new row is started."""
        return self._stopping

    async def stop(self, running: asyncio.Task[None], grace: float = STOP_GRACE) -> None:
        """End ``running`` (this deliverer's :meth:`run`) at a row boundary: a row being
        sent is finished, sent and marked delivered in one go, and no other is started, so
        a shutdown never leaves a message sent but still queued (it would be sent again
        at the next start). A row not done within ``grace`` seconds (Telegram unreachable,
        its retries waiting) is cancelled unsent; it stays queued. Returns once
        ``running`` has ended."""
        self._stopping = True
        self._wake.set()
        if self._busy:
            await asyncio.wait({running}, timeout=grace)
        running.cancel()
        await asyncio.wait({running})  # a cancellation of the caller still propagates
        if not running.cancelled() and running.exception() is not None:
            log.error("outbox.deliverer_failed", exc_info=running.exception())

    async def pending(self) -> int:
        """How many rows are not yet delivered."""
        async with self._engine.db.session() as session:
            query = select(func.count()).select_from(OutboxRow)
            return (await session.exec(query.where(col(OutboxRow.delivered_at).is_(None)))).one()

    async def deliver_next(self) -> bool:
        """Deliver the most urgent deliverable row, after waiting for a rate-limit token.
        Returns False when there was nothing to deliver.

        The row is looked up once when a token is free; when one must be waited for, the
        row is chosen again after the wait (an alert may have arrived meanwhile)."""
        await self._cards.taps.quiet()
        async with self._claim() as row:
            if row is None:
                return False
            limits = self._limits()
            if all(limit.has_capacity() for limit in limits):
                await _acquire(limits)  # free: no wait
                await self._deliver(row)
                return True
        await _acquire(self._limits())
        async with self._claim() as row:
            if row is None:
                return False
            await self._deliver(row)
        return True

    def _limits(self) -> list[AsyncLimiter]:
        """The limiters a row's token is taken from: the group's (when the main chat is a
        group: its id is negative; decided per row, since a migration moves the chat to
        a supergroup), the chat's and the global one. The group's comes first: it waits
        longest, and the others' tokens are then taken just before the send."""
        limits = [self._chat_limit, self._global_limit]
        return [self._group_limit, *limits] if self.chat_id < 0 else limits

    @asynccontextmanager
    async def _claim(self) -> AsyncIterator[OutboxRow | None]:
        """The next row to deliver, claimed until the block ends (the module docstring:
        ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; no claim on SQLite). The deliverer is
        busy (:meth:`stop` lets it finish) from the lookup until the claim has committed
        the row's outcome."""
        self._busy = True
        try:
            if self._engine.db.dialect != "postgresql":
                yield await self._next_row()
                return
            async with self._engine.db.session() as session:
                row = await self._next_row(session)
                self._claimed = session if row is not None else None
                try:
                    yield row
                finally:
                    self._claimed = None
        finally:
            self._busy = False

    @asynccontextmanager
    async def _row_session(self) -> AsyncIterator[AsyncSession]:
        """Where the claimed row is written: the claim's own transaction (another
        connection would wait for the claim's lock forever), else a new session."""
        if self._claimed is not None:
            yield self._claimed
            await self._claimed.flush()
            return
        async with self._engine.db.session() as session:
            yield session

    async def _next_row(self, claim: AsyncSession | None = None) -> OutboxRow | None:
        card = aliased(OutboxRow)
        card_pending = exists().where(
            col(card.kind) == NoticeKind.SIGNAL_CARD.value,
            col(card.signal_id) == col(OutboxRow.signal_id),
            col(card.delivered_at).is_(None),
        )
        query = (
            select(OutboxRow)
            .where(col(OutboxRow.delivered_at).is_(None))
            .where(not_(and_(col(OutboxRow.kind) == NoticeKind.SIGNAL_UPDATE.value, card_pending)))
            .order_by(col(OutboxRow.priority), col(OutboxRow.id))
            .limit(1)
        )
        if claim is not None:
            query = query.with_for_update(skip_locked=True, of=OutboxRow)
            return (await claim.exec(query)).first()
        async with self._engine.db.session() as session:
            return (await session.exec(query)).first()

    async def _deliver(self, row: OutboxRow) -> None:
        """Send ``row`` until it is delivered or dropped (the module docstring's table)."""
        policy = self.policy
        outage = _backoff(policy.backoff_initial, policy.backoff_max)
        refused = _backoff(policy.refused_initial, policy.refused_max)
        attempts = 0
        error = ""
        level = await self._loudness(row)
        if level is Loudness.OFF:
            error = "off (the owner's /notify setting)"
        self.in_flight = row.id
        try:
            while not error:
                attempts += 1
                await self._cards.taps.quiet()
                try:
                    await self._send(row, silent=level is Loudness.SILENT)
                    break
                except TelegramAPIError as exc:
                    kind = classify(exc)
                    if kind is Refusal.MESSAGE:
                        error = exc.message
                        break
                    await self._wait_out(row, exc, kind, outage, refused)
                except SignalDeskError as exc:  # the signal is gone: nothing to show
                    error = str(exc)
                    break
        finally:
            self.in_flight = None
        if level is Loudness.OFF:
            log.info("outbox.off", row=row.id, topic=row.topic)
        elif error:
            log.warning("outbox.dropped", row=row.id, kind=row.kind, error=error)
        await self._cards.taps.quiet()
        async with self._row_session() as session:
            stored = await session.get(OutboxRow, row.id)
            assert stored is not None
            stored.delivered_at = utcnow()
            stored.attempts += attempts
            stored.last_error = error[:500]
            stored.silent = level is Loudness.SILENT

    async def _wait_out(
        self,
        row: OutboxRow,
        error: TelegramAPIError,
        kind: Refusal,
        outage: Backoff,
        refused: Backoff,
    ) -> None:
        """Wait (or move the chat) before the next attempt at ``row``."""
        if isinstance(error, TelegramRetryAfter):
            await asyncio.sleep(error.retry_after)
        elif isinstance(error, TelegramMigrateToChat):
            old, self.chat_id = self.chat_id, error.migrate_to_chat_id
            await record_migration(self._engine.db, old, self.chat_id)
            log.warning("outbox.chat_migrated", old_chat=old, new_chat=self.chat_id, row=row.id)
        elif kind is Refusal.CHAT:
            if refused.counter == 0:  # once per row: "still refused" every few minutes is noise
                log.warning(
                    "outbox.chat_refuses", chat=self.chat_id, row=row.id, error=error.message
                )
                await self._note(row, error.message)
            await asyncio.sleep(next(refused))
        else:  # Refusal.UNREACHABLE: the link logs the outage once
            await self._link.pause(next(outage))

    async def _note(self, row: OutboxRow, error: str) -> None:
        """Record why ``row`` waits (``last_error``; it stays undelivered)."""
        async with self._row_session() as session:
            stored = await session.get(OutboxRow, row.id)
            if stored is not None:
                stored.last_error = error[:500]

    async def _loudness(self, row: OutboxRow) -> Loudness:
        """How ``row`` goes out now (the module docstring's Loudness)."""
        settings = self._engine.settings
        notice = await read_settings(self._engine.db, settings.quiet, settings.display_zone)
        try:
            topic = Topic(row.topic)
        except ValueError:  # written by a newer version: loud like any unconfigurable topic
            topic = Topic.OTHER
        return decide_loudness(topic, Priority(row.priority), notice, self.clock())

    async def _send(self, row: OutboxRow, silent: bool) -> None:
        """One delivery attempt."""
        if row.kind == NoticeKind.TRADE_EXIT.value:
            exit_ = _parsed(row, TradeExit.from_payload)
            known = await self._engine.symbols.known([exit_.symbol])
            text = render.trade_exit_text(exit_, self._engine.broker.name, known.get(exit_.symbol))
            await self._bot.send_message(self.chat_id, text, disable_notification=silent)
            return
        if row.kind == NoticeKind.FLATTEN_REPORT.value:
            flatten = _parsed(row, FlattenReport.from_payload)
            for chunk in render.text_notice(render.flatten_text(flatten)):
                await self._bot.send_message(self.chat_id, chunk, disable_notification=silent)
            return
        if row.kind == NoticeKind.DAILY_SUMMARY.value:
            summary = _parsed(row, DailySummary.from_payload)
            text = render.daily_summary_text(summary)
            await self._bot.send_message(self.chat_id, text, disable_notification=silent)
            return
        if row.kind == NoticeKind.TEXT.value or row.signal_id is None:
            await self._send_text(row, silent)
            return
        first = row.kind == NoticeKind.SIGNAL_CARD.value
        signals = self._engine.signals
        # before a card is first posted its size rules run again: an account that changed
        # since the proposal gets the card posted BLOCKED, without buttons
        signal = await (signals.recheck if first else signals.get)(row.signal_id)
        card = await self._cards.render(signal)
        copies = await self._copies(signal.id)
        if first:  # every card chat without a copy (one posted on an earlier attempt stays)
            targets = [chat for chat in self.card_chats if chat not in copies]
        else:  # every copy, and the main chat (posted anew there when it has none)
            targets = list(dict.fromkeys([self.chat_id, *copies]))
        held: TelegramAPIError | None = None
        for chat in targets:
            await self._cards.taps.quiet()
            try:
                await self._card_to(chat, signal, card, copies.get(chat), silent)
            except TelegramAPIError as exc:
                kind = classify(exc)
                if kind in (Refusal.RETRY_AFTER, Refusal.UNREACHABLE) or (
                    chat == self.chat_id and kind is Refusal.MIGRATED
                ):
                    raise  # the row is tried again; the copies posted so far are skipped
                if chat == self.chat_id:
                    held = exc  # the main chat's refusal decides the row, after the others
                else:
                    self._copy_refused(chat, signal.id, exc)
        if held is not None:
            raise held

    @property
    def card_chats(self) -> list[int]:
        """Where signal cards are posted: the main chat, then each owner's private chat
        (once each: an owner id equal to the main chat is the main chat)."""
        return list(dict.fromkeys([self.chat_id, *self.owner_chats]))

    async def _copies(self, signal_id: int) -> dict[int, tuple[int, CardKind]]:
        """The signal's posted copies: chat id -> (message id, kind), read where the row is
        written (a copy posted on an earlier attempt under the same claim counts)."""
        async with self._row_session() as session:
            rows = await session.exec(
                select(SignalCardRow).where(col(SignalCardRow.signal_id) == signal_id)
            )
            return {r.chat_id: (r.message_id, CardKind(r.kind)) for r in rows.all()}

    async def _card_to(
        self,
        chat_id: int,
        signal: Signal,
        card: Card,
        where: tuple[int, CardKind] | None,
        silent: bool,
    ) -> None:
        """Edit the signal's copy in ``chat_id`` at ``where``, or post it there (also when
        the copy can no longer be edited) and record it at once, so a retry of the row
        never posts it twice. Raises aiogram's ``TelegramAPIError``."""
        if where is not None:
            try:
                await self._cards.edit(self._bot, chat_id, where[0], card, where[1])
                self._refusing.discard(chat_id)
                return
            except TelegramBadRequest as exc:
                if classify(exc) is not Refusal.MESSAGE:
                    raise
                log.info("outbox.card_reposted", signal=signal.id, chat=chat_id, reason=exc.message)
        message, kind = await self._cards.post(self._bot, chat_id, signal, card, silent=silent)
        self._refusing.discard(chat_id)
        async with self._row_session() as session:
            await _remember(session, signal.id, message.chat.id, message.message_id, kind)

    def _copy_refused(self, chat_id: int, signal_id: int, error: TelegramAPIError) -> None:
        """A chat other than the main one refused a card (an owner's private chat answers
        403 when the owner never started the bot or blocked it; a group copy may have
        moved): that copy is skipped, the other chats still get the card. Logged once
        until the chat accepts a card again."""
        if chat_id not in self._refusing:
            self._refusing.add(chat_id)
            log.warning(
                "outbox.card_chat_refuses", chat=chat_id, signal=signal_id, error=error.message
            )

    async def _send_text(self, row: OutboxRow, silent: bool) -> None:
        """A ``text`` row as one message, or several in order when it is longer than
        Telegram's 4096 characters (:func:`bot.render.text_notice`). A failure part-way
        sends the whole row again (at-least-once, like every row)."""
        for chunk in render.text_notice(row.text):
            await self._bot.send_message(self.chat_id, chunk, disable_notification=silent)


def _parsed(row: OutboxRow, parse: Callable[[dict[str, Any]], _T]) -> _T:
    """``parse(row.payload)``; a payload that does not parse raises SignalDeskError naming
    the row's kind (the row waits with the error)."""
    try:
        return parse(row.payload)
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise SignalDeskError(f"malformed {row.kind} payload: {exc!r}") from exc


async def _acquire(limits: Sequence[AsyncLimiter]) -> None:
    """Take one token from each of ``limits`` in order, waiting for each as needed."""
    for limit in limits:
        await limit.acquire()


def _backoff(initial: float, maximum: float) -> Backoff:
    """Doubling waits from ``initial`` to ``maximum`` seconds, 10 % jitter (aiogram's)."""
    return Backoff(BackoffConfig(initial, max(maximum, initial * 2), 2.0, initial / 10))
