"""Services: the transport-agnostic operations that the bot, CLI and scheduler call."""

from core.services.signals import Decision, Proposal, SignalService
from core.services.trading import CloseResult, OperatorStatus, StatusSummary, TradingService

__all__ = [
    "CloseResult",
    "Decision",
    "OperatorStatus",
    "Proposal",
    "SignalService",
    "StatusSummary",
    "TradingService",
]
