"""core.bounds, the one home of the limits of every number, id and text that enters: the
same answer through the plain helpers, the pydantic metadata and the chat parsers."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, ValidationError

from bot.handlers.args import decimal, signal_ref
from core import bounds
from core.errors import InvalidInputError, NotFoundError

NUMBERS: list[tuple[Any, str | None]] = [
    ("0.01", None),
    (Decimal("0.000000000000000001"), None),  # 1e-18: the smallest step is kept
    ("999999999999999999.999999999999999999", None),  # NUMERIC(36,18)'s largest
    (3, None),
    (1.5, None),
    ("1e309", "must be below 10^18"),
    ("1" + "0" * 18, "must be below 10^18"),
    (10**4000, "must be below 10^18"),
    ("9" * 5000, "must be a number of at most 80 characters"),
    ("1e-30", "must have at most 18 decimal places"),
    ("0.1234567890123456789", "must have at most 18 decimal places"),
    ("NaN", "must be a finite number"),
    ("-Infinity", "must be a finite number"),
    ("0", "must be a positive number"),
    ("-1", "must be a positive number"),
    ("ten", "must be a number"),
    (True, "must be a number"),
]


@pytest.mark.parametrize(("value", "problem"), NUMBERS, ids=[str(n[0])[:20] for n in NUMBERS])
def test_every_entry_point_reads_a_number_with_the_same_bounds(
    value: Any, problem: str | None
) -> None:
    class Alert(BaseModel):
        quantity: bounds.PositiveDecimal

    if problem is None:
        assert bounds.decimal_value("quantity", value) == Decimal(str(value))
        assert Alert(quantity=value).quantity == Decimal(str(value))
        if isinstance(value, str):
            assert decimal("quantity")(value) == Decimal(value)
        return
    with pytest.raises(InvalidInputError, match="^quantity " + re.escape(problem)):
        bounds.decimal_value("quantity", value)
    with pytest.raises(ValidationError, match=re.escape(problem)):
        Alert(quantity=value)
    if isinstance(value, str):
        with pytest.raises(ValueError, match=re.escape(problem)):
            decimal("quantity")(value)


def test_a_percent_is_at_most_100_and_a_new_field_is_one_annotation() -> None:
    class Exit(BaseModel):
        trail_pct: bounds.Percent
        breakeven_at_r: Annotated[Decimal, bounds.decimal_bounds(upper=Decimal(100))]

    assert Exit.model_validate({"trail_pct": "2.5", "breakeven_at_r": 1}).trail_pct == Decimal(
        "2.5"
    )
    with pytest.raises(ValidationError, match="trail_pct\n  must be at most 100"):
        Exit.model_validate({"trail_pct": 101, "breakeven_at_r": 1})


@pytest.mark.parametrize("text", ["0", "-3", "9223372036854775808", "9" * 20, "9" * 400, "x"])
def test_an_id_no_column_can_hold_is_not_found(text: str) -> None:
    with pytest.raises(NotFoundError, match=r"^no signal with id "):
        bounds.signal_id(text)


def test_a_storable_id_passes_and_a_chat_reference_may_start_with_a_hash() -> None:
    assert bounds.signal_id(bounds.MAX_ID) == bounds.MAX_ID
    assert signal_ref("#12") == 12
    with pytest.raises(ValueError, match="a signal id expected"):
        signal_ref("twelve")


@pytest.mark.parametrize(
    ("text", "multiline", "problem"),
    [
        ("breakout", False, None),
        ("two\nlines", True, None),
        ("two\nlines", False, "must not contain control characters"),
        ("nul\x00here", True, "must not contain control characters"),
        ("\x1b[2Jclear", False, "must not contain control characters"),
        ("x" * 501, False, "must be at most 500 characters"),
    ],
)
def test_text_refuses_control_characters_and_overlong_values(
    text: str, multiline: bool, problem: str | None
) -> None:
    found = bounds.text_problem(text, 500, multiline=multiline)
    assert found == problem or (problem is not None and found and found.startswith(problem))


def test_json_deeper_than_the_cap_is_refused_before_parsing() -> None:
    bounds.check_json_depth('{"a": [[["x"]]], "b": "[[[[[[[[[[[[["}', limit=4)
    with pytest.raises(InvalidInputError, match="nests deeper than 4 levels"):
        bounds.check_json_depth("[" * 5 + "]" * 5, limit=4)
    with pytest.raises(InvalidInputError):
        bounds.check_json_depth(b"[" * 100_000)
