"""The database schema (SQLAlchemy Core). Alembic migrations in syncd/migrations mirror it."""

from __future__ import annotations

from sqlalchemy import (BigInteger, Column, DateTime, Float, ForeignKey, Index, Integer,
                        MetaData, String, Table, Text, text)

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

ID = String(32)
TS = DateTime(timezone=True)
SEQ = BigInteger().with_variant(Integer, "sqlite")   # sqlite autoincrement needs INTEGER

# The golden record: canonical field values, and per field where and when its value came from.
entities = Table(
    "entities", metadata,
    Column("id", ID, primary_key=True),
    Column("type", String(16), nullable=False),
    Column("fields", Text, nullable=False, default="{}"),      # schema.encode(...)
    Column("versions", Text, nullable=False, default="{}"),    # {field: [system, source_time, change_id]}
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Index("ix_entities_type", "type"),
)

# entity <-> (system, type, external id): unique both ways.
bindings = Table(
    "bindings", metadata,
    Column("system", String(64), primary_key=True),
    Column("type", String(16), primary_key=True),
    Column("external_id", String(128), primary_key=True),
    Column("entity_id", ID, ForeignKey("entities.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", TS, nullable=False),
    # One entity may have several records in one system only when a person said so (an identify
    # review resolved as "the same"); the earliest binding is the one writes go to.
    Index("ix_bindings_entity", "entity_id"),
    Index("ix_bindings_entity_system", "entity_id", "system", "type"),
)

# Dedup keys of each entity ("phone:+74951234567").
match_keys = Table(
    "match_keys", metadata,
    Column("type", String(16), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("entity_id", ID, ForeignKey("entities.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_match_keys_entity", "entity_id"),
)

# What each system was last known to hold, in canonical form.
shadows = Table(
    "shadows", metadata,
    Column("entity_id", ID, ForeignKey("entities.id", ondelete="CASCADE"), primary_key=True),
    Column("system", String(64), primary_key=True),
    Column("fields", Text, nullable=False, default="{}"),
    Column("fingerprint", String(64), nullable=False, default=""),
    Column("source_version", String(64)),
    Column("updated_at", TS, nullable=False),
)

changelog = Table(
    "changelog", metadata,
    Column("id", SEQ, primary_key=True, autoincrement=True),
    Column("entity_id", ID, nullable=False),
    Column("system", String(64), nullable=False),
    Column("origin", String(16), nullable=False),          # pull | rules | review | push
    Column("fields", Text, nullable=False),
    Column("source_version", String(64)),
    Column("source_time", TS),
    Column("observed_at", TS, nullable=False),
    Column("run_id", String(32)),
    Index("ix_changelog_entity", "entity_id", "id"),
)

conflicts = Table(
    "conflicts", metadata,
    Column("id", SEQ, primary_key=True, autoincrement=True),
    Column("entity_id", ID, ForeignKey("entities.id", ondelete="CASCADE"), nullable=False),
    Column("field", String(64), nullable=False),
    Column("policy", String(16), nullable=False),
    Column("candidates", Text, nullable=False),           # [{system, value, source_time}]
    Column("status", String(16), nullable=False),         # open | resolved | auto
    Column("winner", String(64)),
    Column("created_at", TS, nullable=False),
    Column("resolved_at", TS),
    Index("ix_conflicts_status", "status", "entity_id", "field"),
)

review = Table(
    "review", metadata,
    Column("id", SEQ, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),           # identify
    Column("system", String(64), nullable=False),
    Column("type", String(16), nullable=False),
    Column("external_id", String(128)),
    Column("record", Text, nullable=False),
    Column("candidates", Text, nullable=False, default="[]"),
    Column("reason", Text, nullable=False),
    Column("status", String(16), nullable=False),         # open | resolved
    Column("created_at", TS, nullable=False),
    Column("resolved_at", TS),
    Index("ix_review_status", "status"),
)

quarantine = Table(
    "quarantine", metadata,
    Column("id", SEQ, primary_key=True, autoincrement=True),
    Column("system", String(64), nullable=False),
    Column("stream", String(64)),
    Column("kind", String(32)),
    Column("external_id", String(128)),
    Column("reason", Text, nullable=False),
    Column("raw", Text),
    Column("status", String(16), nullable=False),         # open | released
    Column("created_at", TS, nullable=False),
    Column("run_id", String(32)),
    Index("ix_quarantine_status", "status", "system"),
)

outbox = Table(
    "outbox", metadata,
    Column("id", SEQ, primary_key=True, autoincrement=True),
    Column("entity_id", ID, ForeignKey("entities.id", ondelete="CASCADE"), nullable=False),
    Column("entity_type", String(16), nullable=False),
    Column("system", String(64), nullable=False),
    Column("op", String(8), nullable=False),              # create | update
    Column("payload", Text, nullable=False),              # canonical fields (schema.encode)
    Column("idempotency_key", String(80), nullable=False, unique=True),
    Column("status", String(16), nullable=False),         # pending | sending | done | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", TS, nullable=False),
    Column("last_error", Text),
    Column("claimed_by", String(64)),
    Column("claimed_at", TS),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Index("ix_outbox_ready", "status", "system", "next_attempt_at"),
    Index("ix_outbox_entity", "entity_id", "system", "status"),
)
# Writes still to do, by entity: small whatever the history, so planners always take it.
# Queries put OPEN_WRITES in their WHERE as the same literal text, so both PostgreSQL and SQLite
# see that the partial index applies (a bound parameter would hide it from the planner).
_OPEN = "outbox.status IN ('pending', 'sending')"
OPEN_WRITES = text(_OPEN)
Index("ix_outbox_open_entity", outbox.c.entity_id, outbox.c.system,
      postgresql_where=text("status IN ('pending', 'sending')"), sqlite_where=text("status IN ('pending', 'sending')"))

cursors = Table(
    "cursors", metadata,
    Column("system", String(64), primary_key=True),
    Column("stream", String(64), primary_key=True),
    Column("value", Text),
    Column("updated_at", TS, nullable=False),
)

runs = Table(
    "runs", metadata,
    Column("id", String(32), primary_key=True),
    Column("system", String(64), nullable=False),
    Column("stream", String(64), nullable=False),
    Column("started_at", TS, nullable=False),
    Column("finished_at", TS),
    Column("status", String(16), nullable=False),         # running | ok | failed
    Column("counts", Text, nullable=False, default="{}"),
    Column("error", Text),
    Column("instance", String(64)),
    Index("ix_runs_system", "system", "started_at"),
)

leases = Table(
    "leases", metadata,
    Column("name", String(160), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),          # unix time, compared in SQL
)

kv = Table(
    "kv", metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", TS, nullable=False),
)

ALL = [entities, bindings, match_keys, shadows, changelog, conflicts, review, quarantine, outbox,
       cursors, runs, leases, kv]
