"""ReplayFeed over the shipped real candles, and load_candles on good and malformed files.

Real candles used (index: open time, close):

    0     2025-08-20T11:00Z  C 113666.68   (open 113792.19)
    1     2025-08-20T12:00Z  C 113659.01
    2     2025-08-20T13:00Z  C 112693.15
    3     2025-08-20T14:00Z  C 113465.84
    4     2025-08-20T15:00Z  C 113353.94
    5     2025-08-20T16:00Z  C 113839.99
    105   2025-08-24T20:00Z  C 112770.39
    107   2025-08-24T22:00Z  C 113451.02
    2674  2025-12-09T21:00Z  C 92640.0    (the last of 2,675)
"""

from __future__ import annotations

import gzip
import itertools
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.config import DEFAULT_FEED_CSV
from core.errors import ConfigError, UnknownSymbolError
from core.marketdata.replay import ReplayFeed, load_candles

SYMBOL = "BTC/USDT"
CANDLES = load_candles(DEFAULT_FEED_CSV)
LAST = 2674
D = Decimal
HEADER = "timestamp,open,high,low,close,volume\n"
GOOD_ROW = "2025-08-20T11:00:00Z,113792.19,113859.26,113060.08,113666.68,555.63081\n"


# --- load_candles ---------------------------------------------------------------------------


def test_load_candles_reads_the_shipped_file_exactly() -> None:
    assert len(CANDLES) == 2675
    first = CANDLES[0]
    assert first.at == datetime(2025, 8, 20, 11, 0, tzinfo=UTC)
    assert first.at.utcoffset() == timedelta(0)
    assert (first.open, first.high, first.low, first.close, first.volume) == (
        D("113792.19"),
        D("113859.26"),
        D("113060.08"),
        D("113666.68"),
        D("555.63081"),
    )
    assert str(first.close) == "113666.68"  # a Decimal from the text, not a float
    assert CANDLES[-1].at == datetime(2025, 12, 9, 21, 0, tzinfo=UTC)
    assert CANDLES[-1].close == D("92640.0")
    steps = {b.at - a.at for a, b in itertools.pairwise(CANDLES)}
    assert steps == {timedelta(hours=1)}  # chronological, hourly, no gaps


