"""Money and UTCDateTime column types: exact decimals and UTC-aware datetimes through a real
SQLite file, the stored form, and what is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import StatementError
from sqlalchemy.schema import CreateTable

from core.db.engine import Database, upgrade_schema
from core.db.models import SignalRow
from core.db.types import Money, UTCDateTime, canonical

D = Decimal

# A table of its own (not on SQLModel.metadata, so the migration drift check never sees it).
metadata = MetaData()
ledger = Table(
    "money_probe",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("amount", Money, nullable=True),
    Column("at", UTCDateTime, nullable=True),
)


@pytest.fixture
async def db(sqlite_url: str) -> AsyncIterator[Database]:
    database = Database(sqlite_url)
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.close()


async def _store(db: Database, **values: Any) -> int:
    async with db.engine.begin() as conn:
        result = await conn.execute(insert(ledger).values(**values))
        return result.inserted_primary_key[0]


async def _load(db: Database, row_id: int, column: str) -> Any:
    async with db.engine.connect() as conn:
        return (await conn.execute(select(ledger.c[column]).where(ledger.c.id == row_id))).scalar()


async def _raw(db: Database, row_id: int, column: str) -> tuple[Any, str]:
    """The stored value and SQLite's storage class for it."""
    async with db.engine.connect() as conn:
        row = (
            await conn.execute(
                text(f"SELECT {column}, typeof({column}) FROM money_probe WHERE id = :id"),
                {"id": row_id},
            )
        ).one()
        return row[0], row[1]


# --- Money ----------------------------------------------------------------------------------


async def test_point_one_plus_point_two_stays_exactly_point_three(db: Database) -> None:
    row_id = await _store(db, amount=D("0.1") + D("0.2"))

    loaded = await _load(db, row_id, "amount")

    assert loaded == D("0.3")
    assert str(loaded) == "0.3"  # a float would come back as 0.30000000000000004
    assert await _raw(db, row_id, "amount") == ("0.3", "text")


@pytest.mark.parametrize(
    "value",
    [
        "1234567890.123456789012345678",  # 28 significant digits, 18 of them decimals
        "0.123456789012345678",
        "0.000000000000000001",  # the smallest step of NUMERIC(36, 18)
        "-0.000000000000000001",
        "113689.42",
        "-20.3762",
    ],
)
async def test_money_keeps_every_digit_through_sqlite(db: Database, value: str) -> None:
    row_id = await _store(db, amount=D(value))

    loaded = await _load(db, row_id, "amount")

    assert isinstance(loaded, Decimal)
    assert loaded == D(value)
    assert loaded.as_tuple().digits == D(value).as_tuple().digits
    assert await _raw(db, row_id, "amount") == (value, "text")


WIDE = [
    pytest.param("123456789012345678.123456789012345678", id="36-digits"),
    pytest.param("99999999999999999.999999999999999999", id="36-nines"),
]


@pytest.mark.parametrize("value", WIDE)
async def test_money_keeps_all_36_digits_of_numeric_36_18_through_sqlite(
    db: Database, value: str
) -> None:
    row_id = await _store(db, amount=D(value))

    assert await _load(db, row_id, "amount") == D(value)


@pytest.mark.parametrize("value", WIDE)
def test_money_keeps_all_36_digits_read_from_postgresql(value: str) -> None:
    # what asyncpg hands back for a NUMERIC(36, 18) column
    loaded = Money().process_result_value(D(value), postgresql.dialect())

    assert loaded == D(value)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("10.00", "10"),
        ("1E+3", "1000"),
        ("0.100", "0.1"),
        ("5.684471000", "5.684471"),
        ("0", "0"),
    ],
)
async def test_money_is_stored_in_canonical_form_and_compares_equal(
    db: Database, given: str, stored: str
) -> None:
    row_id = await _store(db, amount=D(given))

    loaded = await _load(db, row_id, "amount")

    assert loaded == D(given)
    assert str(loaded) == stored
    assert (await _raw(db, row_id, "amount"))[0] == stored


async def test_money_null_stays_null(db: Database) -> None:
    row_id = await _store(db, amount=None)

    assert await _load(db, row_id, "amount") is None


@pytest.mark.parametrize("value", [0.1, 3], ids=["float", "int"])
async def test_money_refuses_anything_but_decimal_and_writes_nothing(
    db: Database, value: Any
) -> None:
    with pytest.raises(StatementError) as caught:
        await _store(db, id=1, amount=value)

    assert isinstance(caught.value.orig, TypeError)
    assert f"money must be Decimal, got {type(value).__name__}" in str(caught.value.orig)
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM money_probe"))).scalar() == 0


