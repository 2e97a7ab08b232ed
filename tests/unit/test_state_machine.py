"""The signal lifecycle's state machine: every (from, to) pair of SignalStatus, checked with
``can_transition`` and with the compare-and-set ``transition_signal`` on a migrated SQLite
database.

The expected table is written out here from the design (docs/architecture.md, "The signal
lifecycle"), independently of ``core.domain.ALLOWED_TRANSITIONS``.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import col, select

from core.db.engine import Database, upgrade_schema
from core.db.models import AuditEventRow, SignalRow
from core.db.repositories import transition_signal
from core.domain import SignalStatus, can_transition

# Every status of the design, by value: a status added to the enum without a decision
# about its transitions fails test_the_enum_has_exactly_the_designed_statuses.
STATUSES = [
    "PROPOSED",
    "APPROVED",
    "SUBMITTED",
    "FILLED",
    "REJECTED",
    "BLOCKED",
    "EXPIRED",
    "CANCELLED",
    "FAILED",
    "UNKNOWN",
]

# The allowed moves, from the design; every other (from, to) pair is forbidden.
ALLOWED = {
    ("PROPOSED", "APPROVED"),
    ("PROPOSED", "REJECTED"),
    ("PROPOSED", "EXPIRED"),
    ("PROPOSED", "CANCELLED"),
    ("PROPOSED", "BLOCKED"),
    ("APPROVED", "SUBMITTED"),
    ("APPROVED", "BLOCKED"),
    ("SUBMITTED", "FILLED"),
    ("SUBMITTED", "FAILED"),
    ("SUBMITTED", "UNKNOWN"),
    ("UNKNOWN", "FILLED"),
    ("UNKNOWN", "FAILED"),
}
FINAL = {"FILLED", "REJECTED", "BLOCKED", "EXPIRED", "CANCELLED", "FAILED"}

ALL_PAIRS = [(a, b) for a in STATUSES for b in STATUSES]
ALLOWED_PAIRS = [pair for pair in ALL_PAIRS if pair in ALLOWED]
FORBIDDEN_PAIRS = [pair for pair in ALL_PAIRS if pair not in ALLOWED]


def _ids(pairs: list[tuple[str, str]]) -> list[str]:
    return [f"{a}->{b}" for a, b in pairs]


CREATED = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
LATER = CREATED + timedelta(seconds=30)


def test_the_expected_table_has_12_allowed_and_88_forbidden_pairs() -> None:
    assert len(ALL_PAIRS) == 100
    assert len(ALLOWED_PAIRS) == 12
    assert len(FORBIDDEN_PAIRS) == 88


def test_the_enum_has_exactly_the_designed_statuses() -> None:
    assert [s.value for s in SignalStatus] == STATUSES


# --- can_transition -------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "new"), ALLOWED_PAIRS, ids=_ids(ALLOWED_PAIRS))
def test_can_transition_allows_a_designed_move(current: str, new: str) -> None:
    assert can_transition(SignalStatus(current), SignalStatus(new)) is True


@pytest.mark.parametrize(("current", "new"), FORBIDDEN_PAIRS, ids=_ids(FORBIDDEN_PAIRS))
def test_can_transition_forbids_every_other_move(current: str, new: str) -> None:
    assert can_transition(SignalStatus(current), SignalStatus(new)) is False


@pytest.mark.parametrize("status", STATUSES)
def test_is_final_exactly_for_statuses_without_an_outgoing_move(status: str) -> None:
    assert SignalStatus(status).is_final is (status in FINAL)


# --- transition_signal on SQLite --------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated with ``upgrade_schema``; each test works on a copy."""
    path = tmp_path_factory.mktemp("state_machine") / "template.db"
    asyncio.run(upgrade_schema(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture
async def db(migrated_template: Path, tmp_path: Path, sqlite_url: str) -> AsyncIterator[Database]:
    shutil.copyfile(migrated_template, tmp_path / "signaldesk.db")
    database = Database(sqlite_url)
    yield database
    await database.close()


async def _insert_signal(db: Database, status: str) -> int:
    async with db.session() as session:
        row = SignalRow(
            source="test",
            symbol="BTC/USDT",
            side="buy",
            quantity=Decimal("0.01"),
            order_type="market",
            reference_price=Decimal("113666.68"),
            status=status,
            status_reason="as inserted",
            created_at=CREATED,
            expires_at=CREATED + timedelta(minutes=15),
            updated_at=CREATED,
        )
        session.add(row)
        await session.flush()
        assert row.id is not None
        return row.id


async def _load(db: Database, signal_id: int) -> SignalRow:
    async with db.session() as session:
        row = await session.get(SignalRow, signal_id, populate_existing=True)
        assert row is not None
        return row


async def _audit(db: Database, signal_id: int) -> list[AuditEventRow]:
    async with db.session() as session:
        query = select(AuditEventRow).where(col(AuditEventRow.signal_id) == signal_id)
        return list((await session.exec(query)).all())


@pytest.mark.parametrize(("current", "new"), ALLOWED_PAIRS, ids=_ids(ALLOWED_PAIRS))
async def test_transition_signal_moves_an_allowed_pair_and_writes_one_audit_event(
    db: Database, current: str, new: str
) -> None:
    signal_id = await _insert_signal(db, current)

    async with db.session() as session:
        moved = await transition_signal(
            session,
            signal_id,
            SignalStatus(current),
            SignalStatus(new),
            actor="owner:42",
            at=LATER,
            reason="because the test says so",
            decided_by="owner:42",
        )

    assert moved is True
    row = await _load(db, signal_id)
    assert row.status == new
    assert row.status_reason == "because the test says so"
    assert row.updated_at == LATER
    assert row.decided_by == "owner:42"  # extra values are set by the same UPDATE
    events = await _audit(db, signal_id)
    assert len(events) == 1
    event = events[0]
    assert (event.actor, event.action, event.from_status, event.to_status) == (
        "owner:42",
        new.lower(),
        current,
        new,
    )
    assert event.reason == "because the test says so"
    assert event.at == LATER


@pytest.mark.parametrize(("current", "new"), FORBIDDEN_PAIRS, ids=_ids(FORBIDDEN_PAIRS))
async def test_transition_signal_raises_on_a_forbidden_pair_and_changes_nothing(
    db: Database, current: str, new: str
) -> None:
    signal_id = await _insert_signal(db, current)

    with pytest.raises(ValueError, match=f"forbidden transition {current} -> {new}"):
        async with db.session() as session:
            await transition_signal(
                session,
                signal_id,
                SignalStatus(current),
                SignalStatus(new),
                actor="owner:42",
                at=LATER,
                reason="should not happen",
            )

    row = await _load(db, signal_id)
    assert row.status == current
    assert row.status_reason == "as inserted"
    assert row.updated_at == CREATED
    assert await _audit(db, signal_id) == []


@pytest.mark.parametrize(("current", "new"), ALLOWED_PAIRS, ids=_ids(ALLOWED_PAIRS))
async def test_transition_signal_second_caller_with_the_same_stale_status_loses(
    db: Database, current: str, new: str
) -> None:
    signal_id = await _insert_signal(db, current)
    results = []
    for attempt in ("first", "second"):
        async with db.session() as session:
            results.append(
                await transition_signal(
                    session,
                    signal_id,
                    SignalStatus(current),
                    SignalStatus(new),
                    actor=attempt,
                    at=LATER,
                    reason=attempt,
                )
            )

    assert results == [True, False]
    row = await _load(db, signal_id)
    assert (row.status, row.status_reason) == (new, "first")
    events = await _audit(db, signal_id)
    assert [(e.actor, e.from_status, e.to_status) for e in events] == [("first", current, new)]


async def test_transition_signal_with_a_stale_expected_status_returns_false_and_audits_nothing(
    db: Database,
) -> None:
    # The owner rejected the signal; an approval that still believes it is PROPOSED loses.
    signal_id = await _insert_signal(db, "REJECTED")

    async with db.session() as session:
        moved = await transition_signal(
            session,
            signal_id,
            SignalStatus.PROPOSED,
            SignalStatus.APPROVED,
            actor="owner:42",
            at=LATER,
            reason="late approval",
        )

    assert moved is False
    row = await _load(db, signal_id)
    assert (row.status, row.status_reason, row.updated_at) == ("REJECTED", "as inserted", CREATED)
    assert await _audit(db, signal_id) == []


async def test_transition_signal_on_a_missing_signal_returns_false_and_audits_nothing(
    db: Database,
) -> None:
    async with db.session() as session:
        moved = await transition_signal(
            session,
            999,
            SignalStatus.PROPOSED,
            SignalStatus.CANCELLED,
            actor="owner:42",
            at=LATER,
        )
        events = (await session.exec(select(AuditEventRow))).all()

    assert moved is False
    assert list(events) == []
