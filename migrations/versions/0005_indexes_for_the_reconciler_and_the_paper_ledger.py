"""indexes for the reconciler and the paper ledger

The reconciler's foreign-position report looks up the fills of the symbols the broker holds
(``fills.symbol``) and the foreign positions already reported (``audit_events.action``); the
paper ledger finds its resting orders by state (``paper_orders.state``) on every
``account()``. Without these indexes each read scans a table that grows with history.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 07:55:00

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, column) of each index, named as SQLModel's ``index=True`` names it.
INDEXES = (("fills", "symbol"), ("audit_events", "action"), ("paper_orders", "state"))


def upgrade() -> None:
    """Upgrade schema."""
    for table, column in INDEXES:
        op.create_index(f"ix_{table}_{column}", table, [column], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    for table, column in INDEXES:
        op.drop_index(f"ix_{table}_{column}", table_name=table)
