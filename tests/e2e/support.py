"""The e2e harness: the real bot (``BotApp``, real aiogram) polling the sandbox over HTTP,
a real SQLite file, the real paper broker on the replay with FEED_SPEED=0 (prices fixed at
the first candle: BTC/USDT 113,666.68)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlmodel import col, func, select

from bot.app import BotApp
from bot.callbacks import CardAction, ConfirmAction, ConfirmCallback, SignalCallback
from bot.delivery import DeliveryPolicy
from bot.sandbox import CallbackAnswer, SandboxServer, SentMessage
from bot.sandbox.server import WAIT_SECONDS
from core.app import Engine
from core.config import Settings
from core.db.models import OrderRow, OutboxRow
from core.domain import Side, Signal
from core.services import Proposal

TOKEN = "424242:e2e-sandbox-token"
OWNER = 1001
STRANGER = 6666
GROUP = -100777

#: Telegram's pacing, sped up 20x so tests that send several messages stay short; the
#: real 1 msg/s pacing against the sandbox's flood control has its own test.
FAST = DeliveryPolicy(
    chat_interval=0.05,
    poll_interval=0.1,
    backoff_initial=0.05,
    backoff_max=0.3,
    refused_initial=0.05,
    refused_max=0.3,
)


def free_port() -> int:
    """A TCP port nobody listens on now (for ``PORT`` in webhook mode, whose URL names it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_settings(tmp_path: Path, base_url: str, **overrides: Any) -> Settings:
    """Settings for one e2e bot: a fresh SQLite file, no .env, replay frozen."""
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'desk.db'}",
        "broker": "paper",
        "feed_speed": 0,
        "feed_start": None,
        "telegram_bot_token": TOKEN,
        "telegram_api_base": base_url,
        "telegram_owner_ids": [OWNER],
        "telegram_chat_id": None,
        "expiry_check_interval": 1,
        "log_level": "WARNING",
        "card_charts": False,  # text cards; tests of chart cards turn them on
        "health_port": 0,  # a free port each: desks of parallel tests never collide
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Desk:
    """One running bot on one sandbox, with helpers that act like the owner."""

    sandbox: SandboxServer
    app: BotApp
    task: asyncio.Task[None]

    @property
    def engine(self) -> Engine:
        return self.app.engine

    @property
    def chat_id(self) -> int:
        """The card chat, where the deliverer sends now (it follows a migrated group)."""
        return self.app.deliverer.chat_id

    async def stop(self) -> None:
        """Stop the bot (its duties, deliverer and engine); the sandbox keeps running."""
        await self.app.stop()
        await asyncio.wait_for(self.task, 10)

    async def propose(self, **overrides: Any) -> Signal:
        """Propose BUY 0.01 BTC/USDT with SL 112,000 and TP 116,000 (or ``overrides``)."""
        values: dict[str, Any] = {
            "source": "e2e",
            "symbol": "BTC/USDT",
            "side": Side.BUY,
            "quantity": Decimal("0.01"),
            "stop_loss": Decimal(112000),
            "take_profit": Decimal(116000),
        }
        values.update(overrides)
        return await self.engine.signals.propose(Proposal(**values))

    async def card(self, signal_id: int, within: float = WAIT_SECONDS) -> SentMessage:
        """The bot's card of ``signal_id`` in the card chat, once posted."""
        return await self.sandbox.wait_for_message(
            self.chat_id, contains=f"signal #{signal_id}", timeout=within
        )

    def tap(
        self, message: SentMessage, action: CardAction, user: int = OWNER, chat: int | None = None
    ) -> str:
        """``user`` presses the card's ``action`` button (Approve, Reject, HALF, ...: the first
        one with that action, as rendered); returns the callback query id."""
        data = card_button(message, action)
        return self.sandbox.press_button(chat or message.chat_id, message.message_id, data, user)

    def confirm(self, message: SentMessage, action: ConfirmAction, user: int = OWNER) -> str:
        """``user`` presses the confirmation button of ``action`` under ``message``."""
        for row in message.buttons:
            for _, data in row:
                if data and ConfirmCallback.unpack(data).action is action:
                    return self.sandbox.press_button(
                        message.chat_id, message.message_id, data, user
                    )
        raise AssertionError(f"no {action} button in {message.buttons}")

    async def answer(self, callback_id: str, within: float = WAIT_SECONDS) -> CallbackAnswer:
        """The bot's answerCallbackQuery for a press."""
        answer = await self.sandbox.wait_for(
            lambda s: s.callback_answers.get(callback_id), within, description="the answer"
        )
        assert answer is not None
        return answer

    async def approve(
        self, message: SentMessage, user: int = OWNER, within: float = WAIT_SECONDS
    ) -> CallbackAnswer:
        """``user`` taps Approve on the card ``message``; returns the answer once the
        handler has finished too (the order recorded, its exits placed): the answer itself
        goes out before the broker is called."""
        handled = self._approvals_handled()
        answer = await self.answer(self.tap(message, CardAction.APPROVE, user), within)
        await self.sandbox.wait_for(
            lambda _: self._approvals_handled() > handled, within, description="the approval"
        )
        return answer

    def _approvals_handled(self) -> float:
        value = self.app.metrics.registry.get_sample_value("signaldesk_approvals_total")
        return value or 0.0

    async def edited(
        self, message: SentMessage, contains: str, within: float = WAIT_SECONDS
    ) -> str:
        """Wait until ``message`` shows ``contains``; return its plain text."""
        await self.sandbox.wait_for(
            lambda s: contains in s.message(message.chat_id, message.message_id).plain_text,
            within,
            description=f"message {message.message_id} edited to show {contains!r}",
        )
        return self.sandbox.message(message.chat_id, message.message_id).plain_text

    async def say(
        self,
        text: str,
        user: int = OWNER,
        chat: int | None = None,
        within: float = WAIT_SECONDS,
        reply_to: int | None = None,
    ) -> SentMessage:
        """``user`` sends ``text`` (as a reply to message ``reply_to``); returns the bot's
        first message after it."""
        chat_id = chat if chat is not None else user
        sent = self.sandbox.messages(chat_id)
        after = sent[-1].message_id if sent else 0
        self.sandbox.send_user_message(chat_id, user, text, reply_to=reply_to)
        return await self.sandbox.wait_for_message(chat_id, after_message_id=after, timeout=within)

    async def end_notice_period(self, attempts: int, within: float = WAIT_SECONDS) -> None:
        """Once the bot has tallied ``attempts`` attempts by strangers, end the notice
        period as its timer would: the one notice about them is queued."""
        owner_only = self.app.owner_only
        await self.sandbox.wait_for(
            lambda _: owner_only.attempts >= attempts,
            within,
            description=f"{attempts} stranger attempts tallied",
        )
        await owner_only.flush()

    async def drained(self, within: float = WAIT_SECONDS) -> None:
        """Wait until the outbox has nothing left to deliver."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while await self.app.deliverer.pending():
            if loop.time() > deadline:
                raise TimeoutError("the outbox did not drain")
            await asyncio.sleep(0.05)

    async def orders_for(self, signal_id: int) -> int:
        async with self.engine.db.session() as session:
            query = select(func.count()).select_from(OrderRow)
            return (await session.exec(query.where(col(OrderRow.signal_id) == signal_id))).one()

    async def outbox(self) -> list[OutboxRow]:
        async with self.engine.db.session() as session:
            return list((await session.exec(select(OutboxRow).order_by(col(OutboxRow.id)))).all())


def card_button(message: SentMessage, action: CardAction, arg: str | None = None) -> str:
    """The callback data of the card's first ``action`` button (with ``arg``, if given)."""
    for row in message.buttons:
        for _, data in row:
            if data and data.startswith("sig:"):
                unpacked = SignalCallback.unpack(data)
                if unpacked.action is action and arg in (None, unpacked.arg):
                    return data
    raise AssertionError(f"no {action} button on the card: {message.plain_text!r}")
