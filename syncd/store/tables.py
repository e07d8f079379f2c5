"""The database schema (SQLAlchemy Core). Alembic migrations in syncd/migrations mirror it."""

from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, Column, DateTime, Float, ForeignKey, Index, Integer,
                        LargeBinary, MetaData, String, Table, Text, text)

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
    # a held entity stands for a record syncd cannot take in yet (identify review, quarantine):
    # records linking to it wait, nothing is written for it, it has no match keys. `merged` is
    # the tombstone of a held entity a review settled as an existing one (`merged_into`).
    Column("hold", String(16)),                               # review | quarantine | merged
    Column("merged_into", ID),
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
    # review resolved as "the same"); the earliest binding is the one writes go to, the others are
    # aliases: their edits reach the golden record, each against a shadow of its own.
    Column("alias", Boolean, nullable=False, default=False),
    # how the record came to be bound (BINDING_HOW): syncd created it there, read it as new, or
    # adopted a record that existed before (by its stamp, its source record, a match key, a person)
    Column("how", String(32)),
    Index("ix_bindings_entity", "entity_id"),
    Index("ix_bindings_entity_system", "entity_id", "system", "type"),
)

# bindings.how: "created" (syncd's create there was confirmed), "found" (syncd's create found it
# there by its key: made before, by a previous install or the vendor), "read" (read as a new record),
# "stamp" (it carries syncd's key or names its source record: adopted), "origin" (made from a
# record of another system syncd had not read yet), "key:<name>" (matched by a match key, e.g.
# "key:email"), "link" (known first as the target of a link), "review" (a person decided).
BINDING_HOW = ("created", "found", "read", "stamp", "origin", "link", "review")

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
    Column("status", String(16), nullable=False),         # open | resolved | dismissed (junk)
    Column("created_at", TS, nullable=False),
    Column("resolved_at", TS),
    Column("entity_id", ID),                              # the held entity standing for the record
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
    Column("raw", Text),                                  # the whole input as it arrived (as text)
    Column("raw_bytes", LargeBinary),                     # its exact bytes, when they are not text
    Column("record", Text),                               # the decoded record, to ingest again on release
    Column("entity_id", ID),                              # the held entity standing for the record
    Column("status", String(16), nullable=False),         # open | released | superseded
    Column("created_at", TS, nullable=False),
    Column("run_id", String(32)),
    Index("ix_quarantine_status", "status", "system"),
)

# A write to do: bring entity `entity_id` up to date in `system`. The row names what and why,
# never the field values: the pusher computes them when it claims the row, from the golden record
# against the target's shadow. One unsettled row per (entity, system): a new change to an entity
# with a row already queued bumps `gen` instead of adding a row (coalescing by construction); a
# dead letter keeps absorbing changes until a person replays it (the target refused the record:
# sending it again by itself would only fail again).
outbox = Table(
    "outbox", metadata,
    Column("id", SEQ, primary_key=True, autoincrement=True),
    Column("entity_id", ID, ForeignKey("entities.id", ondelete="CASCADE"), nullable=False),
    Column("entity_type", String(16), nullable=False),
    Column("system", String(64), nullable=False),
    Column("op", String(8), nullable=False),              # create | update, as planned (decided at send)
    Column("origin", String(64)),                         # why: pull:<system>, rules, review, replay…
    Column("payload", Text, nullable=False),              # fields as planned, then as sent (diagnostics)
    Column("idempotency_key", String(80), nullable=False, unique=True),
    Column("external_key", String(128)),                  # stamped on the record a create makes
    Column("status", String(16), nullable=False),         # pending | sending | blocked | done | dead
    Column("gen", Integer, nullable=False, default=0),    # changes planned into this row
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", TS, nullable=False),
    Column("last_error", Text),
    Column("claimed_by", String(64)),                     # instance holding the claim
    Column("claim_token", String(32)),                    # fences the claim: only its holder confirms
    Column("claim_until", TS),                            # deadline, renewed while the write is in flight
    Column("claimed_at", TS),
    Column("blocked_on", ID),                             # entity this write waits for
    Column("blocked_why", String(16)),                    # create | held | dead | record
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Index("ix_outbox_ready", "status", "system", "next_attempt_at"),
    Index("ix_outbox_entity", "entity_id", "system", "status"),
)
# Statuses of a write still to do. Queries put OPEN_WRITES in their WHERE as the same literal text
# as the partial indexes' predicate, so both PostgreSQL and SQLite see that the index applies.
OPEN_STATUSES = ("pending", "sending", "blocked")
_OPEN = "status IN ('pending', 'sending', 'blocked')"
OPEN_WRITES = text("outbox." + _OPEN)
_UNSETTLED = "status IN ('pending', 'sending', 'blocked', 'dead')"
UNSETTLED_WRITES = text(_UNSETTLED)
Index("uq_outbox_open", outbox.c.entity_id, outbox.c.system, unique=True,
      postgresql_where=text(_UNSETTLED), sqlite_where=text(_UNSETTLED))
Index("ix_outbox_blocked", outbox.c.blocked_on,
      postgresql_where=text("status = 'blocked'"), sqlite_where=text("status = 'blocked'"))

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

# A request-rate budget several instances share (one per peer: a portal's 2 requests a second), as
# GCRA's "theoretical arrival time" in unix seconds of the database's clock (Store.take_rate).
rate_budgets = Table(
    "rate_budgets", metadata,
    Column("key", String(200), primary_key=True),
    Column("tat", Float, nullable=False),
)

ALL = [entities, bindings, match_keys, shadows, changelog, conflicts, review, quarantine, outbox,
       cursors, runs, leases, kv, rate_budgets]