def test_money_is_text_on_sqlite_and_numeric_36_18_on_postgresql() -> None:
    assert "amount VARCHAR(64)" in str(CreateTable(ledger).compile(dialect=sqlite.dialect()))
    assert "amount NUMERIC(36, 18)" in str(
        CreateTable(ledger).compile(dialect=postgresql.dialect())
    )


def test_money_passes_decimals_to_postgresql_and_canonicalizes_its_numeric_results() -> None:
    money = Money()
    dialect = postgresql.dialect()

    assert money.process_bind_param(D("0.30"), dialect) == D("0.30")
    # NUMERIC(36, 18) comes back padded to 18 decimals
    loaded = money.process_result_value(D("0.300000000000000000"), dialect)
    assert str(loaded) == "0.3"


async def test_migrated_signal_columns_keep_18_decimals_on_sqlite(
    sqlite_url: str, clock: Any
) -> None:
    await upgrade_schema(sqlite_url)
    database = Database(sqlite_url)
    quantity = D("0.123456789012345678")
    price = D("1234567890.123456789012345678")
    try:
        async with database.session() as session:
            row = SignalRow(
                source="test",
                symbol="BTC/USDT",
                side="buy",
                quantity=quantity,
                order_type="market",
                reference_price=price,
                status="PROPOSED",
                created_at=clock(),
                expires_at=clock(),
                updated_at=clock(),
            )
            session.add(row)
            await session.flush()
            row_id = row.id
        async with database.session() as session:
            loaded = await session.get(SignalRow, row_id)
            raw = (
                await session.exec(  # type: ignore[call-overload]
                    text(
                        "SELECT typeof(quantity), quantity, reference_price FROM signals "
                        "WHERE id = :id"
                    ).bindparams(id=row_id)
                )
            ).one()
    finally:
        await database.close()

    assert loaded is not None
    assert (str(loaded.quantity), str(loaded.reference_price)) == (str(quantity), str(price))
    assert tuple(raw) == ("text", str(quantity), str(price))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("10.00", "10"),
        ("1E+2", "100"),
        ("0.10", "0.1"),
        ("-1.500", "-1.5"),
        ("0.000100", "0.0001"),
    ],
)
def test_canonical_drops_trailing_zeros_and_exponents(given: str, expected: str) -> None:
    assert str(canonical(D(given))) == expected


# --- UTCDateTime ----------------------------------------------------------------------------


async def test_utc_datetime_round_trips_exactly_with_microseconds(db: Database) -> None:
    at = datetime(2026, 1, 5, 12, 0, 0, 123456, tzinfo=UTC)
    row_id = await _store(db, at=at)

    loaded = await _load(db, row_id, "at")

    assert loaded == at
    assert loaded.tzinfo is UTC
    assert (await _raw(db, row_id, "at"))[0] == "2026-01-05 12:00:00.123456"


async def test_other_offsets_are_stored_and_returned_as_utc(db: Database) -> None:
    at = datetime(2026, 1, 5, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    row_id = await _store(db, at=at)

    loaded = await _load(db, row_id, "at")

    assert loaded == at
    assert (loaded.hour, loaded.minute, loaded.utcoffset()) == (12, 30, timedelta(0))
    assert (await _raw(db, row_id, "at"))[0] == "2026-01-05 12:30:00.000000"


async def test_naive_datetime_is_refused_and_writes_nothing(db: Database) -> None:
    with pytest.raises(StatementError) as caught:
        await _store(db, id=1, at=datetime(2026, 1, 5, 12, 0))

    assert isinstance(caught.value.orig, ValueError)
    assert "naive datetime" in str(caught.value.orig)
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM money_probe"))).scalar() == 0


def test_utc_datetime_is_timezone_aware_on_postgresql() -> None:
    at = datetime(2026, 1, 5, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    column_type = UTCDateTime()
    dialect = postgresql.dialect()

    assert "TIMESTAMP WITH TIME ZONE" in str(
        CreateTable(ledger).compile(dialect=postgresql.dialect())
    )
    bound = column_type.process_bind_param(at, dialect)
    assert bound == at and bound.utcoffset() == timedelta(0)
    assert column_type.process_result_value(at, dialect).tzinfo is UTC  # type: ignore[union-attr]
