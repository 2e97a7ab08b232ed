"""Bot tokens for tests, built at run time so that no string of a real token's shape sits in
the repository (secret scanners flag one whatever its words say). None of them is or was a
real token: the sandbox Bot API server accepts any well-formed token."""

from __future__ import annotations

__all__ = ["fake_token"]


def fake_token(marker: str = "TEST", bot_id: int = 1234567890) -> str:
    """``<bot_id>:<35 characters>``, the shape @BotFather gives (digits, a colon, 35 of
    ``[A-Za-z0-9_-]``), whose secret part starts with ``marker`` and says it is fake.
    Different markers give different tokens."""
    secret = f"{marker}_fake_token_".ljust(35, "0")[:35]
    return f"{bot_id}:{secret}"
