"""Stage rules: the business rules (`syncd.rules`, given to the engine as its rule hook) see what
each record changed and decide updates and new records (a task, a stage), applied as syncd's own
changes (`Batch.apply_decided`): planned to the systems, never read back as somebody's edit."""

from __future__ import annotations

from typing import Any

from syncd.pipeline.batch import Batch, Ent, RuleInput


def run(batch: Batch, ents: dict[str, Ent], touched: set[str], changed: dict[str, dict[str, Any]],
        created: set[str]) -> set[str]:
    """Rules on every touched entity that changed or is new; returns `touched` with what they touched."""
    hook = batch.setup.rules
    if hook is None:
        return touched
    for eid in sorted(touched):
        ent = ents[eid]
        if ent.hold:
            continue                 # not a record yet: rules wait until it is
        change = changed.get(eid, {})
        if not change and eid not in created:
            continue
        effects = hook(RuleInput(ent.type, eid, dict(ent.golden), change, batch.system, eid in created, batch.conn))
        if not effects:
            continue
        touched |= batch.apply_decided(ents, eid, effects, "rules")
    return touched


__all__ = ["run"]
