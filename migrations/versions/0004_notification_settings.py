"""notification settings and the outbox's topic

``/notify`` lets the owner make each topic of notification (cards, fills, exits, warnings,
heartbeats, the daily summary, the drawdown guard's alerts) loud, silent or off; the
choices live in ``notification_settings``, one row per topic the owner changed. Each
outbox row gets its ``topic``, so the deliverer decides its loudness when it sends it.
Rows already queued get the topic their kind implies (heartbeats were the silent texts,
alerts the priority 0 texts); the rest ``other``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 06:20:56.690094

"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import core.db.types

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "notification_settings",
        sa.Column("topic", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("level", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("updated_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("topic"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "topic",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                nullable=False,
                server_default="other",
            )
        )
    op.execute(
        "UPDATE outbox SET topic = CASE"
        " WHEN kind IN ('signal_card', 'signal_update') THEN 'card'"
        " WHEN kind = 'trade_exit' THEN 'exit'"
        " WHEN kind = 'flatten_report' THEN 'alert'"
        " WHEN silent THEN 'heartbeat'"
        " WHEN priority = 0 THEN 'warning'"
        " ELSE 'other' END"
    )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("topic")
    op.drop_table("notification_settings")
