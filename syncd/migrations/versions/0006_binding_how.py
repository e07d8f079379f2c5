"""how each binding came about: syncd made the record there, read it, or adopted it (by which key);
a quarantined record's exact bytes

Revision ID: 0006
Revises: 0005

Existing bindings get NULL (unknown): they were made before syncd recorded it. quarantine.raw_bytes
keeps input that is not text (a NUL byte, which PostgreSQL's text cannot hold, made the whole batch
fail); `raw` keeps a readable form of it.
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bindings") as b:
        b.add_column(sa.Column("how", sa.String(32)))
    with op.batch_alter_table("quarantine") as q:
        q.add_column(sa.Column("raw_bytes", sa.LargeBinary()))


def downgrade() -> None:
    with op.batch_alter_table("quarantine") as q:
        q.drop_column("raw_bytes")
    with op.batch_alter_table("bindings") as b:
        b.drop_column("how")
