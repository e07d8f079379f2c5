"""Per-field conflict policies (pure): owner, priority, newest, review.

A conflict is the same field changed in two systems since the last sync, to different values. The
golden record holds the value in force and where it came from; an incoming change whose system was
not in step with that value (its shadow differs from the golden value) is a conflict.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from syncd.mapping.model import ConflictRule

DEFAULT_RULE = ConflictRule(policy="newest")


@dataclass(frozen=True)
class Candidate:
    system: str
    value: Any
    source_time: dt.datetime | None


@dataclass(frozen=True)
class Decision:
    winner: str | None          # system whose value stands; None = held for review
    policy: str


def rule_for(conflicts: dict[str, ConflictRule], field: str) -> ConflictRule:
    entity = field.split(".", 1)[0]
    return conflicts.get(field) or conflicts.get(f"{entity}.*") or conflicts.get("*") or DEFAULT_RULE


def decide(rule: ConflictRule, current: Candidate, incoming: Candidate) -> Decision:
    """Which of two different values of one field stands."""
    if rule.policy == "review":
        return Decision(None, "review")
    if rule.policy == "owner":
        if incoming.system == rule.owner:
            return Decision(incoming.system, "owner")
        if current.system == rule.owner:
            return Decision(current.system, "owner")
        # neither is the owner: fall back to newest, so the record still converges
        return Decision(_newest(current, incoming), "owner")
    if rule.policy == "priority":
        order = rule.order or []
        rank = {s: i for i, s in enumerate(order)}
        big = len(order)
        if rank.get(incoming.system, big) < rank.get(current.system, big):
            return Decision(incoming.system, "priority")
        if rank.get(incoming.system, big) > rank.get(current.system, big):
            return Decision(current.system, "priority")
        return Decision(_newest(current, incoming), "priority")
    return Decision(_newest(current, incoming), "newest")


def _newest(current: Candidate, incoming: Candidate) -> str:
    if current.source_time is None or incoming.source_time is None:
        return incoming.system          # no clock to compare: the later observation wins
    if incoming.source_time > current.source_time:
        return incoming.system
    if incoming.source_time < current.source_time:
        return current.system
    return min(incoming.system, current.system)   # a tie is broken the same way everywhere


def version_key(v: str | None) -> tuple[int, str]:
    """Order source versions: digit strings numerically, anything else (ISO times) as text."""
    if v is None:
        return (-1, "")
    s = str(v)
    if s.isdigit():
        return (len(s.lstrip("0")), s.lstrip("0"))
    return (10**6, s)


def is_stale(incoming: str | None, applied: str | None) -> bool:
    return incoming is not None and applied is not None and version_key(incoming) < version_key(applied)
