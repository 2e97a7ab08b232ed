"""The bot's settings checks that need no aiogram: ``python -m bot`` runs them before it
imports aiogram (about a second of imports), so a missing token or owner list fails at once.
"""

from __future__ import annotations

from core.config import Settings
from core.errors import ConfigError

__all__ = ["UNSET_BOT", "UNSET_OWNERS", "check_settings"]

UNSET_BOT = (
    "TELEGRAM_BOT_TOKEN is not set: set it to your bot's token from @BotFather, "
    "or run `make demo` to try SignalDesk on the local sandbox"
)
UNSET_OWNERS = (
    "TELEGRAM_OWNER_IDS is not set: the bot refuses to start without owners "
    "(your Telegram user id, e.g. TELEGRAM_OWNER_IDS=123456789)"
)


def check_settings(settings: Settings) -> None:
    """Refuse settings the bot cannot run on: no token, or no owners (deny by default:
    a bot without owners would answer nobody, or worse, anybody).

    Raises:
        ConfigError: one line saying what to set.
    """
    if settings.telegram_bot_token is None:
        raise ConfigError(UNSET_BOT)
    if not settings.owner_ids:
        raise ConfigError(UNSET_OWNERS)
