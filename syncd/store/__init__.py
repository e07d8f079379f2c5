"""Persistent state: entities, bindings, shadows, change log, queues, cursors, runs, leases."""

from syncd.store.store import Store, new_id, utcnow

__all__ = ["Store", "new_id", "utcnow"]
