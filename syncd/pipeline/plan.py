"""Stage 6: golden values vs a target's shadow -> the fields to write there (pure)."""

from __future__ import annotations

from typing import Any, Collection

from syncd.mapping import Mapper
from syncd.mapping.model import EntityMap


def wants(em: EntityMap, golden: dict[str, Any]) -> bool:
    """`only_when` filters which entities a target receives (e.g. deals marked for 1C)."""
    return all(_eq(golden.get(k), v) for k, v in em.only_when.items())


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    return str(a) == str(b) if a is not None and b is not None else a == b


def plan_fields(mapper: Mapper, em: EntityMap, golden: dict[str, Any], shadow: dict[str, Any] | None,
                held: Collection[str]) -> dict[str, Any]:
    """Fields to send: all known values on create (shadow is None), changed ones on update."""
    out = {}
    for name in mapper.pushable_fields(em):
        if name in held or name not in golden:
            continue
        value = golden[name]
        if shadow is None:
            if value is not None:
                out[name] = value
        elif shadow.get(name) != mapper.roundtrip(em, name, value):
            out[name] = value
    return out
