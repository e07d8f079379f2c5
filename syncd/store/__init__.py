"""Persistent state: entities, bindings, shadows, change log, queues, cursors, runs, leases."""

from syncd.store.store import Store, after_commit, new_id, utcnow

__all__ = ["Store", "after_commit", "new_id", "utcnow"]
