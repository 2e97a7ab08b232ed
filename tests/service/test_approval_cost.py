"""What one approval costs the database (issue: an approval is one write transaction): a
read outside any transaction, the approving write and the recording write, and no
statement more than today."""

from __future__ import annotations

from bench.scenarios import approval_cost


async def test_an_approval_is_a_read_and_two_write_transactions(database_url: str) -> None:
    cost = await approval_cost(database_url, approvals=3, warmup=1)

    assert cost.transactions == 2  # approve + order row; record the fill (was 3: the read)
    # one connection per transaction; the read (no transaction) runs on a kept read
    # connection (Database.read_row), no checkout (was 3)
    assert cost.checkouts == 2
    # was 24 in 5 transactions, then 18: the approval's read, its compare-and-sets and its
    # audit events are one statement each now
    assert cost.statements <= 15
    assert cost.venue_statements <= 6  # the paper ledger: was 9 (rows read twice)
    assert cost.venue_transactions == 1


async def test_a_sqlite_statement_is_one_call_to_the_worker_thread(sqlite_url: str) -> None:
    cost = await approval_cost(sqlite_url, approvals=3, warmup=1)

    # one call per statement and per transaction end (commit, the pool's reset); was 67,
    # about four per statement (open a cursor, execute, fetch, close)
    assert cost.thread_hops <= cost.statements + 2 * cost.transactions
