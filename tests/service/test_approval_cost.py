"""What one approval costs the database (issue: an approval is one write transaction): a
read, the approving write and the recording write, and no statement more than today."""

from __future__ import annotations

from pathlib import Path

from bench.scenarios import approval_cost


async def test_an_approval_is_a_read_and_two_write_transactions(
    database_url: str, tmp_path: Path
) -> None:
    cost = await approval_cost(tmp_path, approvals=3, warmup=1, database_url=database_url)

    assert cost.transactions == 3  # read the signal; approve + order row; record the fill
    assert cost.checkouts == 3  # one session per transaction
    assert cost.statements <= 18  # was 24 in 5 transactions
