"""chat aliases and 64-bit chat ids

When Telegram upgrades the card chat (a group) to a supergroup, the Bot API answers sends
to the old id with ``migrate_to_chat_id``; ``chat_aliases`` records the move so the new id
is used from then on, also after a restart. Chat ids need 64 bits (supergroups are
-100XXXXXXXXXX), so ``signal_cards.chat_id`` becomes BIGINT (PostgreSQL's INTEGER is 32-bit).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 02:24:02.680079

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db.types

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "chat_aliases",
        sa.Column("old_chat_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("new_chat_id", sa.BigInteger(), nullable=False),
        sa.Column("migrated_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("old_chat_id"),
    )
    with op.batch_alter_table("signal_cards", schema=None) as batch_op:
        batch_op.alter_column(
            "chat_id", existing_type=sa.INTEGER(), type_=sa.BigInteger(), existing_nullable=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("signal_cards", schema=None) as batch_op:
        batch_op.alter_column(
            "chat_id", existing_type=sa.BigInteger(), type_=sa.INTEGER(), existing_nullable=False
        )
    op.drop_table("chat_aliases")
