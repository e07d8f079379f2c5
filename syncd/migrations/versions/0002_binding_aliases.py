"""bindings: one entity may have several records in a system (aliases settled by review)

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bindings") as batch:
        batch.drop_constraint("uq_bindings_entity", type_="unique")
        batch.create_index("ix_bindings_entity_system", ["entity_id", "system", "type"])


def downgrade() -> None:
    with op.batch_alter_table("bindings") as batch:
        batch.drop_index("ix_bindings_entity_system")
        batch.create_unique_constraint("uq_bindings_entity", ["system", "type", "entity_id"])
