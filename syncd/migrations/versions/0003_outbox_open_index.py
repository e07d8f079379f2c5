"""outbox: a partial index of the writes still to do, by entity

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_OPEN = "status IN ('pending', 'sending')"


def upgrade() -> None:
    op.create_index("ix_outbox_open_entity", "outbox", ["entity_id", "system"],
                    postgresql_where=sa.text(_OPEN), sqlite_where=sa.text(_OPEN))


def downgrade() -> None:
    op.drop_index("ix_outbox_open_entity", table_name="outbox")
