"""SignalDesk's typed error hierarchy.

Every error the engine raises on purpose derives from :class:`SignalDeskError`, so the
Telegram face and the CLI can turn it into one clear line for the user and never show a
traceback. Broker adapters translate their library's exceptions at the boundary into
:class:`BrokerTemporaryError` (safe to retry), :class:`BrokerPermanentError` (retrying will
not help) or :class:`BrokerAmbiguousError` (the order may or may not exist: reconcile by
client order id, never resubmit blindly).
"""

from __future__ import annotations

__all__ = [
    "BrokerAmbiguousError",
    "BrokerError",
    "BrokerPermanentError",
    "BrokerTemporaryError",
    "BrokerUnavailableError",
    "CardChangedError",
    "ConfigError",
    "InsufficientMarginError",
    "InvalidInputError",
    "InvalidQuantityError",
    "NotFoundError",
    "OrderNotFoundError",
    "OrderRejectedError",
    "QuantityLimitError",
    "SignalDeskError",
    "TransitionConflictError",
    "UnknownSymbolError",
]


class SignalDeskError(Exception):
    """Base of every error SignalDesk raises on purpose; ``str(err)`` is a user-facing line."""


class ConfigError(SignalDeskError):
    """A setting is missing or invalid, or the installed extras cannot serve it."""


class BrokerUnavailableError(ConfigError):
    """The configured broker cannot be used here (an optional extra is not installed, or the
    platform cannot run it). The message names the extra to install."""


class InvalidInputError(SignalDeskError):
    """Input from chat, webhook, CLI or config is malformed; nothing was changed."""


class NotFoundError(SignalDeskError):
    """The referenced signal, order or position does not exist."""


#: The verb of each status a transition leads to, for "signal 3 is filled, cannot reject".
_VERBS = {
    "approved": "approve",
    "blocked": "block",
    "cancelled": "cancel",
    "expired": "expire",
    "failed": "fail",
    "filled": "fill",
    "rejected": "reject",
    "submitted": "submit",
}


class TransitionConflictError(SignalDeskError):
    """A compare-and-set transition lost: the signal is no longer in the expected state.

    ``wanted`` is the verb (``approve``) or the status the transition leads to
    (``REJECTED``); the message reads ``signal 3 is filled, cannot reject``.

    Attributes:
        signal_id: the signal concerned.
        current: the status the signal has now (a :class:`core.domain.SignalStatus` value).
        wanted: the verb of the transition that lost.
    """

    def __init__(self, signal_id: int, current: str, wanted: str) -> None:
        verb = _VERBS.get(wanted.lower(), wanted.lower())
        super().__init__(f"signal {signal_id} is {current.lower()}, cannot {verb}")
        self.signal_id = signal_id
        self.current = current
        self.wanted = verb


class CardChangedError(SignalDeskError):
    """A tap or an edit named a card version the pending signal no longer has: it was
    edited after the card the owner looked at was rendered. Nothing was changed.

    Attributes:
        signal_id: the signal concerned.
    """

    def __init__(self, signal_id: int) -> None:
        super().__init__("the card changed, look again")
        self.signal_id = signal_id


class BrokerError(SignalDeskError):
    """Base of errors raised by a broker adapter."""


class BrokerTemporaryError(BrokerError):
    """The broker could not be reached or was busy; the request certainly had no effect and
    may be retried (network errors before sending, rate limits, MT5 requotes)."""


class BrokerAmbiguousError(BrokerError):
    """The request may or may not have taken effect (a timeout while placing an order).

    The order is marked UNKNOWN and resolved by looking it up by client order id.
    """


class BrokerPermanentError(BrokerError):
    """The broker refused the request; retrying the same request will fail again."""


class OrderRejectedError(BrokerPermanentError):
    """The broker rejected the order (invalid order, below minimums, market closed, ...)."""


class OrderNotFoundError(BrokerPermanentError):
    """The broker has no order with this client order id (cancel, look-up)."""


class UnknownSymbolError(BrokerPermanentError):
    """The broker does not trade this symbol."""


class InvalidQuantityError(BrokerPermanentError):
    """The quantity is zero, negative, or not representable at the market's precision."""


class QuantityLimitError(BrokerPermanentError):
    """The order exceeds the configured maximum order quantity or notional."""


class InsufficientMarginError(BrokerPermanentError):
    """The account's free margin (or balance) cannot cover the order."""
