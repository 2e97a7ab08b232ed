"""Taps first: the background work of this process gives way while a tap is being decided.

A tap (a card button) is the one moment the owner watches this bot: from the callback
query's arrival until its answer and the card's edit are on the wire, every turn of the
event loop spent elsewhere is added to what they wait for. The outbox deliverer shares
the loop without anybody waiting on it right then (posting the other cards of a batch,
re-rendering a card update): it asks :meth:`Taps.quiet` before its next step, which
returns at once when no tap is open and otherwise waits for the last open tap to close, at
most :attr:`Taps.patience` seconds (a tap stuck on a slow venue's quote delays the outbox
by that much at worst, never more). Long polling does not wait: a ``/pause`` sent while a
tap waits on a slow venue must be read at once.

A tap is opened by the card button's handler (:meth:`Taps.deciding`) and closed when
Telegram has answered its answer and its decided edit (:meth:`TapHandle.close_after`; the
broker call runs meanwhile, only the background waits), or when the handler ends,
whichever comes first. Nothing here orders or skips any work:
every row is still delivered (at-least-once is the deliverer's), every update still read.
Callers must not wait while holding a lock a tap needs: the deliverer waits between
rows and between the steps of a row, outside any write transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

__all__ = ["PATIENCE", "TapHandle", "Taps"]

#: Seconds :meth:`Taps.quiet` waits for the open taps at most.
PATIENCE = 1.0


class Taps:
    """The taps this process is deciding (see the module docstring). ``patience`` is the
    longest a :meth:`quiet` waits, in seconds."""

    def __init__(self, patience: float = PATIENCE) -> None:
        self.patience = patience
        self._open = 0
        self._waiting = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    @property
    def open(self) -> int:
        """How many taps are being decided now."""
        return self._open

    @property
    def waiting(self) -> int:
        """How many callers of :meth:`quiet` are waiting now."""
        return self._waiting

    @contextmanager
    def deciding(self) -> Iterator[TapHandle]:
        """Open a tap for the block; ``handle.close()`` closes it earlier (once its
        replies are out). Closing twice is harmless."""
        handle = TapHandle(self)
        self._open += 1
        self._quiet.clear()
        try:
            yield handle
        finally:
            handle.close()

    def _closed(self) -> None:
        self._open -= 1
        if self._open == 0:
            self._quiet.set()

    async def quiet(self) -> None:
        """Return once no tap is open, or after :attr:`patience` seconds."""
        if self._open == 0:
            return
        self._waiting += 1
        try:
            with suppress(TimeoutError):
                async with asyncio.timeout(self.patience):
                    await self._quiet.wait()
        finally:
            self._waiting -= 1


class TapHandle:
    """One open tap of :class:`Taps`; :meth:`close` ends it (idempotent)."""

    __slots__ = ("_taps",)

    def __init__(self, taps: Taps) -> None:
        self._taps: Taps | None = taps

    def close(self) -> None:
        """The tap's replies are out: background work may go on."""
        if self._taps is not None:
            taps, self._taps = self._taps, None
            taps._closed()

    def close_after(self, replies: Sequence[asyncio.Future[Any]]) -> None:
        """Close once every one of ``replies`` (the answer, the decided edit) is done,
        whatever its outcome: then Telegram has them."""
        left = len(replies)
        if not left:
            self.close()
            return

        def done(_: asyncio.Future[Any]) -> None:
            nonlocal left
            left -= 1
            if not left:
                self.close()

        for reply in replies:
            reply.add_done_callback(done)
