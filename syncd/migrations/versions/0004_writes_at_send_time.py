"""writes decided at send time: one open outbox row per (entity, system), fenced claims, blocked
writes, held entities, whole quarantined records

Revision ID: 0004
Revises: 0003

Data carried over:
- several open outbox rows of one (entity, system) become one (the oldest; its payload no longer
  matters, the pusher computes the payload when it sends);
- rows claimed by an older daemon go back to `pending`;
- the documents the 1C connector kept in its own queue (kv `conn:<system>:pending`) become outbox
  rows of that system, so nothing 1C had not yet confirmed is lost;
- entities whose links waited in kv (`dangling:`/`replan:`) get an outbox row so they are planned
  again.
"""
import datetime as dt
import json
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OPEN = "status IN ('pending', 'sending', 'blocked')"
_UNSETTLED = "status IN ('pending', 'sending', 'blocked', 'dead')"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def upgrade() -> None:
    with op.batch_alter_table("outbox") as b:
        b.add_column(sa.Column("origin", sa.String(64)))
        b.add_column(sa.Column("external_key", sa.String(128)))
        b.add_column(sa.Column("gen", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("claim_token", sa.String(32)))
        b.add_column(sa.Column("claim_until", sa.DateTime(timezone=True)))
        b.add_column(sa.Column("blocked_on", sa.String(32)))
        b.add_column(sa.Column("blocked_why", sa.String(16)))
    with op.batch_alter_table("bindings") as b:
        b.add_column(sa.Column("alias", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("entities") as b:
        b.add_column(sa.Column("hold", sa.String(16)))
        b.add_column(sa.Column("merged_into", sa.String(32)))
    with op.batch_alter_table("review") as b:
        b.add_column(sa.Column("entity_id", sa.String(32)))
    with op.batch_alter_table("quarantine") as b:
        b.add_column(sa.Column("record", sa.Text()))
        b.add_column(sa.Column("entity_id", sa.String(32)))

    conn = op.get_bind()
    # a second record of one entity in one system (settled by review before this revision)
    conn.execute(sa.text(
        "UPDATE bindings SET alias = :t WHERE EXISTS (SELECT 1 FROM bindings b2 WHERE b2.entity_id = "
        "bindings.entity_id AND b2.system = bindings.system AND b2.created_at < bindings.created_at)"),
        {"t": True})
    conn.execute(sa.text(
        "UPDATE outbox SET status = 'done', last_error = 'coalesced into an earlier write (migration 0004)' "
        "WHERE status IN ('pending', 'sending') AND id > (SELECT MIN(o2.id) FROM outbox o2 "
        "WHERE o2.entity_id = outbox.entity_id AND o2.system = outbox.system "
        "AND o2.status IN ('pending', 'sending'))"))
    # a dead letter of a record that also has a write queued: the queued one carries it now; of
    # several dead letters of one record, the newest stays (replaying it sends everything)
    conn.execute(sa.text(
        "UPDATE outbox SET status = 'done', last_error = 'superseded (migration 0004)' WHERE status = 'dead' "
        "AND EXISTS (SELECT 1 FROM outbox o2 WHERE o2.entity_id = outbox.entity_id AND o2.system = outbox.system "
        "AND (o2.status IN ('pending', 'sending') OR (o2.status = 'dead' AND o2.id > outbox.id)))"))
    conn.execute(sa.text("UPDATE outbox SET status = 'pending', claimed_by = NULL WHERE status = 'sending'"))

    op.drop_index("ix_outbox_open_entity", table_name="outbox")
    op.create_index("uq_outbox_open", "outbox", ["entity_id", "system"], unique=True,
                    postgresql_where=sa.text(_UNSETTLED), sqlite_where=sa.text(_UNSETTLED))
    op.create_index("ix_outbox_blocked", "outbox", ["blocked_on"],
                    postgresql_where=sa.text("status = 'blocked'"), sqlite_where=sa.text("status = 'blocked'"))

    wanted: set[tuple[str, str]] = set()          # (entity id, system) to plan again
    # (patterns as parameters: a literal ':name' inside text() would be read as a bind parameter)
    rows = conn.execute(sa.text("SELECT key, value FROM kv WHERE key LIKE :p"), {"p": "conn:%:pending"}).all()
    for key, value in rows:
        system = key.split(":")[1]
        exts = json.loads(value) or []
        for i in range(0, len(exts), 400):
            chunk = exts[i:i + 400]
            q = sa.text("SELECT entity_id FROM bindings WHERE system = :s AND external_id IN :e") \
                .bindparams(sa.bindparam("e", expanding=True))
            wanted.update((eid, system) for (eid,) in conn.execute(q, {"s": system, "e": chunk}))
    waiting = {"a": "dangling:%", "b": "replan:%"}
    for key, value in conn.execute(sa.text("SELECT key, value FROM kv WHERE key LIKE :a OR key LIKE :b"),
                                   waiting).all():
        system = key.split(":")[1]
        wanted.update((eid, system) for eid in json.loads(value) or [])
    conn.execute(sa.text("DELETE FROM kv WHERE key LIKE :a OR key LIKE :b"), waiting)
    now = _now()
    for eid, system in sorted(wanted):
        etype = conn.execute(sa.text("SELECT type FROM entities WHERE id = :i"), {"i": eid}).scalar()
        if etype is None:
            continue
        has_open = conn.execute(sa.text(f"SELECT 1 FROM outbox WHERE entity_id = :i AND system = :s AND {_OPEN}"),
                                {"i": eid, "s": system}).first()
        if has_open:
            continue
        conn.execute(sa.text(
            "INSERT INTO outbox (entity_id, entity_type, system, op, origin, payload, idempotency_key, status, "
            "gen, attempts, next_attempt_at, created_at, updated_at) VALUES (:i, :t, :s, 'update', "
            "'migration', '{}', :k, 'pending', 0, 0, :n, :n, :n)"),
            {"i": eid, "t": etype, "s": system, "k": uuid.uuid4().hex, "n": now})


def downgrade() -> None:
    op.drop_index("ix_outbox_blocked", table_name="outbox")
    op.drop_index("uq_outbox_open", table_name="outbox")
    op.create_index("ix_outbox_open_entity", "outbox", ["entity_id", "system"],
                    postgresql_where=sa.text("status IN ('pending', 'sending')"),
                    sqlite_where=sa.text("status IN ('pending', 'sending')"))
    with op.batch_alter_table("quarantine") as b:
        b.drop_column("entity_id")
        b.drop_column("record")
    with op.batch_alter_table("review") as b:
        b.drop_column("entity_id")
    with op.batch_alter_table("entities") as b:
        b.drop_column("merged_into")
        b.drop_column("hold")
    with op.batch_alter_table("bindings") as b:
        b.drop_column("alias")
    with op.batch_alter_table("outbox") as b:
        for c in ("blocked_why", "blocked_on", "claim_until", "claim_token", "gen", "external_key", "origin"):
            b.drop_column(c)
