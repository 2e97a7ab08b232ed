"""Market hours of an IB contract, from its ``ContractDetails.liquidHours`` (regular trading
hours) and ``timeZoneId``; pure functions, no I/O.

IB's format (TWS 970 and later): sessions separated by ``;``, each
``YYYYMMDD:HHMM-YYYYMMDD:HHMM`` in the exchange's time zone, or ``YYYYMMDD:CLOSED`` for a
day without trading: ``20260105:0930-20260105:1600;20260106:CLOSED``. An empty string (IB
sent no hours) means unknown, and unknown is treated as open: the order goes to IB, which
decides.

The policy for an order on a closed market (``MARKET_CLOSED_POLICY``,
:class:`~core.config.MarketClosedPolicy`): ``block`` refuses it
(``market closed, opens in 2 h``); ``day_order`` sends it as a DAY order that IB holds
until the open, and the order is reported OPEN, not waited for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["MarketHours", "parse_hours"]


def parse_hours(text: str, time_zone: str) -> list[tuple[datetime, datetime]]:
    """The trading sessions in ``text`` (IB's ``liquidHours``) as UTC-aware (start, end)
    pairs, oldest first; CLOSED days and malformed parts are left out.

    Raises:
        ValueError: ``time_zone`` is not an IANA zone name IB uses (``US/Eastern``).
    """
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {time_zone!r}") from exc
    sessions = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        if part.endswith("CLOSED") or "-" not in part:
            continue
        start_text, end_text = part.split("-", 1)
        try:
            start = datetime.strptime(start_text, "%Y%m%d:%H%M").replace(tzinfo=zone)
            end = datetime.strptime(end_text, "%Y%m%d:%H%M").replace(tzinfo=zone)
        except ValueError:
            continue
        sessions.append((start, end))
    return sorted(sessions)


@dataclass(frozen=True, slots=True)
class MarketHours:
    """Whether a market is open at ``at`` (UTC) and when it opens next.

    Attributes:
        known: IB sent hours (False: unknown, treated as open).
        is_open: trading now (True when unknown).
        opens_at: the next session's start when closed; None when open or no session is
            listed ahead.
        at: when this was worked out.
    """

    known: bool
    is_open: bool
    opens_at: datetime | None
    at: datetime

    @classmethod
    def of(cls, text: str, time_zone: str, at: datetime) -> MarketHours:
        """The hours at ``at`` from IB's ``liquidHours`` and ``timeZoneId`` (an unknown zone
        or empty hours: unknown, open)."""
        try:
            sessions = parse_hours(text, time_zone) if text else []
        except ValueError:
            sessions = []
        if not sessions:
            return cls(known=False, is_open=True, opens_at=None, at=at)
        if any(start <= at < end for start, end in sessions):
            return cls(known=True, is_open=True, opens_at=None, at=at)
        ahead = [start for start, _ in sessions if start > at]
        return cls(known=True, is_open=False, opens_at=min(ahead) if ahead else None, at=at)

    @property
    def opens_in(self) -> timedelta | None:
        """Time until the open (None when open or unknown)."""
        return None if self.opens_at is None else self.opens_at - self.at

    def describe(self) -> str:
        """``market open``, or ``market closed, opens in 2 h`` / ``in 45 min`` / ``in 2 d``
        (rounded to the nearest unit), or ``market closed`` when no open is listed."""
        if self.is_open:
            return "market open"
        wait = self.opens_in
        if wait is None:
            return "market closed"
        minutes = round(wait.total_seconds() / 60)
        if minutes < 60:
            return f"market closed, opens in {max(minutes, 1)} min"
        if minutes < 48 * 60:
            return f"market closed, opens in {round(minutes / 60)} h"
        return f"market closed, opens in {round(minutes / 1440)} d"
