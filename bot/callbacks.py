"""Inline-button payloads as aiogram ``CallbackData`` factories.

Telegram limits ``callback_data`` to 1-64 bytes; ``CallbackData.pack()`` raises ``ValueError``
past that. Both payloads here stay far below it (``sig:a:123456`` is 12 bytes, a confirmation
with a 32-character symbol about 50).

Callback data comes from the client and can be forged: ``sig:a:<20 digits>`` unpacks to an
id no column can hold, and core answers it like any unknown id (``NotFoundError``, "no signal
with id ...", shown as the tap's toast; see :func:`core.bounds.signal_id`). An unknown
action or a non-number does not unpack, and the fallback answers "inactive button".

A confirmation carries the Unix time it was issued, so its expiry needs no server-side state
and still holds after a restart.
"""

from __future__ import annotations

import enum

from aiogram.filters.callback_data import CallbackData

from core.notify import Loudness, Topic

__all__ = [
    "CardAction",
    "ConfirmAction",
    "ConfirmCallback",
    "NotifyCallback",
    "OrderCallback",
    "PositionCallback",
    "SignalCallback",
    "StrategyAction",
    "StrategyCallback",
    "fits",
]

#: Bot API limit on ``callback_data``, in bytes.
MAX_CALLBACK_DATA = 64


class CardAction(enum.StrEnum):
    """The buttons of a pending signal card: the decision, and the edits before it."""

    APPROVE = "a"
    REJECT = "r"
    HALF = "h"
    DOUBLE = "d"
    RISK = "k"
    EDIT = "e"


class SignalCallback(CallbackData, prefix="sig"):
    """A button of signal ``signal_id``'s card: ``sig:<action>:<id>:<version>:<arg>``.

    ``version`` is the card version the button was rendered with (see
    ``SignalService.edit``): an Approve or an edit from an older card is refused, so an
    approval executes what the tapped card showed. ``arg`` is the risk percent of a RISK
    button (``0.5``), empty otherwise. ``sig:k:<20 digits>:<10 digits>:0.5`` is under 45
    bytes."""

    action: CardAction
    signal_id: int
    version: int
    arg: str = ""


class ConfirmAction(enum.StrEnum):
    """What a confirmation button does once pressed."""

    CLOSE_ALL = "all"
    CLOSE = "one"
    RESUME = "resume"
    CANCEL = "no"


class ConfirmCallback(CallbackData, prefix="cfm", sep="|"):
    """A destructive command confirmed by a button:
    ``cfm|<action>|<symbol>|<issued>|<amount>|<ref>``.

    ``symbol`` is the position to close (``-`` when not applicable); ``|`` separates the
    fields because ccxt swap symbols contain ``:`` (``BTC/USDT:USDT``). ``issued`` is the Unix
    time (whole seconds) the question was asked; the button is void ``CONFIRM_TTL_SECONDS``
    later. ``amount`` is how much of the position a CLOSE closes (``50%``, ``0.01``; empty:
    all of it) and ``ref`` the one ticket it closes on per-ticket venues (MT5 hedging; empty:
    every position of ours in ``symbol``).
    """

    action: ConfirmAction
    symbol: str
    issued: int
    amount: str = ""
    ref: str = ""


class OrderCallback(CallbackData, prefix="ord", sep="|"):
    """Cancel the resting order with client order id ``cid``: ``ord|<cid>`` (a client
    order id is at most 32 characters: ``sd<tag>-s<signal id>``)."""

    cid: str


class PositionCallback(CallbackData, prefix="pos", sep="|"):
    """Close ``percent`` (25, 50, 100) of one position listed by ``/positions``:
    ``pos|<symbol>|<ref>|<percent>``; ``ref`` names the ticket on per-ticket venues. The
    press asks for confirmation like ``/close``."""

    symbol: str
    ref: str
    percent: int


def fits(data: CallbackData) -> bool:
    """True when ``data`` packs within Telegram's 64-byte ``callback_data`` limit."""
    try:
        return len(data.pack().encode()) <= MAX_CALLBACK_DATA
    except ValueError:  # aiogram refuses over-long data itself
        return False


class StrategyAction(enum.StrEnum):
    """The buttons of ``/strategies``."""

    PAUSE = "p"
    RESUME = "r"


class StrategyCallback(CallbackData, prefix="stg", sep="|"):
    """Pause or resume strategy instance ``name``: ``stg|<p|r>|<name>`` (names are at
    most 48 characters, so the payload stays under 64 bytes)."""

    action: StrategyAction
    name: str


class NotifyCallback(CallbackData, prefix="ntf"):
    """Set how loud one notification topic is (``/notify``): ``ntf:<topic>:<level>``, e.g.
    ``ntf:fill:silent`` (at most 24 bytes). A forged level the topic cannot take (an alert
    or card switched off) unpacks, and the setting refuses it."""

    topic: Topic
    level: Loudness
