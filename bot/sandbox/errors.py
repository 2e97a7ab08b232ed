"""Errors raised by the sandbox Telegram Bot API server."""

from __future__ import annotations

from typing import Any

__all__ = ["BotAPIError", "SandboxUsageError"]


class BotAPIError(Exception):
    """A Bot API error answer, exactly as Telegram sends it.

    Serialised by the server as ``{"ok": false, "error_code": N, "description": "...",
    "parameters": {...}}`` with HTTP status ``error_code``. ``retry_after`` (seconds) becomes
    ``parameters.retry_after`` (Telegram's 429 flood control).
    """

    def __init__(
        self,
        error_code: int,
        description: str,
        *,
        retry_after: int | None = None,
        migrate_to_chat_id: int | None = None,
    ) -> None:
        super().__init__(f"{error_code}: {description}")
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after
        self.migrate_to_chat_id = migrate_to_chat_id

    def to_payload(self) -> dict[str, Any]:
        """The JSON body of the error answer (Bot API ``Response`` with ``ok: false``)."""
        payload: dict[str, Any] = {
            "ok": False,
            "error_code": self.error_code,
            "description": self.description,
        }
        parameters: dict[str, int] = {}
        if self.retry_after is not None:
            parameters["retry_after"] = self.retry_after
        if self.migrate_to_chat_id is not None:
            parameters["migrate_to_chat_id"] = self.migrate_to_chat_id
        if parameters:
            payload["parameters"] = parameters
        return payload

    @classmethod
    def bad_request(cls, detail: str) -> BotAPIError:
        """A 400 answer whose description is ``"Bad Request: " + detail``."""
        return cls(400, f"Bad Request: {detail}")


class SandboxUsageError(ValueError):
    """The test (or the web page) asked the simulated world for something impossible.

    Examples: pressing a button that the message does not have, a user writing into a group
    they are not a member of, registering a chat twice with different data.
    """
