"""The identity rules (pure): a record's match keys, and what its matches decide.

One match binds; several go to review; none creates a new entity only when the record's system is
allowed to introduce that type (`origin`), otherwise the record goes to review. The identify stage
(`syncd.pipeline.identify`) applies them to a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from syncd.mapping.model import IdentityRule

_KEY_FIELDS = {"email", "phone", "inn_kpp"}


def keys_for(entity: str, fields: dict[str, Any], rule: IdentityRule | None, region: str) -> set[str]:
    """Match keys of a canonical record under its type's identity rule."""
    if rule is None or not rule.keys:
        return set()
    from syncd.keys.match import match_keys

    wanted = tuple(k for k in rule.keys if k in _KEY_FIELDS)
    keys = set(match_keys(entity, fields, region=region, keys=wanted)) if wanted else set()
    for k in rule.keys:
        if k in _KEY_FIELDS:
            continue
        v = fields.get(f"{entity}.{k}")
        if v not in (None, ""):
            keys.add(f"{k}:{str(v).strip().lower()}")
    return keys


def origin_allows(rule: IdentityRule | None, system: str) -> bool:
    return rule is None or rule.origin is None or system in rule.origin


@dataclass
class Outcome:
    entity_id: str | None
    action: str                         # bound | matched | created | review
    reason: str = ""
    candidates: list[str] = field(default_factory=list)


def decide(system: str, rule: IdentityRule | None, candidates: Iterable[str]) -> Outcome:
    cands = sorted(set(candidates))
    if len(cands) == 1:
        return Outcome(cands[0], "matched", candidates=cands)
    if len(cands) > 1:
        return Outcome(None, "review", f"ambiguous: {len(cands)} entities share a match key", cands)
    if origin_allows(rule, system):
        return Outcome(None, "created")
    allowed = ", ".join(rule.origin or []) if rule else ""
    return Outcome(None, "review", f"no match, and {system} may not introduce new entities "
                                   f"of this type (origin: {allowed})")