def test_load_candles_reads_plain_csv(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(HEADER + GOOD_ROW, encoding="utf-8")

    [candle] = load_candles(path)

    assert candle.close == D("113666.68")


@pytest.mark.parametrize(
    ("rows", "line"),
    [
        pytest.param(["not-a-time,1,2,0.5,1.5,10\n"], 2, id="bad-timestamp-line-2"),
        pytest.param(
            [GOOD_ROW, GOOD_ROW.replace("11:00", "12:00"), "2025-08-20T13:00:00Z,1,x,0.5,1,1\n"],
            4,
            id="bad-number-line-4",
        ),
        pytest.param([GOOD_ROW, "2025-08-20T12:00:00Z,1,2,,1.5,10\n"], 3, id="empty-low-line-3"),
    ],
)
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_load_candles_on_a_malformed_row_names_its_line(
    tmp_path: Path, rows: list[str], line: int, suffix: str
) -> None:
    data = (HEADER + "".join(rows)).encode()
    path = tmp_path / f"candles{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)

    with pytest.raises(
        ConfigError, match=rf"^FEED_CSV: .*candles{suffix} line {line} is malformed"
    ):
        load_candles(path)


def test_load_candles_on_a_truncated_row_raises_config_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "candles.csv"
    path.write_text(HEADER + GOOD_ROW + "2025-08-20T12:00:00Z,113666.69,113944.0\n", "utf-8")

    with pytest.raises(ConfigError, match="line 3 is malformed"):
        load_candles(path)


def test_load_candles_without_a_column_names_it_at_the_first_row(tmp_path: Path) -> None:
    path = tmp_path / "candles.csv"
    path.write_text("timestamp,open,high,low,close\n2025-01-01T00:00:00Z,1,2,0.5,1.5\n")
    with pytest.raises(ConfigError, match="line 2 is malformed: the header has no volume column"):
        load_candles(path)


def test_load_candles_never_returns_a_naive_candle_time(tmp_path: Path) -> None:
    path = tmp_path / "candles.csv"
    path.write_text(HEADER + GOOD_ROW.replace("11:00:00Z", "11:00:00"), "utf-8")

    try:
        candles = load_candles(path)
    except ConfigError:
        return  # refusing the row is as good as reading it as UTC
    assert candles[0].at.utcoffset() == timedelta(0)


def test_load_candles_on_a_header_only_file_says_it_has_no_candles(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(HEADER, encoding="utf-8")

    with pytest.raises(ConfigError, match=r"^FEED_CSV: .*empty\.csv has no candles$"):
        load_candles(path)


def test_load_candles_on_a_missing_file_says_it_cannot_read_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^FEED_CSV: cannot read .*nope\.csv"):
        load_candles(tmp_path / "nope.csv")


def test_loaded_candles_are_decoded_when_read_and_the_same_object_when_read_again() -> None:
    candles = load_candles(DEFAULT_FEED_CSV)

    assert candles[7] is candles[7]  # the current candle, read on every quote
    assert candles[-1] is candles[len(candles) - 1]
    assert candles[1:3] == [candles[1], candles[2]]
    assert candles[-2:] == [candles[-2], candles[-1]]
    with pytest.raises(IndexError):
        candles[len(candles)]


def test_the_shipped_candles_take_a_fifth_of_their_decoded_memory() -> None:
    """2,675 candles with five Decimals each took 1.7 MiB of every process; as rows, a
    fifth, and a replay reading its look-backs keeps at most DECODED_KEPT of them."""
    tracemalloc.start()
    try:
        candles = load_candles(DEFAULT_FEED_CSV)
        feed = ReplayFeed(SYMBOL, candles, speed=0, start_index=LAST)
        feed.candles(SYMBOL, 200)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert held < 700_000


def test_replay_without_candles_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least one candle"):
        ReplayFeed(SYMBOL, [])


# --- advancing ------------------------------------------------------------------------------


def test_manual_replay_stays_on_its_candle_while_time_passes(clock: Any) -> None:
    feed = ReplayFeed(SYMBOL, CANDLES, speed=0, clock=clock)

    clock.advance(86_400)

    assert feed.index == 0
    assert feed.price(SYMBOL) == D("113666.68")


def test_step_advances_one_candle_or_count_and_returns_the_new_one(clock: Any) -> None:
    feed = ReplayFeed(SYMBOL, CANDLES, speed=0, clock=clock)

    one = feed.step()
    assert (feed.index, one.close) == (1, D("113659.01"))
    four = feed.step(3)
    assert (feed.index, four.at, four.close) == (
        4,
        datetime(2025, 8, 20, 15, tzinfo=UTC),
        D("113353.94"),
    )
    assert feed.current() == four
    assert feed.price(SYMBOL) == D("113353.94")


def test_speed_advances_whole_candles_from_the_anchor(clock: Any) -> None:
    feed = ReplayFeed(SYMBOL, CANDLES, speed=2.0, clock=clock)  # anchor = clock's now

    assert feed.index == 0
    clock.advance(1.4)  # 2.8 candles -> 2 whole ones
    assert feed.index == 2
    assert feed.price(SYMBOL) == D("112693.15")
    clock.advance(0.1)  # 1.5 s -> 3
    assert feed.index == 3
    assert feed.price(SYMBOL) == D("113465.84")


def test_speed_start_index_explicit_anchor_and_steps_add_up(clock: Any) -> None:
    anchor = clock.now - timedelta(seconds=10)
    feed = ReplayFeed(SYMBOL, CANDLES, speed=0.5, start_index=100, anchor=anchor, clock=clock)

    assert feed.index == 105  # 100 + int(10 s x 0.5)
    assert feed.price(SYMBOL) == D("112770.39")
    feed.step(2)
    assert feed.index == 107
    assert feed.price(SYMBOL) == D("113451.02")


def test_clock_before_the_anchor_does_not_go_back(clock: Any) -> None:
    feed = ReplayFeed(
        SYMBOL,
        CANDLES,
        speed=1.0,
        start_index=5,
        anchor=clock.now + timedelta(hours=1),
        clock=clock,
    )

    assert feed.index == 5
    assert feed.price(SYMBOL) == D("113839.99")


def test_replay_clamps_at_the_last_candle_by_speed(clock: Any) -> None:
    feed = ReplayFeed(SYMBOL, CANDLES, speed=1000.0, clock=clock)
    assert feed.at_end is False

    clock.advance(3600)  # 3.6 million candles

    assert feed.index == LAST
    assert feed.at_end is True
    assert feed.current().at == datetime(2025, 12, 9, 21, tzinfo=UTC)
    assert feed.price(SYMBOL) == D("92640.0")


def test_replay_clamps_at_the_last_candle_by_steps(clock: Any) -> None:
    feed = ReplayFeed(SYMBOL, CANDLES, speed=0, start_index=LAST - 1, clock=clock)
    assert feed.at_end is False

    last = feed.step(10)

    assert feed.index == LAST
    assert feed.at_end is True
    assert last.close == D("92640.0")


def test_start_index_out_of_range_is_clamped(clock: Any) -> None:
    assert ReplayFeed(SYMBOL, CANDLES, start_index=10_000, clock=clock).index == LAST
    assert ReplayFeed(SYMBOL, CANDLES, start_index=-3, clock=clock).index == 0


# --- symbols and history --------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda feed: feed.price("ETH/USDT"), id="price"),
        pytest.param(lambda feed: feed.candles("ETH/USDT", 3), id="candles"),
        pytest.param(
            lambda feed: feed.candles_since("ETH/USDT", CANDLES[0].at), id="candles_since"
        ),
    ],
)
def test_unknown_symbol_raises_unknown_symbol_error(clock: Any, call: Any) -> None:
    feed = ReplayFeed(SYMBOL, CANDLES, clock=clock)

    with pytest.raises(
        UnknownSymbolError, match=r"^unknown symbol ETH/USDT; the replay feed has BTC/USDT$"
    ):
        call(feed)


def test_candles_returns_the_last_n_up_to_the_current_one_oldest_first(clock: Any) -> None:
    feed = ReplayFeed(SYMBOL, CANDLES, start_index=5, clock=clock)

    closes = [c.close for c in feed.candles(SYMBOL, 3)]

    assert closes == [D("113465.84"), D("113353.94"), D("113839.99")]  # candles 3, 4, 5


def test_candles_near_the_start_returns_what_there_is(clock: Any) -> None:
    feed = ReplayFeed(SYMBOL, CANDLES, start_index=1, clock=clock)

    assert [c.close for c in feed.candles(SYMBOL, 5)] == [D("113666.68"), D("113659.01")]


def test_candles_since_runs_from_the_candle_current_then_to_now(clock: Any) -> None:
    feed = ReplayFeed(SYMBOL, CANDLES, start_index=4, clock=clock)

    since = feed.candles_since(SYMBOL, datetime(2025, 8, 20, 13, 30, tzinfo=UTC))

    assert [c.close for c in since] == [D("112693.15"), D("113465.84"), D("113353.94")]


@pytest.mark.parametrize(
    ("at", "index"),
    [
        pytest.param(datetime(2020, 1, 1, tzinfo=UTC), 0, id="before-the-first"),
        pytest.param(datetime(2025, 8, 20, 11, 0, tzinfo=UTC), 0, id="first-open"),
        pytest.param(datetime(2025, 8, 20, 13, 0, tzinfo=UTC), 2, id="exact-open"),
        pytest.param(datetime(2025, 8, 20, 13, 59, 59, tzinfo=UTC), 2, id="inside-a-candle"),
        pytest.param(
            datetime(2025, 8, 20, 15, 0, tzinfo=timezone(timedelta(hours=2))), 2, id="other-offset"
        ),
        pytest.param(datetime(2025, 12, 9, 21, 0, tzinfo=UTC), LAST, id="last-open"),
        pytest.param(datetime(2030, 1, 1, tzinfo=UTC), LAST, id="after-the-last"),
    ],
)
def test_index_of_finds_the_last_candle_opening_at_or_before(at: datetime, index: int) -> None:
    assert ReplayFeed.index_of(CANDLES, at) == index
